"""An index's embedding model as the handlers use it, without any broker: easy to test, easy to benchmark.

The models themselves (catalogue, building, loaders) are in `agents.models`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.models import EmbeddingModel, load_model
from streams.events import SentenceScore
from streams.sentences import split_sentences

log = logging.getLogger(__name__)


# What a chunk is embedded as (`embedding_context`): "ctx1" = document name > heading path, then the text. An index
# holding vectors of another recipe counts them as fingerprint mismatches (`ragbus reindex --list`).
RECIPE = "ctx1"


class Embedder:
    """One index's model: distinct texts once, one model call at a time, off the event loop. Vectors are
    L2-normalised (cosine = dot product)."""

    def __init__(self, model: EmbeddingModel, name: str | None = None) -> None:
        self.model = model
        self.name = name or model.name  # the index's model name, as it travels in chunks.embedded.<model>
        self.dim = model.dim
        # the model's files and how chunks are put to it: vectors of one index must agree on both
        self.fingerprint = f"{model.fingerprint}:{RECIPE}"
        self._lock = asyncio.Lock()  # torch and onnxruntime already use every core they are given
        self._batches = asyncio.Lock()  # batches take turns here, and questions (embed_async) only at _lock

    @classmethod
    def load(cls, name: str, source: str, models_dir: Path, threads: int = 0, spin: bool = True) -> Embedder:
        """The model of index `name`: `source` is a catalogue name or a folder (empty: `name` itself)."""
        return cls(load_model(source or name, models_dir, threads, spin), name)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts, computing each distinct text once (identical chunks in a document are common)."""
        unique, where = _distinct(texts)
        return np.asarray(self.model.encode(unique)[where], dtype=np.float32)

    def embed_with_sentences(self, texts: list[str], contexts: list[str] | None = None,
                             ) -> tuple[np.ndarray, list[Sentences]]:
        """`embed`, and each text's sentences (`split_sentences`) with a vector each, pooled from the text's own
        forward pass: what retrieval scores a chunk's sentences with and the generator cuts passages by.
        `contexts`: a line to run ahead of each text (`embedding_context`); the sentences stay the text's own,
        their offsets into the text, and their tokens read the context too."""
        composed = [embedded_text(c, t) for c, t in zip(contexts or [""] * len(texts), texts, strict=True)]
        unique, where = _distinct(composed)
        first = {u: len(u) - len(t) for u, t in zip(composed, texts, strict=True)}  # where the text starts in each
        spans = [[(s.start, s.end) for s in split_sentences(u[first[u]:])] for u in unique]
        shifted = [[(a + first[u], b + first[u]) for a, b in own] for u, own in zip(unique, spans, strict=True)]
        vectors, pooled = self.model.encode_with_spans(unique, shifted)
        return (np.asarray(vectors[where], dtype=np.float32),
                [Sentences(spans[i], pooled[i]) for i in where])

    async def embed_async(self, texts: list[str]) -> np.ndarray:
        """`embed` off the event loop, one call at a time."""
        async with self._lock:
            return await asyncio.to_thread(self.embed, texts)

    async def embed_with_sentences_async(self, texts: list[str], contexts: list[str] | None = None,
                                         ) -> tuple[np.ndarray, list[Sentences]]:
        """`embed_with_sentences` off the event loop. Batches take turns before they wait for the model, so a
        question (`embed_async`) waits for the batch in the model at most, not for every batch in hand."""
        async with self._batches, self._lock:
            return await asyncio.to_thread(self.embed_with_sentences, texts, contexts)


def embedding_context(name: str, section: list[str], text: str) -> str:
    """What a chunk is embedded under: its document's name and heading path, "apt-cache.8.txt > COMMANDS", less
    the heading the chunk itself starts with. A chunk rarely names its document or section ("search performs a
    full text search", clause 5 of a licence), while questions do (bench/eval/experiments/README.md, `ctxn`)."""
    path = [name, *(part for part in section if part)]
    if len(path) > 1 and text.startswith(path[-1]):
        path = path[:-1]
    return " > ".join(path)


def embedded_text(context: str, text: str) -> str:
    """What the model reads for a chunk: its context (`embedding_context`), a blank line, the text."""
    return f"{context}\n\n{text}" if context else text


@dataclass(frozen=True)
class Sentences:
    """A text's sentences as [start, end) character offsets, and one L2-normalised vector per sentence."""

    spans: list[tuple[int, int]]
    vectors: np.ndarray

    def scored(self, question: np.ndarray) -> list[SentenceScore]:
        """Each sentence with its cosine to an embedded question, as retrieval sends them (`Passage.sentences`)."""
        return [SentenceScore(start=a, end=b, score=round(float(v @ question), 4))
                for (a, b), v in zip(self.spans, self.vectors, strict=True)]


def _distinct(texts: list[str]) -> tuple[list[str], list[int]]:
    """The distinct texts in order of first use, and where each text is among them."""
    unique = list(dict.fromkeys(texts))
    index = {text: i for i, text in enumerate(unique)}
    return unique, [index[t] for t in texts]
