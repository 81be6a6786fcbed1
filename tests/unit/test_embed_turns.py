"""The embedder's model between chunk batches and questions: a question goes before the batches waiting their
turn, and a chunk's vector does not depend on the texts it was embedded with."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents import models as M
from agents.embedder.service import Embedder
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
    """The real model, with each call recorded; the first batch call waits for `hold`, so what arrives meanwhile
    has to wait for the model."""

    def __init__(self, model: M.EmbeddingModel, hold: threading.Event) -> None:
        self.model, self.hold = model, hold
        self.calls: list[list[str]] = []
        self.name, self.dim, self.fingerprint = model.name, model.dim, model.fingerprint

    def encode(self, texts: list[str]) -> Any:
        self.calls.append(["question:", *texts])
        return self.model.encode(texts)

    def encode_with_spans(self, texts: list[str], spans: Any) -> Any:
        self.calls.append(list(texts))
        self.hold.wait(30)
        return self.model.encode_with_spans(texts, spans)


@pytest.fixture(scope="module")
def model(models_dir: Path) -> M.EmbeddingModel:
    return M.load_model(DEFAULT_EMBEDDING_MODEL, models_dir, threads=2)


def test_a_chunks_vector_is_its_text_embedded_alone_whatever_its_batch(model):
    # the int8 ONNX model quantizes a run's activations by the run's range: run beside others, a text's vector
    # moved with its company, so the same chunk re-embedded in another batch (a replay, a re-index) changed
    alone = np.vstack([model.encode([t]) for t in TEXTS])
    together, pooled = model.encode_with_spans(TEXTS, [[(0, len(t))] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(model.encode(TEXTS[::-1]), alone[::-1], atol=1e-6)
    assert all(p.shape == (1, model.dim) for p in pooled)


async def test_a_question_goes_before_the_batches_waiting_their_turn(model):
    hold = threading.Event()
    recording = Recording(model, hold)
    embedder = Embedder(recording, "minilm")  # type: ignore[arg-type]
    batches = [[f"{TEXTS[k % len(TEXTS)]} ({n}.{k})" for k in range(4)] for n in range(4)]
    first = asyncio.create_task(embedder.embed_with_sentences_async(batches[0]))
    while not recording.calls:  # the first batch is in the model
        await asyncio.sleep(0.01)
    later = [asyncio.create_task(embedder.embed_with_sentences_async(b)) for b in batches[1:]]
    await asyncio.sleep(0.05)
    question = asyncio.create_task(embedder.embed_async(["how do I keep the copyright notice?"]))
    await asyncio.sleep(0.05)
    hold.set()
    results = await asyncio.wait_for(asyncio.gather(first, *later), 60)
    await asyncio.wait_for(question, 60)
    # the question right after the batch that was in the model, then the batches in their order
    assert recording.calls == [batches[0], ["question:", "how do I keep the copyright notice?"], *batches[1:]]
    for batch, (vectors, sentences) in zip(batches, results, strict=True):
        assert vectors.shape == (len(batch), model.dim) and len(sentences) == len(batch)
