"""Method handling the routes cannot do alone: one path served by several routes (GET and POST /documents)
must answer OPTIONS, and 405 for a method none of them takes, with every method of the path in `Allow`.
The methods come from the OpenAPI document, so `Allow` says exactly what the API documents."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class AllowedMethods:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._paths: list[tuple[re.Pattern[str], set[str]]] | None = None

    def _methods(self, api: Any, path: str) -> set[str]:
        if self._paths is None:
            self._paths = [
                (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"),
                 {m.upper() for m in operations})
                for template, operations in api.openapi().get("paths", {}).items()]
        matches = [(pattern, methods) for pattern, methods in self._paths if pattern.match(path)]
        literal = [methods for pattern, methods in matches if "[^/]+" not in pattern.pattern]
        # /documents/events is its own resource, not a {doc_id}: a path spelled out wins over a template
        return set().union(*(literal or [methods for _, methods in matches]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        methods = self._methods(scope["app"], scope["path"])
        if not methods or (scope["method"] != "OPTIONS" and scope["method"] in methods | {"HEAD"}):
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps({"detail": f"{scope['method']} is not allowed here; allowed: {allow}"}).encode()
        await send({"type": "http.response.start", "status": 405,
                    "headers": [(b"allow", allow.encode()), (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
