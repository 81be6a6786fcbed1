"""A server span per HTTP request, installed only when tracing is on (streams.tracing): an upload's or a
question's trace starts where the request arrived, and the events published while serving it are its
children. A caller's own `traceparent` is continued. Websocket questions get a span each in websocket.py
(one span for a whole connection would put every question of it in one trace)."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streams.tracing import span


class RequestSpans:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        with span(f"{method} {scope['path']}", headers, SpanKind.SERVER,
                  {"http.request.method": method, "url.path": scope["path"]}) as current:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    current.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        current.set_status(StatusCode.ERROR)
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                route = scope.get("route")  # set by the router: name the span by its template, not the id in it
                if route is not None and hasattr(route, "path"):
                    current.update_name(f"{method} {route.path}")
                    current.set_attribute("http.route", route.path)
