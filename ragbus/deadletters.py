"""`ragbus deadletters`: list what could not be processed, and retry it with one command after a fix.

The DEADLETTER stream holds two kinds of entries: ragbus' own `deadletter.*` events (reason + original
payload, written when a handler gave up) and JetStream's max-deliveries advisories (a worker died on the
message every time). Both point at the original message, which is still in its stream: a retry republishes
it to its original subject with a fresh Nats-Msg-Id, and records a `deadletter.retried` event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from streams.events import DeadLetterRetried
from streams.publish import publish
from streams.topology import DEADLETTER

ADVISORY_TYPE = "io.nats.jetstream.advisory.v1.max_deliver"


@dataclass
class DeadLetter:
    seq: int  # position in DEADLETTER
    at: datetime | None
    stream: str
    original_seq: int
    consumer: str
    subject: str
    reason: str
    deliveries: int
    retried: bool = False


async def list_dead_letters(js: JetStreamContext) -> list[DeadLetter]:
    try:
        info = await js.stream_info(DEADLETTER)
    except NotFoundError:
        return []
    letters: dict[int, DeadLetter] = {}
    retried: set[int] = set()
    if not info.state.messages:
        return []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        try:
            msg = await js.get_msg(DEADLETTER, seq)
        except NotFoundError:
            continue
        body = json.loads(msg.data or b"{}")
        kind = body.get("type")
        if kind == "deadletter":
            letters[seq] = DeadLetter(seq, _time(body.get("occurred_at")), body["original_stream"],
                                      body["original_seq"], body["consumer"], body["original_subject"],
                                      body["reason"], body["deliveries"])
        elif kind == ADVISORY_TYPE:
            letters[seq] = DeadLetter(seq, _time(body.get("timestamp")), body["stream"], body["stream_seq"],
                                      body["consumer"], "", "the worker never settled it (crashed, killed or hung)",
                                      body.get("deliveries", 0))
        elif kind == "deadletter.retried":
            retried.add(body["deadletter_seq"])
    for seq in retried:
        if seq in letters:
            letters[seq].retried = True
    return list(letters.values())


async def retry(js: JetStreamContext, letter: DeadLetter) -> str:
    """Republish the original message; returns its subject."""
    original = await js.get_msg(letter.stream, letter.original_seq)
    headers = dict(original.headers or {})
    headers["Nats-Msg-Id"] = f"{headers.get('Nats-Msg-Id', letter.original_seq)}:retry:{letter.seq}"
    await js.publish(original.subject, original.data or b"", headers=headers)
    await publish(js, DeadLetterRetried(
        event_id=f"deadletter.retried:{letter.seq}",
        deadletter_seq=letter.seq, original_stream=letter.stream, original_seq=letter.original_seq,
    ))
    return original.subject


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
