"""Generator agent: context.built -> answer.token* -> answer.done (and follow-up rewriting).

Every replica binds the same durable pull consumer `generator`: start more replicas (on more nodes) and
they share the questions by capacity.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream import ContextRepo, FastStream
from prometheus_client import Gauge

from agents.generator.attribution import AttributionConfig, Attributor
from agents.generator.handlers import router
from agents.generator.llm import ChatClient, CircuitBreaker
from agents.generator.settings import GeneratorSettings
from agents.generator.tokens import TokenCounter
from streams.agent import make_app, make_broker, require_durables
from streams.topology import CONDENSER, GENERATOR

BREAKER_OPEN = Gauge("ragbus_llm_breaker_open",
                     "1 while the LLM circuit breaker is open or half-open (no call succeeded since it opened)")


def load_attributor(settings: GeneratorSettings) -> Attributor:
    """The embedding model that matches answer sentences to passages. The catalogue and loaders live with the
    embedder (the one place models are built from the packaged MiniLM); the generator uses them as a library."""
    from agents.models import load_model

    model = load_model(settings.attribution_model, settings.models_dir, settings.attribution_threads)
    return Attributor(model.encode, AttributionConfig(threshold=settings.attribution_threshold), model.name)


def create_app(settings: GeneratorSettings) -> FastStream:
    broker = make_broker(settings, f"ragbus-generator-{settings.generator_id}")
    broker.include_router(router)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        await require_durables(settings, GENERATOR, CONDENSER)
        breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown)
        BREAKER_OPEN.set_function(lambda: float(breaker.tripped))  # read at each scrape
        llm = ChatClient(settings.llm_url, settings.llm_model, settings.llm_timeout, settings.llm_api_key,
                         settings.llm_retries, breaker)
        context.set_global("settings", settings)
        context.set_global("llm", llm)
        context.set_global("tokens", await asyncio.to_thread(TokenCounter, settings.llm_tokenizer))
        context.set_global("attributor", await asyncio.to_thread(load_attributor, settings))
        try:
            yield
        finally:
            await llm.close()

    return make_app(broker, "ragbus generator", "Streams grounded answers from an OpenAI-compatible LLM server",
                    lifespan)
