"""Thin handlers: chunks.ready -> chunks.embedded; query.asked / query.condensed -> context.built."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from faststream import Context
from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsMessage

from agents.embedder.service import Embedder
from agents.embedder.settings import EmbedderSettings
from projections.retrieval import HybridSearch
from streams.delivery import Workers, keep_alive
from streams.events import (
    AnswerFailed,
    ChunksEmbedded,
    ContextBuilt,
    DocumentChunked,
    DocumentFailed,
    EmbeddedChunk,
    Passage,
    QueryAsked,
    QueryCondensed,
)
from streams.publish import EventPublisher
from streams.topology import EMBEDDER_CHUNKS, EMBEDDER_FOLLOWUPS, EMBEDDER_QUERIES

log = logging.getLogger("ragbus.embedder")
router = NatsRouter()
worker = Workers(router)
Model = Annotated[Embedder, Context("embedder")]
Search = Annotated[HybridSearch, Context("search")]
Settings = Annotated[EmbedderSettings, Context("settings")]

publish_embedded = EventPublisher(router, ChunksEmbedded, "Chunks with their vectors, tagged with the embedding model.",
                                  address="chunks.embedded.*.*")
publish_context = EventPublisher(router, ContextBuilt,
                                 "The question with its ranked passages, scores, sources and timings.")
publish_answer_failed = EventPublisher(router, AnswerFailed, "Retrieval failed for good; the user gets an error frame.")
publish_document_failed = EventPublisher(router, DocumentFailed,
                                         "Embedding failed for good; the document's status shows why.")


async def embedding_failed(event: DocumentChunked, reason: str) -> None:
    await publish_document_failed(DocumentFailed.caused_by(
        event, event_id=f"document.failed:{event.upload_id}:embed", stage="embed", reason=reason))


async def retrieval_failed(event: QueryAsked | QueryCondensed, reason: str) -> None:
    asked = event.asked if isinstance(event, QueryCondensed) else event
    await publish_answer_failed(AnswerFailed.caused_by(
        asked, event_id=f"answer.failed:{asked.query_id}", message=reason, stage="retrieval"))


@worker(EMBEDDER_CHUNKS, on_failure=embedding_failed,
        gave_up="the embedder stopped on a batch of this document {deliveries} times",
        title="embed chunks",
        description="Embeds one chunks.ready batch and publishes chunks.embedded.<model>.<doc_id>.")
async def on_document_chunked(event: DocumentChunked, msg: NatsMessage, model: Model) -> None:
    async with keep_alive(msg):
        vectors = await model.embed_async([c.text for c in event.chunks])
    await publish_embedded(ChunksEmbedded.caused_by(
        event, event_id=f"chunks.embedded:{model.name}:{event.upload_id}:{event.batch}",
        doc_type=event.doc_type, model=model.name, dim=model.dim, batch=event.batch,
        batch_count=event.batch_count, chunk_count=event.chunk_count,
        embedded_texts=len({c.text for c in event.chunks}),
        chunks=[EmbeddedChunk(**c.model_dump(), embedding=v.tolist())
                for c, v in zip(event.chunks, vectors, strict=True)],
    ))


@worker(EMBEDDER_QUERIES, on_failure=retrieval_failed, gave_up="retrieval failed repeatedly for this question",
        title="retrieve context",
        description="Hybrid retrieval (vector + full text, fused) for a question, published as "
        "context.built.<query_id>. Follow-ups with history wait for query.condensed instead.")
async def on_query_asked(event: QueryAsked, model: Model, search: Search, settings: Settings) -> None:
    if event.history:
        return  # the condenser rewrites it first; query.condensed comes here next
    await retrieve(event, event.question, {}, model, search, settings)


@worker(EMBEDDER_FOLLOWUPS, on_failure=retrieval_failed, gave_up="retrieval failed repeatedly for this question",
        title="retrieve context for follow-ups",
        description="Retrieval for a follow-up question rewritten to stand alone (query.condensed).")
async def on_query_condensed(event: QueryCondensed, model: Model, search: Search, settings: Settings) -> None:
    await retrieve(event.asked, event.standalone_question, {"condense_ms": event.condense_ms}, model, search,
                   settings)


async def retrieve(asked: QueryAsked, query: str, timings: dict[str, float], model: Embedder,
                   search: HybridSearch, settings: EmbedderSettings) -> None:
    started = time.perf_counter()
    vector = (await model.embed_async([query]))[0]
    embedded = time.perf_counter()
    top_k = max(1, min(asked.top_k or settings.default_top_k, settings.max_top_k))
    passages = await search.search(vector, query, top_k, asked.filters, asked.threshold, model=model.name)
    searched = time.perf_counter()
    await publish_context(ContextBuilt.caused_by(
        asked, event_id=f"context.built:{asked.query_id}",
        standalone_question=query if query != asked.question else None, history=asked.history,
        generate=asked.generate, passages=[Passage(**p) for p in passages], embedding_model=model.name,
        timings={**timings, "embed_ms": (embedded - started) * 1000, "search_ms": (searched - embedded) * 1000},
    ))
