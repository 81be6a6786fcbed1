"""The embedder's cache of chunk vectors (agents/embedder/cache.py) on the real default model: a chunk embedded
lately under the same context is not run through the model again and comes back as it was computed; a changed
text or context is a miss; the least recently used go first; questions and the plain calls never use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents import models as M
from agents.embedder.service import Embedder
from streams.sentences import pack_vectors
from streams.topology import DEFAULT_EMBEDDING_MODEL

TEXTS = [
    "Permission is hereby granted, free of charge, to any person obtaining a copy. The notice must stay.",
    "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND. The authors are not liable.",
    "You may convey a work based on the Program. It must carry prominent notices stating that you modified it.",
]
CONTEXTS = ["LICENSE.md > Terms", "LICENSE.md > Warranty", "LICENSE.md > Conveying"]


class Counting:
    """The real model, counting the texts each call runs."""

    def __init__(self, model: M.EmbeddingModel) -> None:
        self.model, self.runs = model, []  # type: ignore[var-annotated]
        self.name, self.dim, self.fingerprint = model.name, model.dim, model.fingerprint

    def encode(self, texts: list[str]) -> Any:
        self.runs.append(len(texts))
        return self.model.encode(texts)

    def encode_with_spans(self, texts: list[str], spans: Any) -> Any:
        self.runs.append(len(texts))
        return self.model.encode_with_spans(texts, spans)


@pytest.fixture(scope="module")
def model(models_dir: Path) -> M.EmbeddingModel:
    return M.load_model(DEFAULT_EMBEDDING_MODEL, models_dir, threads=2)


def test_a_chunk_seen_lately_is_not_embedded_again_and_comes_back_as_computed(model):
    counting = Counting(model)
    embedder = Embedder(counting, cache_chunks=100)  # type: ignore[arg-type]
    first = embedder.embed_chunks(TEXTS, CONTEXTS)
    assert first.model_texts == 3 and first.cache_hits == 0 and counting.runs == [3]
    # a new version: the same first two chunks, the third one changed, and one chunk more
    changed = [*TEXTS[:2], TEXTS[2].replace("prominent", "clear"), "Patents are licensed too."]
    second = embedder.embed_chunks(changed, [*CONTEXTS, "LICENSE.md > Patents"])
    assert (second.model_texts, second.cache_hits, counting.runs) == (2, 2, [3, 2])
    np.testing.assert_array_equal(second.vectors[:2], first.vectors[:2])  # chunk vectors: exactly as computed
    for new, old in zip(second.sentences[:2], first.sentences[:2], strict=True):
        assert new.spans == old.spans
        assert pack_vectors(new.vectors) == pack_vectors(old.vectors)  # as they travel and are stored (int8)
    fresh = Embedder(model).embed_with_sentences(changed, [*CONTEXTS, "LICENSE.md > Patents"])
    np.testing.assert_allclose(second.vectors, fresh[0], atol=1e-6)  # the same as with no cache at all
    # the context is part of what the model read: the same text under another heading is embedded again
    moved = embedder.embed_chunks(TEXTS[:1], ["LICENSE.md > Preamble"])
    assert moved.model_texts == 1 and moved.cache_hits == 0


def test_the_least_recently_used_go_first_and_zero_turns_it_off(model):
    counting = Counting(model)
    embedder = Embedder(counting, cache_chunks=2)  # type: ignore[arg-type]
    embedder.embed_chunks(TEXTS[:2])
    embedder.embed_chunks(TEXTS[:1])  # TEXTS[0] used again: TEXTS[1] is now the oldest
    embedder.embed_chunks(TEXTS[2:])  # evicts TEXTS[1]
    assert len(embedder.cache) == 2
    assert embedder.embed_chunks(TEXTS).model_texts == 1  # only TEXTS[1] runs
    off = Embedder(Counting(model))  # type: ignore[arg-type]
    assert off.embed_chunks(TEXTS).model_texts == 3 and off.embed_chunks(TEXTS).model_texts == 3
    plain = Embedder(counting, cache_chunks=100)  # type: ignore[arg-type]
    runs = len(counting.runs)
    plain.embed_with_sentences(TEXTS)
    plain.embed_with_sentences(TEXTS)  # the benchmarks' in-process baseline: never cached
    plain.embed(TEXTS[:1])
    assert counting.runs[runs:] == [3, 3, 1] and len(plain.cache) == 0
