"""Publishing events: one helper so every event carries the same headers and a deterministic Nats-Msg-Id."""

from __future__ import annotations

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
    }
    if event.causation_id:
        headers[HEADER_CAUSATION] = event.causation_id
    return headers


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


async def publish(js: JetStreamContext, event: Event, timeout: float = 10.0) -> PubAck:
    """Publish and wait for the stream's ack. `ack.duplicate` is True when the server dropped a copy."""
    headers = {**headers_for(event), "content-type": "application/json"}
    return await js.publish(event.subject(), encode(event), timeout=timeout, headers=headers)
