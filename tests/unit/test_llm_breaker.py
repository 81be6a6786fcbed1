"""A down LLM server gives a quick, clear error (circuit breaker), against a real closed port."""

from __future__ import annotations

import time

import pytest

from agents.generator.llm import ChatClient, CircuitBreaker, LLMUnavailable
from ragbus.servers import free_port


async def test_down_server_fails_within_seconds_then_instantly():
    client = ChatClient(f"http://127.0.0.1:{free_port()}/v1", "m", retries=2,
                        breaker=CircuitBreaker(threshold=3, cooldown=30))
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="unavailable"):
        await client.complete([{"role": "user", "content": "hi"}], 8)
    assert time.monotonic() - started < 5  # three quick attempts, then the circuit opens
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="next try in"):
        await client.complete([{"role": "user", "content": "hi"}], 8)
    assert time.monotonic() - started < 0.1
    await client.close()


def test_breaker_half_opens_after_the_cooldown_and_closes_on_success(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    breaker = CircuitBreaker(threshold=2, cooldown=10)
    breaker.failure()
    breaker.check()  # one failure: still closed
    breaker.failure()
    with pytest.raises(LLMUnavailable):
        breaker.check()
    now[0] += 11
    breaker.check()  # half-open: one trial call is allowed
    breaker.success()
    assert not breaker.is_open and breaker.failures == 0


def test_breaker_stays_tripped_until_a_call_succeeds(monkeypatch):
    """What ragbus_llm_breaker_open shows: open, and half-open after the cooldown, until a success."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    breaker = CircuitBreaker(threshold=1, cooldown=10)
    assert not breaker.tripped
    breaker.failure()
    assert breaker.tripped and breaker.is_open
    now[0] += 11
    assert breaker.tripped and not breaker.is_open  # half-open: the server has not answered yet
    breaker.success()
    assert not breaker.tripped
