"""Documents read model: one row per document with its lifecycle status.

`indexed` is not stored: it is derived by the view from the chunk projection (all chunks of the current
upload present), so it is right whatever order the DOCUMENTS and CHUNKS streams are folded in.
"""

from __future__ import annotations

import asyncpg

from projections.base import Source
from streams import subjects
from streams.events import DocumentDeleted, DocumentFailed, DocumentParsed, DocumentUploaded, Event
from streams.topology import DOCUMENT, DOCUMENTS


class DocumentsProjection:
    name = "documents"
    sources: tuple[Source, ...] = (Source(DOCUMENTS, (subjects.wildcard(DOCUMENT),)),)

    async def apply(self, conn: asyncpg.Connection, event: Event) -> None:
        match event:
            case DocumentUploaded():
                await self._uploaded(conn, event)
            case DocumentParsed():
                await conn.execute(
                    """UPDATE documents SET status = 'parsed', chunk_count = $2, title = $3, author = $4,
                       pages = $5, updated_at = $6
                       WHERE upload_id = $1 AND status IN ('uploaded', 'failed')""",
                    event.upload_id, event.chunk_count, event.title, event.author, event.pages,
                    event.occurred_at,
                )
            case DocumentFailed():
                await conn.execute(
                    """UPDATE documents SET status = 'failed', error = $2, updated_at = $3
                       WHERE upload_id = $1 AND status <> 'deleted'""",
                    event.upload_id, f"{event.stage}: {event.reason}", event.occurred_at,
                )
            case DocumentDeleted():
                await conn.execute(
                    """UPDATE documents SET status = $2, superseded_by = $3, updated_at = $4
                       WHERE upload_id = $1""",
                    event.upload_id, "superseded" if event.superseded_by else "deleted", event.superseded_by,
                    event.occurred_at,
                )

    async def _uploaded(self, conn: asyncpg.Connection, e: DocumentUploaded) -> None:
        # A later generation (uploaded again after a delete) replaces the row; the same upload is a no-op.
        await conn.execute(
            """INSERT INTO documents (doc_id, upload_id, generation, name, sha256, size, doc_type, metadata,
                                      status, version, supersedes, uploaded_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'uploaded', $9, $10, $11, $11)
               ON CONFLICT (doc_id) DO UPDATE SET
                   upload_id = EXCLUDED.upload_id, generation = EXCLUDED.generation, name = EXCLUDED.name,
                   metadata = EXCLUDED.metadata, status = 'uploaded', error = NULL, title = NULL,
                   author = NULL, pages = NULL, chunk_count = NULL, version = EXCLUDED.version,
                   supersedes = EXCLUDED.supersedes, superseded_by = NULL,
                   uploaded_at = EXCLUDED.uploaded_at, updated_at = EXCLUDED.updated_at
               WHERE documents.generation < EXCLUDED.generation""",
            e.doc_id, e.upload_id, e.generation, e.name, e.sha256, e.size, e.doc_type,
            e.metadata, e.version, e.supersedes, e.occurred_at,
        )
