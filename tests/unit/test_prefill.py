"""When the generator sends a prompt's head ahead (agents/generator/prefill.py). The LLM client here is a fake
that records calls: whether the server then reuses the head is tests/integration/test_prefill.py's job."""

from __future__ import annotations

import asyncio

import pytest

from agents.generator.prefill import Prefiller
from agents.generator.service import SYSTEM_PROMPT, question_head


class RecordingLLM:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls: list[list[dict[str, str]]] = []
        self.delay, self.fail = delay, fail

    async def prefill(self, messages: list[dict[str, str]]) -> None:
        self.calls.append(messages)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("server down")


async def settle(prefiller: Prefiller) -> None:
    if prefiller._task is not None:
        await prefiller._task


@pytest.mark.asyncio
async def test_an_idle_generator_sends_the_system_prompt_and_question_head():
    llm = RecordingLLM()
    prefiller = Prefiller(llm)  # type: ignore[arg-type]
    assert prefiller.start("q1", "why is the sky blue")
    await settle(prefiller)
    assert llm.calls == [[{"role": "system", "content": SYSTEM_PROMPT},
                          {"role": "user", "content": question_head("why is the sky blue")}]]


@pytest.mark.asyncio
async def test_skipped_while_answering_while_one_is_on_its_way_or_after_the_answer_began():
    llm = RecordingLLM(delay=0.05)
    prefiller = Prefiller(llm)  # type: ignore[arg-type]
    with prefiller.answer("q0"):
        assert not prefiller.start("q1", "a")  # would evict the running answer's cache and wait behind it
    assert prefiller.start("q2", "b")
    assert not prefiller.start("q3", "c")  # the server evaluates one prompt at a time: keep q2's
    await settle(prefiller)
    with prefiller.answer("q4"):
        pass
    assert not prefiller.start("q4", "d")  # context.built came first: the head would only evict the answer's
    assert prefiller.start("q5", "e")
    await settle(prefiller)
    assert [m[1]["content"] for m in llm.calls] == [question_head("b"), question_head("e")]


@pytest.mark.asyncio
async def test_a_failed_prefill_is_swallowed_and_disabled_sends_nothing():
    failing = Prefiller(RecordingLLM(fail=True))  # type: ignore[arg-type]
    assert failing.start("q1", "a")
    await settle(failing)  # no exception: the answer's own request reports a down LLM
    off = Prefiller(RecordingLLM(), enabled=False)  # type: ignore[arg-type]
    assert not off.start("q2", "b")
