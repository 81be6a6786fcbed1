"""Parser agent: document.uploaded -> chunks.ready (+ document.parsed | document.failed).

Run one or many replicas: `ragbus agent parser`. They share the durable pull consumer `parser`; parsing is
CPU bound, so each replica parses one document at a time and more throughput is more replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream import ContextRepo, FastStream

from agents.parser.handlers import router
from agents.parser.isolation import ParseWorker, warm_up
from agents.parser.settings import ParserSettings
from streams.agent import make_app, make_broker, require_durables
from streams.topology import PARSER


def create_app(settings: ParserSettings) -> FastStream:
    broker = make_broker(settings, "ragbus-parser")
    broker.include_router(router)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        context.set_global("settings", settings)
        await require_durables(settings, PARSER)
        await asyncio.to_thread(warm_up)  # before the first fork: every parse child inherits the libraries
        with ParseWorker(settings.parse_memory_mb * 2**20, settings.parse_nice) as parsing:
            context.set_global("parse_worker", parsing)
            yield

    return make_app(broker, "ragbus parser", "Turns uploaded documents into text chunks", lifespan)
