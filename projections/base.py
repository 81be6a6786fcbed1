"""What a projection is: a name, the streams it folds, and `apply(conn, event)` inside the batch transaction."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from streams.events import Event

# The stream sequence of the event being applied (set by the projector around `apply`): the INDEXES position of
# an index.started is its generation, which the chunks.embedded events of that build carry.
APPLYING_SEQ: ContextVar[int] = ContextVar("applying_seq", default=0)


@dataclass(frozen=True)
class Source:
    """One stream a projection reads, narrowed to the subjects it cares about."""

    stream: str
    filter_subjects: tuple[str, ...]


class Projection(Protocol):
    name: str
    sources: tuple[Source, ...]

    async def apply(self, conn: asyncpg.Connection, event: Event) -> None:
        """Fold one event into the tables. Runs inside the transaction that also moves the position."""
