"""Event models: the payload half of the event contract.

Every event is a frozen pydantic model serialised as plain JSON, so `nats sub` shows something a person can
read. Names are past-tense facts. `event_id` is deterministic (derived from what caused the event), and is
sent as `Nats-Msg-Id`: a retried handler republishes the same id and JetStream drops the copy.
Read side is tolerant: unknown fields are ignored, so adding a field is not a breaking change; a breaking
change is a new `schema_version`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from streams import subjects


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    SUBJECT: ClassVar[str]
    type: str
    event_id: str
    occurred_at: datetime = Field(default_factory=_now)
    correlation_id: str  # the doc_id or query_id this event is about: `nats sub '*.*.<id>'` follows one
    causation_id: str | None = None  # event_id of the event that caused this one
    schema_version: int = 1

    def subject(self) -> str:
        return subjects.subject(self.SUBJECT, self.correlation_id)


# ---------------------------------------------------------------- documents


class DocumentUploaded(Event):
    SUBJECT = subjects.DOCUMENT_UPLOADED
    type: Literal["document.uploaded"] = "document.uploaded"
    doc_id: str  # sha256 prefix of the bytes: the same bytes are the same document
    upload_id: str  # doc_id + generation: a document deleted and uploaded again is a new upload
    generation: int = 0
    name: str
    sha256: str
    size: int
    doc_type: str  # sniffed from the bytes, not the client's claim
    object_name: str  # key in the Object Store bucket "documents"
    metadata: dict[str, Any] = Field(default_factory=dict)
    version: int = 1  # 1 + the version of the document with the same name that this upload supersedes
    supersedes: str | None = None  # doc_id of that previous version; its chunks leave the index

    @staticmethod
    def id_for(upload_id: str) -> str:
        return f"document.uploaded:{upload_id}"


class DocumentParsed(Event):
    SUBJECT = subjects.DOCUMENT_PARSED
    type: Literal["document.parsed"] = "document.parsed"
    doc_id: str
    upload_id: str
    name: str
    doc_type: str
    title: str | None = None
    author: str | None = None
    pages: int | None = None
    chunk_count: int
    batch_count: int
    chars: int = 0


class DocumentFailed(Event):
    SUBJECT = subjects.DOCUMENT_FAILED
    type: Literal["document.failed"] = "document.failed"
    doc_id: str
    upload_id: str
    name: str
    stage: str  # parse | embed
    reason: str  # a readable sentence for the user


class DocumentDeleted(Event):
    SUBJECT = subjects.DOCUMENT_DELETED
    type: Literal["document.deleted"] = "document.deleted"
    doc_id: str
    upload_id: str  # the upload whose chunks leave the index
    superseded_by: str | None = None  # set when a new version of the same name replaced it


# ---------------------------------------------------------------- chunks


class Chunk(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    chunk_id: str
    ordinal: int
    text: str
    page: int | None = None
    section: list[str] = Field(default_factory=list)
    char_start: int
    char_end: int


class EmbeddedChunk(Chunk):
    embedding: list[float]


class ChunksReady(Event):
    SUBJECT = subjects.CHUNKS_READY
    type: Literal["chunks.ready"] = "chunks.ready"
    doc_id: str
    upload_id: str
    name: str
    doc_type: str
    batch: int  # chunks travel in batches so one event stays well under the server's max_payload
    batch_count: int
    chunk_count: int
    chunks: list[Chunk]


class ChunksEmbedded(Event):
    SUBJECT = subjects.CHUNKS_EMBEDDED
    type: Literal["chunks.embedded"] = "chunks.embedded"
    doc_id: str
    upload_id: str
    name: str
    doc_type: str
    model: str
    dim: int
    batch: int
    batch_count: int
    chunk_count: int
    embedded_texts: int = 0  # distinct texts actually run through the model (identical chunks: once)
    chunks: list[EmbeddedChunk]

    def subject(self) -> str:
        return subjects.subject(self.SUBJECT, self.model, self.correlation_id)


# ---------------------------------------------------------------- queries and answers


class Turn(BaseModel):
    """One earlier question and its answer in the same conversation."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    question: str
    answer: str


class QueryAsked(Event):
    SUBJECT = subjects.QUERY_ASKED
    type: Literal["query.asked"] = "query.asked"
    query_id: str
    question: str
    top_k: int = 5
    filters: dict[str, Any] = Field(default_factory=dict)  # doc_ids, names, tags, doc_types
    threshold: float | None = None  # minimum dense similarity; None: the retriever's configured default
    session_id: str | None = None
    history: list[Turn] = Field(default_factory=list)  # earlier turns of the session, oldest first, bounded
    generate: bool = True  # False: retrieval only (POST /search), no answer is generated


class QueryCancelled(Event):
    """The user pressed Stop: a generator streaming this answer stops and completes it as it stands."""

    SUBJECT = subjects.QUERY_CANCELLED
    type: Literal["query.cancelled"] = "query.cancelled"
    query_id: str


class QueryCondensed(Event):
    """A follow-up question rewritten, with its conversation, into a question that stands alone."""

    SUBJECT = subjects.QUERY_CONDENSED
    type: Literal["query.condensed"] = "query.condensed"
    asked: QueryAsked
    standalone_question: str
    condense_ms: float = 0.0


class Passage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    n: int  # the number the prompt shows, [n] in the answer
    chunk_id: str
    doc_id: str
    name: str
    page: int | None = None
    section: list[str] = Field(default_factory=list)
    text: str
    score: float  # dense (cosine) similarity to the question: comparable across queries
    scores: dict[str, float] = Field(default_factory=dict)  # dense, keyword, fused (reciprocal rank fusion)


class ContextBuilt(Event):
    SUBJECT = subjects.CONTEXT_BUILT
    type: Literal["context.built"] = "context.built"
    query_id: str
    question: str
    standalone_question: str | None = None  # what retrieval searched for, when it differs from the question
    session_id: str | None = None
    history: list[Turn] = Field(default_factory=list)
    generate: bool = True
    passages: list[Passage]
    embedding_model: str
    timings: dict[str, float] = Field(default_factory=dict)  # condense_ms, embed_ms, search_ms


class AnswerToken(Event):
    SUBJECT = subjects.ANSWER_TOKEN
    type: Literal["answer.token"] = "answer.token"
    query_id: str
    seq: int  # 0, 1, 2 ... so a reader can tell a gap or a repeat
    text: str


class Citation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    n: int
    chunk_id: str
    doc_id: str
    name: str
    page: int | None = None
    text: str
    score: float


class AnswerCompleted(Event):
    SUBJECT = subjects.ANSWER_DONE
    type: Literal["answer.done"] = "answer.done"
    query_id: str
    question: str
    session_id: str | None = None
    answer: str
    citations: list[Citation]
    sources: list[Citation] = Field(default_factory=list)  # every passage the model was shown
    timings: dict[str, float] = Field(default_factory=dict)
    model: str
    generator: str  # which generator replica answered: load spreading is visible in the log
    tokens: int = 0
    stopped: bool = False  # cancelled by the user: `answer` is what had been generated by then


class AnswerFailed(Event):
    SUBJECT = subjects.ANSWER_FAILED
    type: Literal["answer.failed"] = "answer.failed"
    query_id: str
    message: str
    stage: str  # retrieval | generation
    question: str = ""
    session_id: str | None = None


class AnswerRated(Event):
    """A user's thumbs up or down on an answer."""

    SUBJECT = subjects.ANSWER_RATED
    type: Literal["answer.rated"] = "answer.rated"
    query_id: str
    rating: Literal["up", "down"]
    comment: str = ""


class DeadLettered(Event):
    """A message that could not be processed; kept with the reason and the original bytes."""

    SUBJECT = subjects.DEADLETTER
    type: Literal["deadletter"] = "deadletter"
    original_subject: str
    original_stream: str
    original_seq: int
    consumer: str
    reason: str
    deliveries: int
    payload: str

    def subject(self) -> str:
        return subjects.subject(self.SUBJECT, self.original_stream, self.consumer)


class DeadLetterRetried(Event):
    """`ragbus deadletters retry` republished the original message of a dead letter."""

    SUBJECT = subjects.DEADLETTER_RETRIED
    type: Literal["deadletter.retried"] = "deadletter.retried"
    deadletter_seq: int
    original_stream: str
    original_seq: int


EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        DocumentUploaded,
        DocumentParsed,
        DocumentFailed,
        DocumentDeleted,
        ChunksReady,
        ChunksEmbedded,
        QueryAsked,
        QueryCondensed,
        QueryCancelled,
        ContextBuilt,
        AnswerToken,
        AnswerCompleted,
        AnswerFailed,
        AnswerRated,
        DeadLettered,
        DeadLetterRetried,
    )
}


def decode_event(data: bytes) -> Event:
    """Parse any ragbus event from its JSON bytes (used by projections and tools that read every type)."""
    import json

    raw = json.loads(data)
    cls = EVENT_TYPES.get(raw.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {raw.get('type')!r}")
    return cls.model_validate(raw)
