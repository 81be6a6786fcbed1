"""The prompt's head sent at query.asked is reused by the real llama.cpp server when the whole prompt follows:
only the sources are evaluated then (the server's own log says how many prompt tokens each request evaluated)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.generator.llm import ChatClient
from agents.generator.service import build_prompt, prefill_messages
from agents.generator.tokens import TokenCounter
from ragbus.servers import LlamaServer, find_smollm2_gguf
from streams.events import Passage

# llama.cpp's per-request perf line; tokens taken from the server's prompt cache are not counted in it
HIT = re.compile(r"prompt eval time =\s+[\d.]+ ms /\s+(\d+) tokens")


def passages(topic: str) -> list[Passage]:
    return [Passage(n=n, chunk_id=f"{topic}{n}", doc_id=topic, name=f"{topic}.txt", score=0.6,
                    text=f"The {topic} keeper logs the weather every morning at six. Entry {n} says the wind "
                         f"came from the west and the {topic} light was cleaned before dusk.") for n in (1, 2, 3)]


def last_hit(log: Path, seen: int) -> tuple[int, int]:
    """Prompt tokens evaluated by the newest request logged after the first `seen` ones, and how many are logged."""
    hits = HIT.findall(log.read_text(errors="replace"))
    assert len(hits) > seen, "the server logged no prompt evaluation for the last request"
    return int(hits[-1]), len(hits)


@pytest.mark.asyncio
async def test_the_answer_prompt_reuses_the_head_sent_ahead(llama: LlamaServer) -> None:
    assert llama.log_path is not None
    log = llama.log_path
    tokens = TokenCounter(str(find_smollm2_gguf()))
    llm = ChatClient(llama.url, llama.model)
    seen = len(HIT.findall(log.read_text(errors="replace")))

    async def answer(question: str, topic: str) -> tuple[int, str]:
        """Tokens the server evaluated for this question's whole prompt, and the prompt's user message."""
        nonlocal seen
        prompt = build_prompt(question, passages(topic), [], tokens, 2048, 8)
        assert await llm.complete(prompt.messages, max_tokens=8)
        remaining, seen = last_hit(log, seen)
        return remaining, prompt.messages[-1]["content"]

    try:
        await answer("When does the keeper log the weather?", "harbour")  # the cache: another question's prompt
        cold, cold_user = await answer("Which way did the wind blow at the lighthouse?", "lighthouse")
        question = "Was the lighthouse light cleaned before dusk on those days?"
        head = prefill_messages(question)
        await llm.prefill(head)
        _, seen = last_hit(log, seen)
        warm, warm_user = await answer(question, "lighthouse")
    finally:
        await llm.close()
    head_text = head[1]["content"]
    assert warm_user.startswith(head_text)
    # without the head sent ahead the question was evaluated with the sources (only the system prompt was cached)
    assert cold >= tokens.count(cold_user) - 4, (cold, tokens.count(cold_user))
    # with it, only what follows the head (the sources and the closing template) was
    rest = tokens.count(warm_user[len(head_text):])
    assert warm <= rest + 8, (warm, rest)
    assert warm < cold - tokens.count(head_text) // 2
