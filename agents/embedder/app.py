"""Embedder agent: chunks.ready -> chunks.embedded.<model> for every live embedding index, and
query.asked -> context.built (retrieval) with the active one.

The models, the index workers and the database pool live in the app's lifespan and hooks, not at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream import ContextRepo, FastStream

from agents.embedder.handlers import embedding_failed, publish_embedded, router, worker
from agents.embedder.indexes import IndexRegistry
from agents.embedder.service import Embedder, ModelPool
from agents.embedder.settings import EmbedderSettings
from projections.retrieval import HybridSearch
from projections.views import create_pool
from streams.agent import make_app, make_broker, require_durables
from streams.indexes import Index
from streams.topology import EMBEDDER_FOLLOWUPS, EMBEDDER_QUERIES, INDEX_ADVISORIES


def create_app(settings: EmbedderSettings) -> FastStream:
    broker = make_broker(settings, "ragbus-embedder")
    broker.include_router(router)

    models = ModelPool(settings.models_dir, settings.embedding_threads, settings.embedding_spin,
                       settings.embedding_cache_chunks)

    def load(index: Index) -> Embedder:
        return models.embedder(index.model, index.source)

    indexes = IndexRegistry(load, publish_embedded, worker.dead_letters, embedding_failed,
                            in_flight=settings.embedding_in_flight)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        await require_durables(settings, EMBEDDER_QUERIES, EMBEDDER_FOLLOWUPS, also=(INDEX_ADVISORIES,))
        pool = await create_pool(settings.database_url)
        context.set_global("settings", settings)
        context.set_global("indexes", indexes)
        context.set_global("search", HybridSearch(pool, settings.retrieval()))
        try:
            yield
        finally:
            await pool.close()

    app = make_app(broker, "ragbus embedder",
                   "Embeds chunks for every embedding index and retrieves passages for questions with the "
                   "active one", lifespan)

    @app.after_startup
    async def follow_indexes() -> None:
        await indexes.start(broker.connection)
        await indexes.active()  # the query model is loaded before the first question is taken

    @app.on_shutdown
    async def stop_indexes() -> None:
        await indexes.stop()

    return app
