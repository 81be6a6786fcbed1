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
"""
_ACTIVE_VECTORS = "SELECT vectors_table FROM embedding_indexes WHERE state = 'active' AND dim IS NOT NULL"


async def _columns(conn: asyncpg.Connection | asyncpg.Pool) -> str:
    """A document is indexed when every chunk of its upload has a vector in the active index."""
    vectors = await conn.fetchval(_ACTIVE_VECTORS)
    indexed = f"(SELECT count(*) FROM {vectors} v WHERE v.upload_id = d.upload_id)" if vectors else "0"
    return f"{_DOCUMENT_COLUMNS} {indexed} AS chunks_indexed"


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


DOCUMENT_STATUSES = ("uploaded", "parsed", "indexed", "failed", "superseded", "deleted")


async def documents_by_status(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    """How many documents have each status, `indexed` derived as `_document` does (one scan, for the metrics)."""
    vectors = await conn.fetchval(_ACTIVE_VECTORS)
    counted = (f"LEFT JOIN (SELECT upload_id, count(*) AS n FROM {vectors} GROUP BY upload_id) v USING (upload_id)"
               if vectors else "LEFT JOIN (SELECT NULL::text AS upload_id, 0 AS n) v USING (upload_id)")
    rows = await conn.fetch(f"""
        SELECT CASE WHEN d.status = 'parsed' AND d.chunk_count IS NOT NULL AND coalesce(v.n, 0) >= d.chunk_count
                    THEN 'indexed' ELSE d.status END AS status, count(*) AS n
        FROM documents d {counted} GROUP BY 1""")
    return {r["status"]: int(r["n"]) for r in rows}


class DocumentView:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, doc_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(f"SELECT {await _columns(self.pool)} FROM documents d WHERE d.doc_id = $1",
                                       doc_id)
        return _document(row) if row else None

    async def current_by_name(self, name: str) -> dict[str, Any] | None:
        """The live (not deleted, not superseded) document with this name, if any: an upload of other bytes
        under the same name is its next version."""
        row = await self.pool.fetchrow(
            f"""SELECT {await _columns(self.pool)} FROM documents d
                WHERE d.name = $1 AND d.status NOT IN ('deleted', 'superseded')
                ORDER BY d.uploaded_at DESC LIMIT 1""", name)
        return _document(row) if row else None

    async def list(self, include_deleted: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
        where = "" if include_deleted else "WHERE d.status NOT IN ('deleted', 'superseded')"
        rows = await self.pool.fetch(
            f"SELECT {await _columns(self.pool)} FROM documents d {where} ORDER BY d.uploaded_at DESC LIMIT $1",
            limit
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

    async def sessions(self, owner: str | None, limit: int = 50) -> list[dict[str, Any]]:
        """The owner's sessions (an API key's; None: those asked without a key), newest first."""
        rows = await self.pool.fetch("SELECT * FROM sessions WHERE owner IS NOT DISTINCT FROM $1 "
                                     "ORDER BY updated_at DESC LIMIT $2", owner, limit)
        return [dict(r) for r in rows]

    async def session(self, session_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM sessions WHERE session_id = $1", session_id)
        return dict(row) if row else None


class IndexView:
    """The embedding indexes (one per model), which one is active, and how complete each one is."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(self, include_dropped: bool = False) -> list[dict[str, Any]]:
        """Every index with `vectors` (rows in its table), `chunks` (live chunks with text) and `missing`
        (chunks of the active index without a vector in this one)."""
        where = "" if include_dropped else "WHERE state <> 'dropped'"
        rows = [dict(r) for r in await self.pool.fetch(
            f"SELECT * FROM embedding_indexes {where} ORDER BY started_at NULLS FIRST, model")]
        active = next((r for r in rows if r["state"] == "active"), None)
        chunks = await self.pool.fetchval("SELECT count(*) FROM chunks")
        for row in rows:
            row["chunks"] = chunks
            row.update(await self._coverage(row, active))
        return rows

    async def get(self, model: str) -> dict[str, Any] | None:
        return next((r for r in await self.list(include_dropped=True) if r["model"] == model), None)

    async def active(self) -> dict[str, Any] | None:
        return next((r for r in await self.list() if r["state"] == "active"), None)

    async def _coverage(self, row: dict[str, Any], active: dict[str, Any] | None) -> dict[str, int]:
        live = 0
        if active is not None and active["dim"] is not None:
            live = await self.pool.fetchval(f"SELECT count(*) FROM {active['vectors_table']}")
        if row["dim"] is None or row["state"] == "dropped":  # no vectors yet: everything is missing
            return {"vectors": 0, "live_chunks": live, "missing": live}
        table = row["vectors_table"]
        vectors = await self.pool.fetchval(f"SELECT count(*) FROM {table}")
        if active is None or active["dim"] is None:
            return {"vectors": vectors, "live_chunks": 0, "missing": 0}
        missing = 0 if table == active["vectors_table"] else await self.pool.fetchval(
            f"SELECT count(*) FROM {active['vectors_table']} a WHERE NOT EXISTS (SELECT 1 FROM {table} n "
            "WHERE n.chunk_id = a.chunk_id)")
        return {"vectors": vectors, "live_chunks": live, "missing": missing}
