"""The generator stops SmolLM2 when it loops, and keeps the answer up to where the loop began.

The looping texts are SmolLM2-135M's own answers from bench/attribution.py (shortened); the handler test at the
end drives the generator's answer step with a scripted LLM stream (a fake LLM: this checks the handler's logic,
bench/attribution.py measures the real model)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.generator.repetition import RepetitionGuard, repetition_start, trim_repetition

PARAGRAPH = ("The reason why packages are broken into stable and testing is that it's easier for people to fix "
             "things when they're interested. Bug fixes in unstable are not directly applied to testing.\n\n")
LOOPING = "Packages move slowly. " + "The previous answer was incorrect. " + PARAGRAPH * 6
NUMBERS = "Here are the steps:\n" + "".join(f"{i}.\n" for i in range(1, 60))
SYMBOLS = "The word Debian comes from Debra and Ian. [1] " + "#(" * 60
GOOD = ("Run `apt-get update` to refresh the package lists, then `apt-get upgrade` to install the newer versions.\n"
        "1. Back up /etc first.\n2. Read the release notes.\n3. Run `apt-get update` again after changing "
        "sources.list.\nThe upgrade keeps your configuration files unless you choose to replace them.")


def stream(text: str, size: int = 4) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def first_loop(text: str) -> int | None:
    guard = RepetitionGuard()
    for k, piece in enumerate(stream(text)):
        if guard.feed(piece):
            return k
    return None


def test_a_repeated_paragraph_stops_early_and_keeps_the_first_copy():
    stop = first_loop(LOOPING)
    assert stop is not None and stop * 4 < len("Packages move slowly. The previous answer was incorrect. ") \
        + 2 * len(PARAGRAPH)  # stopped within the second copy, not at a token limit
    assert trim_repetition(LOOPING) == ("Packages move slowly. The previous answer was incorrect. "
                                        + PARAGRAPH.strip())


def test_runs_without_letters_stop_and_are_dropped():
    assert first_loop(NUMBERS) is not None and first_loop(SYMBOLS) is not None
    assert trim_repetition(NUMBERS) == "Here are the steps:"
    assert trim_repetition(SYMBOLS) == "The word Debian comes from Debra and Ian. [1]"


def test_an_ordinary_answer_with_a_list_and_a_repeated_command_is_left_alone():
    assert first_loop(GOOD) is None and repetition_start(GOOD) is None
    assert trim_repetition(GOOD) == GOOD


def test_the_guard_keeps_what_streamed_before_the_loop():
    guard = RepetitionGuard()
    for piece in stream(LOOPING):
        if guard.feed(piece):
            break
    assert guard.looping and guard.kept() == trim_repetition(LOOPING)
    assert LOOPING.startswith(guard.text)  # everything fed, nothing more


class ScriptedLLM:
    """A fake LLM (unit test only): streams a fixed text in pieces and records how far it was read."""

    def __init__(self, text: str) -> None:
        self.pieces, self.read, self.closed = stream(text), 0, False

    def stream(self, messages, max_tokens, temperature, grammar, finish):
        async def pieces():
            try:
                for piece in self.pieces:
                    self.read += 1
                    yield piece
                finish.append("length")
            finally:
                self.closed = True
        return pieces()


async def test_the_generator_stops_the_llm_at_the_loop_and_says_so(monkeypatch):
    from agents.generator import handlers
    from agents.generator.attribution import Attributor
    from agents.generator.settings import GeneratorSettings
    from agents.generator.tokens import TokenCounter
    from streams.events import ContextBuilt, Passage
    from tests.unit.test_attribution import bag_of_words

    published: dict[str, list] = {"tokens": [], "done": []}

    async def on_token(event):
        published["tokens"].append(event)

    async def on_done(event):
        published["done"].append(event)

    async def flush():
        pass

    monkeypatch.setattr(handlers, "publish_token", on_token)
    monkeypatch.setattr(handlers, "publish_done", on_done)
    broker = SimpleNamespace(connection=SimpleNamespace(flush=flush))
    passage = Passage(n=1, doc_id="d", chunk_id="d#0", name="testing.html", text=PARAGRAPH, score=0.9)
    event = ContextBuilt(event_id="c", query_id="q", question="Why are stable and testing separate?",
                         passages=[passage], embedding_model="m")
    llm = ScriptedLLM(LOOPING)
    await handlers.answer(event, asyncio.Event(), broker, llm, TokenCounter(), GeneratorSettings(),
                          Attributor(bag_of_words))
    done = published["done"][0]
    assert llm.closed and llm.read < len(llm.pieces) // 3  # the LLM was stopped, not read to its limit
    assert done.repeating and not done.truncated
    assert done.answer == trim_repetition(LOOPING)
    assert done.generated_answer == "".join(t.text for t in published["tokens"]).strip()
    assert "The model began repeating itself: the answer stops where the repetition began." in done.notices
    assert done.tokens == len(published["tokens"]) == llm.read
