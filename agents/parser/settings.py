from __future__ import annotations

from streams.doctypes import ChunkStrategy
from streams.settings import BusSettings


class ParserSettings(BusSettings):
    chunk_strategy: ChunkStrategy = "structure"
    chunk_tokens: int = 200  # all-MiniLM-L6-v2 reads at most 256 word pieces; leave room for the section path
    chunk_overlap_tokens: int = 40
    chunks_per_event: int = 32  # one chunks.ready event carries this many chunks (one embedding batch)
    parse_timeout: float = 120.0  # seconds one document may take before it fails as "took too long"
    parse_memory_mb: int = 1024  # memory one document may take while parsing
    # The parse child's niceness (0-19). On a bulk upload parsing runs ahead of embedding, the slowest stage, and
    # on 2 cores took the model's CPU; niced, it only gets what the embedder and questions leave (bench/README.md).
    parse_nice: int = 10
