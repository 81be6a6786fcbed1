"""The chunk projection folds three streams (CHUNKS, DOCUMENTS, INDEXES) that a replay reads side by side, each in
its own order but interleaved however the readers happen to run: the read model must come out the same whatever
the interleaving. The case that broke (a full-suite run, `test_reindex`'s replay from zero): an index dropped and
started again, whose second build's vectors the replay applied before the drop between the two builds, which then
took them with it. Real PostgreSQL with pgvector (a database of its own), the projection applied event by event
with each event's stream position, as the projector does."""

from __future__ import annotations

import itertools
import random

import asyncpg
import numpy as np
import pytest

from projections.base import APPLYING_SEQ
from projections.chunks import ChunkIndexProjection
from projections.schema import drop_projection, migrate, vectors_table
from projections.views import init_connection
from streams.events import (
    Chunk,
    ChunksEmbedded,
    DocumentChunked,
    DocumentDeleted,
    EmbeddedChunk,
    Event,
    IndexDropped,
    IndexStarted,
)

MODEL, DIM = "order-test-model", 8


def _vector(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).round(6).tolist()


def _chunked(doc: str) -> DocumentChunked:
    return DocumentChunked(event_id=f"chunks.ready:{doc}", doc_id=doc, upload_id=f"{doc}-u", name=f"{doc}.md",
                           doc_type="markdown", batch=0, batch_count=1, chunk_count=1,
                           chunks=[Chunk(chunk_id=f"{doc}-u-00000", ordinal=0, text=f"text of {doc}",
                                         char_start=0, char_end=10)])


def _embedded(doc: str, generation: int, seed: int) -> ChunksEmbedded:
    chunk = EmbeddedChunk(chunk_id=f"{doc}-u-00000", ordinal=0, text=f"text of {doc}", char_start=0, char_end=10,
                          embedding=_vector(seed))
    return ChunksEmbedded(event_id=f"chunks.embedded:{MODEL}:{generation}:{doc}-u:0", doc_id=doc,
                          upload_id=f"{doc}-u", name=f"{doc}.md", doc_type="markdown", model=MODEL, dim=DIM,
                          batch=0, batch_count=1, chunk_count=1, generation=generation, chunks=[chunk])


# Each stream's events with their sequence numbers, in stream order. The live history: M started (INDEXES #1),
# document A chunked and embedded by that build, M dropped (#2) and started again (#3), A embedded by the new
# build (other values, to see which build's vector stays), B chunked and embedded by it, then B deleted.
STREAMS: dict[str, list[tuple[int, Event]]] = {
    "INDEXES": [(1, IndexStarted(event_id="s1", model=MODEL)), (2, IndexDropped(event_id="d2", model=MODEL)),
                (3, IndexStarted(event_id="s3", model=MODEL))],
    "CHUNKS": [(1, _chunked("a")), (2, _embedded("a", 1, seed=1)), (3, _embedded("a", 3, seed=3)),
               (4, _chunked("b")), (5, _embedded("b", 3, seed=5))],
    "DOCUMENTS": [(1, DocumentDeleted(event_id="del-b", doc_id="b", upload_id="b-u"))],
}
LIVE = [("INDEXES", 0), ("CHUNKS", 0), ("CHUNKS", 1), ("INDEXES", 1), ("INDEXES", 2), ("CHUNKS", 2),
        ("CHUNKS", 3), ("CHUNKS", 4), ("DOCUMENTS", 0)]


def _interleavings(n: int) -> list[list[tuple[str, int]]]:
    """Whole streams one after another in every order, and `n` random interleavings that keep each stream's order."""
    whole = [[(s, i) for s in order for i in range(len(STREAMS[s]))] for order in itertools.permutations(STREAMS)]
    rng, mixed = random.Random(7), []
    for _ in range(n):
        left = {s: list(range(len(e))) for s, e in STREAMS.items()}
        order = []
        while any(left.values()):
            stream = rng.choice([s for s, v in left.items() if v])
            order.append((stream, left[stream].pop(0)))
        mixed.append(order)
    return whole + mixed


@pytest.fixture
async def conn(postgres):
    admin = await asyncpg.connect(postgres.dsn_for("postgres"))
    try:
        await admin.execute("DROP DATABASE IF EXISTS replay_order")
        await admin.execute("CREATE DATABASE replay_order")
    finally:
        await admin.close()
    conn = await asyncpg.connect(postgres.dsn_for("replay_order"))
    await migrate(conn)
    await init_connection(conn)  # pgvector and jsonb codecs, as the projector's pool has them
    yield conn
    await conn.close()


async def _fold(conn: asyncpg.Connection, order: list[tuple[str, int]]) -> dict:
    await drop_projection(conn, "chunks")
    projection = ChunkIndexProjection()
    for stream, i in order:
        seq, event = STREAMS[stream][i]
        async with conn.transaction():
            token = APPLYING_SEQ.set(seq)
            try:
                await projection.apply(conn, event)
            finally:
                APPLYING_SEQ.reset(token)
    row = await conn.fetchrow("SELECT state, dim, generation, dropped_seq FROM embedding_indexes WHERE model = $1",
                              MODEL)
    exists = await conn.fetchval("SELECT to_regclass($1)", vectors_table(MODEL)) is not None
    query = f"SELECT chunk_id, generation, embedding::text FROM {vectors_table(MODEL)} ORDER BY chunk_id"
    vectors = [tuple(r) for r in await conn.fetch(query)] if exists else None
    chunks = [r["chunk_id"] for r in await conn.fetch("SELECT chunk_id FROM chunks ORDER BY chunk_id")]
    return {"index": dict(row) if row else None, "vectors": vectors, "chunks": chunks}


async def test_every_interleaving_of_the_streams_folds_to_the_live_read_model(conn):
    live = await _fold(conn, LIVE)
    # the live history's result: A with the second build's vector only, B deleted, the index being built anew
    assert live["index"] == {"state": "building", "dim": DIM, "generation": 3, "dropped_seq": 2}
    assert live["chunks"] == ["a-u-00000"]
    assert [(c, g) for c, g, _ in live["vectors"]] == [("a-u-00000", 3)]
    for order in _interleavings(30):
        assert await _fold(conn, order) == live, order


async def test_a_start_of_a_live_index_is_no_new_build(conn):
    # as the embedders fold it (streams.indexes): a second index.started while the index lives changes nothing,
    # so vectors of the build under way keep landing
    await _fold(conn, LIVE)
    projection = ChunkIndexProjection()
    extra = [(4, IndexStarted(event_id="s4", model=MODEL)), (6, _chunked("c")), (7, _embedded("c", 3, seed=7))]
    for seq, event in extra:
        async with conn.transaction():
            token = APPLYING_SEQ.set(seq)
            try:
                await projection.apply(conn, event)
            finally:
                APPLYING_SEQ.reset(token)
    assert await conn.fetchval("SELECT generation FROM embedding_indexes WHERE model = $1", MODEL) == 3
    rows = await conn.fetch(f"SELECT chunk_id, generation FROM {vectors_table(MODEL)} ORDER BY chunk_id")
    assert [tuple(r) for r in rows] == [("a-u-00000", 3), ("c-u-00000", 3)]
