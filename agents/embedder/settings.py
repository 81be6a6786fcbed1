from __future__ import annotations

from pathlib import Path

from projections.retrieval import RetrievalConfig
from streams.settings import BusSettings, DatabaseSettings
from streams.topology import DEFAULT_EMBEDDING_MODEL


class EmbedderSettings(BusSettings, DatabaseSettings):
    # The model of the first index on a fresh system (`ragbus streams declare`); afterwards the log says
    # which index is active (`ragbus reindex`). A catalogue name or a sentence-transformers folder.
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    models_dir: Path = Path("~/.ragbus/models").expanduser()  # where models built from the packaged MiniLM live
    embedding_threads: int = 0  # texts a model runs side by side, one thread each; 0: every usable core
    # onnxruntime's threads busy-wait between model calls; the embedder shares its cores with the parser,
    # PostgreSQL and NATS during ingest (bench/ingest.py)
    embedding_spin: bool = False
    embedding_in_flight: int = 3  # chunks.ready batches held per index, so the model never waits on the bus
    # chunks kept per index by the exact text embedded (agents/embedder/cache.py, ~5 KB each): a new version of a
    # document runs only its changed chunks through the model; 0 turns it off
    embedding_cache_chunks: int = 4096
    default_top_k: int = 5
    max_top_k: int = 50
    retrieval_candidates: int = 40  # from each of the vector and the full-text ranking, before fusion
    keyword_weight: float = 0.2  # fused = cosine + this * BM25 / the question's IDF mass ...
    sentence_weight: float = 0.5  # ... + this * the best cosine of one of the chunk's sentences (bench/eval)
    min_similarity: float = 0.2  # passages below this cosine similarity are not used as context
    duplicate_similarity: float = 0.95  # near-duplicate passages above this similarity are dropped
    hnsw_ef_search: int = 0  # 0: by the index's size (projections.retrieval.search_breadth)

    def retrieval(self) -> RetrievalConfig:
        return RetrievalConfig(candidates=self.retrieval_candidates, keyword_weight=self.keyword_weight,
                               sentence_weight=self.sentence_weight,
                               min_similarity=self.min_similarity, duplicate_similarity=self.duplicate_similarity,
                               ef_search=self.hnsw_ef_search)
