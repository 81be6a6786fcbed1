"""Fewer, better prompt tokens: each passage shown to the LLM is cut down to its sentences that answer the
question.

Prompt evaluation is most of the time to first token with a small model on a CPU (SmolLM2-135M here: ~270 prompt
tokens/s, so five 200-token passages are ~4 s before the first token). Retrieval sends each passage's sentences
with their similarity to the question (the sentence vectors made at ingest), so the cut embeds nothing
(`focus_scored`); passages without them are cut into embedded sentences as attribution does (`Evidence`), one
more embedding. Every passage keeps its best sentence; then the best sentences over all passages are added while
they fit `budget` tokens. Kept sentences stay in reading order, with "…" where sentences were left out.
Deterministic: a function of context.built and the model, like attribution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agents.generator.attribution import (
    AttributionConfig,
    Encode,
    Evidence,
    Span,
    question_scores,
    question_words,
    scored_sentences,
    sentence_score,
)
from streams.events import Passage

GAP = "…"


def focus(question: str, evidence: Evidence, encode: Encode, count: Callable[[str], int], budget: int,
          config: AttributionConfig = AttributionConfig()) -> list[Passage]:
    """The passages with only their sentences that fit `budget` tokens, best first (0: passages as they are)."""
    if budget <= 0 or not evidence.spans:
        return evidence.passages
    scores = question_scores(question, evidence, encode, config)
    # a long sentence is embedded as overlapping windows of one span: the span counts once, at its best window
    by_n = {p.n: p for p in evidence.passages}
    best: dict[tuple[int, int], float] = {}
    spans: dict[tuple[int, int], Span] = {}
    for k, (n, span) in enumerate(evidence.spans):
        key = (n, span.start)
        best[key] = max(best.get(key, -1.0), scores[k])
        spans[key] = Span(span.start, span.end, by_n[n].text[span.start:span.end])  # the sentence, not a window
    return _within(evidence.passages, best, spans, count, budget)


def focus_scored(question: str, passages: Sequence[Passage], count: Callable[[str], int], budget: int,
                 config: AttributionConfig = AttributionConfig()) -> list[Passage] | None:
    """`focus` from the sentence scores retrieval sent with the passages (`Passage.sentences`, the index's
    sentence vectors): no embedding before the prompt. None when a passage came without them (or with spans
    that are not its text's), so the caller embeds instead."""
    if budget <= 0:
        return list(passages)
    if not passages or not all(scored_sentences(p) for p in passages):
        return None
    words = question_words(question)
    best: dict[tuple[int, int], float] = {}
    spans: dict[tuple[int, int], Span] = {}
    for p in passages:
        for s in p.sentences:
            key = (p.n, s.start)
            spans[key] = Span(s.start, s.end, p.text[s.start:s.end])
            best[key] = sentence_score(s.score, words, spans[key].text, config)
    return _within(list(passages), best, spans, count, budget)


def _within(passages: list[Passage], best: dict[tuple[int, int], float], spans: dict[tuple[int, int], Span],
            count: Callable[[str], int], budget: int) -> list[Passage]:
    """Every passage keeps its best sentence; then the best sentences overall while they fit `budget`."""
    ranked = sorted(best, key=lambda key: (-best[key], key))
    firsts: dict[int, tuple[int, int]] = {}
    for key in ranked:
        firsts.setdefault(key[0], key)
    kept = set(firsts.values())  # every source keeps its best sentence, whatever the budget
    used = sum(count(spans[key].text) + 1 for key in kept)
    for key in ranked:  # a count is a tokenize: none twice, and none once the budget is spent
        if used >= budget:
            break
        if key in kept:
            continue
        cost = count(spans[key].text) + 1
        if used + cost <= budget:
            kept.add(key)
            used += cost
    return [_cut(p, sorted((spans[key] for key in kept if key[0] == p.n), key=lambda s: s.start))
            for p in passages]


def _cut(p: Passage, kept: list[Span]) -> Passage:
    if not kept:
        return p
    pieces: list[str] = [GAP] if p.text[:kept[0].start].strip() else []
    for i, span in enumerate(kept):
        if i and p.text[kept[i - 1].end:span.start].strip():
            pieces.append(GAP)
        pieces.append(span.text)
    if p.text[kept[-1].end:].strip():
        pieces.append(GAP)
    text = " ".join(pieces)
    return p if text == p.text else p.model_copy(update={"text": text})
