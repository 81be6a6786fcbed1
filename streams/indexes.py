"""Which embedding indexes exist and which one answers queries, folded from the INDEXES stream.

Every reader derives the same answer from the same log: the embedders (which models to run, which one
embeds questions), the CLI and the gate. The `embedding_indexes` table of the chunk projection is the same
fold, for SQL readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from streams.events import Event, IndexActivated, IndexDropped, IndexEvent, IndexStarted, decode_event
from streams.topology import INDEXES


@dataclass
class Index:
    model: str
    source: str = ""  # how to load the model: a catalogue name, or a folder
    state: str = "building"  # building | active | standby (was active, kept for rollback) | dropped
    previous: str | None = None  # the index that was active when this one was activated or started
    generation: int = 0  # the INDEXES position of its index.started: a dropped index started again is new

    @property
    def live(self) -> bool:
        return self.state != "dropped"


@dataclass
class IndexState:
    indexes: dict[str, Index] = field(default_factory=dict)
    active: str | None = None
    last_seq: int = 0  # the INDEXES position this state includes

    def apply(self, event: Event, seq: int = 0) -> None:
        self.last_seq = max(self.last_seq, seq)
        if not isinstance(event, IndexEvent):
            return
        index = self.indexes.get(event.model)
        match event:
            case IndexStarted():
                if index is None or index.state == "dropped":  # a dropped index started again is built anew
                    self.indexes[event.model] = Index(event.model, event.source, "building", event.previous, seq)
            case IndexActivated():
                if index is None:  # the initial index is activated without being started
                    index = self.indexes[event.model] = Index(event.model)
                if self.active and self.active in self.indexes and self.active != event.model:
                    self.indexes[self.active].state = "standby"
                index.state, index.previous = "active", event.previous
                self.active = event.model
            case IndexDropped():
                if index is not None:
                    index.state = "dropped"
                if self.active == event.model:  # refused by the commands; a hand-made event must not crash us
                    self.active = None

    def live(self) -> list[Index]:
        return [i for i in self.indexes.values() if i.live]


async def read_index_state(js: JetStreamContext) -> IndexState:
    """The whole INDEXES stream folded (it is small: a handful of events per re-index)."""
    state = IndexState()
    try:
        info = await js.stream_info(INDEXES)
    except NotFoundError:
        return state
    if not info.state.messages:
        return state
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        try:
            msg = await js.get_msg(INDEXES, seq)
        except NotFoundError:
            continue
        try:
            event = decode_event(msg.data or b"{}", msg.subject)
        except ValueError:
            continue  # not an index event of ours (see decode_event)
        state.apply(event, seq)
    return state
