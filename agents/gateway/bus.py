"""The gateway's side of the bus: NATS connection, Object Store, publishing, and per-query subscriptions."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from streams import subjects
from streams.events import Event
from streams.publish import publish
from streams.topology import DOCUMENTS_BUCKET

log = logging.getLogger(__name__)


class Bus:
    def __init__(self, nc: NATS, js: JetStreamContext, documents: ObjectStore) -> None:
        self.nc = nc
        self.js = js
        self.documents = documents

    @classmethod
    async def connect(cls, url: str) -> Bus:
        nc = await nats.connect(url, name="ragbus-gateway", max_reconnect_attempts=-1, reconnect_time_wait=1)
        js = nc.jetstream()
        return cls(nc, js, await js.object_store(DOCUMENTS_BUCKET))

    async def close(self) -> None:
        await self.nc.drain()

    async def publish(self, event: Event):
        return await publish(self.js, event)

    @asynccontextmanager
    async def answer_frames(self, query_id: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Subscribe to one query's tokens and outcome *before* the question is published, so not a single
        token can be missed; yields a queue of decoded events (dicts), ending with answer.done/failed."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            try:
                queue.put_nowait(json.loads(msg.data))
            except ValueError:
                log.warning("unreadable event on %s", msg.subject)

        subs = [
            await self.nc.subscribe(subjects.subject(base, query_id), cb=on_msg)
            for base in (subjects.ANSWER_TOKEN, subjects.ANSWER_DONE, subjects.ANSWER_FAILED)
        ]
        await self.nc.flush()
        try:
            yield queue
        finally:
            for sub in subs:
                await sub.unsubscribe()
