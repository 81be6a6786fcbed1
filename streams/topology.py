"""Streams, durable consumers and the Object Store bucket: declared here, once, by `ragbus streams declare`.

Agents bind to these durables; they never create or reconfigure a stream (FastStream would overwrite a
stream's config on start, and the last agent to start would win).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from streams import subjects
from streams.events import (
    AnswerCompleted,
    AnswerFailed,
    AnswerRated,
    AnswerTokenGenerated,
    ContextBuilt,
    DeadLettered,
    DocumentChunked,
    DocumentUploaded,
    Event,
    QueryAsked,
    QueryCancelled,
    QueryCondensed,
)

DOCUMENTS_BUCKET = "documents"
OBJECTS = f"OBJ_{DOCUMENTS_BUCKET}"  # the stream behind the Object Store bucket
MINUTE = 60.0
HOUR = 3600.0
DAY = 24 * HOUR

# Stream names: use these, never string literals.
DOCUMENTS = "DOCUMENTS"
CHUNKS = "CHUNKS"
QUERIES = "QUERIES"
ANSWERS = "ANSWERS"
TOKENS = "TOKENS"
DEADLETTER = "DEADLETTER"
INDEXES = "INDEXES"
KEYS = "KEYS"

# The embedding model of the first index, on a fresh system (`ragbus streams declare` activates it); every
# later switch is an index.activated event in the log. The packaged MiniLM as ONNX int8: the same retrieval
# quality as on torch (bench/models.py), ~4.9x the passages/s, and no torch in the embedder (~1/4 the memory).
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2-onnx-int8"
# The models every embedder can load or build from the packaged MiniLM, by name and dimension (their
# builders are agents/models.py; a test keeps the two in step). Any other model is a folder.
EMBEDDING_MODELS: dict[str, int] = {
    "all-MiniLM-L6-v2": 384,
    DEFAULT_EMBEDDING_MODEL: 384,
    "minilm-distilled-256": 256,
}

# Subjects that are not ragbus events (event subjects are the events' `SUBJECT`):
# a core-NATS notification, stored by no stream: a projection committed rows for <projection>.<id>
PROJECTION_UPDATED = "projection.updated"
# JetStream's own advisory when a message reached max_deliver without being settled (a worker that crashed
# or hung on it every time); the DEADLETTER stream captures these next to ragbus' own dead letters.
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
# Subject roots of the two streams that take a whole tree (document.* and chunks.*)
DOCUMENT = "document"
CHUNKS_PREFIX = "chunks"
INDEX = "index"
KEY = "key"


def _stream(name: str, subject_list: list[str], description: str, **kw: object) -> StreamConfig:
    return StreamConfig(
        name=name,
        subjects=subject_list,
        description=description,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        **kw,  # type: ignore[arg-type]
    )


def _all(*events: type[Event]) -> list[str]:
    return [subjects.wildcard(e.SUBJECT) for e in events]


# The durable streams keep everything: the log is the source of truth for every projection.
STREAMS: dict[str, StreamConfig] = {
    DOCUMENTS: _stream(
        DOCUMENTS,
        [subjects.wildcard(DOCUMENT)],
        "Document lifecycle: uploaded, parsed, failed, deleted",
        duplicate_window=HOUR,  # an upload retried within the hour is dropped by the server itself
    ),
    CHUNKS: _stream(
        CHUNKS,
        [subjects.wildcard(CHUNKS_PREFIX)],
        "Text chunks (chunks.ready) and their vectors per model (chunks.embedded)",
        duplicate_window=10 * MINUTE,
    ),
    QUERIES: _stream(
        QUERIES,
        _all(QueryAsked, QueryCondensed, QueryCancelled, ContextBuilt),
        "Questions, follow-ups rewritten to stand alone, cancellations, and the retrieved context for each",
        duplicate_window=10 * MINUTE,
    ),
    ANSWERS: _stream(
        ANSWERS,
        _all(AnswerCompleted, AnswerFailed, AnswerRated),
        "Completed answers with citations and timings, the reason an answer failed, and users' ratings",
        duplicate_window=10 * MINUTE,
    ),
    # Tokens are only needed while an answer streams and for a client that reconnects; answer.done keeps
    # the full text forever, so tokens may expire.
    TOKENS: _stream(
        TOKENS,
        _all(AnswerTokenGenerated),
        "One event per streamed answer token (expires after a day; answer.done keeps the text)",
        duplicate_window=10 * MINUTE,
        max_age=DAY,
    ),
    INDEXES: _stream(
        INDEXES,
        [subjects.wildcard(INDEX)],
        "Embedding indexes: started (a re-index), compared, activated (the switch), dropped",
        duplicate_window=HOUR,
    ),
    KEYS: _stream(
        KEYS,
        [subjects.wildcard(KEY)],
        "Gateway API keys: created (name, scopes, the secret's hash) and revoked",
        duplicate_window=HOUR,
    ),
    DEADLETTER: _stream(
        DEADLETTER,
        [subjects.wildcard(DeadLettered.SUBJECT), subjects.wildcard(MAX_DELIVERIES_ADVISORY)],
        "Messages that exhausted their deliveries: ragbus dead letters (reason + original payload) and "
        "JetStream max-deliveries advisories (a worker died on the message every time)",
        duplicate_window=10 * MINUTE,
    ),
}


def stream_for(subject: str) -> str:
    """The stream that stores `subject` (publishers find their stream here, never by a literal)."""
    for name, config in STREAMS.items():
        if any(subjects.matches(pattern, subject) for pattern in config.subjects or ()):
            return name
    raise LookupError(f"no stream captures {subject!r}")


@dataclass(frozen=True)
class Durable:
    """A durable pull consumer shared by every replica of one agent (JetStream's queue group)."""

    stream: str
    name: str
    filter_subject: str
    ack_wait: float
    max_deliver: int
    backoff: tuple[float, ...] = ()
    max_ack_pending: int = 1000

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.name,
            name=self.name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            backoff=list(self.backoff) or None,
            filter_subject=self.filter_subject,
            max_ack_pending=self.max_ack_pending,
        )


# ack_wait bounds how long the work of a worker that died stays unseen: every worker sends in_progress every
# third of it while it works (streams.delivery.settle), so it can be short whatever the work's length.
WORK_ACK_WAIT = 15.0

PARSER = Durable(
    DOCUMENTS, "parser", subjects.wildcard(DocumentUploaded.SUBJECT),
    ack_wait=WORK_ACK_WAIT, max_deliver=4,
)

def index_slug(model: str) -> str:
    """A model name as an identifier (durable and table names): readable, and unique by a short hash."""
    readable = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:40]
    return f"{readable}_{hashlib.sha256(model.encode()).hexdigest()[:6]}"


def index_durable(model: str) -> Durable:
    """The embedders of one index share this durable over every chunks.ready, from the first one on: a new
    index replays the whole log through it, and keeps up with new uploads the same way."""
    return Durable(CHUNKS, f"embed-{index_slug(model)}", subjects.wildcard(DocumentChunked.SUBJECT),
                   ack_wait=WORK_ACK_WAIT, max_deliver=5)


# Before indexes had a durable each, one durable embedded for the only model; `declare` moves its position
# over to the default index's durable and deletes it.
LEGACY_EMBEDDER_CHUNKS = "embedder-chunks"
EMBEDDER_QUERIES = Durable(
    QUERIES, "embedder-queries", subjects.wildcard(QueryAsked.SUBJECT),
    ack_wait=WORK_ACK_WAIT, max_deliver=3,
)
EMBEDDER_FOLLOWUPS = Durable(
    QUERIES, "embedder-followups", subjects.wildcard(QueryCondensed.SUBJECT),
    ack_wait=WORK_ACK_WAIT, max_deliver=3,
)
# Follow-up questions (with history) are rewritten by the generator agent, which owns the LLM.
CONDENSER = Durable(
    QUERIES, "condenser", subjects.wildcard(QueryAsked.SUBJECT),
    ack_wait=WORK_ACK_WAIT, max_deliver=3, max_ack_pending=64,
)
GENERATOR = Durable(
    QUERIES, "generator", subjects.wildcard(ContextBuilt.SUBJECT),
    ack_wait=WORK_ACK_WAIT, max_deliver=3, max_ack_pending=64,
)


# Every index durable's gave-up advisories, in one durable (indexes come and go; the embedder reports a batch
# it died on for the active index as the document's failure)
INDEX_ADVISORIES = Durable(
    DEADLETTER, "embed-advisories", f"{MAX_DELIVERIES_ADVISORY}.{CHUNKS}.*",
    ack_wait=30.0, max_deliver=5,
)


def advisories_of(worker: Durable) -> Durable:
    """The durable through which an agent hears that one of its messages hit max_deliver unsettled, so it
    can still report the failure (document.failed / answer.failed) instead of leaving it silent."""
    return Durable(
        DEADLETTER, f"{worker.name}-advisories",
        f"{MAX_DELIVERIES_ADVISORY}.{worker.stream}.{worker.name}",
        ack_wait=30.0, max_deliver=5,
    )


WORK_DURABLES: tuple[Durable, ...] = (
    PARSER, EMBEDDER_QUERIES, EMBEDDER_FOLLOWUPS, CONDENSER, GENERATOR,
)
DURABLES: tuple[Durable, ...] = (WORK_DURABLES + tuple(advisories_of(d) for d in WORK_DURABLES)
                                 + (INDEX_ADVISORIES,))
