"""Publishing events: one helper so every event carries the same headers and a deterministic Nats-Msg-Id."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck

from streams.events import Event

HEADER_TYPE = "Ragbus-Event-Type"
HEADER_SCHEMA = "Ragbus-Schema-Version"
HEADER_CORRELATION = "Ragbus-Correlation-Id"
HEADER_CAUSATION = "Ragbus-Causation-Id"
MSG_ID = "Nats-Msg-Id"


def headers_for(event: Event) -> dict[str, str]:
    headers = {
        MSG_ID: event.event_id,
        HEADER_TYPE: event.type,
        HEADER_SCHEMA: str(event.schema_version),
        HEADER_CORRELATION: event.correlation_id,
        "Content-Type": "application/json",
    }
    if event.causation_id:
        headers[HEADER_CAUSATION] = event.causation_id
    return headers


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


async def publish(js: JetStreamContext, event: Event, timeout: float = 10.0) -> PubAck:
    """Publish and wait for the stream's ack. `ack.duplicate` is True when the server dropped a copy."""
    return await js.publish(event.subject(), encode(event), timeout=timeout, headers=headers_for(event))


async def publish_nowait(nc: NATS, event: Event) -> None:
    """Core publish into a stream-captured subject: persisted, deduplicated, but no round trip per message.

    Used for answer tokens, where waiting 1-2 ms per token for an ack would slow the stream; the final
    answer.done is published with `publish` and its ack is awaited, after a flush of everything before it.
    """
    await nc.publish(event.subject(), encode(event), headers=headers_for(event))
