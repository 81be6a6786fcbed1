"""Thin handlers: chunks.ready -> chunks.embedded; query.asked -> context.built."""

from __future__ import annotations

import asyncio
import logging
import time

import nats
from faststream import AckPolicy
from faststream.nats import NatsMessage

from agents.embedder.app import app, broker, settings
from agents.embedder.service import Embedder, rank_passages
from projections.views import ChunkSearch, create_pool
from streams.agent import (
    EventPublisher,
    dead_letter_publisher,
    durable_subscription,
    report_gave_up,
    wait_for_durables,
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
)
from streams.topology import EMBEDDER_CHUNKS, EMBEDDER_QUERIES, advisories_of

log = logging.getLogger("ragbus.embedder")


class State:
    embedder: Embedder
    search: ChunkSearch
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
    nc = await nats.connect(settings.nats_url)
    try:
        await wait_for_durables(nc.jetstream(), (EMBEDDER_CHUNKS, EMBEDDER_QUERIES, advisories_of(EMBEDDER_CHUNKS),
                                                 advisories_of(EMBEDDER_QUERIES)))
    finally:
        await nc.close()
    state.embedder = await asyncio.to_thread(
        Embedder, settings.embedding_model, settings.embedding_model_path, settings.embedding_device,
        settings.embedding_batch_size,
    )
    state.search = ChunkSearch(await create_pool(settings.database_url))


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
    description="Embeds the question, finds the nearest chunks and publishes context.built.<query_id>.",
)
async def on_query_asked(event: QueryAsked, msg: NatsMessage) -> None:
    async def work() -> None:
        started = time.perf_counter()
        vector = (await embed([event.question]))[0]
        embedded = time.perf_counter()
        top_k = max(1, min(event.top_k or settings.default_top_k, settings.max_top_k))
        rows = await state.search.nearest(vector, top_k, event.filters, model=state.embedder.name)
        searched = time.perf_counter()
        await publish_context(ContextBuilt(
            event_id=f"context.built:{event.query_id}",
            correlation_id=event.query_id,
            causation_id=event.event_id,
            query_id=event.query_id,
            question=event.question,
            session_id=event.session_id,
            passages=[Passage(**row) for row in rank_passages(rows)],
            embedding_model=state.embedder.name,
            timings={"embed_ms": (embedded - started) * 1000, "search_ms": (searched - embedded) * 1000},
        ))

    async def on_dead(reason: str) -> None:
        await publish_answer_failed(AnswerFailed(
            event_id=f"answer.failed:{event.query_id}", correlation_id=event.query_id,
            causation_id=event.event_id, query_id=event.query_id, message=reason, stage="retrieval",
        ))

    await settle(msg.raw_message, EMBEDDER_QUERIES, publish_dead_letter, work, on_dead)


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
    await publish_answer_failed(AnswerFailed(
        event_id=f"answer.failed:{event.query_id}", correlation_id=event.query_id, causation_id=event.event_id,
        query_id=event.query_id, message="retrieval failed repeatedly for this question", stage="retrieval",
    ))


report_gave_up(broker, EMBEDDER_CHUNKS, report_embedding_gave_up, publish_dead_letter)
report_gave_up(broker, EMBEDDER_QUERIES, report_retrieval_gave_up, publish_dead_letter)
