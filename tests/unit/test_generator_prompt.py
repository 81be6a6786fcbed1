"""Grounded prompts fit the model's window by real token count (SmolLM2's own vocabulary, from its GGUF)."""

from __future__ import annotations

import pytest

from agents.generator.service import (
    ANSWER_CUE,
    SYSTEM_PROMPT,
    build_prompt,
    citations_for,
    clean_standalone,
    condense_messages,
    question_head,
)
from agents.generator.tokens import TokenCounter
from ragbus.servers import find_smollm2_gguf
from streams.events import Passage, Turn


@pytest.fixture(scope="module")
def tokens() -> TokenCounter:
    return TokenCounter(str(find_smollm2_gguf()))


def passage(n: int, words: int) -> Passage:
    return Passage(n=n, chunk_id=f"c{n}", doc_id="d", name=f"doc{n}.pdf", page=n, text=" ".join(["lighthouse"] * words),
                   score=0.5)


def test_counts_are_exact_tokens_of_the_model(tokens):
    assert tokens.exact
    assert tokens.count("Hello world") < tokens.count("Hello world, this is a longer sentence.")
    assert tokens.count("") == 0
    # the direct llama.cpp call counts what llama-cpp-python's own tokenize does, multi-byte text included
    vocab = tokens._vocab
    assert vocab is not None
    for text in ("Hello world", "naïve café — 東京 ✓", "lighthouse " * 300, "x"):
        assert tokens.count(text) == len(vocab.tokenize(text.encode(), add_bos=False, special=False)), text


@pytest.mark.parametrize("context", [512, 1024, 2048])
def test_prompt_never_exceeds_the_window_and_truncates_the_last_passage(tokens, context):
    passages = [passage(n, 400) for n in range(1, 8)]
    history = [Turn(question="What is it?" * 20, answer="It is a lighthouse. " * 40) for _ in range(5)]
    prompt = build_prompt("How tall is it?", passages, history, tokens, context, answer_tokens=256)
    exact = sum(tokens.count(m["content"]) for m in prompt.messages)
    assert exact + 256 <= context  # room for the whole answer is always left
    assert prompt.passages, "at least the best passage (truncated) must fit"
    assert len(prompt.passages) < len(passages)
    assert prompt.passages[-1].text.endswith("…")  # the last one was cut, not dropped
    assert prompt.messages[-1]["content"].startswith(question_head("How tall is it?"))


def test_the_question_opens_the_user_message_and_the_cue_closes_it(tokens):
    question = "Can I keep the lighthouse's lamp on all night?"
    prompt = build_prompt(question, [passage(1, 30), passage(2, 30)], [], tokens, 2048, 256)
    assert prompt.messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = prompt.messages[1]["content"]
    assert user.startswith(question_head(question)) and user.endswith(ANSWER_CUE)
    assert "[1] (doc1.pdf, page 1)" in user[len(question_head(question)):]
    before = build_prompt(question, [passage(1, 30), passage(2, 30)], [], tokens, 2048, 256, question_first=False)
    assert before.messages[1]["content"].startswith("Sources:\n")
    assert before.messages[1]["content"].endswith(f"Question: {question}")
    # the same words in another order, and the closing cue in place of the question's own line
    assert abs(prompt.tokens - before.tokens - tokens.count(ANSWER_CUE)) <= 3


def test_short_context_keeps_all_passages_and_recent_history(tokens):
    history = [Turn(question=f"q{i}", answer=f"a{i}") for i in range(3)]
    prompt = build_prompt("Why?", [passage(1, 10), passage(2, 10)], history, tokens, 2048, 256)
    assert [p.n for p in prompt.passages] == [1, 2]
    assert [m["content"] for m in prompt.messages[1:7]] == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert "[1] (doc1.pdf, page 1)" in prompt.messages[-1]["content"]


def test_citations_map_markers_and_fall_back_to_all_sources():
    passages = [passage(1, 3), passage(2, 3), passage(3, 3)]
    assert [c.n for c in citations_for("See [3] and [1], again [3].", passages)] == [3, 1]
    assert [c.n for c in citations_for("No markers here.", passages)] == [1, 2, 3]
    assert [c.n for c in citations_for("A bogus [9] marker.", passages)] == [1, 2, 3]


def test_condense_prompt_is_bounded_and_cleaned():
    history = [Turn(question="q" * 5000, answer="a" * 5000) for _ in range(10)]
    messages = condense_messages("and then?", history)
    assert sum(len(m["content"]) for m in messages) < 5000
    assert clean_standalone('"When was the lighthouse built?"\nExtra line', "x") == "When was the lighthouse built?"
    assert clean_standalone("", "fallback question") == "fallback question"
