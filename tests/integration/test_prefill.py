"""The prompt's head sent at query.asked is reused by the real llama.cpp server when the whole prompt follows:
only the sources are evaluated then (the server's own log says how many tokens it took from its cache)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.generator.llm import ChatClient
from agents.generator.service import build_prompt, prefill_messages
from agents.generator.tokens import TokenCounter
from ragbus.servers import LlamaServer, find_smollm2_gguf
from streams.events import Passage

HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


def passages(topic: str) -> list[Passage]:
    return [Passage(n=n, chunk_id=f"{topic}{n}", doc_id=topic, name=f"{topic}.txt", score=0.6,
                    text=f"The {topic} keeper logs the weather every morning at six. Entry {n} says the wind "
                         f"came from the west and the {topic} light was cleaned before dusk.") for n in (1, 2, 3)]


def last_hit(log: Path, seen: int) -> tuple[tuple[int, int], int]:
    """The newest prefix-match line written after the first `seen` ones, and how many there are now."""
    hits = HIT.findall(log.read_text(errors="replace"))
    assert len(hits) > seen, "the server logged no prefix match for the last request"
    return (int(hits[-1][0]), int(hits[-1][1])), len(hits)


@pytest.mark.asyncio
async def test_the_answer_prompt_reuses_the_head_sent_ahead(llama: LlamaServer) -> None:
    assert llama.log_path is not None
    tokens = TokenCounter(str(find_smollm2_gguf()))
    llm = ChatClient(llama.url, llama.model)

    async def answer(question: str, topic: str) -> tuple[int, int]:
        nonlocal seen
        prompt = build_prompt(question, passages(topic), [], tokens, 2048, 8)
        assert await llm.complete(prompt.messages, max_tokens=8)
        hit, seen = last_hit(llama.log_path, seen)
        return hit

    seen = len(HIT.findall(llama.log_path.read_text(errors="replace")))
    try:
        await answer("When does the keeper log the weather?", "harbour")  # the cache: another question
        cold = await answer("Which way did the wind blow at the lighthouse?", "lighthouse")
        head = prefill_messages("Was the lighthouse light cleaned before dusk on those days?")
        await llm.prefill(head)
        _, seen = last_hit(llama.log_path, seen)
        warm = await answer("Was the lighthouse light cleaned before dusk on those days?", "lighthouse")
    finally:
        await llm.close()
    question_tokens = tokens.count(head[1]["content"])
    # without the head only the system prompt's tokens (and the template around them) came from the cache
    assert warm[0] >= cold[0] + question_tokens - 3, (cold, warm, question_tokens)
    assert warm[1] <= cold[1] - question_tokens + 6, (cold, warm, question_tokens)
