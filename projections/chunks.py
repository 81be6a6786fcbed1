"""Chunk index: the text of every live chunk (with BM25 postings), and per embedding model a vector table
(HNSW, cosine), with the registry of indexes saying which one answers queries.

Folded from three streams in whatever order a replay reads them: chunks and their vectors (CHUNKS),
deletions (DOCUMENTS: tombstones keep a deleted upload out, whichever comes first) and the index events
(INDEXES). Every statement is idempotent, and the projector applies each event once besides.
"""

from __future__ import annotations

import base64
import logging

import asyncpg
import numpy as np

from projections.base import APPLYING_SEQ, Source
from projections.lexemes import tsvector_sql
from projections.schema import vectors_ddl, vectors_table
from streams import subjects
from streams.events import (
    ChunksEmbedded,
    DocumentChunked,
    DocumentDeleted,
    Event,
    IndexActivated,
    IndexCompared,
    IndexDropped,
    IndexStarted,
)
from streams.topology import CHUNKS, DOCUMENTS, INDEX, INDEXES

log = logging.getLogger(__name__)


class ChunkIndexProjection:
    name = "chunks"
    sources: tuple[Source, ...] = (
        Source(CHUNKS, (subjects.wildcard(DocumentChunked.SUBJECT), subjects.wildcard(ChunksEmbedded.SUBJECT))),
        Source(DOCUMENTS, (subjects.wildcard(DocumentDeleted.SUBJECT),)),
        Source(INDEXES, (subjects.wildcard(INDEX),)),
    )

    async def apply(self, conn: asyncpg.Connection, event: Event) -> None:
        match event:
            case DocumentChunked():
                await self._chunked(conn, event)
            case ChunksEmbedded():
                await self._embedded(conn, event)
            case DocumentDeleted():
                await self._deleted(conn, event)
            case IndexStarted():
                prior = await conn.fetchrow("SELECT state, generation FROM embedding_indexes WHERE model = $1",
                                            event.model)
                await _index_row(conn, event.model, "building", event.occurred_at, source=event.source,
                                 previous=event.previous)
                # a new build, as the embedders see it (streams.indexes): a first start, or a start after a drop
                # (a row only its vectors made is a first start too); a start of a live index changes nothing
                if prior is None or prior["state"] == "dropped" or (prior["state"] == "building"
                                                                    and not prior["generation"]):
                    await conn.execute("UPDATE embedding_indexes SET generation = $2 WHERE model = $1",
                                       event.model, APPLYING_SEQ.get())
            case IndexActivated():
                await conn.execute(
                    "UPDATE embedding_indexes SET state = 'standby', updated_at = greatest(updated_at, $2) "
                    "WHERE state = 'active' AND model <> $1", event.model, event.occurred_at)
                await _index_row(conn, event.model, "active", event.occurred_at, previous=event.previous)
            case IndexCompared():
                await conn.execute("UPDATE embedding_indexes SET compared = $2 WHERE model = $1",
                                   event.model, {"baseline": event.baseline, "questions": event.questions,
                                                 "figures": event.figures, "at": event.occurred_at.isoformat()})
            case IndexDropped():
                await self._dropped(conn, event)

    async def _chunked(self, conn: asyncpg.Connection, e: DocumentChunked) -> None:
        if await _tombstoned(conn, e.upload_id):
            return
        await conn.executemany(
            """INSERT INTO chunks (chunk_id, doc_id, upload_id, ordinal, name, doc_type, page, section,
                                   char_start, char_end, text, toc)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (chunk_id) DO NOTHING""",
            [(c.chunk_id, e.doc_id, e.upload_id, c.ordinal, e.name, e.doc_type, c.page, c.section, c.char_start,
              c.char_end, c.text, c.toc) for c in e.chunks],
        )
        await add_terms(conn, [c.chunk_id for c in e.chunks if not c.toc])

    async def _dropped(self, conn: asyncpg.Connection, e: IndexDropped) -> None:
        """The index's vectors go, but only those of builds up to this drop: a replay may have applied a later
        build's vectors (CHUNKS read ahead of INDEXES), and they stay for the index.started that follows."""
        seq = APPLYING_SEQ.get()
        await conn.execute("UPDATE embedding_indexes SET state = 'dropped', dropped_seq = greatest(dropped_seq, $3), "
                           "updated_at = greatest(updated_at, $2) WHERE model = $1", e.model, e.occurred_at, seq)
        table = vectors_table(e.model)
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            return
        await conn.execute(f"DELETE FROM {table} WHERE generation <= $1", seq)
        if not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            await conn.execute(f"DROP TABLE {table}")
            await conn.execute("UPDATE embedding_indexes SET dim = NULL, fingerprint = NULL WHERE model = $1", e.model)

    async def _embedded(self, conn: asyncpg.Connection, e: ChunksEmbedded) -> None:
        if await _tombstoned(conn, e.upload_id):
            return
        index = await conn.fetchrow("SELECT state, dim, fingerprint, generation, dropped_seq FROM embedding_indexes "
                                    "WHERE model = $1", e.model)
        build = e.build()
        if index is None:  # vectors from before index events existed, or read before their index.started
            await _index_row(conn, e.model, "building", e.occurred_at)
        elif (index["dropped_seq"] and build <= index["dropped_seq"]) or build < index["generation"]:
            return  # a build that was dropped (a later one was started, or is under way)
        elif index["dim"] is not None and index["dim"] != e.dim:
            log.error("chunks.embedded for %s has %d dimensions, its index %d: skipped (same name, other model?)",
                      e.model, e.dim, index["dim"])
            return
        elif index["fingerprint"] and e.fingerprint and index["fingerprint"] != e.fingerprint:
            log.warning("index %s: vectors from a model with fingerprint %s, the index has %s (an upgrade changed "
                        "how chunks are embedded, or the model's files changed): `ragbus reindex --rebuild` embeds "
                        "every chunk again beside it", e.model, e.fingerprint, index["fingerprint"])
            await conn.execute("UPDATE embedding_indexes SET fingerprint_mismatches = fingerprint_mismatches + 1 "
                               "WHERE model = $1", e.model)
        if index is None or index["dim"] is None:
            table = vectors_table(e.model)
            await conn.execute(vectors_ddl(table, e.dim))
            await conn.execute("UPDATE embedding_indexes SET dim = $2, fingerprint = nullif($3, '') WHERE model = $1",
                               e.model, e.dim, e.fingerprint)
        # Vectors change the index too. Every time here is the latest event's (greatest): a replay applies the
        # INDEXES stream after CHUNKS, and the row must come out the same in either order.
        await conn.execute("UPDATE embedding_indexes SET updated_at = greatest(updated_at, $2) WHERE model = $1",
                           e.model, e.occurred_at)
        # the flag comes from the chunk's row (chunks.ready comes first in CHUNKS, on a replay too)
        # a later build's vector replaces an earlier one's (a replay may meet both before the drop between them)
        table = vectors_table(e.model)
        await conn.executemany(
            f"INSERT INTO {table} (chunk_id, upload_id, embedding, toc, sentence_spans, sentence_vectors, generation) "
            "VALUES ($1, $2, $3, coalesce((SELECT toc FROM chunks WHERE chunk_id = $1), false), $4, $5, $6) "
            f"ON CONFLICT (chunk_id) DO UPDATE SET embedding = EXCLUDED.embedding, sentence_spans = "
            f"EXCLUDED.sentence_spans, sentence_vectors = EXCLUDED.sentence_vectors, generation = EXCLUDED.generation "
            f"WHERE {table}.generation < EXCLUDED.generation",
            [(c.chunk_id, e.upload_id, np.asarray(c.embedding, dtype=np.float32),
              [offset for span in c.sentences for offset in span] if c.sentences else None,
              base64.b64decode(c.sentence_vectors) if c.sentence_vectors else None, build) for c in e.chunks],
        )

    async def _deleted(self, conn: asyncpg.Connection, e: DocumentDeleted) -> None:
        await conn.execute("INSERT INTO chunk_tombstones (upload_id, doc_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                           e.upload_id, e.doc_id)
        await remove_terms(conn, e.upload_id)
        await conn.execute("DELETE FROM chunks WHERE upload_id = $1", e.upload_id)
        # every table that exists: a dropped index's may hold a later build's vectors ahead of its index.started
        for row in await conn.fetch("SELECT model FROM embedding_indexes WHERE dim IS NOT NULL"):
            await conn.execute(f"DELETE FROM {vectors_table(row['model'])} WHERE upload_id = $1", e.upload_id)


# What the keyword half matches: the heading path and the text (a question often names the section).
_TERMS_TEXT = "array_to_string(c.section, ' ') || E'\\n' || c.text"

# Postings of chunks just inserted, with the lexemes' document frequencies and the corpus size; only rows
# really inserted count (ON CONFLICT ... RETURNING), so applying an event twice changes nothing.
_ADD_TERMS = f"""
WITH terms AS (
    SELECT c.chunk_id, u.lexeme, coalesce(array_length(u.positions, 1), 1) AS tf
    FROM chunks c, unnest({tsvector_sql(_TERMS_TEXT)}) u
    WHERE c.chunk_id = ANY($1::text[])
), lengths AS (
    SELECT chunk_id, sum(tf)::int AS len FROM terms GROUP BY chunk_id
), added AS (
    INSERT INTO chunk_terms (lexeme, chunk_id, tf, len)
    SELECT t.lexeme, t.chunk_id, t.tf, l.len FROM terms t JOIN lengths l USING (chunk_id)
    ON CONFLICT DO NOTHING RETURNING lexeme, chunk_id, len
), counted AS (
    INSERT INTO term_stats (lexeme, ndoc) SELECT lexeme, count(*) FROM added GROUP BY lexeme
    ON CONFLICT (lexeme) DO UPDATE SET ndoc = term_stats.ndoc + EXCLUDED.ndoc
)
UPDATE term_corpus SET n = n + (SELECT count(*) FROM (SELECT DISTINCT chunk_id FROM added) a),
                       total_len = total_len + (SELECT coalesce(sum(len), 0) FROM
                                                (SELECT DISTINCT chunk_id, len FROM added) a)
"""
_REMOVE_TERMS = """
WITH removed AS (
    DELETE FROM chunk_terms WHERE chunk_id IN (SELECT chunk_id FROM chunks WHERE upload_id = $1)
    RETURNING lexeme, chunk_id, len
), counted AS (
    UPDATE term_stats s SET ndoc = s.ndoc - r.n
    FROM (SELECT lexeme, count(*) AS n FROM removed GROUP BY lexeme) r WHERE s.lexeme = r.lexeme
    RETURNING s.lexeme, s.ndoc
), corpus AS (
    UPDATE term_corpus SET n = n - (SELECT count(*) FROM (SELECT DISTINCT chunk_id FROM removed) r),
                           total_len = total_len - (SELECT coalesce(sum(len), 0) FROM
                                                    (SELECT DISTINCT chunk_id, len FROM removed) r)
)
SELECT coalesce(array_agg(lexeme), '{}') FROM counted WHERE ndoc <= 0
"""


async def add_terms(conn: asyncpg.Connection, chunk_ids: list[str]) -> None:
    """Postings for these chunks' rows (idempotent); a table of contents should not be passed."""
    await conn.execute(_ADD_TERMS, chunk_ids)


async def remove_terms(conn: asyncpg.Connection, upload_id: str) -> None:
    """The postings of an upload's chunks, before the chunks themselves go."""
    unused = await conn.fetchval(_REMOVE_TERMS, upload_id)
    # a term no chunk has any more goes: the table is then the same as if the upload had never come
    await conn.execute("DELETE FROM term_stats WHERE lexeme = ANY($1::text[]) AND ndoc <= 0", unused)


async def _tombstoned(conn: asyncpg.Connection, upload_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM chunk_tombstones WHERE upload_id = $1", upload_id))


async def _index_row(conn: asyncpg.Connection, model: str, state: str, at: object, source: str = "",
                     previous: str | None = None) -> None:
    """Create or move an index's row. A dropped index started again begins empty (its table went with the drop),
    unless a replay already applied vectors of the new build (they are its table)."""
    await conn.execute(
        """INSERT INTO embedding_indexes (model, vectors_table, state, source, previous, started_at, activated_at,
                                          updated_at)
           VALUES ($1, $2, $3::text, $4, $5, $6::timestamptz, CASE WHEN $3::text = 'active' THEN $6::timestamptz END,
                   $6::timestamptz)
           ON CONFLICT (model) DO UPDATE SET
               state = CASE WHEN EXCLUDED.state = 'building' AND embedding_indexes.state <> 'dropped'
                            THEN embedding_indexes.state ELSE EXCLUDED.state END,
               dim = CASE WHEN embedding_indexes.state = 'dropped' AND to_regclass(embedding_indexes.vectors_table)
                               IS NULL THEN NULL ELSE embedding_indexes.dim END,
               fingerprint = CASE WHEN embedding_indexes.state = 'dropped'
                                       AND to_regclass(embedding_indexes.vectors_table) IS NULL THEN NULL
                                  ELSE embedding_indexes.fingerprint END,
               source = CASE WHEN EXCLUDED.source <> '' THEN EXCLUDED.source ELSE embedding_indexes.source END,
               previous = coalesce(EXCLUDED.previous, embedding_indexes.previous),
               -- a replay reads the INDEXES stream after CHUNKS, so the row may come from its first vectors:
               -- the earliest time is the start, whatever the order (a restart after a drop starts anew)
               started_at = CASE WHEN embedding_indexes.state = 'dropped' THEN EXCLUDED.started_at
                                 ELSE least(embedding_indexes.started_at, EXCLUDED.started_at) END,
               activated_at = CASE WHEN EXCLUDED.state = 'active' THEN EXCLUDED.updated_at
                                   ELSE embedding_indexes.activated_at END,
               updated_at = greatest(embedding_indexes.updated_at, EXCLUDED.updated_at)""",
        model, vectors_table(model), state, source, previous, at,
    )
