"""The head of a prompt evaluated while retrieval runs.

A question without history opens its prompt with the system prompt and "Question: ..." (service.question_head):
all of that is known at query.asked, before any passage is. Sent then as a one-token completion, it leaves the
LLM server's KV cache holding that prefix (llama.cpp reuses the longest common prefix with the previous
request), and the real prompt, sent at context.built, evaluates only the sources. Retrieval and the hops before
the prompt exists then overlap the LLM's own work instead of adding to it.

It is a hint, never needed for an answer: it is skipped while this generator is answering (the prefix would
evict the running answer's cache and queue behind it), when one is already on its way, or when the answer has
already begun; a failed one is only counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter

from agents.generator.llm import ChatClient
from agents.generator.service import prefill_messages

log = logging.getLogger("ragbus.generator")

PREFILLS = Counter("ragbus_prompt_prefills_total",
                   "Prompt heads sent to the LLM at query.asked, and those skipped or failed", ["outcome"])


class Prefiller:
    def __init__(self, llm: ChatClient, enabled: bool = True) -> None:
        self.llm = llm
        self.enabled = enabled
        self.answering: set[str] = set()  # query ids this generator is streaming now
        self._started: deque[str] = deque(maxlen=256)  # answers begun lately: their prefill would come too late
        self._task: asyncio.Task[None] | None = None

    @contextmanager
    def answer(self, query_id: str) -> Iterator[None]:
        self.answering.add(query_id)
        self._started.append(query_id)
        try:
            yield
        finally:
            self.answering.discard(query_id)

    def start(self, query_id: str, question: str) -> bool:
        """Send the head of this question's prompt in the background; False when it is skipped."""
        if not self.enabled:
            return False
        if self.answering or query_id in self._started or (self._task is not None and not self._task.done()):
            PREFILLS.labels("skipped").inc()
            return False
        self._task = asyncio.create_task(self._send(query_id, question))
        return True

    async def _send(self, query_id: str, question: str) -> None:
        try:
            await self.llm.prefill(prefill_messages(question))
            PREFILLS.labels("sent").inc()
        except Exception as exc:  # noqa: BLE001 - a hint: the answer's own request reports a down LLM
            PREFILLS.labels("failed").inc()
            log.debug("prefill for %s failed: %r", query_id, exc)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
