"""Reading a stretch of the log directly (tools: the comparison on logged questions, resuming clients)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from streams.events import Event, decode_event


async def read_events(js: JetStreamContext, stream: str, filter_subjects: list[str],
                      batch: int = 500) -> AsyncIterator[tuple[int, Event]]:
    """Every event of `stream` on these subjects that exists now, in order, with its stream sequence; an
    ephemeral ack-less consumer that the server forgets when done. Unreadable messages are skipped."""
    sub = await js.pull_subscribe(
        "", stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, filter_subjects=filter_subjects, inactive_threshold=30.0,
                              mem_storage=True))
    try:
        while pending := (await sub.consumer_info()).num_pending:
            for msg in await sub.fetch(min(pending, batch), timeout=5.0):  # never wait for more than exist
                with contextlib.suppress(ValueError):
                    yield msg.metadata.sequence.stream, decode_event(msg.data, msg.subject)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
