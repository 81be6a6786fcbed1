"""Grounded prompts, follow-up rewriting and citations: pure functions, no broker, no HTTP."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from agents.generator.tokens import TokenCounter
from streams.events import Citation, Passage, Turn

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources you are given. "
    "Cite the sources you use with their numbers in square brackets, like [1]. "
    "If the sources do not contain the answer, say that the documents do not cover it. Be concise."
)
NOT_COVERED = "The uploaded documents do not cover this question."
NO_TEXT = "The model returned no answer to this question. Try asking it in other words."
CONDENSE_PROMPT = (
    "Rewrite the user's follow-up question so that it can be understood without the conversation. "
    "Keep every name and detail it refers to. Answer with the rewritten question only."
)
# closes the question-first user message: without it SmolLM2 repeated itself in 21 of 40 answers, with it 12
# (bench/attribution.py, 2026-12-03)
ANSWER_CUE = "\n\nAnswer the question from these sources."
SAFETY_TOKENS = 48  # chat-template tokens the server adds around each message

_MARKER = re.compile(r"\[(\d{1,3})\]")


@dataclass
class Prompt:
    messages: list[dict[str, str]]
    passages: list[Passage]  # the passages that fit, possibly the last one truncated
    counter: TokenCounter = field(repr=False)

    @functools.cached_property
    def tokens(self) -> int:
        """The prompt's exact token count. Only reported (answer.done), so counted when asked, not before the
        request: the whole prompt is ~0.7 ms of tokenizing (the fit above counted its parts)."""
        return sum(self.counter.count(m["content"]) for m in self.messages) + SAFETY_TOKENS


def _source_block(p: Passage, text: str) -> str:
    where = f"{p.name}, page {p.page}" if p.page else p.name
    return f"[{p.n}] ({where})\n{text}"


def question_head(question: str) -> str:
    """How the user message opens: the question before the sources (with a closing cue after them, SmolLM2's
    answers lean on the sources more than with the question last: bench/README.md, bench/attribution.py)."""
    return f"Question: {question}\n\nSources:\n"


def build_prompt(question: str, passages: list[Passage], history: list[Turn], tokens: TokenCounter,
                 context_tokens: int, answer_tokens: int, question_first: bool = True) -> Prompt:
    """System, earlier turns and the question + sources, fitted to the model's window by token count:
    oldest turns go first, then passages are added best-first and the last one that does not fit whole is
    truncated. The answer's own tokens are reserved, so the server never overflows.
    question_first: the question opens the user message and ANSWER_CUE closes it; False:
    the earlier layout, sources first and the question last (bench/attribution.py compares the answers)."""
    budget = context_tokens - answer_tokens - SAFETY_TOKENS
    if question_first:
        head, tail = question_head(question), ANSWER_CUE
    else:
        head, tail = "Sources:\n", f"\n\nQuestion: {question}"
    budget -= tokens.count(SYSTEM_PROMPT) + tokens.count(head) + tokens.count(tail)

    turns: list[dict[str, str]] = []
    history_budget = budget // 3  # history may not crowd out the sources
    for turn in reversed(history):
        cost = tokens.count(turn.question) + tokens.count(turn.answer) + 8
        if cost > history_budget:
            break
        history_budget -= cost
        budget -= cost
        turns[:0] = [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.answer}]

    whole = [_source_block(p, p.text) for p in passages]
    # A token covers at least one byte: when every block's bytes fit, every block fits whole, and none needs a
    # count of its own (the cut prompt's sources are ~1.5 KB against a budget of ~1,500 tokens)
    if sum(len(b.encode()) + 2 for b in whole) <= budget:
        blocks, used = whole, list(passages)
    else:
        blocks, used = [], []
        for p, block in zip(passages, whole, strict=True):
            cost = tokens.count(block) + 2
            if cost > budget:
                header = tokens.count(_source_block(p, "")) + 4
                text = tokens.truncate(p.text, budget - header)
                if text and budget - header > 20:
                    blocks.append(_source_block(p, text))
                    used.append(p.model_copy(update={"text": text}))
                    budget -= header + tokens.count(text)
                break
            blocks.append(block)
            used.append(p)
            budget -= cost
    user = head + "\n\n".join(blocks) + tail
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, *turns, {"role": "user", "content": user}]
    return Prompt(messages, used, tokens)


def condense_messages(question: str, history: list[Turn], max_chars: int = 600) -> list[dict[str, str]]:
    """A bounded prompt: the last turns (answers cut to `max_chars`) and the follow-up."""
    lines = []
    for turn in history[-3:]:
        lines.append(f"User: {turn.question[:max_chars]}")
        lines.append(f"Assistant: {turn.answer[:max_chars]}")
    conversation = "\n".join(lines)
    return [
        {"role": "system", "content": CONDENSE_PROMPT},
        {"role": "user", "content": f"Conversation:\n{conversation}\n\nFollow-up question: {question}\n\n"
                                    "Standalone question:"},
    ]


def clean_standalone(text: str, fallback: str) -> str:
    """The model's rewrite, or the original question if the rewrite is empty or runs on."""
    first = text.strip().splitlines()[0].strip().strip('"') if text.strip() else ""
    return first if 3 <= len(first) <= 400 else fallback


def cited_numbers(answer: str) -> list[int]:
    return list(dict.fromkeys(int(n) for n in _MARKER.findall(answer)))


def _citation(p: Passage) -> Citation:
    return Citation(n=p.n, chunk_id=p.chunk_id, doc_id=p.doc_id, name=p.name, page=p.page, text=p.text,
                    score=p.score)


def citations_for(answer: str, passages: list[Passage]) -> list[Citation]:
    """The passages the answer cites by [n]. A small model often writes no markers at all: then the answer
    is still grounded on every passage it was shown, and those are its citations."""
    by_n = {p.n: p for p in passages}
    cited = [by_n[n] for n in cited_numbers(answer) if n in by_n]
    return [_citation(p) for p in (cited or passages)]


def sources_for(passages: list[Passage]) -> list[Citation]:
    return [_citation(p) for p in passages]


def citing_grammar(numbers: list[int]) -> str:
    """A llama.cpp GBNF grammar: the answer is sentences that each end with one source marker, [n] for a
    source the prompt showed (constrained citing, RAGBUS_CONSTRAINED_CITING)."""
    choices = " | ".join(f'"{n}"' for n in numbers) or '"1"'
    return ('root ::= sentence (" " sentence)*\n'
            'sentence ::= [^\\[\\]\\n.!?] [^\\[\\]\\n.!?]* [.!?] " [" source "]"\n'
            f"source ::= {choices}\n")


def cut_notice(limit: int) -> str:
    return f"The answer was cut off at the {limit}-token limit."


def repetition_notice() -> str:
    return "The model began repeating itself: the answer stops where the repetition began."


NO_SUPPORT = "No sentence of this answer is supported by the sources: check them before relying on it."


def auto_notice(supported: int, total: int) -> str:
    return (f"Showing the sources' own sentences instead of a generated answer: only {supported} of its "
            f"{total} sentences were supported by the sources.")
