"""Event models: the payload half of the event contract.

Every event is a frozen pydantic model serialised as plain JSON, so `nats sub` shows something a person can
read. Class names are past-tense facts; the `type` literal is the wire name and the subject's first tokens
(the five subjects the user named keep their names: document.uploaded, chunks.ready, query.asked,
context.built, answer.token). `event_id` is deterministic (derived from what caused the event) and is sent
as `Nats-Msg-Id`: a retried handler republishes the same id and JetStream drops the copy.

Events belong to an aggregate: a document (`doc_id`) or a query (`query_id`); the base classes derive
`correlation_id` from it, and `Event.caused_by(cause, ...)` sets `causation_id` and carries the aggregate's
identity over. Read side is tolerant: unknown fields are ignored, so adding a field is not a breaking
change; a breaking change is a new `schema_version`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from streams import subjects


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    SUBJECT: ClassVar[str]  # derived from the `type` literal
    IDENTITY: ClassVar[tuple[str, ...]] = ()  # fields `caused_by` carries over from the cause
    type: str
    event_id: str
    occurred_at: datetime = Field(default_factory=_now)
    # the doc_id or query_id this event is about (derived from it): `nats sub '*.*.<id>'` follows one
    correlation_id: str = ""
    causation_id: str | None = None  # event_id of the event that caused this one
    schema_version: int = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        default = cls.model_fields["type"].default
        if isinstance(default, str):
            cls.SUBJECT = default

    @classmethod
    def correlation_of(cls, data: dict[str, Any]) -> str | None:
        """The aggregate id an event of this class is about, from its fields (None: given explicitly)."""
        return None

    @model_validator(mode="before")
    @classmethod
    def _correlate(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("correlation_id"):
            derived = cls.correlation_of(data)
            if derived is not None:
                data = {**data, "correlation_id": derived}
        return data

    @model_validator(mode="after")
    def _correlated(self) -> Self:
        if not self.correlation_id:
            raise ValueError(f"{type(self).__name__} needs a correlation_id")
        return self

    @classmethod
    def caused_by(cls, cause: Event, **fields: Any) -> Self:
        """This event as the consequence of `cause`: its causation id, and the aggregate's identity fields
        (`IDENTITY`) taken from the cause unless given."""
        carried = {name: getattr(cause, name) for name in cls.IDENTITY
                   if name not in fields and name in cls.model_fields and hasattr(cause, name)}
        return cls(causation_id=cause.event_id, **carried, **fields)

    def subject(self) -> str:
        return subjects.subject(self.SUBJECT, self.correlation_id)


class DocumentEvent(Event):
    """A fact about one upload of a document (`doc_id` is the content address, `upload_id` the upload)."""

    IDENTITY = ("doc_id", "upload_id", "name")
    doc_id: str
    upload_id: str

    @classmethod
    def correlation_of(cls, data: dict[str, Any]) -> str | None:
        return data.get("doc_id")


class QueryEvent(Event):
    """A fact about one question: asked, rewritten, answered, rated."""

    IDENTITY = ("query_id", "session_id", "question", "owner")
    query_id: str
    # the API key that asked (its key_id); None on a gateway open to its own machine. Sessions and answers
    # belong to it: other keys cannot read, continue, resume, cancel or rate them.
    owner: str | None = None

    @classmethod
    def correlation_of(cls, data: dict[str, Any]) -> str | None:
        return data.get("query_id")


# ---------------------------------------------------------------- documents


class DocumentUploaded(DocumentEvent):
    type: Literal["document.uploaded"] = "document.uploaded"
    # doc_id: sha256 prefix of the bytes (the same bytes are the same document); upload_id: doc_id +
    # generation (a document deleted and uploaded again is a new upload)
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


class DocumentParsed(DocumentEvent):
    type: Literal["document.parsed"] = "document.parsed"
    name: str
    doc_type: str
    title: str | None = None
    author: str | None = None
    pages: int | None = None
    chunk_count: int
    batch_count: int
    chars: int = 0


class DocumentFailed(DocumentEvent):
    type: Literal["document.failed"] = "document.failed"
    name: str
    stage: str  # parse | embed
    reason: str  # a readable sentence for the user


class DocumentDeleted(DocumentEvent):
    type: Literal["document.deleted"] = "document.deleted"
    # upload_id: the upload whose chunks leave the index
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
    toc: bool = False  # mostly the document's own headings (a table of contents): kept, never retrieved


class EmbeddedChunk(Chunk):
    embedding: list[float]
    # The chunk's sentences (streams.sentences.split_sentences) as [start, end) offsets into its text, and a vector
    # for each, pooled from the chunk's own forward pass: `pack_vectors` rows (int8, base64). Empty in events from
    # before sentence vectors: retrieval then scores the chunk as one sentence.
    sentences: list[tuple[int, int]] = Field(default_factory=list)
    sentence_vectors: str = ""


class DocumentChunked(DocumentEvent):
    """One batch of a document's text chunks (travels on `chunks.ready`)."""

    type: Literal["chunks.ready"] = "chunks.ready"
    name: str
    doc_type: str
    batch: int  # chunks travel in batches so one event stays well under the server's max_payload
    batch_count: int
    chunk_count: int
    chunks: list[Chunk]


class ChunksEmbedded(DocumentEvent):
    type: Literal["chunks.embedded"] = "chunks.embedded"
    name: str
    doc_type: str
    model: str
    dim: int
    batch: int
    batch_count: int
    chunk_count: int
    embedded_texts: int = 0  # distinct texts actually run through the model (identical chunks: once; none the
    #                          embedder's cache had, e.g. a new version's unchanged chunks)
    fingerprint: str = ""  # of the model's files: vectors of one index must all come from the same model
    # the index build: the INDEXES position of its index.started (0: the initial index, never started); a model
    # dropped and started again is a new generation, and the old one's vectors never come back
    generation: int = 0
    chunks: list[EmbeddedChunk]

    def subject(self) -> str:
        return subjects.subject(self.SUBJECT, self.model, self.correlation_id)

    def build(self) -> int:
        """`generation`, or for events from before it was a field, the one in the event id
        (chunks.embedded:<model>:<generation>:<upload>:<batch>)."""
        if self.generation:
            return self.generation
        parts = self.event_id.split(":")
        return int(parts[-3]) if len(parts) >= 5 and parts[-3].isdigit() else 0


# ---------------------------------------------------------------- queries and answers


AnswerMode = Literal["generative", "extractive", "auto"]


class Turn(BaseModel):
    """One earlier question and its answer in the same conversation."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    question: str
    answer: str


class QueryAsked(QueryEvent):
    type: Literal["query.asked"] = "query.asked"
    question: str
    top_k: int = 5
    filters: dict[str, Any] = Field(default_factory=dict)  # doc_ids, names, tags, doc_types
    threshold: float | None = None  # minimum dense similarity; None: the retriever's configured default
    session_id: str | None = None
    history: list[Turn] = Field(default_factory=list)  # earlier turns of the session, oldest first, bounded
    generate: bool = True  # False: retrieval only (POST /search), no answer is generated
    debug: bool = False  # context.built then lists every candidate with its rank at each stage
    # generative | extractive | auto; None: the generator's configured default (RAGBUS_ANSWER_MODE)
    answer_mode: AnswerMode | None = None


class QueryCancelled(QueryEvent):
    """The user pressed Stop: a generator streaming this answer stops and completes it as it stands."""

    type: Literal["query.cancelled"] = "query.cancelled"


class QueryCondensed(QueryEvent):
    """A follow-up question rewritten, with its conversation, into a question that stands alone."""

    type: Literal["query.condensed"] = "query.condensed"
    asked: QueryAsked
    standalone_question: str
    condense_ms: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _query_id_from_asked(cls, data: Any) -> Any:
        # events written before query_id was a field of their own carry it inside `asked` only
        if isinstance(data, dict) and not data.get("query_id"):
            query_id = _asked_query_id(data.get("asked"))
            if query_id:
                data = {**data, "query_id": query_id}
        return data

    @classmethod
    def correlation_of(cls, data: dict[str, Any]) -> str | None:
        return data.get("query_id") or _asked_query_id(data.get("asked"))


def _asked_query_id(asked: Any) -> str | None:
    if isinstance(asked, QueryAsked):
        return asked.query_id
    return asked.get("query_id") if isinstance(asked, dict) else None


class SentenceScore(BaseModel):
    """A sentence of a passage, [start, end) in its text, and how similar it is to the question (cosine)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    start: int
    end: int
    score: float


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
    scores: dict[str, float] = Field(default_factory=dict)  # dense, sentence (its best), keyword, fused
    # each sentence of the text with its cosine similarity to the question (from the index's sentence vectors;
    # empty for chunks embedded before them): the generator cuts the prompt's passages by these
    sentences: list[SentenceScore] = Field(default_factory=list)


class ContextBuilt(QueryEvent):
    type: Literal["context.built"] = "context.built"
    question: str
    standalone_question: str | None = None  # what retrieval searched for, when it differs from the question
    session_id: str | None = None
    history: list[Turn] = Field(default_factory=list)
    generate: bool = True
    passages: list[Passage]
    embedding_model: str  # the index the passages come from
    timings: dict[str, float] = Field(default_factory=dict)  # condense_ms, embed_ms, search_ms
    # with debug: every candidate (chunk_id, name, dense/keyword/fused rank and score, what became of it)
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    answer_mode: AnswerMode | None = None  # as asked (query.asked); None: the generator's default


class AnswerTokenGenerated(QueryEvent):
    """One streamed piece of an answer (travels on `answer.token`)."""

    type: Literal["answer.token"] = "answer.token"
    seq: int  # 0, 1, 2 ... so a reader can tell a gap or a repeat
    text: str


class Citation(BaseModel):
    """A passage an answer cites. With `sentence` set (answers attributed after generation) it is one
    sentence's support: `score` is how well passage `n` supports sentence `sentence`; without it (older
    answers, and `sources`) it is a passage of the whole answer and `score` its retrieval similarity."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    n: int
    chunk_id: str
    doc_id: str
    name: str
    page: int | None = None
    text: str
    score: float
    sentence: int | None = None  # index into AnswerCompleted.sentences


class AnswerSentence(BaseModel):
    """One sentence of an answer and what supports it, decided after generation from context.built and the
    text alone (agents/generator/attribution.py), so a replay of the log decides the same."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    i: int
    start: int  # character offsets into AnswerCompleted.answer
    end: int
    text: str
    supported: bool
    score: float  # the best passage's support score, also when below the threshold
    best: int | None = None  # the n of that passage
    citations: list[int] = Field(default_factory=list)  # the n of every passage cited for it (supported only)
    markers: list[int] = Field(default_factory=list)  # the [n] the model itself wrote in it
    corrected: bool = False  # a marker of the model's was replaced by a passage that supports it better


class AnswerCompleted(QueryEvent):
    """The whole answer, once it has streamed (travels on `answer.done`)."""

    type: Literal["answer.done"] = "answer.done"
    question: str
    session_id: str | None = None
    answer: str
    citations: list[Citation]
    sources: list[Citation] = Field(default_factory=list)  # every passage the model was shown
    timings: dict[str, float] = Field(default_factory=dict)
    model: str
    embedding_model: str = ""  # the index the sources came from
    generator: str  # which generator replica answered: load spreading is visible in the log
    tokens: int = 0
    stopped: bool = False  # cancelled by the user: `answer` is what had been generated by then
    # what supports each sentence (empty: not attributed, e.g. "the documents do not cover this" or older events)
    sentences: list[AnswerSentence] = Field(default_factory=list)
    supported: bool | None = None  # at least one sentence is supported; None: not attributed
    answer_mode: AnswerMode = "generative"  # how `answer` was made (auto resolves to one of the two)
    requested_mode: AnswerMode | None = None  # what was asked for (or configured), when it was auto
    generated_answer: str | None = None  # the LLM's text as streamed, when `answer` differs (auto, a trimmed loop)
    truncated: bool = False  # the LLM stopped at the token limit (finish_reason "length")
    repeating: bool = False  # the LLM began looping: stopped there, `answer` ends where the repetition began
    notices: list[str] = Field(default_factory=list)  # said to the user: cut off, unsupported, why auto chose


class AnswerFailed(QueryEvent):
    type: Literal["answer.failed"] = "answer.failed"
    message: str
    stage: str  # retrieval | condense | generation
    question: str = ""
    session_id: str | None = None


class AnswerRated(QueryEvent):
    """A user's thumbs up or down on an answer."""

    type: Literal["answer.rated"] = "answer.rated"
    rating: Literal["up", "down"]
    comment: str = ""


# ---------------------------------------------------------------- embedding indexes


class IndexEvent(Event):
    """A fact about the embedding index of one model: one index (a vector table) per embedding model; the
    active one answers queries. Replaying these from the start ends on the same active index."""

    IDENTITY = ("model",)
    model: str  # the index's embedding model, as it appears in chunks.embedded.<model>.*

    @classmethod
    def correlation_of(cls, data: dict[str, Any]) -> str | None:
        return data.get("model")


class IndexStarted(IndexEvent):
    """A new index is being built beside the live one, by replaying every chunks.ready through embedders
    of its model (never re-parsing); new uploads reach it from then on too."""

    type: Literal["index.started"] = "index.started"
    source: str = ""  # how embedders load the model: a catalogue name (empty: the model name) or a folder path
    dim: int | None = None  # what the catalogue says; the vectors' own dimension travels in chunks.embedded
    previous: str | None = None  # the active index when this one was started


class IndexActivated(IndexEvent):
    """From now on queries are embedded with this model and searched in its index (the switch, or a
    rollback to an index kept until dropped)."""

    type: Literal["index.activated"] = "index.activated"
    previous: str | None = None  # the index that answered queries until now (rollback returns to it)
    forced: bool = False  # activated although the gate refused it
    live_chunks: int = 0  # the completeness check that let it through: chunks of the active index ...
    missing: int = 0  # ... and how many of them had no vector in this one
    reason: str = ""  # switch | rollback | rebuild | initial


class IndexCompared(IndexEvent):
    """An index compared with the active one on the questions users asked (from the log): the gate's
    evidence, kept in the log next to the switch it justified."""

    type: Literal["index.compared"] = "index.compared"
    baseline: str  # the active index it was compared with
    questions: int
    figures: dict[str, dict[str, float]] = Field(default_factory=dict)  # per index: overlap, hit rates ...


class IndexDropped(IndexEvent):
    """The index's vectors are deleted and its embedders stop; the chunks.embedded events stay in the log."""

    type: Literal["index.dropped"] = "index.dropped"


# ---------------------------------------------------------------- API keys


class KeyEvent(Event):
    """A fact about one gateway API key. The gateway folds these into the keys it accepts; the secret itself
    is never in the log, only its SHA-256 (a 256-bit random secret needs no slow hash)."""

    IDENTITY = ("key_id",)
    key_id: str

    @classmethod
    def correlation_of(cls, data: dict[str, Any]) -> str | None:
        return data.get("key_id")


class KeyCreated(KeyEvent):
    type: Literal["key.created"] = "key.created"
    name: str  # who or what holds it, for people reading `ragbus keys list`
    scopes: list[Literal["read", "write", "admin"]]
    secret_sha256: str


class KeyRevoked(KeyEvent):
    """From now on the key is refused everywhere (the gateway drops it from its ring within milliseconds)."""

    type: Literal["key.revoked"] = "key.revoked"
    reason: str = ""


# ---------------------------------------------------------------- dead letters


class DeadLettered(Event):
    """A message that could not be processed; kept with the reason and the original bytes."""

    type: Literal["deadletter"] = "deadletter"
    original_subject: str
    original_stream: str
    original_seq: int
    consumer: str
    reason: str
    deliveries: int
    payload: str

    @classmethod
    def correlation_of(cls, data: dict[str, Any]) -> str | None:
        return f"{data.get('original_stream')}-{data.get('original_seq')}"

    def subject(self) -> str:
        return subjects.subject(self.SUBJECT, self.original_stream, self.consumer)


class DeadLetterRetried(Event):
    """`ragbus deadletters retry` republished the original message of a dead letter."""

    type: Literal["deadletter.retried"] = "deadletter.retried"
    deadletter_seq: int
    original_stream: str
    original_seq: int

    @classmethod
    def correlation_of(cls, data: dict[str, Any]) -> str | None:
        return str(data.get("deadletter_seq"))


AnyEvent = Annotated[
    DocumentUploaded | DocumentParsed | DocumentFailed | DocumentDeleted | DocumentChunked | ChunksEmbedded
    | QueryAsked | QueryCondensed | QueryCancelled | ContextBuilt | AnswerTokenGenerated | AnswerCompleted
    | AnswerFailed | AnswerRated | IndexStarted | IndexActivated | IndexCompared | IndexDropped | KeyCreated
    | KeyRevoked | DeadLettered | DeadLetterRetried,
    Field(discriminator="type"),
]
_ANY_EVENT: TypeAdapter[Event] = TypeAdapter(AnyEvent)


def decode_event(data: bytes, subject: str | None = None) -> Event:
    """Parse any ragbus event from its JSON bytes in one pass (projections and tools that read every type).
    Raises a ValueError (pydantic's ValidationError) for bytes that are no known event, and for an event
    stored under a `subject` that is not its own: a push consumer can make nats-server deliver any stream's
    message (an uploaded file's bytes, say) into another stream, under the original subject, and nats-server
    does not check the consumer's deliver subject against its creator's permissions."""
    event = _ANY_EVENT.validate_json(data)
    if subject is not None and not subject.startswith(f"{event.SUBJECT}."):
        raise ValueError(f"a {event.type} event under the subject {subject!r}, not its own: not published as one")
    return event
