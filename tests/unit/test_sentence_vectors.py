"""Sentence vectors as they travel in chunks.embedded and lie in the projection: int8 rows, base64."""

from __future__ import annotations

import base64

import numpy as np

from streams.sentences import pack_vectors, packed_cosines, unpack_vectors


def test_packed_sentence_vectors_keep_their_cosines_to_a_hundredth():
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(50, 384)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    questions = rng.normal(size=(20, 384)).astype(np.float32)
    questions /= np.linalg.norm(questions, axis=1, keepdims=True)
    packed = pack_vectors(rows)
    assert len(base64.b64decode(packed)) == 50 * 384  # one byte a component
    for restored in (unpack_vectors(packed, 384), unpack_vectors(base64.b64decode(packed), 384)):
        np.testing.assert_allclose(np.linalg.norm(restored, axis=1), 1.0, atol=1e-5)
        assert np.abs(restored @ questions.T - rows @ questions.T).max() < 0.01
    for q in questions:  # the cosines straight from the packed rows are those of the unpacked ones
        np.testing.assert_allclose(packed_cosines(packed, 384, q), unpack_vectors(packed, 384) @ q, atol=1e-6)
    assert pack_vectors(np.zeros((0, 384), dtype=np.float32)) == ""
