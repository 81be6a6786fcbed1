"""An index's embedding model as the handlers use it, without any broker: easy to test, easy to benchmark.

The models themselves (catalogue, building, loaders) are in `agents.models`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.models import EmbeddingModel, load_model
from streams.events import SentenceScore
from streams.sentences import split_sentences

log = logging.getLogger(__name__)

# Texts in one joined call at most: a question's embedding waits for one call at most (128 of 200 word pieces:
# ~0.6 s on 2 cores). bench/ingest.py with 8 batches in hand: ...
JOINED_TEXTS = 128


class Embedder:
    """One index's model: distinct texts once, one model call at a time, off the event loop. Vectors are
    L2-normalised (cosine = dot product).

    Batches that wait for the model together are embedded in one call (`embed_with_sentences_async`): a call
    sorts its texts by length before padding them into model runs, and one document's 32 chunks range from a
    heading of 20 word pieces to a full 200, so alone each batch pads far more. bench/ingest.py's corpus,
    in-process: 17.1 s in one call per batch, 14.1 s per three, 12.5 s per 512 texts."""

    def __init__(self, model: EmbeddingModel, name: str | None = None) -> None:
        self.model = model
        self.name = name or model.name  # the index's model name, as it travels in chunks.embedded.<model>
        self.dim = model.dim
        self.fingerprint = model.fingerprint
        self._lock = asyncio.Lock()  # torch and onnxruntime already use every core they are given
        self._batches = asyncio.Lock()  # batches take turns here, and questions (embed_async) only at _lock
        self._waiting: list[_Waiting] = []  # batches that wait for the model, oldest first

    @classmethod
    def load(cls, name: str, source: str, models_dir: Path, threads: int = 0, spin: bool = True) -> Embedder:
        """The model of index `name`: `source` is a catalogue name or a folder (empty: `name` itself)."""
        return cls(load_model(source or name, models_dir, threads, spin), name)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts, computing each distinct text once (identical chunks in a document are common)."""
        unique, where = _distinct(texts)
        return np.asarray(self.model.encode(unique)[where], dtype=np.float32)

    def embed_with_sentences(self, texts: list[str]) -> tuple[np.ndarray, list[Sentences]]:
        """`embed`, and each text's sentences (`split_sentences`) with a vector each, pooled from the text's own
        forward pass: what retrieval scores a chunk's sentences with and the generator cuts passages by."""
        unique, where = _distinct(texts)
        spans = [[(s.start, s.end) for s in split_sentences(t)] for t in unique]
        vectors, pooled = self.model.encode_with_spans(unique, spans)
        return (np.asarray(vectors[where], dtype=np.float32),
                [Sentences(spans[i], pooled[i]) for i in where])

    async def embed_async(self, texts: list[str]) -> np.ndarray:
        """`embed` off the event loop, one call at a time."""
        async with self._lock:
            return await asyncio.to_thread(self.embed, texts)

    async def embed_with_sentences_async(self, texts: list[str]) -> tuple[np.ndarray, list[Sentences]]:
        """`embed_with_sentences` off the event loop, joined with every batch waiting for the model (one
        call, split again here); a call that fails is retried batch by batch, so a bad batch fails alone."""
        waiting = _Waiting(texts, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        try:
            await asyncio.sleep(0)  # batches fetched together are all waiting before the first call starts
            async with self._batches:
                while not waiting.result.done():
                    async with self._lock:  # per call: a question waiting here goes before the next call
                        taken = self._take()
                        if not taken:  # ours is in a call under way whose caller went away: its result comes
                            break
                        call = asyncio.ensure_future(asyncio.to_thread(self._embed_each, [w.texts for w in taken]))
                        # the results reach every batch in the call, even if this one is cancelled meanwhile
                        call.add_done_callback(functools.partial(_hand_out, taken))
                        with contextlib.suppress(Exception):  # each batch's error is in its own result
                            await asyncio.shield(call)
            return await waiting.result
        finally:
            if waiting in self._waiting:
                self._waiting.remove(waiting)
            waiting.result.cancel()  # nothing when done; unread otherwise

    def _take(self) -> list[_Waiting]:
        """The oldest waiting batches, up to JOINED_TEXTS texts (at least one batch)."""
        n = count = 0
        while n < len(self._waiting) and (n == 0 or count + len(self._waiting[n].texts) <= JOINED_TEXTS):
            count += len(self._waiting[n].texts)
            n += 1
        taken, self._waiting = self._waiting[:n], self._waiting[n:]
        return taken

    def _embed_each(self, batches: list[list[str]]) -> list[tuple[np.ndarray, list[Sentences]] | Exception]:
        try:
            vectors, sentences = self.embed_with_sentences([t for texts in batches for t in texts])
        except Exception:  # each batch alone: the bad one gets its own error
            if len(batches) == 1:
                raise
            return [_or_error(self.embed_with_sentences, texts) for texts in batches]
        out: list[tuple[np.ndarray, list[Sentences]] | Exception] = []
        start = 0
        for texts in batches:
            out.append((vectors[start:start + len(texts)], sentences[start:start + len(texts)]))
            start += len(texts)
        return out


@dataclass
class _Waiting:
    texts: list[str]
    result: asyncio.Future[tuple[np.ndarray, list[Sentences]]]


def _hand_out(taken: list[_Waiting], call: asyncio.Future[list[Any]]) -> None:
    for i, waiting in enumerate(taken):
        if waiting.result.done():  # its caller went away
            continue
        if call.cancelled():
            waiting.result.cancel()
        elif (error := call.exception()) is not None:
            waiting.result.set_exception(error)
        elif isinstance(outcome := call.result()[i], Exception):
            waiting.result.set_exception(outcome)
        else:
            waiting.result.set_result(outcome)


def _or_error(embed: Callable[[list[str]], Any], texts: list[str]) -> Any:
    try:
        return embed(texts)
    except Exception as exc:  # noqa: BLE001 - handed to that batch's caller
        return exc


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
