"""The re-index commands, shared by `ragbus reindex` and the gateway's admin endpoints: start an index
beside the live one, the gate before the switch, the switch, rollback, drop. Each is an event in the
INDEXES stream; the embedders and every read model follow the log.

The caller passes what the gate judges (an index's coverage, its latest comparison) as plain data, read
from the chunk projection; nothing here reads the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from streams.declare import declare_index, delete_index_durable
from streams.events import Event, IndexActivated, IndexDropped, IndexStarted
from streams.indexes import IndexState, read_index_state
from streams.publish import publish
from streams.topology import EMBEDDING_MODELS

Emit = Callable[[Event], Awaitable[object]]  # how the caller publishes (the gateway: its declared publishers)

# Event ids: the command's subject and the INDEXES position it was decided on, so a retried command is the
# same event (JetStream drops the copy) while the same command later is a new one.

# The quality gate: refuse a switch when the comparison on logged questions shows the new index losing more
# than this much hit rate on the questions whose good passages the log knows (cited or rated up) ...
MAX_HIT_RATE_LOSS = 0.10
MIN_JUDGED_QUESTIONS = 5  # ... and only with enough such questions to say so


class IndexCommandError(Exception):
    """A command that cannot be carried out as asked; the message says why and what to do."""


@dataclass
class Gate:
    model: str
    live_chunks: int  # chunks with a vector in the active index
    missing: int  # ... without one in this index
    reasons: list[str] = field(default_factory=list)  # why it refuses (empty: it lets the switch through)
    notes: list[str] = field(default_factory=list)  # what it checked and found fine, or could not check

    @property
    def passed(self) -> bool:
        return not self.reasons


def judge(index: dict[str, Any], active: dict[str, Any] | None) -> Gate:
    """The gate before `index` answers queries: complete (every chunk of the active index has a vector in
    it), vectors from one model, and not clearly worse on the logged questions where that is known."""
    gate = Gate(index["model"], int(index.get("live_chunks") or 0), int(index.get("missing") or 0))
    if index["state"] == "dropped":
        gate.reasons.append(f"{index['model']} was dropped; start it again with `ragbus reindex --model`")
        return gate
    if active is None:
        gate.notes.append("no index is active: nothing to compare with")
        return gate
    if index.get("dim") is None and not (gate.live_chunks == 0 and index["model"] in EMBEDDING_MODELS
                                         and not index.get("source")):
        # No vector yet: nothing shows its embedders can load the model (only a catalogue model on an empty
        # system is taken on trust); switching to it would fail every question.
        gate.reasons.append(f"{index['model']} has produced no vector yet: its embedders may not be able to load "
                            "it (`ragbus status`, the embedder's log)")
        return gate
    if gate.missing:
        gate.reasons.append(f"incomplete: {gate.missing} of {gate.live_chunks} chunks of {active['model']} have no "
                            f"vector in {index['model']} yet")
    else:
        gate.notes.append(f"complete: all {gate.live_chunks} chunks of {active['model']} have a vector")
    if index.get("fingerprint_mismatches"):
        gate.reasons.append(f"{index['fingerprint_mismatches']} batch(es) came from a model with other bytes "
                            "or another recipe than the rest: `ragbus reindex --drop` it and start it again")
    compared = index.get("compared") or {}
    figures = compared.get("figures") or {}
    if compared.get("baseline") != active["model"] or not figures:
        gate.notes.append(f"no comparison with {active['model']} yet (`ragbus reindex --compare {index['model']}`)")
        return gate
    new, old = figures.get(index["model"], {}), figures.get(active["model"], {})
    judged = int(new.get("judged", 0))
    if judged >= MIN_JUDGED_QUESTIONS:
        loss = float(old.get("hit_rate", 0.0)) - float(new.get("hit_rate", 0.0))
        line = (f"hit rate on {judged} judged questions: {new.get('hit_rate', 0):.2f} vs "
                f"{old.get('hit_rate', 0):.2f} for {active['model']}")
        (gate.reasons if loss > MAX_HIT_RATE_LOSS else gate.notes).append(line)
    else:
        gate.notes.append(f"only {judged} logged question(s) with known good passages: quality not judged")
    return gate


async def start_index(js: JetStreamContext, model: str, source: str = "", dim: int | None = None,
                      emit: Emit | None = None) -> IndexStarted:
    """Declare the index's durable (from the first chunks.ready on: the replay) and record the start."""
    state = await read_index_state(js)
    existing = state.indexes.get(model)
    if existing is not None and existing.live:
        raise IndexCommandError(f"{model} already has an index ({existing.state}); "
                                f"`ragbus reindex --drop {model}` first to build it anew")
    await declare_index(js, model)
    event = IndexStarted(event_id=f"index.started:{model}:{state.last_seq}", model=model, source=source,
                         dim=dim, previous=state.active)
    await (emit or _publisher(js))(event)
    return event


async def activate_index(js: JetStreamContext, gate: Gate, force: bool = False, reason: str = "switch",
                         emit: Emit | None = None) -> IndexActivated:
    """The switch: from the next question on, `gate.model` answers. Refused when the gate refuses, unless
    forced (the event says so)."""
    state = await read_index_state(js)
    index = state.indexes.get(gate.model)
    if index is None or not index.live:
        raise IndexCommandError(f"no live index {gate.model}; `ragbus reindex --list` shows them")
    if state.active == gate.model:
        raise IndexCommandError(f"{gate.model} is already the active index")
    if not gate.passed and not force:
        raise IndexCommandError("the gate refuses the switch: " + "; ".join(gate.reasons)
                                + " (--force switches anyway)")
    event = IndexActivated(event_id=f"index.activated:{gate.model}:{state.last_seq}", model=gate.model,
                           previous=state.active, forced=not gate.passed, live_chunks=gate.live_chunks,
                           missing=gate.missing, reason=reason)
    await (emit or _publisher(js))(event)
    return event


async def rollback_target(js: JetStreamContext) -> str:
    """The index that was active before the current one, if it is still kept."""
    state = await read_index_state(js)
    if state.active is None:
        raise IndexCommandError("no index is active")
    previous = state.indexes[state.active].previous
    if previous is None or previous not in state.indexes or not state.indexes[previous].live:
        raise IndexCommandError(f"{state.active} has no earlier index to return to (dropped or never switched)")
    return previous


async def drop_index(js: JetStreamContext, model: str, emit: Emit | None = None) -> IndexDropped:
    state = await read_index_state(js)
    index = state.indexes.get(model)
    if index is None or not index.live:
        raise IndexCommandError(f"no live index {model}")
    if state.active == model:
        raise IndexCommandError(f"{model} is the active index: activate another one first")
    event = IndexDropped(event_id=f"index.dropped:{model}:{state.last_seq}", model=model)
    await (emit or _publisher(js))(event)
    await delete_index_durable(js, model)
    return event


REBUILD_MARK = "@"  # a rebuild of model M is the index "M@2", "M@3", ...: another name, the same model


def rebuild_target(state: IndexState) -> tuple[str, str, bool]:
    """A fresh index of the active index's own model: its name, its source, and whether it is already being
    built (a rebuild that was started and not finished is followed, not started twice).

    Why: an index keeps the vectors it was given. After an upgrade changes how chunks are embedded (the
    embedder's fingerprint carries the recipe), or after a model's files changed under the same name, the
    active index mixes two kinds of vectors; it cannot be dropped while it answers, so it is rebuilt beside
    itself under another name, by replay, and the switch is the usual gate."""
    if state.active is None:
        raise IndexCommandError("no index is active: nothing to rebuild")
    active = state.indexes[state.active]
    base = active.model.rsplit(REBUILD_MARK, 1)[0] if REBUILD_MARK in active.model else active.model
    source = active.source or active.model
    for index in state.indexes.values():
        if index.state == "building" and index.model.startswith(base + REBUILD_MARK) and index.source == source:
            return index.model, source, True
    taken, n = set(state.indexes), 2
    while f"{base}{REBUILD_MARK}{n}" in taken:  # dropped names too: a rebuild is always a new index
        n += 1
    return f"{base}{REBUILD_MARK}{n}", source, False


def _publisher(js: JetStreamContext) -> Emit:
    async def emit(event: Event) -> object:
        return await publish(js, event)
    return emit
