"""What the gateway depends on, checked every few seconds: NATS, PostgreSQL and (when its URL is known)
the LLM server. /readyz reports it; open websockets get a `status` frame when it changes, so a user sees
"reconnecting" within seconds of an outage and "ok" when it is over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx

log = logging.getLogger("ragbus.gateway")
Listener = Callable[[dict[str, Any]], Awaitable[None]]


class Health:
    def __init__(self, nats_connected: Callable[[], bool], pool: asyncpg.Pool, llm_url: str = "",
                 every: float = 2.0) -> None:
        self.nats_connected = nats_connected
        self.pool = pool
        self.llm_url = llm_url.rstrip("/")
        self.every = every
        self.checks: dict[str, Any] = {"nats": True, "postgres": True, "llm": True if not llm_url else None}
        self._listeners: set[Listener] = set()
        self._task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(1.0, connect=1.0))

    @property
    def ready(self) -> bool:
        return all(v is not False for k, v in self.checks.items() if k in ("nats", "postgres", "llm"))

    def frame(self) -> dict[str, Any]:
        down = [k for k in ("nats", "postgres", "llm") if self.checks.get(k) is False]
        names = {"nats": "the message bus (NATS)", "postgres": "the database", "llm": "the language model"}
        if not down:
            return {"type": "status", "state": "ok", "message": "connected"}
        return {"type": "status", "state": "reconnecting", "down": down,
                "message": f"{' and '.join(names[d] for d in down)} unavailable; reconnecting..."}

    async def check(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"nats": self.nats_connected()}
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 2.0)
            checks["postgres"], checks["postgres_ms"] = True, round((time.perf_counter() - started) * 1000, 2)
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            checks["postgres"] = False
        if self.llm_url:
            try:
                checks["llm"] = (await self._http.get(f"{self.llm_url}/models")).status_code < 500
            except httpx.ReadTimeout:
                checks["llm"] = True  # it took the connection but is busy (llama.cpp answers one at a time)
            except httpx.HTTPError:
                checks["llm"] = False
        return checks

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    async def _watch(self) -> None:
        while True:
            checks = await self.check()
            changed = {k: v for k, v in checks.items() if k in ("nats", "postgres", "llm") and self.checks.get(k) != v}
            self.checks.update(checks)
            if changed:
                log.warning("dependencies changed: %s", changed)
                frame = self.frame()
                for listener in list(self._listeners):
                    with contextlib.suppress(Exception):  # a socket that just closed
                        await listener(frame)
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()
