"""Thin handlers: query.asked / query.condensed -> context.built, with the active index's model.

chunks.ready -> chunks.embedded.<model> runs in one worker per embedding index (`indexes.IndexRegistry`):
its durable is only known at run time. JetStream's gave-up advisories of all of them come here.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Annotated

from faststream.nats import NatsRouter

from agents.embedder.indexes import IndexRegistry
from agents.embedder.settings import EmbedderSettings
from projections.retrieval import RETRIEVAL_SECONDS, HybridSearch
from streams.context import Context, NatsBroker, NatsMessage
from streams.delivery import Workers, durable_subscription, settle
from streams.events import (
    AnswerFailed,
    ChunksEmbedded,
    ContextBuilt,
    DocumentChunked,
    DocumentFailed,
    Passage,
    QueryAsked,
    QueryCondensed,
)
from streams.publish import EventPublisher
from streams.topology import EMBEDDER_FOLLOWUPS, EMBEDDER_QUERIES, INDEX_ADVISORIES, index_durable

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("ragbus.embedder")
router = NatsRouter()
worker = Workers(router, "embedder")
Indexes = Annotated[IndexRegistry, Context("indexes")]
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


@router.subscriber(**durable_subscription(INDEX_ADVISORIES, "embedder"), title="an index embedder gave up",
                   description="JetStream advisory: a chunks.ready batch reached max_deliver on an index's durable "
                   "without being settled; for the active index the document fails with the reason.")
async def on_index_gave_up(advisory: dict, msg: NatsMessage, broker: NatsBroker, indexes: Indexes) -> None:
    async def report() -> None:
        active = indexes.state.active
        if active is None or advisory.get("consumer") != index_durable(active).name:
            log.error("%s gave up on CHUNKS #%s (not the active index)", advisory.get("consumer"),
                      advisory.get("stream_seq"))
            return
        original = await broker.connection.jetstream().get_msg(advisory["stream"], advisory["stream_seq"])
        await embedding_failed(DocumentChunked.model_validate_json(original.data or b"{}"),
                               f"the embedder stopped on a batch of this document {advisory.get('deliveries')} "
                               "times")

    await settle(msg, INDEX_ADVISORIES, worker.dead_letters, report)


@worker(EMBEDDER_QUERIES, on_failure=retrieval_failed, gave_up="retrieval failed repeatedly for this question",
        title="retrieve context",
        description="Hybrid retrieval (vector + full text, fused) for a question, published as "
        "context.built.<query_id>. Follow-ups with history wait for query.condensed instead.")
async def on_query_asked(event: QueryAsked, indexes: Indexes, search: Search, settings: Settings) -> None:
    if event.history:
        return  # the condenser rewrites it first; query.condensed comes here next
    await retrieve(event, event.question, {}, indexes, search, settings)


@worker(EMBEDDER_FOLLOWUPS, on_failure=retrieval_failed, gave_up="retrieval failed repeatedly for this question",
        title="retrieve context for follow-ups",
        description="Retrieval for a follow-up question rewritten to stand alone (query.condensed).")
async def on_query_condensed(event: QueryCondensed, indexes: Indexes, search: Search, settings: Settings) -> None:
    await retrieve(event.asked, event.standalone_question, {"condense_ms": event.condense_ms}, indexes, search,
                   settings)


async def retrieve(asked: QueryAsked, query: str, timings: dict[str, float], indexes: IndexRegistry,
                   search: HybridSearch, settings: EmbedderSettings) -> None:
    """Questions are embedded with the active index's model and searched in its index, whatever else is
    being built meanwhile."""
    model = await indexes.active()
    started = time.perf_counter()
    embedded = started

    async def embed() -> np.ndarray:
        nonlocal embedded
        vector = (await model.embed_async([query]))[0]
        embedded = time.perf_counter()
        RETRIEVAL_SECONDS.labels("embed").observe(embedded - started)
        return vector

    top_k = max(1, min(asked.top_k or settings.default_top_k, settings.max_top_k))
    trace: list[dict] | None = [] if asked.debug else None
    # the keyword half of the search runs while the question is embedded (HybridSearch.search)
    passages = await search.search(embed(), query, top_k, asked.filters, asked.threshold, model=model.name,
                                   trace=trace)
    searched = time.perf_counter()
    await publish_context(ContextBuilt.caused_by(
        asked, event_id=f"context.built:{asked.query_id}",
        standalone_question=query if query != asked.question else None, history=asked.history,
        generate=asked.generate, passages=[Passage(**p) for p in passages], embedding_model=model.name,
        candidates=trace or [], answer_mode=asked.answer_mode,
        timings={**timings, "embed_ms": (embedded - started) * 1000, "search_ms": (searched - embedded) * 1000},
    ))
