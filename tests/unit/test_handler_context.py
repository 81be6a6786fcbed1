"""Handlers get their objects (settings, models, the broker, the message) without a worker-thread hop each."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
import pytest
from faststream.nats import NatsBroker as Broker
from faststream.nats import TestNatsBroker

from streams.context import Context, NatsBroker, NatsMessage


async def test_context_parameters_are_resolved_on_the_event_loop(monkeypatch):
    async def no_threads(*args, **kwargs):
        raise AssertionError("a context parameter was resolved in a worker thread")

    broker = Broker()
    broker.context.set_global("settings", {"top_k": 5})
    seen = []

    @broker.subscriber("work")
    async def handler(body: dict, settings: Annotated[dict, Context("settings")], msg: NatsMessage,
                      bus: NatsBroker) -> None:
        seen.append((body, settings, msg.raw_message is not None, bus is broker))

    async with TestNatsBroker(broker) as test_broker:
        monkeypatch.setattr(anyio.to_thread, "run_sync", no_threads)
        await test_broker.publish({"n": 1}, "work")
    assert seen == [({"n": 1}, {"top_k": 5}, True, True)]


async def test_faststreams_own_context_would_hop(monkeypatch):
    """The check above can fail: FastStream's Context is resolved in a thread (why streams.context exists)."""
    from faststream import Context as FastStreamContext

    async def no_threads(*args, **kwargs):
        raise AssertionError("thread")

    broker = Broker()
    broker.context.set_global("settings", {})

    @broker.subscriber("work")
    async def handler(body: dict, settings: Annotated[dict, FastStreamContext("settings")]) -> None:
        pass

    async with TestNatsBroker(broker) as test_broker:
        monkeypatch.setattr(anyio.to_thread, "run_sync", no_threads)
        with pytest.raises(AssertionError, match="thread"):
            await test_broker.publish({"n": 1}, "work")
