"""The vectors of chunks embedded lately, by the exact text the model read (document name, heading path and
text). A new version of a document repeats most of its chunks: those are not run through the model again.

Per index (one cache per loaded model), in memory, bounded: the least recently used go first, and a restart
starts empty (a miss only costs the model call it saves). Chunk vectors are kept as they were computed (float32:
they are stored as such); sentence vectors as the int8 rows they travel and are stored in
(`streams.sentences.pack_vectors`, which gives a cached row back bit for bit). About 3.3 KB a chunk with
MiniLM's 384 dimensions and its ~4.7 sentences.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from streams.sentences import pack_vectors, packed_bytes, unpack_vectors

if TYPE_CHECKING:
    from agents.embedder.service import Sentences


class VectorCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[bytes, tuple[np.ndarray, list[tuple[int, int]], bytes]] = OrderedDict()

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, text: str) -> tuple[np.ndarray, Sentences] | None:
        from agents.embedder.service import Sentences

        entry = self._entries.get(self._key(text)) if self.capacity else None
        if entry is None:
            return None
        self._entries.move_to_end(self._key(text))
        vector, spans, rows = entry
        return vector, Sentences(list(spans), unpack_vectors(rows, vector.shape[-1]))

    def put(self, text: str, vector: np.ndarray, sentences: Sentences) -> None:
        if not self.capacity:
            return
        key = self._key(text)
        rows = packed_bytes(pack_vectors(np.asarray(sentences.vectors)))
        self._entries[key] = (np.array(vector, dtype=np.float32), list(sentences.spans), rows)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
