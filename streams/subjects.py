"""Subject names: the routing half of the event contract.

The five subjects the user named keep exactly their names (document.uploaded, chunks.ready, query.asked,
context.built, answer.token); the last token of every subject is the id the event is about, so a person can
`nats sub 'answer.token.<query_id>'` and see one answer stream by.
"""

from __future__ import annotations

import re

DOCUMENT_UPLOADED = "document.uploaded"
DOCUMENT_PARSED = "document.parsed"
DOCUMENT_FAILED = "document.failed"
DOCUMENT_DELETED = "document.deleted"
CHUNKS_READY = "chunks.ready"
CHUNKS_EMBEDDED = "chunks.embedded"
QUERY_ASKED = "query.asked"
QUERY_CONDENSED = "query.condensed"
QUERY_CANCELLED = "query.cancelled"
CONTEXT_BUILT = "context.built"
ANSWER_TOKEN = "answer.token"
ANSWER_DONE = "answer.done"
ANSWER_FAILED = "answer.failed"
ANSWER_RATED = "answer.rated"
DEADLETTER = "deadletter"
# core-NATS notification (not stored by any stream): a projection committed rows for <projection>.<id>
PROJECTION_UPDATED = "projection.updated"
DEADLETTER_RETRIED = "deadletter.retried"
# JetStream's own advisory when a message reached max_deliver without being settled (a worker that crashed
# or hung on it every time); the DEADLETTER stream captures these next to ragbus' own dead letters.
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def token(value: str) -> str:
    """Make a value safe as one subject token: NATS tokens cannot hold '.', '*', '>' or whitespace."""
    if _TOKEN.match(value):
        return value
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)


def subject(base: str, *ids: str) -> str:
    return ".".join([base, *(token(i) for i in ids)])


def wildcard(base: str) -> str:
    return f"{base}.>"
