"""The gateway's side of the bus: a FastStream broker whose declared publishers document (AsyncAPI) and send
what the gateway publishes, the Object Store bucket, and per-query subscriptions for the answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, PubAck
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from streams import subjects
from streams.connect import broker_options
from streams.events import (
    AnswerCompleted,
    AnswerFailed,
    AnswerRated,
    AnswerTokenGenerated,
    DocumentDeleted,
    DocumentUploaded,
    Event,
    IndexActivated,
    IndexDropped,
    IndexStarted,
    QueryAsked,
    QueryCancelled,
)
from streams.logs import broker_logging
from streams.metrics import metrics_middlewares
from streams.publish import EventPublisher, with_retries
from streams.settings import BusSettings
from streams.topology import ANSWERS, DOCUMENTS, DOCUMENTS_BUCKET, PROJECTION_UPDATED, QUERIES, TOKENS
from streams.tracing import tracing_middlewares

log = logging.getLogger(__name__)


def gateway_broker(settings: BusSettings) -> tuple[NatsBroker, dict[type[Event], EventPublisher]]:
    broker = NatsBroker(settings.servers, name="ragbus-gateway", max_reconnect_attempts=-1, reconnect_time_wait=1,
                        middlewares=(*tracing_middlewares("ragbus-gateway"), *metrics_middlewares("ragbus-gateway")),
                        **broker_logging(), **broker_options(settings))
    publishers = {
        DocumentUploaded: EventPublisher(
            broker, DocumentUploaded,
            "A document was uploaded; its bytes are in the Object Store bucket 'documents' under sha256."),
        DocumentDeleted: EventPublisher(broker, DocumentDeleted, "The document's current upload leaves the index."),
        QueryAsked: EventPublisher(
            broker, QueryAsked,
            "A user asked a question (web page, websocket, POST /ask), or searched (POST /search: generate "
            "false), with the earlier turns of the conversation."),
        AnswerRated: EventPublisher(broker, AnswerRated, "A user rated an answer up or down."),
        QueryCancelled: EventPublisher(broker, QueryCancelled,
                                       "A user stopped an answer; the generator streaming it stops."),
        IndexStarted: EventPublisher(broker, IndexStarted,
                                     "An admin started re-indexing into another embedding model (also `ragbus "
                                     "reindex --model`)."),
        IndexActivated: EventPublisher(broker, IndexActivated,
                                       "The switch (or rollback): this index answers queries from now on."),
        IndexDropped: EventPublisher(broker, IndexDropped, "An index that is not active was deleted."),
    }
    return broker, publishers


class Bus:
    def __init__(self, broker: NatsBroker, publishers: dict[type[Event], EventPublisher],
                 documents: ObjectStore) -> None:
        self.broker = broker
        self.publishers = publishers
        self.documents = documents

    @property
    def nc(self):
        return self.broker.connection

    @classmethod
    async def connect(cls, settings: BusSettings) -> Bus:
        broker, publishers = gateway_broker(settings)
        await broker.start()
        store = await broker.connection.jetstream().object_store(DOCUMENTS_BUCKET)
        return cls(broker, publishers, store)

    async def close(self) -> None:
        await self.broker.stop()

    async def store_bytes(self, name: str, data: bytes) -> None:
        """Content-addressed: bytes already stored under their sha256 are never written again (rewriting an
        object replaces its chunks, which would break a parser reading it at that moment). Retried through a
        stream leader change like any publish: a put cut off before its metadata left only unnamed chunks."""
        async def store() -> None:
            try:
                await self.documents.get_info(name)
            except ObjectNotFoundError:
                await self.documents.put(name, data)

        await with_retries(store, f"document bytes {name[:12]}")

    async def publish(self, event: Event) -> PubAck:
        ack = await self.publishers[type(event)](event)
        assert ack is not None
        return ack

    @asynccontextmanager
    async def watch(self, query_id: str, *bases: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Subscribe to one query's subjects (e.g. answer.token, answer.done) *before* anything is published
        for it, so nothing can be missed; yields a queue of the decoded events."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        wanted = {subjects.subject(base, query_id) for base in bases}

        async def on_msg(msg: Msg) -> None:
            # Only what was published on the subject itself. A push consumer's delivery arrives here under
            # its stream message's own subject (nats-server lets anyone who may create a consumer point its
            # deliver subject anywhere): an uploaded file's bytes made to look like an answer, say.
            if msg.subject not in wanted:
                log.warning("a message of %s delivered to this query's subjects ignored", msg.subject)
                return
            try:
                queue.put_nowait(json.loads(msg.data))
            except ValueError:
                log.warning("unreadable event on %s", msg.subject)

        subs = [await self.nc.subscribe(subject, cb=on_msg) for subject in sorted(wanted)]
        await self.nc.flush()
        try:
            yield queue
        finally:
            for sub in subs:
                await sub.unsubscribe()

    async def until_projected(self, projection: str, key: str, present: Callable[[], Awaitable[bool]],
                              timeout: float) -> bool:
        """Wait until `present()` holds (e.g. the answer's row exists), woken by the projector's commit
        notification for `key` instead of polling; False after `timeout`."""
        committed = asyncio.Event()

        async def on_commit(_: Msg) -> None:
            committed.set()

        sub = await self.nc.subscribe(subjects.subject(PROJECTION_UPDATED, projection, key), cb=on_commit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while not await present():  # checked after subscribing: a commit in between still wakes us
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                committed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(committed.wait(), remaining)
            return True
        finally:
            await sub.unsubscribe()

    async def stored_tokens(self, query_id: str) -> list[dict[str, Any]]:
        """Every answer.token of a query still in the TOKENS stream, in order (for a client that resumes)."""
        js = self.nc.jetstream()
        sub = await js.pull_subscribe(
            subjects.subject(AnswerTokenGenerated.SUBJECT, query_id), stream=TOKENS,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True),
        )
        tokens: list[dict[str, Any]] = []
        try:
            while True:
                pending = (await sub.consumer_info()).num_pending
                if not pending:
                    return tokens
                msgs = await sub.fetch(min(pending, 1000), timeout=5.0)
                tokens.extend(json.loads(m.data) for m in msgs)
        finally:
            await sub.unsubscribe()

    async def asked(self, query_id: str) -> dict[str, Any] | None:
        """The question's query.asked event, if it is in the log."""
        try:
            msg = await self.nc.jetstream().get_last_msg(QUERIES, subjects.subject(QueryAsked.SUBJECT, query_id))
        except NotFoundError:
            return None
        return json.loads(msg.data or b"{}")

    async def was_deleted(self, doc_id: str, upload_id: str) -> bool:
        """Whether this upload's document.deleted is in the log, projected or not yet (the read model lags)."""
        try:
            msg = await self.nc.jetstream().get_last_msg(DOCUMENTS, subjects.subject(DocumentDeleted.SUBJECT, doc_id))
        except NotFoundError:
            return False
        return json.loads(msg.data or b"{}").get("upload_id") == upload_id

    async def stored_outcome(self, query_id: str) -> dict[str, Any] | None:
        """The query's answer.done (or answer.failed) event from the ANSWERS stream, if it exists yet."""
        js = self.nc.jetstream()
        for base in (AnswerCompleted.SUBJECT, AnswerFailed.SUBJECT):
            try:
                msg = await js.get_last_msg(ANSWERS, subjects.subject(base, query_id))
            except NotFoundError:
                continue
            return json.loads(msg.data or b"{}")
        return None
