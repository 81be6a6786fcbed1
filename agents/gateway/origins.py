"""Host and Origin checks, for every request and websocket, before anything else runs.

- Host: a page on another site that points its own DNS name at 127.0.0.1 (DNS rebinding) reaches the gateway
  with its own name in Host. An open gateway (no keys) therefore answers only to loopback names and the names
  in RAGBUS_ALLOWED_HOSTS; a gateway that requires keys accepts any Host unless that list is set.
- Origin: a browser names the page that sends a request. Only the gateway's own page (same host and port) and
  RAGBUS_ALLOWED_ORIGINS may drive it, so another site open in the same browser cannot upload, ask or read
  answers. Requests without Origin (curl, the CLI, other programs) are not browsers' and pass.
Probes (/healthz, /readyz, /metrics) skip the Host check: kubelets and Prometheus call them by address.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

PROBES = ("/healthz", "/readyz", "/metrics")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def _split(items: str) -> tuple[str, ...]:
    return tuple(i.strip().lower().rstrip("/") for i in items.split(",") if i.strip())


def host_name(host: str) -> str:
    """`example.org:8000` -> `example.org`, `[::1]:8000` -> `[::1]`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostAndOrigin:
    def __init__(self, app: ASGIApp, allowed_hosts: str, allowed_origins: str, keys_required: bool,
                 bind_host: str) -> None:
        self.app = app
        hosts = _split(allowed_hosts)
        if not hosts:
            hosts = ("*",) if keys_required else (*LOOPBACK_NAMES, bind_host.lower())
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts)
        self.origins = frozenset(_split(allowed_origins))

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, reason) when the request must not reach the app: 421 for a foreign Host, 403 for a
        foreign Origin."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not self.any_host and scope.get("path") not in PROBES and host_name(host) not in self.hosts:
            return 421, (f"Host {host!r} is not served here (DNS rebinding guard); "
                    "add it to RAGBUS_ALLOWED_HOSTS if this is the gateway's name")
        origin = headers.get("origin")
        if origin is None:
            return None
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins or "*" in self.origins:
            return None
        if origin != "null" and urlsplit(origin).netloc == host.strip().lower():
            return None  # the gateway's own page
        return 403, (f"cross-origin request from {origin} refused; add it to RAGBUS_ALLOWED_ORIGINS to let that "
                "site use this gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        code, reason = refused
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})  # a 403 handshake
            return
        body = json.dumps({"detail": reason}).encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
