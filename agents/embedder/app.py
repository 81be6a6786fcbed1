"""Embedder agent: chunks.ready -> chunks.embedded, and query.asked -> context.built (retrieval).

The model and the database pool live in the lifespan, not at import.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream import ContextRepo, FastStream

from agents.embedder.handlers import router
from agents.embedder.service import Embedder
from agents.embedder.settings import EmbedderSettings
from projections.retrieval import HybridSearch
from projections.views import create_pool
from streams.agent import make_app, make_broker, require_durables
from streams.topology import EMBEDDER_CHUNKS, EMBEDDER_FOLLOWUPS, EMBEDDER_QUERIES


def create_app(settings: EmbedderSettings) -> FastStream:
    broker = make_broker(settings, "ragbus-embedder")
    broker.include_router(router)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        await require_durables(settings.nats_url, EMBEDDER_CHUNKS, EMBEDDER_QUERIES, EMBEDDER_FOLLOWUPS)
        embedder = await asyncio.to_thread(Embedder, settings.embedding_model, settings.embedding_model_path,
                                           settings.embedding_device, settings.embedding_batch_size)
        pool = await create_pool(settings.database_url)
        context.set_global("settings", settings)
        context.set_global("embedder", embedder)
        context.set_global("search", HybridSearch(pool, settings.retrieval()))
        try:
            yield
        finally:
            await pool.close()

    return make_app(broker, "ragbus embedder",
                    "Embeds chunks with all-MiniLM-L6-v2 and retrieves passages for questions", lifespan)
