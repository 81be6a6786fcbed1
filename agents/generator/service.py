"""Grounded prompts and citations: pure functions, no broker, no HTTP."""

from __future__ import annotations

import re

from streams.events import Citation, Passage

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources you are given. "
    "Cite the sources you use with their numbers in square brackets, like [1]. "
    "If the sources do not contain the answer, say that the documents do not cover it. Be concise."
)
NOT_COVERED = "The uploaded documents do not cover this question."

_MARKER = re.compile(r"\[(\d{1,3})\]")


def build_messages(question: str, passages: list[Passage], context_chars: int) -> list[dict[str, str]]:
    """System + user messages with numbered sources, cut to `context_chars` so the prompt fits the window."""
    budget = context_chars
    blocks = []
    for p in passages:
        if budget <= 0:
            break
        where = f"{p.name}, page {p.page}" if p.page else p.name
        text = p.text[:budget]
        budget -= len(text)
        blocks.append(f"[{p.n}] ({where})\n{text}")
    sources = "\n\n".join(blocks)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Sources:\n{sources}\n\nQuestion: {question}"},
    ]


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
