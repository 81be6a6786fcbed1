"""Queries over the read models for the gateway (documents, answers, sessions), and the connection pool every
reader shares. Retrieval over the chunk index is `projections.retrieval`."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector

_DOCUMENT_COLUMNS = """
    d.doc_id, d.upload_id, d.generation, d.name, d.sha256, d.size, d.doc_type, d.metadata, d.status, d.error,
    d.title, d.author, d.pages, d.chunk_count, d.version, d.supersedes, d.superseded_by,
    d.uploaded_at, d.updated_at,
    (SELECT count(*) FROM chunks c WHERE c.upload_id = d.upload_id) AS chunks_indexed
"""


async def init_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init_connection)


def _document(row: asyncpg.Record) -> dict[str, Any]:
    doc = dict(row)
    # 'indexed' is derived: every chunk of the current upload is in the chunk index
    if doc["status"] == "parsed" and doc["chunk_count"] is not None and doc["chunks_indexed"] >= doc["chunk_count"]:
        doc["status"] = "indexed"
    doc["chunks"] = doc["chunk_count"] if doc["chunk_count"] is not None else 0
    return doc


class DocumentView:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, doc_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(f"SELECT {_DOCUMENT_COLUMNS} FROM documents d WHERE d.doc_id = $1", doc_id)
        return _document(row) if row else None

    async def current_by_name(self, name: str) -> dict[str, Any] | None:
        """The live (not deleted, not superseded) document with this name, if any: an upload of other bytes
        under the same name is its next version."""
        row = await self.pool.fetchrow(
            f"""SELECT {_DOCUMENT_COLUMNS} FROM documents d
                WHERE d.name = $1 AND d.status NOT IN ('deleted', 'superseded')
                ORDER BY d.uploaded_at DESC LIMIT 1""", name)
        return _document(row) if row else None

    async def list(self, include_deleted: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
        where = "" if include_deleted else "WHERE d.status NOT IN ('deleted', 'superseded')"
        rows = await self.pool.fetch(
            f"SELECT {_DOCUMENT_COLUMNS} FROM documents d {where} ORDER BY d.uploaded_at DESC LIMIT $1", limit
        )
        return [_document(r) for r in rows]


class AnswerView:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, query_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM answers WHERE query_id = $1", query_id)
        return dict(row) if row else None

    async def for_session(self, session_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The session's turns, oldest first (the last `limit`)."""
        rows = await self.pool.fetch(
            """SELECT * FROM (SELECT * FROM answers WHERE session_id = $1 ORDER BY created_at DESC LIMIT $2) t
               ORDER BY created_at""", session_id, limit)
        return [dict(r) for r in rows]

    async def sessions(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("SELECT * FROM sessions ORDER BY updated_at DESC LIMIT $1", limit)
        return [dict(r) for r in rows]

    async def session(self, session_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM sessions WHERE session_id = $1", session_id)
        return dict(row) if row else None
