"""The projector: folds the streams into the read-model tables, exactly once.

For each (projection, source stream) it reads with an ephemeral, ack-less pull consumer that starts just
after the position stored in PostgreSQL, and writes each fetched batch's rows and the new position in one
transaction. The position in PostgreSQL is the only truth: kill the projector anywhere and it resumes
from the last committed batch; events at or below the position are skipped, so nothing is applied twice.
If the stored position moves backwards (a `ragbus replay` reset it), the reader starts over from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge

from projections import positions
from projections.base import APPLYING_SEQ, Projection, Source
from streams import subjects
from streams.events import decode_event
from streams.logs import correlated
from streams.topology import PROJECTION_UPDATED
from streams.tracing import span

log = logging.getLogger(__name__)

EVENTS_APPLIED = Counter("ragbus_projector_events_total", "Events folded into projections",
                         ["projection", "stream"])
EVENTS_SKIPPED = Counter("ragbus_projector_skipped_total", "Events skipped (already applied or unreadable)",
                         ["projection", "stream", "why"])

POSITION_AHEAD = Gauge("ragbus_projector_position_ahead_of_log",
                       "1 when a projection's stored position is past its stream's tail (replay needed)",
                       ["projection", "stream"])

BATCH = 256


class PositionMovedBack(Exception):
    """The stored position is behind what this reader applied: a replay reset it."""


class SourceReader:
    """Reads one stream for one projection and applies batches transactionally."""

    def __init__(self, projection: Projection, source: Source, nc: NATS, pool: asyncpg.Pool) -> None:
        self.projection = projection
        self.source = source
        self.nc = nc
        self.js = nc.jetstream()
        self.pool = pool
        self.position = 0  # the position this reader last read from or wrote to PostgreSQL
        self.caught_up_to = 0  # every message of the stream up to here has been seen by this reader

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await self._follow(stop)
            except PositionMovedBack:
                log.info("%s/%s: position was reset, reading the stream again", self.projection.name,
                         self.source.stream)
            except Exception as exc:  # noqa: BLE001 - a dropped table or a DB restart must not end the process
                failures += 1
                delay = min(0.5 * 2**failures, 15.0)
                log.error("%s/%s: %r; resuming from the stored position in %.1fs", self.projection.name,
                          self.source.stream, exc, delay)
                await asyncio.sleep(delay)
            else:
                failures = 0

    async def catch_up(self, until_seq: int) -> None:
        """Apply everything up to `until_seq`, then stop (used by `ragbus replay`)."""
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop))
        try:
            while self.caught_up_to < until_seq:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task

    async def _follow(self, stop: asyncio.Event) -> None:
        async with self.pool.acquire() as conn:
            self.position = await positions.read_position(conn, self.projection.name, self.source.stream)
        self.caught_up_to = 0
        tail = (await self.js.stream_info(self.source.stream)).state.last_seq
        POSITION_AHEAD.labels(self.projection.name, self.source.stream).set(int(self.position > tail))
        if self.position > tail:
            # The log is behind what was projected: it lost its tail (power loss with a lazy sync_interval)
            # or was recreated. New events would reuse sequence numbers this reader would skip as applied.
            log.error("%s/%s: stored position %d is past the stream's last message %d; the read model no longer "
                      "matches the log: run `ragbus replay --projection %s`", self.projection.name,
                      self.source.stream, self.position, tail, self.projection.name)
        sub = await self.js.pull_subscribe(
            "",
            stream=self.source.stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.position + 1,
                ack_policy=AckPolicy.NONE,
                filter_subjects=list(self.source.filter_subjects),
                inactive_threshold=60.0,  # the server removes it if this projector dies
                mem_storage=True,
            ),
        )
        try:
            while not stop.is_set():
                # The tail is read before the fetch: an empty fetch then proves everything up to it was seen.
                tail = (await self.js.stream_info(self.source.stream)).state.last_seq
                try:
                    msgs = await sub.fetch(batch=BATCH, timeout=1.0)
                except TimeoutError:  # nats raises its own or asyncio's, depending on the path
                    await self._check_not_reset()
                    self.caught_up_to = max(self.caught_up_to, tail)
                    continue
                await self._apply_batch(msgs)
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone at shutdown
                await sub.unsubscribe()

    async def _notify(self, correlation_ids: set[str]) -> None:
        """After commit, a core NATS notification per document/query whose rows changed, so the gateway can
        push fresh status to browsers instead of polling. Not an event: nothing stores it, losing one is
        harmless (the next one, or a GET, shows the same rows)."""
        for cid in correlation_ids:
            await self.nc.publish(subjects.subject(PROJECTION_UPDATED, self.projection.name, cid))

    async def _check_not_reset(self) -> None:
        async with self.pool.acquire() as conn:
            stored = await positions.read_position(conn, self.projection.name, self.source.stream)
        if stored < self.position:
            raise PositionMovedBack
        self.position = stored

    async def _apply_batch(self, msgs: list) -> None:
        name, stream = self.projection.name, self.source.stream
        started = time.perf_counter()
        touched: set[str] = set()
        async with self.pool.acquire() as conn, conn.transaction():
            # One batch at a time per projection, across its streams: otherwise a chunk batch and the deletion
            # of its document, committed concurrently, can each miss the other's rows (read committed).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
            stored = await positions.lock_position(conn, name, stream)
            if stored < self.position:
                raise PositionMovedBack
            last = stored
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq <= last:
                    EVENTS_SKIPPED.labels(name, stream, "already_applied").inc()
                    continue
                last = seq
                try:
                    event = decode_event(msg.data, msg.subject)
                except ValueError as exc:
                    # Unreadable events are not ours to fix here; skipping keeps every other read model alive.
                    log.error("%s/%s #%d: unreadable event skipped: %s", name, stream, seq, exc)
                    EVENTS_SKIPPED.labels(name, stream, "unreadable").inc()
                    continue
                try:
                    # a savepoint: one event the table refuses is only that event
                    with correlated(event.correlation_id), span(
                            f"{name} apply {event.type}", msg.headers,  # a child of the event's publish
                            attributes={"ragbus.projection": name, "ragbus.stream_seq": seq}):
                        async with conn.transaction():
                            token = APPLYING_SEQ.set(seq)
                            try:
                                await self.projection.apply(conn, event)
                            finally:
                                APPLYING_SEQ.reset(token)
                except asyncpg.DataError as exc:
                    # Values PostgreSQL can never store (a NUL in text, say): retrying cannot help, and
                    # stopping here would stop the read model for good; skipped loudly instead.
                    log.error("%s/%s #%d: %s refused by the read model, skipped: %s", name, stream, seq,
                              event.type, exc)
                    EVENTS_SKIPPED.labels(name, stream, "refused").inc()
                    continue
                touched.add(event.correlation_id)
                EVENTS_APPLIED.labels(name, stream).inc()
            if last > stored:
                await positions.save_position(conn, name, stream, last)
        self.position = last
        self.caught_up_to = max(self.caught_up_to, last)
        await self._notify(touched)
        log.debug("%s/%s: %d events to #%d in %.1f ms", name, stream, len(msgs), last,
                  (time.perf_counter() - started) * 1000)


class Projector:
    """Runs every (projection, source) reader until stopped."""

    def __init__(self, projections: list[Projection], nc: NATS, pool: asyncpg.Pool) -> None:
        self.readers = [SourceReader(p, s, nc, pool) for p in projections for s in p.sources]

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(r.run(stop) for r in self.readers))

    async def catch_up(self) -> None:
        targets = [(r, (await r.js.stream_info(r.source.stream)).state.last_seq) for r in self.readers]
        await asyncio.gather(*(r.catch_up(seq) for r, seq in targets))
