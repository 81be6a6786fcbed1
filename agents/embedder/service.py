"""An index's embedding model as the handlers use it, without any broker: easy to test, easy to benchmark.

The models themselves (catalogue, building, loaders) are in `agents.models`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.embedder.cache import VectorCache
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

    def __init__(self, model: EmbeddingModel, name: str | None = None, cache_chunks: int = 0,
                 shared: LoadedModel | None = None) -> None:
        self.model = model
        self.cache = VectorCache(cache_chunks)  # chunks only (embed_chunks*): questions are not kept
        self.name = name or model.name  # the index's model name, as it travels in chunks.embedded.<model>
        self.dim = model.dim
        # the model's files and how chunks are put to it: vectors of one index must agree on both
        self.fingerprint = f"{model.fingerprint}:{RECIPE}"
        # the model's turns, shared by every index that runs the same loaded model (ModelPool)
        self._shared = shared or LoadedModel(model)
        self._lock = self._shared.lock  # torch and onnxruntime already use every core they are given
        self._batches = self._shared.batches  # batches take turns here, questions (embed_async) only at _lock

    @classmethod
    def load(cls, name: str, source: str, models_dir: Path, threads: int = 0, spin: bool = True,
             cache_chunks: int = 0) -> Embedder:
        """The model of index `name`: `source` is a catalogue name or a folder (empty: `name` itself)."""
        return cls(load_model(source or name, models_dir, threads, spin), name, cache_chunks)

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
        batch = self.embed_chunks(texts, contexts, cached=False)
        return batch.vectors, batch.sentences

    def embed_chunks(self, texts: list[str], contexts: list[str] | None = None, cached: bool = True) -> Batch:
        """`embed_with_sentences` for the chunks of an index: texts the cache holds (the same context and text
        embedded lately) are not run through the model again; `Batch.model_texts` counts those that were."""
        composed = [embedded_text(c, t) for c, t in zip(contexts or [""] * len(texts), texts, strict=True)]
        unique, where = _distinct(composed)
        first = {u: len(u) - len(t) for u, t in zip(composed, texts, strict=True)}  # where the text starts in each
        # keyed by what the model read and where the text starts in it (the sentences' offsets are the text's)
        done = {u: hit for u in unique if cached and (hit := self.cache.get(f"{first[u]}:{u}")) is not None}
        todo = [u for u in unique if u not in done]
        if todo:
            spans = [[(s.start, s.end) for s in split_sentences(u[first[u]:])] for u in todo]
            shifted = [[(a + first[u], b + first[u]) for a, b in own] for u, own in zip(todo, spans, strict=True)]
            vectors, pooled = self.model.encode_with_spans(todo, shifted)
            for u, vector, own, sentences in zip(todo, np.asarray(vectors, dtype=np.float32), spans, pooled,
                                                 strict=True):
                done[u] = vector, Sentences(own, sentences)
                if cached:
                    self.cache.put(f"{first[u]}:{u}", *done[u])
        rows = [done[unique[i]] for i in where]
        return Batch(np.vstack([v for v, _ in rows]) if rows else np.zeros((0, self.dim), dtype=np.float32),
                     [s for _, s in rows], len(todo), len(unique) - len(todo))

    async def embed_async(self, texts: list[str]) -> np.ndarray:
        """`embed` off the event loop, one call at a time."""
        async with self._lock:
            return await asyncio.to_thread(self.embed, texts)

    async def embed_with_sentences_async(self, texts: list[str], contexts: list[str] | None = None,
                                         ) -> tuple[np.ndarray, list[Sentences]]:
        """`embed_with_sentences` off the event loop (see `embed_chunks_async`)."""
        batch = await self.embed_chunks_async(texts, contexts, cached=False)
        return batch.vectors, batch.sentences

    async def embed_chunks_async(self, texts: list[str], contexts: list[str] | None = None,
                                 cached: bool = True) -> Batch:
        """`embed_chunks` off the event loop. Batches take turns before they wait for the model, so a question
        (`embed_async`) waits for the batch in the model at most, not for every batch in hand."""
        async with self._batches, self._lock:
            return await asyncio.to_thread(self.embed_chunks, texts, contexts, cached)


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


class LoadedModel:
    """A loaded model and the turns at it (one call at a time; batches queue apart, so a question waits for the
    batch in the model at most)."""

    def __init__(self, model: EmbeddingModel) -> None:
        self.model = model
        self.lock = asyncio.Lock()
        self.batches = asyncio.Lock()


class ModelPool:
    """The models an embedder has loaded, by source (a catalogue name or a folder). Indexes of one source share
    one: a rebuild (`NAME@2` beside `NAME`) does not hold the model twice in memory, and the two indexes take
    turns at it. A model goes when the last index using it does (weak references)."""

    def __init__(self, models_dir: Path, threads: int = 0, spin: bool = True, cache_chunks: int = 0) -> None:
        self.models_dir, self.threads, self.spin, self.cache_chunks = models_dir, threads, spin, cache_chunks
        self._loaded: weakref.WeakValueDictionary[str, LoadedModel] = weakref.WeakValueDictionary()
        self._loading = threading.Lock()  # loads run in threads: one model loaded once

    def embedder(self, name: str, source: str = "") -> Embedder:
        """Index `name`'s embedder: `source` as in `Embedder.load`; each index has its own cache."""
        key = source or name
        with self._loading:
            loaded = self._loaded.get(key)
            if loaded is None:
                loaded = LoadedModel(load_model(key, self.models_dir, self.threads, self.spin))
                self._loaded[key] = loaded
        return Embedder(loaded.model, name, self.cache_chunks, loaded)

    def __len__(self) -> int:
        return len(self._loaded)


@dataclass(frozen=True)
class Batch:
    """A batch of chunks embedded: a vector and the sentences of each text, in order."""

    vectors: np.ndarray
    sentences: list[Sentences]
    model_texts: int  # distinct texts the model ran; the rest were identical to another, or in the cache
    cache_hits: int = 0  # distinct texts the cache had


def _distinct(texts: list[str]) -> tuple[list[str], list[int]]:
    """The distinct texts in order of first use, and where each text is among them."""
    unique = list(dict.fromkeys(texts))
    index = {text: i for i, text in enumerate(unique)}
    return unique, [index[t] for t in texts]
