"""The projector's core promise, tested in-process against real NATS and PostgreSQL with a projection that
is *not* idempotent (a counter), so only the position-in-the-same-transaction rule can keep it exact."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from nats.js.api import StreamConfig, SubjectTransform

from projections.base import Source
from projections.projector import Projector
from streams.events import AnswerTokenGenerated, Event

N = 300


class SimulatedCrash(BaseException):
    """Not an Exception: nothing in the projector may catch it, like a SIGKILL."""


class CountingProjection:
    name = "test-counter"
    sources = (Source("TESTLOG", ("answer.token.>",)),)

    def __init__(self, crash_after: int | None = None) -> None:
        self.crash_after = crash_after
        self.applied = 0

    async def apply(self, conn: asyncpg.Connection, event: Event) -> None:
        self.applied += 1
        if self.crash_after is not None and self.applied > self.crash_after:
            raise SimulatedCrash("in the middle of a batch")
        await conn.execute("UPDATE test_counter SET n = n + 1, seqs = seqs || $1::text", event.event_id)


@pytest.fixture
async def log_and_counter(js, pool):
    # published on test.N, stored as answer.token.testlog-N: an event is read only under its own subject
    # (streams.events.decode_event), and TOKENS owns answer.token.> for publishing
    await js.add_stream(StreamConfig(name="TESTLOG", subjects=["test.>"], subject_transform=SubjectTransform(
        src="test.*", dest="answer.token.testlog-{{wildcard(1)}}")))
    await pool.execute("DROP TABLE IF EXISTS test_counter")
    await pool.execute("CREATE TABLE test_counter (n int NOT NULL, seqs text[] NOT NULL)")
    await pool.execute("INSERT INTO test_counter VALUES (0, '{}')")
    await pool.execute("DELETE FROM projection_positions WHERE projection = 'test-counter'")
    for i in range(N):
        event = AnswerTokenGenerated(event_id=f"t:{i}", query_id="q", seq=i, text=str(i))
        await js.publish(f"test.{i % 7}", event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.event_id})
    yield
    await js.delete_stream("TESTLOG")
    await pool.execute("DROP TABLE test_counter")


async def _counted(pool) -> int:
    return await pool.fetchval("SELECT n FROM test_counter")


async def _position(js, pool) -> int:
    """Events covered by the stored position (the stream's sequence numbers start after earlier tests)."""
    first = (await js.stream_info("TESTLOG")).state.first_seq
    stored = await pool.fetchval("SELECT last_seq FROM projection_positions WHERE projection = 'test-counter'")
    return max((stored or 0) - first + 1, 0)


async def _run_until_caught_up(projection, nc, pool) -> None:
    await Projector([projection], nc, pool).catch_up()


async def test_crash_mid_batch_then_restart_applies_each_event_exactly_once(nc, js, pool, log_and_counter):
    crashing = CountingProjection(crash_after=130)  # mid-way through the first batch
    with pytest.raises(SimulatedCrash):
        await asyncio.wait_for(_run_until_caught_up(crashing, nc, pool), 30)
    assert await _counted(pool) == await _position(js, pool) < 130  # the failed batch left nothing behind

    partial = CountingProjection(crash_after=N - 20)  # earlier batches commit, the last one crashes mid-way
    with pytest.raises(SimulatedCrash):
        await asyncio.wait_for(_run_until_caught_up(partial, nc, pool), 30)
    n = await _counted(pool)
    assert 0 < n < N and n == await _position(js, pool)  # rows and position moved together

    await asyncio.wait_for(_run_until_caught_up(CountingProjection(), nc, pool), 30)
    n, seqs = await pool.fetchrow("SELECT n, seqs FROM test_counter")
    assert n == N and sorted(seqs) == sorted(f"t:{i}" for i in range(N))


async def test_two_projectors_at_once_still_apply_each_event_once(nc, js, pool, log_and_counter):
    await asyncio.wait_for(asyncio.gather(
        _run_until_caught_up(CountingProjection(), nc, pool),
        _run_until_caught_up(CountingProjection(), nc, pool),
    ), 60)
    assert await pool.fetchval("SELECT n FROM test_counter") == N


async def test_a_publish_retried_with_the_same_event_id_is_stored_once(js):
    await js.add_stream(StreamConfig(name="DEDUPTEST", subjects=["deduptest.>"], duplicate_window=60))
    try:
        event = AnswerTokenGenerated(event_id="answer.token:q1:0", query_id="q1", seq=0, text="hi")
        first = await js.publish("deduptest.q1", event.model_dump_json().encode(),
                                 headers={"Nats-Msg-Id": event.event_id})
        second = await js.publish("deduptest.q1", event.model_dump_json().encode(),
                                  headers={"Nats-Msg-Id": event.event_id})
        assert not first.duplicate and second.duplicate
        assert (await js.stream_info("DEDUPTEST")).state.messages == 1
    finally:
        await js.delete_stream("DEDUPTEST")


async def test_a_position_past_the_end_of_the_log_is_reported(nc, js, pool, log_and_counter, caplog):
    """After a power loss with a lazy fsync, the log can lose its tail; new events would then reuse sequence
    numbers the projection believes it applied. The projector must say so, loudly."""
    await pool.execute("INSERT INTO projection_positions (projection, stream, last_seq) VALUES ('test-counter', "
                       "'TESTLOG', $1) ON CONFLICT (projection, stream) DO UPDATE SET last_seq = $1", N + 1000)
    with caplog.at_level("ERROR", logger="projections.projector"):
        await asyncio.wait_for(_run_until_caught_up(CountingProjection(), nc, pool), 30)
    assert any("past the stream's last message" in r.getMessage() for r in caplog.records)
    assert await _counted(pool) == 0  # nothing was applied behind the user's back
