"""Which passage supports which sentence of an answer, decided after generation; and extractive answers.

Pure functions of the passages (context.built), the text and an embedding function, so a replay of the log
decides the same: no broker, no LLM. Support of sentence s by passage p is

    support = DENSE_WEIGHT × max cosine(s, any sentence of p) + LEXICAL_WEIGHT × share of s's content words in p

(thresholds and weights tuned on bench/eval with bench/attribution.py). A sentence is supported when its best
passage reaches `threshold`; it cites that passage (and any other within `margin` of it). The model's own [n]
markers are kept when that passage supports the sentence about as well as the best one, and replaced by the
best one otherwise. Scores are rounded to 4 decimals so that a replay on another run compares equal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from streams.events import AnswerSentence, Citation, Passage
from streams.sentences import MARKER, Span, content_words, split_sentences

T = TypeVar("T")
Encode = Callable[[list[str]], np.ndarray]  # texts -> float32 rows, L2-normalised (cosine = dot product)

MAX_SENTENCE_WORDS = 60  # a passage "sentence" longer than this (man pages: few full stops) is cut in windows


@dataclass(frozen=True)
class AttributionConfig:
    threshold: float = 0.5  # support at or above this: the sentence is supported
    dense_weight: float = 0.6
    lexical_weight: float = 0.4
    margin: float = 0.05  # other passages within this of the best are cited too; a model's marker is kept
    max_citations: int = 2  # per sentence
    min_words: int = 1  # sentences with fewer content words than this ("[2]", "Yes.") join the one before
    extractive_sentences: int = 3  # an extractive answer has at most this many sentences ...
    extractive_margin: float = 0.15  # ... each within this of the best one's score for the question
    auto_supported_share: float = 0.5  # auto keeps a generated answer when more than this share is supported


@dataclass
class Evidence:
    """The passages cut into sentences, embedded once per answer (attribution and extraction share them)."""

    passages: list[Passage]
    spans: list[tuple[int, Span]]  # (passage n, sentence)
    vectors: np.ndarray  # one row per span
    words: dict[int, set[str]]  # content words (stemmed) of each passage
    encode_ms: float = 0.0


@dataclass
class Attribution:
    sentences: list[AnswerSentence]
    citations: list[Citation]
    ms: float = 0.0  # time spent here, embedding included

    @property
    def supported(self) -> int:
        return sum(s.supported for s in self.sentences)

    @property
    def supported_share(self) -> float:
        return self.supported / len(self.sentences) if self.sentences else 0.0


@dataclass
class Extract:
    answer: str
    picked: list[tuple[int, str, float]] = field(default_factory=list)  # (n, sentence, score for the question)


def markers(text: str) -> list[int]:
    return list(dict.fromkeys(int(n) for n in MARKER.findall(text)))


def _windows(span: Span) -> list[Span]:
    words = span.text.split()
    if len(words) <= MAX_SENTENCE_WORDS:
        return [span]
    step = MAX_SENTENCE_WORDS // 2
    return [Span(span.start, span.end, " ".join(words[i:i + MAX_SENTENCE_WORDS]))
            for i in range(0, len(words) - step, step)]


def gather_evidence(passages: Sequence[Passage], encode: Encode) -> Evidence:
    started = time.perf_counter()
    spans = [(p.n, w) for p in passages for s in split_sentences(p.text, min_words=1) for w in _windows(s)]
    vectors = encode([s.text for _, s in spans]) if spans else np.zeros((0, 1), dtype=np.float32)
    words = {p.n: set(content_words(p.text)) for p in passages}
    return Evidence(list(passages), spans, vectors, words, (time.perf_counter() - started) * 1000)


def _support(vectors: np.ndarray, words: list[list[str]], evidence: Evidence,
             config: AttributionConfig) -> np.ndarray:
    """(sentences, passages) support scores, passages in evidence order."""
    ns = [p.n for p in evidence.passages]
    dense = np.zeros((len(words), len(ns)), dtype=np.float64)
    if len(evidence.spans):
        sims = vectors @ evidence.vectors.T
        owner = np.asarray([ns.index(n) for n, _ in evidence.spans])
        for j in range(len(ns)):
            cols = sims[:, owner == j]
            if cols.shape[1]:
                dense[:, j] = cols.max(axis=1)
    lexical = np.asarray([[len(set(w) & evidence.words[n]) / len(set(w)) if w else 0.0 for n in ns]
                          for w in words], dtype=np.float64).reshape(len(words), len(ns))
    return np.round(config.dense_weight * np.clip(dense, 0.0, 1.0) + config.lexical_weight * lexical, 4)


def attribute(answer: str, evidence: Evidence, encode: Encode,
              config: AttributionConfig = AttributionConfig()) -> Attribution:
    """Every sentence of `answer` with its best passage and whether that passage supports it."""
    started = time.perf_counter()
    spans = split_sentences(answer, config.min_words)
    if not spans or not evidence.passages:
        return Attribution([], [], (time.perf_counter() - started) * 1000)
    plain = [MARKER.sub("", s.text).strip() for s in spans]
    scores = _support(encode(plain), [content_words(t) for t in plain], evidence, config)
    by_n = {p.n: p for p in evidence.passages}
    column = {p.n: j for j, p in enumerate(evidence.passages)}
    sentences: list[AnswerSentence] = []
    citations: list[Citation] = []
    for i, span in enumerate(spans):
        row = scores[i]
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))  # ties: the better-ranked passage
        best = order[0]
        best_score = float(row[best])
        written = [n for n in markers(span.text) if n in by_n]
        supported = best_score >= config.threshold
        cited: list[int] = []
        corrected = False
        if supported:
            near = [evidence.passages[j].n for j in order if row[j] >= best_score - config.margin]
            kept = [n for n in written if row[column[n]] >= config.threshold and n in near]
            corrected = bool(written) and len(kept) < len(written)
            cited = list(dict.fromkeys([*kept, *near]))[: max(config.max_citations, len(kept))]
        sentences.append(AnswerSentence(i=i, start=span.start, end=span.end, text=span.text, supported=supported,
                                        score=best_score, best=evidence.passages[best].n, citations=cited,
                                        markers=written, corrected=corrected))
        for n in cited:
            p = by_n[n]
            citations.append(Citation(n=n, chunk_id=p.chunk_id, doc_id=p.doc_id, name=p.name, page=p.page,
                                      text=p.text, score=float(row[column[n]]), sentence=i))
    return Attribution(sentences, citations, (time.perf_counter() - started) * 1000 + evidence.encode_ms)


def question_words(question: str) -> set[str]:
    return set(content_words(question))


def sentence_score(cosine: float, question_words: set[str], sentence: str,
                   config: AttributionConfig = AttributionConfig()) -> float:
    """How well a passage sentence answers a question: dense × its cosine + lexical × share of the question's
    content words in it."""
    lexical = len(question_words & set(content_words(sentence))) / len(question_words) if question_words else 0.0
    return round(config.dense_weight * cosine + config.lexical_weight * lexical, 4)


def question_scores(question: str, evidence: Evidence, encode: Encode,
                    config: AttributionConfig = AttributionConfig()) -> list[float]:
    """`sentence_score` of each evidence sentence, with the question embedded here."""
    if not evidence.spans:
        return []
    q_vector = encode([question])[0]
    words = question_words(question)
    return [sentence_score(float(evidence.vectors[k] @ q_vector), words, span.text, config)
            for k, (_, span) in enumerate(evidence.spans)]


def extract(question: str, evidence: Evidence, encode: Encode,
            config: AttributionConfig = AttributionConfig()) -> Extract:
    """The passage sentences that best answer `question`, each followed by its [n], in reading order."""
    if not evidence.spans:
        return Extract("")
    scores = question_scores(question, evidence, encode, config)
    return _pick([(scores[k], n, span.text) for k, (n, span) in enumerate(evidence.spans)], config)


def extract_scored(question: str, passages: Sequence[Passage],
                   config: AttributionConfig = AttributionConfig()) -> Extract | None:
    """`extract` from the sentence scores retrieval sent with the passages: nothing to embed. None when a
    passage came without them (or with spans that are not its text's)."""
    if not passages or not all(scored_sentences(p) for p in passages):
        return None
    words = question_words(question)
    return _pick([(sentence_score(s.score, words, p.text[s.start:s.end], config), p.n, p.text[s.start:s.end])
                  for p in passages for s in p.sentences], config)


def scored_sentences(passage: Passage) -> bool:
    """The passage has sentence scores, and their spans lie in its text."""
    return bool(passage.sentences) and all(0 <= s.start < s.end <= len(passage.text) for s in passage.sentences)


def _pick(sentences: list[tuple[float, int, str]], config: AttributionConfig) -> Extract:
    """From (score, passage n, text) in reading order: the best distinct sentences of 3+ content words within
    the margin of the best, in reading order, each with its [n]."""
    scored: list[tuple[float, int, int]] = []
    seen: set[str] = set()
    for k, (value, n, text) in enumerate(sentences):
        key = text.strip().lower()
        if key in seen or len(content_words(text)) < 3:
            continue
        seen.add(key)
        scored.append((value, k, n))
    if not scored:
        return Extract("")
    scored.sort(key=lambda t: (-t[0], t[1]))
    top = scored[0][0]
    chosen = sorted([t for t in scored if t[0] >= top - config.extractive_margin][: config.extractive_sentences],
                    key=lambda t: t[1])  # reading order: passage by passage, sentence by sentence
    picked = [(n, _sentence_text(sentences[k][2]), value) for value, k, n in chosen]
    return Extract(" ".join(f"{text} [{n}]" for n, text, _ in picked), picked)


def _sentence_text(text: str) -> str:
    text = " ".join(MARKER.sub("", text).split())
    return text if text[-1:] in ".!?:" else text + "."


def cited_passages(attribution: Attribution) -> list[int]:
    """The distinct passages an attributed answer cites, in order of first use."""
    return list(dict.fromkeys(c.n for c in attribution.citations))


class Attributor:
    """The generator's embedding model for attribution, called off the event loop, one call at a time."""

    def __init__(self, encode: Encode, config: AttributionConfig = AttributionConfig(), model: str = "") -> None:
        self.encode = encode
        self.config = config
        self.model = model  # its name: retrieval's sentence scores from an index of this model are its own
        self._lock = asyncio.Lock()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    async def evidence(self, passages: Sequence[Passage]) -> Evidence:
        return await self._run(gather_evidence, passages, self.encode)

    async def attribute(self, answer: str, evidence: Evidence) -> Attribution:
        return await self._run(attribute, answer, evidence, self.encode, self.config)

    async def extract(self, question: str, evidence: Evidence) -> Extract:
        return await self._run(extract, question, evidence, self.encode, self.config)

    def own_index(self, index_model: str) -> bool:
        """Passages from an index of this model: their sentence scores can stand in for its own."""
        return bool(index_model) and index_model == self.model

    async def extract_from(self, question: str, passages: Sequence[Passage], index_model: str
                           ) -> tuple[Extract, Evidence | None]:
        """The extractive answer, from retrieval's sentence scores where they are this model's (nothing is
        embedded before it: the evidence is None), else from the passages' sentences embedded here."""
        extracted = extract_scored(question, passages, self.config) if self.own_index(index_model) else None
        if extracted is not None:
            return extracted, None
        evidence = await self.evidence(passages)
        return await self.extract(question, evidence), evidence

    async def focus(self, question: str, passages: Sequence[Passage], count: Callable[[str], int],
                    budget: int, index_model: str = "") -> tuple[list[Passage], Evidence | None]:
        """The passages cut to their sentences that answer `question` within `budget` tokens, and the evidence
        (the whole passages' embedded sentences) the cut was made from, for the answer's attribution. When the
        passages come from an index of this model (`index_model`) with sentence scores, the cut uses those and
        embeds nothing; the evidence is then None, gathered later while the LLM writes. Another index's scores
        are another model's (a static 256-d one cuts worse): then the sentences are embedded here."""
        from agents.generator.focus import focus, focus_scored  # focus builds on this module's sentences and scores

        scored = focus_scored(question, passages, count, budget, self.config) if self.own_index(index_model) else None
        if scored is not None:
            return scored, None
        evidence = await self.evidence(passages)
        return await self._run(focus, question, evidence, self.encode, count, budget, self.config), evidence
