"""The embedder's loaded models (agents/embedder/service.py ModelPool), on the real default model: indexes of one
source share one loaded model and its turns (a rebuild beside its index holds it once), each keeps its own cache,
and the model goes when the last index using it does."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from agents.embedder.service import ModelPool
from streams.topology import DEFAULT_EMBEDDING_MODEL

TEXTS = ["Permission is hereby granted, free of charge.", "THE SOFTWARE IS PROVIDED AS IS."]


def test_indexes_of_one_source_share_the_loaded_model_and_its_turns(models_dir: Path):
    pool = ModelPool(models_dir, threads=1, cache_chunks=10)
    active = pool.embedder(DEFAULT_EMBEDDING_MODEL)
    rebuild = pool.embedder(f"{DEFAULT_EMBEDDING_MODEL}@2", DEFAULT_EMBEDDING_MODEL)
    assert rebuild.model is active.model and rebuild._lock is active._lock and len(pool) == 1
    assert (active.name, rebuild.name) == (DEFAULT_EMBEDDING_MODEL, f"{DEFAULT_EMBEDDING_MODEL}@2")
    assert rebuild.fingerprint == active.fingerprint
    active.embed_chunks(TEXTS)
    assert len(active.cache) == 2 and len(rebuild.cache) == 0  # a rebuild embeds afresh
    np.testing.assert_array_equal(rebuild.embed_chunks(TEXTS).vectors, active.embed_chunks(TEXTS).vectors)
    other = pool.embedder("minilm-distilled-256")
    assert other.model is not active.model and len(pool) == 2
    del other
    gc.collect()
    assert len(pool) == 1  # dropped: its model is unloaded
    del active, rebuild
    gc.collect()
    assert len(pool) == 0
