"""Thin handlers: chunks.ready -> chunks.embedded; query.asked -> context.built."""

from __future__ import annotations

import asyncio
import logging
import time

from faststream import AckPolicy
from faststream.nats import NatsMessage

from agents.embedder.app import app, broker, settings
from agents.embedder.service import Embedder
from projections.retrieval import HybridSearch
from projections.views import create_pool
from streams.agent import (
    EventPublisher,
    dead_letter_publisher,
    durable_subscription,
    report_gave_up,
    require_durables,
)
from streams.delivery import keep_alive, settle
from streams.events import (
    AnswerFailed,
    ChunksEmbedded,
    ChunksReady,
    ContextBuilt,
    DocumentFailed,
    EmbeddedChunk,
    Passage,
    QueryAsked,
    QueryCondensed,
)
from streams.topology import EMBEDDER_CHUNKS, EMBEDDER_FOLLOWUPS, EMBEDDER_QUERIES, Durable

log = logging.getLogger("ragbus.embedder")


class State:
    embedder: Embedder
    search: HybridSearch
    lock = asyncio.Lock()  # one model call at a time: torch already uses every core


state = State()

publish_embedded = EventPublisher(broker, ChunksEmbedded, "CHUNKS",
                                  "Chunks with their vectors, tagged with the embedding model.",
                                  address="chunks.embedded.*.*")
publish_context = EventPublisher(broker, ContextBuilt, "QUERIES",
                                 "The question with its ranked passages, scores, sources and timings.")
publish_answer_failed = EventPublisher(broker, AnswerFailed, "ANSWERS",
                                       "Retrieval failed for good; the user gets an error frame.")
publish_document_failed = EventPublisher(broker, DocumentFailed, "DOCUMENTS",
                                         "Embedding failed for good; the document's status shows why.")
publish_dead_letter = dead_letter_publisher(broker)


@app.on_startup
async def start() -> None:
    await require_durables(settings.nats_url, EMBEDDER_CHUNKS, EMBEDDER_QUERIES, EMBEDDER_FOLLOWUPS)
    state.embedder = await asyncio.to_thread(
        Embedder, settings.embedding_model, settings.embedding_model_path, settings.embedding_device,
        settings.embedding_batch_size,
    )
    state.search = HybridSearch(await create_pool(settings.database_url), settings.retrieval())


@app.after_shutdown
async def stop() -> None:
    if hasattr(state, "search"):
        await state.search.pool.close()


async def embed(texts: list[str]):
    async with state.lock:
        return await asyncio.to_thread(state.embedder.embed, texts)


@broker.subscriber(
    **durable_subscription(EMBEDDER_CHUNKS, batch_size=settings.chunk_batches_at_once),
    ack_policy=AckPolicy.MANUAL,
    title="embed chunks",
    description="Embeds one chunks.ready batch and publishes chunks.embedded.<model>.<doc_id>.",
)
async def on_chunks_ready(event: ChunksReady, msg: NatsMessage) -> None:
    async def work() -> None:
        async with keep_alive(msg.raw_message):
            vectors = await embed([c.text for c in event.chunks])
        await publish_embedded(ChunksEmbedded(
            event_id=f"chunks.embedded:{state.embedder.name}:{event.upload_id}:{event.batch}",
            correlation_id=event.doc_id,
            causation_id=event.event_id,
            doc_id=event.doc_id,
            upload_id=event.upload_id,
            name=event.name,
            doc_type=event.doc_type,
            model=state.embedder.name,
            dim=state.embedder.dim,
            batch=event.batch,
            batch_count=event.batch_count,
            chunk_count=event.chunk_count,
            embedded_texts=len({c.text for c in event.chunks}),
            chunks=[
                EmbeddedChunk(**c.model_dump(), embedding=v.tolist())
                for c, v in zip(event.chunks, vectors, strict=True)
            ],
        ))

    async def on_dead(reason: str) -> None:
        await publish_document_failed(embedding_failed(event, reason))

    await settle(msg.raw_message, EMBEDDER_CHUNKS, publish_dead_letter, work, on_dead)


@broker.subscriber(
    **durable_subscription(EMBEDDER_QUERIES),
    ack_policy=AckPolicy.MANUAL,
    title="retrieve context",
    description="Hybrid retrieval (vector + full text, fused) for a question, published as "
    "context.built.<query_id>. Follow-ups with history wait for query.condensed instead.",
)
async def on_query_asked(event: QueryAsked, msg: NatsMessage) -> None:
    if event.history:
        await msg.raw_message.ack()  # the condenser rewrites it first; query.condensed comes here next
        return
    await retrieve_and_settle(event, event.question, {}, msg, EMBEDDER_QUERIES)


@broker.subscriber(
    **durable_subscription(EMBEDDER_FOLLOWUPS),
    ack_policy=AckPolicy.MANUAL,
    title="retrieve context for follow-ups",
    description="Retrieval for a follow-up question rewritten to stand alone (query.condensed).",
)
async def on_query_condensed(event: QueryCondensed, msg: NatsMessage) -> None:
    await retrieve_and_settle(event.asked, event.standalone_question, {"condense_ms": event.condense_ms}, msg,
                              EMBEDDER_FOLLOWUPS)


async def retrieve_and_settle(asked: QueryAsked, query: str, timings: dict[str, float], msg: NatsMessage,
                              durable: Durable) -> None:
    async def work() -> None:
        started = time.perf_counter()
        vector = (await embed([query]))[0]
        embedded = time.perf_counter()
        top_k = max(1, min(asked.top_k or settings.default_top_k, settings.max_top_k))
        passages = await state.search.search(vector, query, top_k, asked.filters, asked.threshold,
                                             model=state.embedder.name)
        searched = time.perf_counter()
        await publish_context(ContextBuilt(
            event_id=f"context.built:{asked.query_id}",
            correlation_id=asked.query_id,
            causation_id=asked.event_id,
            query_id=asked.query_id,
            question=asked.question,
            standalone_question=query if query != asked.question else None,
            session_id=asked.session_id,
            history=asked.history,
            generate=asked.generate,
            passages=[Passage(**p) for p in passages],
            embedding_model=state.embedder.name,
            timings={**timings, "embed_ms": (embedded - started) * 1000, "search_ms": (searched - embedded) * 1000},
        ))

    async def on_dead(reason: str) -> None:
        await publish_answer_failed(retrieval_failed(asked, reason))

    await settle(msg.raw_message, durable, publish_dead_letter, work, on_dead)


def retrieval_failed(asked: QueryAsked, reason: str) -> AnswerFailed:
    return AnswerFailed(
        event_id=f"answer.failed:{asked.query_id}", correlation_id=asked.query_id, causation_id=asked.event_id,
        query_id=asked.query_id, message=reason, stage="retrieval", question=asked.question,
        session_id=asked.session_id,
    )


def embedding_failed(event: ChunksReady, reason: str) -> DocumentFailed:
    return DocumentFailed(
        event_id=f"document.failed:{event.upload_id}:embed", correlation_id=event.doc_id,
        causation_id=event.event_id, doc_id=event.doc_id, upload_id=event.upload_id, name=event.name,
        stage="embed", reason=reason,
    )


async def report_embedding_gave_up(payload: bytes, advisory: dict) -> None:
    event = ChunksReady.model_validate_json(payload)
    reason = f"the embedder stopped on batch {event.batch} {advisory.get('deliveries')} times"
    await publish_document_failed(embedding_failed(event, reason))


async def report_retrieval_gave_up(payload: bytes, advisory: dict) -> None:
    event = QueryAsked.model_validate_json(payload)
    await publish_answer_failed(retrieval_failed(event, "retrieval failed repeatedly for this question"))


async def report_followup_gave_up(payload: bytes, advisory: dict) -> None:
    event = QueryCondensed.model_validate_json(payload)
    await publish_answer_failed(retrieval_failed(event.asked, "retrieval failed repeatedly for this question"))


report_gave_up(broker, EMBEDDER_CHUNKS, report_embedding_gave_up, publish_dead_letter)
report_gave_up(broker, EMBEDDER_QUERIES, report_retrieval_gave_up, publish_dead_letter)
report_gave_up(broker, EMBEDDER_FOLLOWUPS, report_followup_gave_up, publish_dead_letter)
