"""A small streaming client for any OpenAI-compatible /v1/chat/completions server, over httpx, with retries
for transient errors and a circuit breaker so a down server gives users a quick error, not a hang."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx

log = logging.getLogger(__name__)


class LLMError(Exception):
    """The LLM server failed; `transient` says whether retrying may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class LLMUnavailable(LLMError):
    """The circuit is open: recent calls all failed, so this one is refused at once."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; while open every call fails at once; after `cooldown`
    one trial call is let through (half-open), and its success closes the circuit again."""

    def __init__(self, threshold: int = 3, cooldown: float = 15.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and time.monotonic() - self.opened_at < self.cooldown

    @property
    def tripped(self) -> bool:
        """Open or half-open: calls failed and none has succeeded since (what the breaker gauge shows)."""
        return self.opened_at is not None

    def check(self) -> None:
        if self.is_open:
            assert self.opened_at is not None
            wait = self.cooldown - (time.monotonic() - self.opened_at)
            raise LLMUnavailable(f"the LLM server is unavailable (failing repeatedly); next try in {wait:.0f} s")

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class ChatClient:
    def __init__(self, base_url: str, model: str, timeout: float = 120.0, api_key: str = "",
                 retries: int = 2, breaker: CircuitBreaker | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.retries = retries
        self.breaker = breaker or CircuitBreaker()
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                      timeout=httpx.Timeout(timeout, connect=3.0))

    async def close(self) -> None:
        await self.http.aclose()

    async def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0) -> str:
        return "".join([piece async for piece in self.stream(messages, max_tokens, temperature)])

    async def stream(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0,
                     grammar: str | None = None, finish: list[str] | None = None, *,
                     repeat_penalty: float = 1.0) -> AsyncIterator[str]:
        """Yield content pieces as the server streams them. Retries only before the first piece: once text
        has reached the user, a retry would repeat it. `grammar`: a GBNF grammar the output must follow
        (llama.cpp's server); `finish` receives the server's finish_reason ("stop", "length")."""
        body: dict = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                      "temperature": temperature, "seed": 42, "stream": True}
        if grammar:
            body["grammar"] = grammar
        if repeat_penalty != 1.0:  # llama.cpp's: tokens already in the context get less likely
            body["repeat_penalty"] = repeat_penalty
        attempt = 0
        while True:
            self.breaker.check()
            started = False
            try:
                async for piece in self._stream_once(body, finish):
                    if not started:
                        started = True
                        self.breaker.success()
                    yield piece
                self.breaker.success()
                return
            except LLMError as exc:
                if started or not exc.transient:
                    raise
                self.breaker.failure()
                if self.breaker.is_open:
                    raise LLMUnavailable(f"the LLM server is unavailable: {exc}") from exc
                if attempt >= self.retries:
                    raise
                attempt += 1
                delay = 0.5 * 2**attempt
                log.warning("LLM call failed (%s); retry %d in %.1fs", exc, attempt, delay)
                await asyncio.sleep(delay)

    async def _stream_once(self, body: dict, finish: list[str] | None) -> AsyncIterator[str]:
        try:
            async with self.http.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode(errors="replace")[:300]
                    raise LLMError(f"LLM server answered {response.status_code}: {text}",
                                   transient=response.status_code >= 500 or response.status_code == 429)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    payload = json.loads(data)
                    if "error" in payload:  # some servers report failures inside the event stream
                        raise LLMError(f"LLM server error: {payload['error']}", transient=True)
                    choices = payload.get("choices") or [{}]
                    if choices[0].get("finish_reason") and finish is not None:
                        finish.append(choices[0]["finish_reason"])
                    piece = (choices[0].get("delta") or {}).get("content")
                    if piece:
                        yield piece
        except httpx.TransportError as exc:  # includes a stream cut off mid-body
            raise LLMError(f"LLM server connection failed: {exc!r}", transient=True) from exc
