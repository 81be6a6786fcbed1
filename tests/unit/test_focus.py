"""Prompt sources cut to the sentences that answer the question (agents/generator/focus.py), with a
deterministic bag-of-words stand-in for the embedding model; the last test drives the generator's answer step
with a scripted LLM stream (a fake LLM: it checks what the handler sends and publishes, not the model)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.generator.attribution import gather_evidence
from agents.generator.focus import GAP, focus, focus_scored
from streams.events import Passage, SentenceScore
from streams.sentences import split_sentences
from tests.unit.test_attribution import bag_of_words
from tests.unit.test_repetition import ScriptedLLM


def words(text: str) -> int:
    return len(text.split())


HARBOUR = Passage(n=1, chunk_id="h#0", doc_id="h", name="harbour.md", score=0.8, text=(
    "The harbour wall was finished in 1903. It is 410 metres long. "
    "Fishing boats pay a mooring fee of nine crowns a night. The fee is collected by the harbourmaster. "
    "The harbour light shows a steady green light."))
FESTIVAL = Passage(n=2, chunk_id="f#0", doc_id="f", name="festival.md", score=0.5, text=(
    "The Lantern Festival is held in March. Lanterns are floated on the river. Stalls sell roasted chestnuts."))
QUESTION = "How much is the mooring fee for fishing boats, and who collects the fee?"


def test_sources_keep_the_sentences_that_answer_in_reading_order_within_the_budget():
    evidence = gather_evidence([HARBOUR, FESTIVAL], bag_of_words)
    harbour, festival = focus(QUESTION, evidence, bag_of_words, words, budget=30)
    assert harbour.text == (f"{GAP} Fishing boats pay a mooring fee of nine crowns a night. The fee is collected "
                            f"by the harbourmaster. {GAP}")
    # every source keeps its best sentence, even one that hardly answers: the prompt still shows all sources
    assert festival.text.count(".") == 1 and festival.text != FESTIVAL.text
    assert sum(words(p.text.replace(GAP, "")) for p in (harbour, festival)) <= 30
    assert (harbour.n, harbour.chunk_id, harbour.score) == (HARBOUR.n, HARBOUR.chunk_id, HARBOUR.score)


def test_a_budget_that_holds_everything_or_zero_leaves_the_passages_as_they_are():
    evidence = gather_evidence([HARBOUR, FESTIVAL], bag_of_words)
    assert focus(QUESTION, evidence, bag_of_words, words, budget=1000) == [HARBOUR, FESTIVAL]
    assert focus(QUESTION, evidence, bag_of_words, words, budget=0) == [HARBOUR, FESTIVAL]
    tiny = focus(QUESTION, evidence, bag_of_words, words, budget=1)
    assert [p.text.count(".") for p in tiny] == [1, 1]  # the best sentence of each, nothing more


def test_focus_is_deterministic():
    evidence = gather_evidence([HARBOUR, FESTIVAL], bag_of_words)
    assert focus(QUESTION, evidence, bag_of_words, words, 20) == focus(QUESTION, evidence, bag_of_words, words, 20)


def scored(passage: Passage, question: str = QUESTION) -> Passage:
    """The passage as retrieval sends it with sentence vectors: each sentence with its cosine to the question
    (here from the bag-of-words stand-in, as the embedded cut would compute it)."""
    spans = split_sentences(passage.text)
    cosines = bag_of_words([question]) @ bag_of_words([s.text for s in spans]).T
    return passage.model_copy(update={"sentences": [SentenceScore(start=s.start, end=s.end, score=float(c))
                                                    for s, c in zip(spans, cosines[0], strict=True)]})


def test_sentence_scores_from_retrieval_cut_as_the_embedded_sentences_do():
    evidence = gather_evidence([HARBOUR, FESTIVAL], bag_of_words)
    sent = {1: scored(HARBOUR), 2: scored(FESTIVAL)}
    for budget in (1, 24, 30, 1000):
        assert focus_scored(QUESTION, list(sent.values()), words, budget) == [
            p.model_copy(update={"sentences": sent[p.n].sentences})
            for p in focus(QUESTION, evidence, bag_of_words, words, budget)]


def test_without_sentence_scores_or_with_spans_not_of_the_text_the_cut_falls_back_to_embedding():
    assert focus_scored(QUESTION, [scored(HARBOUR), FESTIVAL], words, 30) is None
    broken = scored(FESTIVAL).model_copy(update={"sentences": [SentenceScore(start=0, end=10_000, score=0.9)]})
    assert focus_scored(QUESTION, [scored(HARBOUR), broken], words, 30) is None
    assert focus_scored(QUESTION, [HARBOUR], words, 0) == [HARBOUR]  # no budget: nothing to cut


class Recorded:
    """The generator's publishers and its attribution model, recorded: the model's calls (texts per call), how
    many calls came before the first token, and the answer.done events."""

    def __init__(self, monkeypatch) -> None:
        from agents.generator import handlers

        self.calls: list[int] = []
        self.first_token_after: list[int] = []
        self.published: list = []
        monkeypatch.setattr(handlers, "publish_token", self._token)
        monkeypatch.setattr(handlers, "publish_done", self._done)
        self.broker = SimpleNamespace(connection=SimpleNamespace(flush=self._flush))

    def encode(self, texts):
        self.calls.append(len(texts))
        return bag_of_words(texts)

    async def _token(self, event) -> None:
        if not self.first_token_after:
            self.first_token_after.append(len(self.calls))

    async def _done(self, event) -> None:
        self.published.append(event)

    async def _flush(self) -> None:
        pass


async def test_with_its_own_models_sentence_scores_nothing_is_embedded_before_the_prompt(monkeypatch):
    """From an index of the attributor's own model, the prompt goes out before that model is called at all; the
    answer is attributed all the same (its evidence is gathered from the first token on)."""
    from agents.generator import handlers
    from agents.generator.attribution import Attributor
    from agents.generator.settings import GeneratorSettings
    from agents.generator.tokens import TokenCounter
    from streams.events import ContextBuilt

    recorded = Recorded(monkeypatch)
    settings = GeneratorSettings(prompt_source_tokens=24)
    embedded_before_prompt: list[int] = []
    for index in ("minilm", "static-256"):  # the attributor's own model, another one
        recorded.calls.clear()
        event = ContextBuilt(event_id="c", query_id="q", question=QUESTION, embedding_model=index,
                             passages=[scored(HARBOUR), scored(FESTIVAL)])
        llm = ScriptedLLM("Boats pay nine crowns a night [1]. The harbourmaster collects it.")
        original = llm.stream
        llm.stream = lambda *args, _o=original: (embedded_before_prompt.append(len(recorded.calls)), _o(*args))[1]
        await handlers.answer(event, asyncio.Event(), recorded.broker, llm, TokenCounter(), settings,
                              Attributor(recorded.encode, model="minilm"))
        done = recorded.published[-1]
        assert recorded.calls  # the attribution did embed
        assert [s.text for s in done.sources] == [HARBOUR.text, FESTIVAL.text]
        assert all(s.supported for s in done.sentences) and {c.n for c in done.citations} == {1}
    # nothing before the prompt from its own index; another model's scores are not its own: it embeds for the cut
    assert embedded_before_prompt[0] == 0 and embedded_before_prompt[1] > 0


def test_the_extractive_answer_from_sentence_scores_is_the_embedded_one():
    from agents.generator.attribution import extract, extract_scored

    evidence = gather_evidence([HARBOUR, FESTIVAL], bag_of_words)
    embedded = extract(QUESTION, evidence, bag_of_words)
    assert embedded.answer and extract_scored(QUESTION, [scored(HARBOUR), scored(FESTIVAL)]) == embedded
    assert extract_scored(QUESTION, [scored(HARBOUR), FESTIVAL]) is None


async def test_an_extractive_answer_from_its_own_index_streams_before_anything_is_embedded(monkeypatch):
    from agents.generator import handlers
    from agents.generator.attribution import Attributor
    from agents.generator.settings import GeneratorSettings
    from agents.generator.tokens import TokenCounter
    from streams.events import ContextBuilt

    recorded = Recorded(monkeypatch)
    event = ContextBuilt(event_id="c", query_id="q", question=QUESTION, embedding_model="minilm",
                         passages=[scored(HARBOUR), scored(FESTIVAL)], answer_mode="extractive")
    await handlers.answer(event, asyncio.Event(), recorded.broker, ScriptedLLM("never called"), TokenCounter(),
                          GeneratorSettings(), Attributor(recorded.encode, model="minilm"))
    done = recorded.published[-1]
    # streamed before any embedding; attributed after
    assert recorded.first_token_after == [0] and recorded.calls
    assert done.answer_mode == "extractive" and "nine crowns" in done.answer and done.citations


async def test_the_generator_prompts_with_the_focused_sources_and_cites_the_whole_passages(monkeypatch):
    from agents.generator import handlers
    from agents.generator.attribution import Attributor
    from agents.generator.settings import GeneratorSettings
    from agents.generator.tokens import TokenCounter
    from streams.events import ContextBuilt

    published: list = []

    async def on_done(event):
        published.append(event)

    async def ignore(*_):
        pass

    monkeypatch.setattr(handlers, "publish_token", ignore)
    monkeypatch.setattr(handlers, "publish_done", on_done)
    broker = SimpleNamespace(connection=SimpleNamespace(flush=ignore))
    event = ContextBuilt(event_id="c", query_id="q", question=QUESTION, passages=[HARBOUR, FESTIVAL],
                         embedding_model="m")
    prompts = {}
    for budget in (0, 24):
        llm = ScriptedLLM("Boats pay nine crowns a night [1]. The harbourmaster collects it.")
        sent: list = []
        original = llm.stream
        llm.stream = lambda messages, *rest, _o=original, _s=sent: (_s.append(messages), _o(messages, *rest))[1]
        settings = GeneratorSettings(prompt_source_tokens=budget)
        await handlers.answer(event, asyncio.Event(), broker, llm, TokenCounter(), settings, Attributor(bag_of_words))
        prompts[budget] = sent[0][-1]["content"]
        done = published[-1]
        assert [s.text for s in done.sources] == [HARBOUR.text, FESTIVAL.text]  # the whole passages
        assert all(s.supported for s in done.sentences) and {c.n for c in done.citations} == {1}
        assert done.timings["prompt_tokens"] > 0
    assert "The harbour wall was finished in 1903." in prompts[0]
    assert "The harbour wall was finished in 1903." not in prompts[24]
    assert "nine crowns a night" in prompts[24] and len(prompts[24]) < len(prompts[0])
    assert published[1].timings["prompt_tokens"] < published[0].timings["prompt_tokens"]


def test_the_benchmark_measures_the_generators_default_budget():
    """bench/attribution.py's focused variant runs with the generator's default (read from its source: importing
    the benchmark would put bench/ folders with generic module names on sys.path for the rest of the session)."""
    import ast
    from pathlib import Path

    from agents.generator.settings import GeneratorSettings

    source = (Path(__file__).resolve().parents[2] / "bench" / "attribution.py").read_text()
    value = next(node.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", "") == "FOCUS_TOKENS" for t in node.targets))
    assert ast.literal_eval(value) == GeneratorSettings().prompt_source_tokens > 0
