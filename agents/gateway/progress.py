"""Live document status for browsers: Server-Sent Events at GET /documents/events.

The projector sends a core NATS notification after each commit that touched a document; this endpoint
turns those into `event: document` frames carrying the document as GET /documents/{id} shows it, so the web
page sees uploaded -> parsed (n chunks) -> embedding k/n -> indexed, or failed with the reason, live.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from nats.aio.msg import Msg

from agents.gateway.auth import READ, UNAUTHORIZED
from agents.gateway.deps import BusDep, DocumentsDep
from agents.gateway.documents import DocumentOut
from projections.views import DocumentView
from streams import subjects
from streams.topology import PROJECTION_UPDATED

router = APIRouter(tags=["documents"], dependencies=[READ], responses=UNAUTHORIZED)
KEEPALIVE = 15.0
COALESCE = 0.2  # a burst of batches for one document becomes one frame


async def _frames(request: Request, queue: asyncio.Queue[str], documents: DocumentView) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    yield 'event: ready\ndata: {"listening": true}\n\n'  # the stream is live: changes from now on arrive
    while not await request.is_disconnected():
        try:
            first = await asyncio.wait_for(queue.get(), KEEPALIVE)
        except TimeoutError:
            yield ": keepalive\n\n"
            continue
        await asyncio.sleep(COALESCE)
        doc_ids = {first}
        while not queue.empty():
            doc_ids.add(queue.get_nowait())
        for doc_id in sorted(doc_ids):
            doc = await documents.get(doc_id)
            if doc is not None:
                yield f"event: document\ndata: {DocumentOut(**doc).model_dump_json()}\n\n"


@router.get("/documents/events", summary="Live document status (Server-Sent Events: `ready` once, then one "
            "`document` event per change: status, chunks, chunks_indexed, error)", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {
                "type": "object", "required": ["event", "data"],
                "properties": {"event": {"enum": ["ready", "document"]},
                               "data": {"type": "string", "description": "JSON: the document as GET "
                                        "/documents/{doc_id} shows it (for `ready`: {\"listening\": true})"}}}}},
                "description": "an endless stream of Server-Sent Events"}})
async def document_events(request: Request, bus: BusDep, documents: DocumentsDep) -> StreamingResponse:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)

    async def on_update(msg: Msg) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a stalled browser must not grow memory without bound
            queue.put_nowait(msg.subject.rsplit(".", 1)[-1])

    subs = [await bus.nc.subscribe(subjects.subject(PROJECTION_UPDATED, p) + ".*", cb=on_update)
            for p in ("documents", "chunks")]

    async def stream() -> AsyncIterator[str]:
        try:
            async for frame in _frames(request, queue, documents):
                yield frame
        finally:
            for sub in subs:
                await sub.unsubscribe()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
