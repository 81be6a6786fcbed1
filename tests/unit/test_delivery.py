"""The settle policy at the heart of the delivery guarantees, on a fake message (no server): what is acked,
nak'ed with which delay, dead-lettered and terminated, and that long work keeps its message alive.

That a real nats-server then redelivers, stops at max_deliver and raises its advisory is shown by the
integration tests (tests/integration/test_ingest_trust.py)."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from faststream.nats import NatsRouter

from streams.delivery import PoisonMessage, Workers, _event_type, keep_alive, retry_delay, settle
from streams.events import DeadLettered, DocumentUploaded
from streams.topology import PARSER


@dataclass
class FakeMessage:
    """FastStream's NatsMessage as `settle` sees it: the settle calls, and nats.py's metadata underneath."""

    deliveries: int = 1
    seq: int = 42
    calls: list[tuple[str, float | None]] = field(default_factory=list)
    fail_in_progress: bool = False

    def __post_init__(self) -> None:
        self.raw_message = SimpleNamespace(
            subject="document.uploaded.d1", data=b'{"type": "document.uploaded"}',
            metadata=SimpleNamespace(num_delivered=self.deliveries, sequence=SimpleNamespace(stream=self.seq)))

    async def ack(self) -> None:
        self.calls.append(("ack", None))

    async def nack(self, delay: float | None = None) -> None:
        self.calls.append(("nack", delay))

    async def reject(self) -> None:
        self.calls.append(("term", None))

    async def in_progress(self) -> None:
        if self.fail_in_progress:
            raise ConnectionError("lost the server")
        self.calls.append(("in_progress", None))


class Recorder:
    def __init__(self) -> None:
        self.dead: list[DeadLettered] = []
        self.failures: list[str] = []

    async def dead_letter(self, event: DeadLettered) -> None:
        self.dead.append(event)

    async def on_dead(self, reason: str) -> None:
        self.failures.append(reason)


async def _ok() -> None:
    return None


def _raising(exc: Exception):
    async def work() -> None:
        raise exc
    return work


async def test_work_that_succeeds_is_acked_and_nothing_else():
    msg, rec = FakeMessage(), Recorder()
    await settle(msg, PARSER, rec.dead_letter, _ok, rec.on_dead)
    assert msg.calls == [("ack", None)]
    assert rec.dead == [] and rec.failures == []


async def test_poison_input_reports_dead_letters_and_terminates_on_the_first_delivery():
    msg, rec = FakeMessage(deliveries=1, seq=7), Recorder()
    await settle(msg, PARSER, rec.dead_letter, _raising(PoisonMessage("encrypted PDF")), rec.on_dead)
    assert msg.calls == [("term", None)]  # never retried
    assert rec.failures == ["encrypted PDF"]  # the owner's failure event comes first
    (letter,) = rec.dead
    assert (letter.reason, letter.original_seq, letter.original_stream, letter.consumer) == (
        "encrypted PDF", 7, "DOCUMENTS", "parser")
    assert letter.event_id == "deadletter:DOCUMENTS:parser:7" and letter.payload == '{"type": "document.uploaded"}'


@pytest.mark.parametrize("deliveries", [1, 2, PARSER.max_deliver - 1])
async def test_a_transient_failure_is_naked_with_a_growing_delay(deliveries):
    msg, rec = FakeMessage(deliveries=deliveries), Recorder()
    await settle(msg, PARSER, rec.dead_letter, _raising(TimeoutError("object store slow")), rec.on_dead)
    assert msg.calls == [("nack", retry_delay(deliveries))]
    assert rec.dead == [] and rec.failures == []


async def test_the_last_delivery_of_a_transient_failure_gives_up_with_a_dead_letter():
    msg, rec = FakeMessage(deliveries=PARSER.max_deliver), Recorder()
    await settle(msg, PARSER, rec.dead_letter, _raising(ConnectionError("db down")), rec.on_dead)
    assert msg.calls == [("term", None)]
    assert rec.failures == [f"gave up after {PARSER.max_deliver} attempts: ConnectionError: db down"]
    assert rec.dead[0].reason == rec.failures[0] and rec.dead[0].deliveries == PARSER.max_deliver


def test_retry_delays_grow_and_are_capped():
    delays = [retry_delay(n) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[0] == 2.0 and max(delays) == 60.0


async def test_keep_alive_sends_in_progress_while_the_work_runs_and_stops_after():
    msg = FakeMessage()
    async with keep_alive(msg, every=0.05):
        await asyncio.sleep(0.28)
    beats = len(msg.calls)
    assert 4 <= beats <= 6 and {c for c, _ in msg.calls} == {"in_progress"}
    await asyncio.sleep(0.15)
    assert len(msg.calls) == beats  # the heartbeat ended with the block


async def test_a_lost_heartbeat_does_not_stop_the_work():
    msg = FakeMessage(fail_in_progress=True)
    async with keep_alive(msg, every=0.02):
        await asyncio.sleep(0.1)
    await settle(msg, PARSER, Recorder().dead_letter, _ok)
    assert msg.calls == [("ack", None)]


async def test_a_declared_worker_settles_what_its_handler_does_with_the_arguments_faststream_injects():
    seen: list[tuple[str, str]] = []

    async def handler(event: DocumentUploaded, extra: str) -> None:
        seen.append((event.doc_id, extra))
        if extra == "bad":
            raise PoisonMessage("cannot be parsed")

    workers = Workers(NatsRouter(), "parser")
    rec = Recorder()
    workers.dead_letters = rec.dead_letter  # type: ignore[assignment]
    failed: list[tuple[str, str]] = []

    async def on_failure(event: DocumentUploaded, reason: str) -> None:
        failed.append((event.doc_id, reason))

    settled = workers._settled(handler, PARSER, on_failure)
    assert list(inspect.signature(settled).parameters) == ["event", "extra", "msg"]  # msg added for settling
    event = DocumentUploaded(event_id="e", doc_id="d1", upload_id="d1-0", name="a.pdf", sha256="s", size=1,
                             doc_type="pdf", object_name="s")
    good, bad = FakeMessage(), FakeMessage()
    await settled(event=event, extra="ok", msg=good)
    await settled(event=event, extra="bad", msg=bad)
    assert seen == [("d1", "ok"), ("d1", "bad")]
    assert good.calls == [("ack", None)] and bad.calls == [("term", None)]
    assert failed == [("d1", "cannot be parsed")] and rec.dead[0].reason == "cannot be parsed"


def test_a_worker_handler_must_name_its_event_type():
    async def untyped(event, msg) -> None: ...

    with pytest.raises(TypeError, match="annotated with an event class"):
        _event_type(untyped)
    assert _event_type(_typed_handler) is DocumentUploaded


async def _typed_handler(event: DocumentUploaded) -> None: ...
