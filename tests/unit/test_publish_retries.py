"""streams.publish.with_retries: what it retries and what it does not (no broker: the sends are stand-ins)."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import pytest

from streams import connect
from streams.publish import PublishRefused, with_retries


async def test_a_send_that_never_returns_is_abandoned_after_its_bound_and_sent_again() -> None:
    calls: list[float] = []

    async def send() -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            await asyncio.Event().wait()  # a connection that died under the publish: no ack, no error, ever
        return "stored"

    started = time.monotonic()
    assert await with_retries(send, "an event", attempt_s=0.2) == "stored"
    assert len(calls) == 2 and 0.2 <= calls[1] - started < 2.0


async def test_a_refused_subject_is_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect, "_REFUSED", set())
    await connect.note_refusal(nats.errors.Error('nats: permissions violation for publish to "document.deleted.x"'))
    calls = 0

    async def send() -> None:
        nonlocal calls
        calls += 1
        raise nats.errors.TimeoutError

    with pytest.raises(PublishRefused, match=r"document\.deleted\.x"):
        await with_retries(send, "a deletion", "document.deleted.x")
    assert calls == 1
    with pytest.raises(nats.errors.TimeoutError):  # another subject: an ordinary timeout, retried until the end
        monkeypatch.setattr("streams.publish.RETRY_FOR", 0.3)
        await with_retries(send, "a deletion", "document.deleted.y")
    assert calls > 2
