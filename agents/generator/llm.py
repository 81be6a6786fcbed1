"""A small streaming client for any OpenAI-compatible /v1/chat/completions server, over httpx."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx

log = logging.getLogger(__name__)


class LLMError(Exception):
    """The LLM server failed; `transient` says whether retrying may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class ChatClient:
    def __init__(self, base_url: str, model: str, timeout: float = 120.0, api_key: str = "",
                 retries: int = 2) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.retries = retries
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                      timeout=httpx.Timeout(timeout, connect=5.0))

    async def close(self) -> None:
        await self.http.aclose()

    async def stream(self, messages: list[dict[str, str]], max_tokens: int,
                     temperature: float = 0.0) -> AsyncIterator[str]:
        """Yield content pieces as the server streams them. Retries only before the first piece: once text
        has reached the user, a retry would repeat it."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "seed": 42, "stream": True}
        attempt = 0
        while True:
            started = False
            try:
                async for piece in self._stream_once(body):
                    started = True
                    yield piece
                return
            except LLMError as exc:
                if started or not exc.transient or attempt >= self.retries:
                    raise
                attempt += 1
                delay = 0.5 * 2**attempt
                log.warning("LLM call failed (%s); retry %d in %.1fs", exc, attempt, delay)
                await asyncio.sleep(delay)

    async def _stream_once(self, body: dict) -> AsyncIterator[str]:
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
                    piece = (choices[0].get("delta") or {}).get("content")
                    if piece:
                        yield piece
        except httpx.TransportError as exc:  # includes a stream cut off mid-body
            raise LLMError(f"LLM server connection failed: {exc!r}", transient=True) from exc
