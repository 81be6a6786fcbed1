"""Batches that wait for the model together are embedded in one call, and each gets exactly its own result."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents import models as M
from agents.embedder.service import JOINED_TEXTS, Embedder
from streams.topology import DEFAULT_EMBEDDING_MODEL

TEXTS = [
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND. The authors are not liable.",
    "Installation",
    "You may convey a work based on the Program. The work must carry prominent notices stating that you modified it.",
    "Redistributions of source code must retain the above copyright notice, this list of conditions.",
    "Licensing",
]


class Recording:
    """The real model, with each call's texts recorded; a text containing POISON makes the call fail."""

    POISON = "\x00poison"

    def __init__(self, model: M.EmbeddingModel, hold: threading.Event | None = None) -> None:
        self.model = model
        self.calls: list[list[str]] = []
        self.name, self.dim, self.fingerprint = model.name, model.dim, model.fingerprint
        self.hold = hold  # the first call waits for it: what else arrives meanwhile has to wait for the model

    def encode(self, texts: list[str]) -> Any:
        self.calls.append(["question:", *texts])
        return self.model.encode(texts)

    def encode_with_spans(self, texts: list[str], spans: Any) -> Any:
        self.calls.append(list(texts))
        if self.hold is not None:
            self.hold.wait(30)
            self.hold = None
        if any(self.POISON in t for t in texts):
            raise ValueError("this batch cannot be embedded")
        return self.model.encode_with_spans(texts, spans)


@pytest.fixture(scope="module")
def model(models_dir: Path) -> M.EmbeddingModel:
    return M.load_model(DEFAULT_EMBEDDING_MODEL, models_dir, threads=2)


async def test_batches_waiting_together_share_one_call_and_get_their_own_vectors(model):
    recording = Recording(model)
    embedder = Embedder(recording, "minilm")  # type: ignore[arg-type]
    batches = [TEXTS[:2], TEXTS[2:5], TEXTS[5:]]
    results = await asyncio.gather(*(embedder.embed_with_sentences_async(b) for b in batches))
    assert recording.calls == [[t for b in batches for t in b]]  # one call, every text once
    alone = np.vstack([model.encode([t]) for t in TEXTS])  # each text by itself, no padding
    offset = 0
    for batch, (vectors, sentences) in zip(batches, results, strict=True):
        assert vectors.shape == (len(batch), model.dim)
        # each vector is its own text's, exactly as embedded alone: the ONNX model runs one text at a time,
        # so a vector does not depend on the batches it was joined with (a replay gives the same rows)
        np.testing.assert_allclose(vectors, alone[offset:offset + len(batch)], atol=1e-6)
        assert [s.spans for s in sentences] == [s.spans for s in embedder.embed_with_sentences(batch)[1]]
        offset += len(batch)


async def test_a_batch_that_fails_fails_alone(model):
    recording = Recording(model)
    embedder = Embedder(recording, "minilm")  # type: ignore[arg-type]
    good, bad = TEXTS[:3], [TEXTS[3], "a line" + Recording.POISON]
    results = await asyncio.gather(embedder.embed_with_sentences_async(good),
                                   embedder.embed_with_sentences_async(bad), return_exceptions=True)
    assert isinstance(results[1], ValueError)
    vectors, _ = results[0]  # type: ignore[misc]
    assert vectors.shape == (3, model.dim)
    assert recording.calls == [good + bad, good, bad]  # the joined call, then each batch on its own


async def test_a_caller_that_goes_away_does_not_lose_the_others_results(model):
    recording = Recording(model)
    embedder = Embedder(recording, "minilm")  # type: ignore[arg-type]
    first = asyncio.create_task(embedder.embed_with_sentences_async(TEXTS[:3]))
    second = asyncio.create_task(embedder.embed_with_sentences_async(TEXTS[3:]))
    await asyncio.sleep(0)  # both are waiting; the first holds the model for the joined call
    await asyncio.sleep(0)
    first.cancel()
    vectors, _ = await asyncio.wait_for(second, 30)
    assert vectors.shape == (3, model.dim)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert embedder._waiting == []
    # and the model is free again
    again, _ = await asyncio.wait_for(embedder.embed_with_sentences_async(TEXTS[:1]), 30)
    assert again.shape == (1, model.dim)


async def test_a_question_goes_before_the_next_joined_call_and_joined_calls_are_bounded(model):
    hold = threading.Event()
    recording = Recording(model, hold)
    embedder = Embedder(recording, "minilm")  # type: ignore[arg-type]
    first = asyncio.create_task(embedder.embed_with_sentences_async(TEXTS[:1]))
    while not recording.calls:  # the first batch is in the model
        await asyncio.sleep(0.01)
    many = [[f"{TEXTS[k % len(TEXTS)]} ({n}.{k})" for k in range(32)] for n in range(6)]  # 6 batches of 32
    later = [asyncio.create_task(embedder.embed_with_sentences_async(b)) for b in many]
    await asyncio.sleep(0.05)
    question = asyncio.create_task(embedder.embed_async(["how do I keep the copyright notice?"]))
    await asyncio.sleep(0.05)
    hold.set()
    await asyncio.wait_for(asyncio.gather(first, question, *later), 60)
    assert recording.calls[1] == ["question:", "how do I keep the copyright notice?"]  # before any later batch
    joined = recording.calls[2:]
    assert [t for call in joined for t in call] == [t for b in many for t in b]  # every batch, in order
    assert all(len(call) <= JOINED_TEXTS for call in joined)
    assert len(joined) == -(-len(many) * 32 // JOINED_TEXTS)  # as few calls as the bound allows
