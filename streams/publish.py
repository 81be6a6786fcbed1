"""Publishing events: every event carries the same headers and its deterministic id as Nats-Msg-Id.

`EventPublisher` is how agents publish: a FastStream publisher declared with the event's schema, so the
generated AsyncAPI document shows exactly what each agent publishes, bound to the stream that stores the
subject (found in `streams.topology`, never written as a literal). `publish` is the same for tools that
hold a plain JetStream context (the CLI). When traced, a `traceparent` header rides along (FastStream's
middleware adds it, `publish` injects it); dedup and `decode_event` look only at the id and the body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import nats.errors
import nats.js.errors
from faststream.nats import JStream, NatsBroker, NatsRouter
from nats.js import JetStreamContext
from nats.js.api import PubAck

from streams.connect import refused
from streams.events import Event
from streams.topology import stream_for
from streams.tracing import inject

HEADER_TYPE = "Ragbus-Event-Type"
HEADER_SCHEMA = "Ragbus-Schema-Version"
HEADER_CORRELATION = "Ragbus-Correlation-Id"
HEADER_CAUSATION = "Ragbus-Causation-Id"
MSG_ID = "Nats-Msg-Id"

log = logging.getLogger(__name__)
T = TypeVar("T")


def headers_for(event: Event) -> dict[str, str]:
    headers = {
        MSG_ID: event.event_id,
        HEADER_TYPE: event.type,
        HEADER_SCHEMA: str(event.schema_version),
        HEADER_CORRELATION: event.correlation_id,
    }
    if event.causation_id:
        headers[HEADER_CAUSATION] = event.causation_id
    return headers


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


# What a publish meets while a JetStream cluster elects a new stream leader (or the client reconnects to
# another server): no ack in time, nobody answering the stream's subject, "JetStream not available". The
# message may or may not be stored; sending it again is safe because its Nats-Msg-Id makes the stream drop
# a second copy, so a publish retries for this long before the caller sees the error.
RETRY_FOR = 30.0
EVENT_ATTEMPT_S = 15.0  # an event's publish, ack included (its own ack timeout is 10 s at most)
TRANSIENT: tuple[type[BaseException], ...] = (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                                               nats.js.errors.NoStreamResponseError,
                                               nats.js.errors.ServiceUnavailableError, asyncio.TimeoutError)


class PublishRefused(nats.errors.Error):
    """The server refused this login the subject (a permissions violation): sending again cannot help."""


async def with_retries(send: Callable[[], Awaitable[T]], what: str, subject: str | None = None,
                       attempt_s: float | None = None) -> T:
    deadline = asyncio.get_running_loop().time() + RETRY_FOR
    delay = 0.1
    while True:
        try:
            # attempt_s: a send that never returns (a connection that died under it) is retried like a timeout
            return await asyncio.wait_for(send(), attempt_s)
        except TRANSIENT as e:
            if subject is not None and refused(subject):
                raise PublishRefused(f"publishing {what}: NATS refused this login the subject {subject} "
                                     "(a permissions violation)") from e
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("publishing %s: %s; again in %.1f s (same Nats-Msg-Id: no duplicate)",
                        what, type(e).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def publish(js: JetStreamContext, event: Event, timeout: float = 10.0) -> PubAck:
    """Publish and wait for the stream's ack. `ack.duplicate` is True when the server dropped a copy."""
    headers = inject({**headers_for(event), "content-type": "application/json"})  # traceparent, when traced
    subject = event.subject()
    return await with_retries(lambda: js.publish(subject, encode(event), timeout=timeout, headers=headers),
                              event.event_id, subject, max(EVENT_ATTEMPT_S, timeout + 5))


class EventPublisher:
    """Publishes one event class through a FastStream publisher declared on an agent's router or broker.

    `wait_for_ack=False` publishes on core NATS into a stream-captured subject: stored and deduplicated,
    but without waiting for an ack per message (answer tokens: an ack per token costs 1-2 ms)."""

    def __init__(self, owner: NatsRouter | NatsBroker, cls: type[Event], description: str, *,
                 address: str | None = None, wait_for_ack: bool = True) -> None:
        self.cls = cls
        self.attempt_s = EVENT_ATTEMPT_S if wait_for_ack else None  # without an ack, nothing to wait for
        address = address or f"{cls.SUBJECT}.*"
        self.publisher = owner.publisher(
            address,
            stream=JStream(stream_for(address), declare=False) if wait_for_ack else None,
            title=f"{cls.SUBJECT} ({cls.__name__})",
            description=description,
            schema=cls,
        )

    async def __call__(self, event: Event) -> PubAck | None:
        if not isinstance(event, self.cls):
            raise TypeError(f"{type(event).__name__} is not {self.cls.__name__}")
        async def send() -> PubAck | None:
            ack = await self.publisher.publish(  # type: ignore[func-returns-value]  # a PubAck when stream is set
                event, subject=event.subject(), headers=headers_for(event), correlation_id=event.correlation_id)
            return cast("PubAck | None", ack)

        return await with_retries(send, event.event_id, event.subject(), self.attempt_s)
