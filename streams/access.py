"""Who may do what on the bus: one NATS user per agent, each allowed only its own subjects and the JetStream
API calls of its own consumers. Least privilege, derived from the topology, so a new durable or event of an
agent is a change here and nowhere else.

An agent's credentials cannot publish another agent's events (the parser cannot say document.deleted, no
one but a generator can say answer.done), cannot touch other consumers' API subjects beyond reading what it
needs, and cannot create, delete or purge a stream: only `admin` (the CLI) can. Replies come to a per-user
inbox prefix (`_INBOX_<user>`), so one agent cannot read another's API replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from streams import subjects
from streams.events import (
    AnswerCompleted,
    AnswerFailed,
    AnswerRated,
    AnswerTokenGenerated,
    ChunksEmbedded,
    ContextBuilt,
    DeadLettered,
    DeadLetterRetried,
    DocumentChunked,
    DocumentDeleted,
    DocumentFailed,
    DocumentParsed,
    DocumentUploaded,
    Event,
    QueryAsked,
    QueryCancelled,
    QueryCondensed,
)
from streams.topology import (
    ANSWERS,
    CHUNKS,
    CONDENSER,
    DOCUMENTS,
    DOCUMENTS_BUCKET,
    DURABLES,
    EMBEDDER_FOLLOWUPS,
    EMBEDDER_QUERIES,
    EMBEDDING_MODELS,
    GENERATOR,
    INDEX,
    INDEX_ADVISORIES,
    INDEXES,
    KEYS,
    LEGACY_EMBEDDER_CHUNKS,
    PARSER,
    PROJECTION_UPDATED,
    QUERIES,
    STREAMS,
    TOKENS,
    Durable,
    advisories_of,
    index_durable,
)

API = "$JS.API"
OBJECTS = f"OBJ_{DOCUMENTS_BUCKET}"  # the Object Store bucket's stream
# The durables that a role scanning their stream (its grants name its own consumers by wildcard: it names its
# ephemeral ones itself) must still not pull from, reconfigure or delete, unless they are its own. The index
# durables of models outside the catalogue are not known here.
KNOWN_DURABLES: tuple[tuple[str, str], ...] = (
    *((d.stream, d.name) for d in DURABLES),
    *((index_durable(m).stream, index_durable(m).name) for m in EMBEDDING_MODELS),
    (CHUNKS, LEGACY_EMBEDDER_CHUNKS),
)


def inbox_prefix(user: str) -> str:
    return f"_INBOX_{user}"


@dataclass(frozen=True)
class Role:
    user: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...] = ()
    everything: bool = False  # admin
    deny: tuple[str, ...] = ()  # publish subjects its allowed wildcards cover that are not its own (deny wins)

    def permissions(self) -> dict[str, object]:
        """The `permissions` block of this user in nats-server's configuration."""
        if self.everything:
            return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
        # STREAM.NAMES: nats.py finds the stream of a subject it is given without one (read-only, names only)
        publish = {"allow": sorted({f"{API}.INFO", f"{API}.STREAM.NAMES", *self.publish})}
        if self.deny:
            publish["deny"] = sorted(set(self.deny))
        return {"publish": publish, "subscribe": {"allow": sorted({f"{inbox_prefix(self.user)}.>", *self.subscribe})}}


@dataclass
class _Grants:
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    own: set[tuple[str, str]] = field(default_factory=set)  # (stream, durable) of its durables
    scanned: set[str] = field(default_factory=set)
    deny: list[str] = field(default_factory=list)

    def events(self, *events: type[Event]) -> _Grants:
        self.publish += [subjects.wildcard(e.SUBJECT) for e in events]
        return self

    def durable(self, *durables: Durable) -> _Grants:
        """Pull from these durables and settle what they deliver (the durable itself is declared by the CLI)."""
        for d in durables:
            self.own.add((d.stream, d.name))
            self.publish += [f"{API}.CONSUMER.MSG.NEXT.{d.stream}.{d.name}", f"{API}.CONSUMER.INFO.{d.stream}.{d.name}",
                             f"$JS.ACK.{d.stream}.{d.name}.>"]
        return self

    def worker(self, *durables: Durable) -> _Grants:
        """A worker: its durables, the durables of its gave-up advisories, the originals those point at, and
        dead letters."""
        self.durable(*durables, *(advisories_of(d) for d in durables))
        self.read(*{d.stream for d in durables})
        # deadletter.> covers the CLI's deadletter.retried, which would mark a dead letter as handled
        self.deny.append(subjects.wildcard(DeadLetterRetried.SUBJECT))
        return self.events(DeadLettered)

    def read(self, *streams: str) -> _Grants:
        """Read single messages (by sequence or last by subject) and the state of these streams."""
        for s in streams:
            self.publish += [f"{API}.STREAM.INFO.{s}", f"{API}.STREAM.MSG.GET.{s}", f"{API}.DIRECT.GET.{s}",
                             f"{API}.DIRECT.GET.{s}.>"]
        return self

    def scan(self, *streams: str) -> _Grants:
        """Read these streams through consumers of its own (ephemeral or ordered), from any position."""
        self.read(*streams)
        self.scanned.update(streams)
        for s in streams:
            self.publish += [f"{API}.CONSUMER.CREATE.{s}", f"{API}.CONSUMER.CREATE.{s}.>",
                             f"{API}.CONSUMER.MSG.NEXT.{s}.>", f"{API}.CONSUMER.INFO.{s}.>",
                             f"{API}.CONSUMER.DELETE.{s}.>", f"$JS.FC.{s}.>"]
        return self

    def watch(self, *durables: Durable) -> _Grants:
        """Read the state of every stream and of these durables, never a message: the system metrics."""
        self.publish += [f"{API}.STREAM.INFO.{s}" for s in STREAMS]
        self.publish += [f"{API}.CONSUMER.INFO.{d.stream}.{d.name}" for d in durables]
        return self

    def listen(self, *subject_list: str) -> _Grants:
        self.subscribe += list(subject_list)
        return self

    def role(self, user: str) -> Role:
        # not the durables of other agents on the streams it scans: pulling their messages, changing their
        # configuration (a create with a durable's name updates it) or deleting them
        deny = [*self.deny, *(f"{API}.CONSUMER.{action}.{stream}.{name}{tail}"
                for stream, name in KNOWN_DURABLES if stream in self.scanned and (stream, name) not in self.own
                for action, tail in (("MSG.NEXT", ""), ("CREATE", ""), ("CREATE", ".>"), ("DELETE", "")))]
        return Role(user, tuple(dict.fromkeys(self.publish)), tuple(dict.fromkeys(self.subscribe)), deny=tuple(deny))


def _roles() -> dict[str, Role]:
    indexes = (f"{API}.CONSUMER.MSG.NEXT.{CHUNKS}.*", f"{API}.CONSUMER.INFO.{CHUNKS}.*", f"$JS.ACK.{CHUNKS}.*.>")
    roles = {
        "parser": _Grants().worker(PARSER).events(DocumentChunked, DocumentParsed, DocumentFailed)
        .scan(OBJECTS).role("parser"),
        "embedder": _Grants().worker(EMBEDDER_QUERIES, EMBEDDER_FOLLOWUPS).durable(INDEX_ADVISORIES).read(CHUNKS)
        .events(ChunksEmbedded, ContextBuilt, AnswerFailed, DocumentFailed).scan(INDEXES).role("embedder"),
        "generator": _Grants().worker(CONDENSER, GENERATOR).read(QUERIES)
        .events(AnswerTokenGenerated, AnswerCompleted, AnswerFailed, QueryCondensed)
        .listen(subjects.wildcard(QueryCancelled.SUBJECT)).role("generator"),
        "projector": _Grants().scan(DOCUMENTS, CHUNKS, ANSWERS, INDEXES).watch(*DURABLES)
        .events().role("projector"),
        "gateway": _Grants().events(DocumentUploaded, DocumentDeleted, QueryAsked, QueryCancelled, AnswerRated)
        .read(OBJECTS, DOCUMENTS, QUERIES, ANSWERS, INDEXES).scan(TOKENS, KEYS)
        .listen(*(subjects.wildcard(e.SUBJECT) for e in (AnswerTokenGenerated, AnswerCompleted, AnswerFailed,
                                                           ContextBuilt)), subjects.wildcard(PROJECTION_UPDATED))
        .role("gateway"),
        "admin": Role("admin", (), everything=True),
    }
    # what the grants helpers cannot say
    embedder = roles["embedder"]
    roles["embedder"] = replace(embedder, publish=(*embedder.publish, *indexes))
    projector = roles["projector"]
    roles["projector"] = replace(projector, publish=(*projector.publish, subjects.wildcard(PROJECTION_UPDATED)))
    gateway = roles["gateway"]
    roles["gateway"] = replace(gateway, publish=(
        *gateway.publish,
        f"$O.{DOCUMENTS_BUCKET}.>",  # uploads: the bytes (chunks and meta) into the bucket
        subjects.wildcard(INDEX),  # the re-index admin endpoints (index.started / activated / dropped)
        # ... which declare and drop the new index's durable, on CHUNKS only
        f"{API}.CONSUMER.CREATE.{CHUNKS}.>", f"{API}.CONSUMER.DURABLE.CREATE.{CHUNKS}.*",
        f"{API}.CONSUMER.INFO.{CHUNKS}.*", f"{API}.CONSUMER.DELETE.{CHUNKS}.*",
    ))
    return roles


ROLES: dict[str, Role] = _roles()
AGENT_ROLE = {"parser": "parser", "embedder": "embedder", "generator": "generator", "projector": "projector",
              "gateway": "gateway"}
