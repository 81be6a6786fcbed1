"""Chunk index: one row per embedded chunk, with its vector (HNSW, cosine) and a full-text column."""

from __future__ import annotations

import asyncpg
import numpy as np

from projections.base import Source
from streams import subjects
from streams.events import ChunksEmbedded, DocumentDeleted, Event
from streams.topology import CHUNKS, DOCUMENTS


class ChunkIndexProjection:
    name = "chunks"
    sources: tuple[Source, ...] = (
        Source(CHUNKS, (subjects.wildcard(ChunksEmbedded.SUBJECT),)),
        Source(DOCUMENTS, (subjects.wildcard(DocumentDeleted.SUBJECT),)),
    )

    async def apply(self, conn: asyncpg.Connection, event: Event) -> None:
        match event:
            case ChunksEmbedded():
                await self._embedded(conn, event)
            case DocumentDeleted():
                await conn.execute(
                    "INSERT INTO chunk_tombstones (upload_id, doc_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    event.upload_id, event.doc_id,
                )
                await conn.execute("DELETE FROM chunks WHERE upload_id = $1", event.upload_id)

    async def _embedded(self, conn: asyncpg.Connection, e: ChunksEmbedded) -> None:
        if await conn.fetchval("SELECT 1 FROM chunk_tombstones WHERE upload_id = $1", e.upload_id):
            return
        await conn.executemany(
            """INSERT INTO chunks (chunk_id, doc_id, upload_id, ordinal, name, doc_type, page, section,
                                   char_start, char_end, text, model, embedding)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
               ON CONFLICT (chunk_id) DO NOTHING""",
            [
                (
                    c.chunk_id, e.doc_id, e.upload_id, c.ordinal, e.name, e.doc_type, c.page, c.section,
                    c.char_start, c.char_end, c.text, e.model, np.asarray(c.embedding, dtype=np.float32),
                )
                for c in e.chunks
            ],
        )
