"""Refuse an oversize upload with 413 before reading it all.

FastAPI parses a multipart body completely before the endpoint runs, so the limit has to live below it:
this ASGI middleware refuses with 413 when Content-Length is too large, before the endpoint runs, and
otherwise counts the body as it streams in and refuses as soon as the count passes the limit. Nothing past
the limit is parsed or stored.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the metadata field
DISCARD_LIMIT = 256 * 1024 * 1024


class UploadSizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, paths: tuple[str, ...] = ("/documents",)) -> None:
        self.app = app
        self.max_body = max_bytes + MULTIPART_OVERHEAD
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            # A client that sent `Expect: 100-continue` (curl does for large bodies) never sends the body:
            # it gets the 413 at once. Others are already sending; their bytes are dropped unread.
            if b"100-continue" not in headers.get(b"expect", b"").lower():
                await self._discard_body(receive)
            await self._refuse(send)
            return

        received = 0
        refused = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    refused = True
                    if not started:
                        if message.get("more_body"):
                            await self._discard_body(receive)
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; whatever the app says after the disconnect is dropped
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _discard_body(self, receive: Receive) -> None:
        """Drop what the client is still sending (never stored): an HTTP/1.1 client reads the response only
        after sending its body, so it would see a connection reset instead of the 413. The server answers
        as soon as the body ends; a client that goes on past DISCARD_LIMIT is cut off."""
        discarded = 0
        while discarded < DISCARD_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                return
            discarded += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def _refuse(self, send: Send) -> None:
        body: dict[str, Any] = {
            "detail": f"upload too large: the limit is {self.max_bytes} bytes (RAGBUS_MAX_UPLOAD_BYTES)"
        }
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
