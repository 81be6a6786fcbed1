"""Read-model tables. Every one of them can be dropped and rebuilt from the streams (`ragbus replay`)."""

from __future__ import annotations

import asyncpg

from streams.topology import index_slug

POSITIONS = """
CREATE TABLE IF NOT EXISTS projection_positions (
    projection text NOT NULL,
    stream     text NOT NULL,
    last_seq   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream)
);
"""

DOCUMENTS = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id      text PRIMARY KEY,
    upload_id   text NOT NULL,
    generation  int NOT NULL DEFAULT 0,
    name        text NOT NULL,
    sha256      text NOT NULL,
    size        bigint NOT NULL,
    doc_type    text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL,          -- uploaded | parsed | failed | deleted | superseded ('indexed' is derived)
    error       text,
    title       text,
    author      text,
    pages       int,
    chunk_count int,
    version     int NOT NULL DEFAULT 1,
    supersedes  text,
    superseded_by text,
    uploaded_at timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_name_idx ON documents (name) WHERE status NOT IN ('deleted', 'superseded');
"""

# The chunk index: the text of every live chunk (from chunks.ready, with its BM25 postings), and one
# vector table per embedding model (from chunks.embedded.<model>), created when the model's first vectors
# arrive (their dimension is the model's). `embedding_indexes` says which table answers queries.
CHUNKS = """
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id   text PRIMARY KEY,
    doc_id     text NOT NULL,
    upload_id  text NOT NULL,
    ordinal    int NOT NULL,
    name       text NOT NULL,
    doc_type   text NOT NULL,
    page       int,
    section    text[] NOT NULL DEFAULT '{}',
    char_start int NOT NULL,
    char_end   int NOT NULL,
    text       text NOT NULL,
    toc        boolean NOT NULL DEFAULT false  -- a table of contents: kept, never a candidate
);
CREATE INDEX IF NOT EXISTS chunks_upload_idx ON chunks (upload_id);
CREATE INDEX IF NOT EXISTS chunks_doc_idx ON chunks (doc_id);
-- The keyword half's inverted index (BM25): one row per lexeme of each live chunk that can be retrieved (its
-- heading path and text), with the lexeme's count there and the chunk's length in lexemes; the document
-- frequency of each lexeme and the corpus size kept with it, so a question costs a few index lookups.
CREATE TABLE IF NOT EXISTS chunk_terms (
    lexeme   text NOT NULL,
    chunk_id text NOT NULL,
    tf       int NOT NULL,
    len      int NOT NULL,
    PRIMARY KEY (lexeme, chunk_id) INCLUDE (tf, len)  -- a question's postings: an index-only scan
);
CREATE INDEX IF NOT EXISTS chunk_terms_chunk_idx ON chunk_terms (chunk_id);
CREATE TABLE IF NOT EXISTS term_stats (
    lexeme text PRIMARY KEY,
    ndoc   int NOT NULL
);
CREATE TABLE IF NOT EXISTS term_corpus (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    n         bigint NOT NULL DEFAULT 0,
    total_len bigint NOT NULL DEFAULT 0
);
INSERT INTO term_corpus DEFAULT VALUES ON CONFLICT DO NOTHING;
-- An upload deleted before (or while) its chunks were projected must stay deleted whatever the order in
-- which a replay reads the DOCUMENTS and CHUNKS streams.
CREATE TABLE IF NOT EXISTS chunk_tombstones (
    upload_id  text PRIMARY KEY,
    doc_id     text NOT NULL
);
CREATE TABLE IF NOT EXISTS embedding_indexes (
    model        text PRIMARY KEY,
    vectors_table text NOT NULL,        -- the vector table's name: vectors_<slug>
    state        text NOT NULL,         -- building | active | standby | dropped
    source       text NOT NULL DEFAULT '',
    previous     text,
    dim          int,                   -- from the first vectors (NULL: none yet)
    fingerprint  text,
    fingerprint_mismatches int NOT NULL DEFAULT 0,
    -- the INDEXES positions of its latest index.started and index.dropped: vectors of a generation that was
    -- dropped never count, whatever order a replay applies the CHUNKS and INDEXES streams in
    generation   bigint NOT NULL DEFAULT 0,
    dropped_seq  bigint NOT NULL DEFAULT 0,
    compared     jsonb,                 -- the latest index.compared figures
    started_at   timestamptz,
    activated_at timestamptz,
    updated_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS embedding_indexes_active ON embedding_indexes ((true)) WHERE state = 'active';
"""

VECTORS_PREFIX = "vectors_"


def vectors_ddl(table: str, dim: int) -> str:
    """One index's vectors; `table` comes from `vectors_table`, never from user input."""
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    chunk_id  text PRIMARY KEY,
    upload_id text NOT NULL,
    embedding vector({int(dim)}) NOT NULL,
    generation bigint NOT NULL DEFAULT 0,  -- the index build it came from (embedding_indexes.generation)
    toc       boolean NOT NULL DEFAULT false,  -- the chunk's flag, here too: the HNSW scan filters on it
    -- the chunk's sentences as [start, end) offset pairs, flattened, and one int8 vector row each
    -- (streams.sentences.pack_vectors); NULL for vectors from before sentence vectors
    sentence_spans   int4[],
    sentence_vectors bytea
);
CREATE INDEX IF NOT EXISTS {table}_upload_idx ON {table} (upload_id);
CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops);
"""


def vectors_table(model: str) -> str:
    return VECTORS_PREFIX + index_slug(model)


ANSWERS = """
CREATE TABLE IF NOT EXISTS answers (
    query_id   text PRIMARY KEY,
    session_id text,
    owner      text,                    -- the API key (key_id) that asked; NULL: asked without a key
    question   text NOT NULL,
    status     text NOT NULL,           -- done | failed
    answer     text,
    error      text,
    citations  jsonb NOT NULL DEFAULT '[]',
    -- what supports each sentence and what the user was told:
    -- sentences, supported, answer_mode, truncated, repeating, notices
    attribution jsonb NOT NULL DEFAULT '{}',
    timings    jsonb NOT NULL DEFAULT '{}',
    model      text,
    generator  text,
    tokens     int,
    rating     text,                    -- up | down, from answer.rated
    rating_comment text,
    rated_at   timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_session_idx ON answers (session_id, created_at);
-- one row per conversation; its turns are the answers with that session_id
CREATE TABLE IF NOT EXISTS sessions (
    session_id text PRIMARY KEY,
    owner      text,                    -- the key of its first question; only that key sees the session
    title      text NOT NULL,           -- the first question
    turns      int NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_updated_idx ON sessions (owner, updated_at DESC);
"""

# Bump a projection's version when its tables change: `migrate` then drops them and the projector rebuilds
# them from the log (the event-sourced way to migrate a read model). chunks 4: no tsvector column and GIN index
# any more (the keyword half reads chunk_terms). chunks 6: the parts of dotted and camel-case names in the
# postings (projections.lexemes).
VERSIONS = {"documents": 2, "chunks": 7, "answers": 4}

SCHEMA_VERSIONS = """
CREATE TABLE IF NOT EXISTS projection_schema (
    projection text PRIMARY KEY,
    version    int NOT NULL
);
"""

TABLES = {
    "documents": ("documents",),
    "chunks": ("chunks", "chunk_tombstones", "embedding_indexes", "chunk_terms", "term_stats", "term_corpus"),
    # and every vectors_* table
    "answers": ("answers", "sessions"),
}
DDL = {"documents": DOCUMENTS, "chunks": CHUNKS, "answers": ANSWERS}


async def migrate(conn: asyncpg.Connection) -> None:
    """Create what is missing; safe to run from every process at start (serialised by an advisory lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(4711)")
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await conn.execute(POSITIONS)
        await conn.execute(SCHEMA_VERSIONS)
        stored = dict(await conn.fetch("SELECT projection, version FROM projection_schema"))
        for name, ddl in DDL.items():
            if stored.get(name, 1) != VERSIONS[name]:  # no record: tables from before versioning (1)
                await _drop(conn, name)  # rebuilt from the log by the projector
            await conn.execute(ddl)
            await conn.execute(
                """INSERT INTO projection_schema VALUES ($1, $2)
                   ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version""",
                name, VERSIONS[name],
            )


async def drop_projection(conn: asyncpg.Connection, projection: str) -> None:
    """Drop a projection's tables and forget its positions, in one transaction, then recreate them empty."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(4711)")
        await _drop(conn, projection)
        await conn.execute(DDL[projection])


async def _drop(conn: asyncpg.Connection, projection: str) -> None:
    tables = list(TABLES[projection])
    if projection == "chunks":
        tables += await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE $1",
            VECTORS_PREFIX.replace("_", r"\_") + "%")
    for table in tables:
        name = table if isinstance(table, str) else table["tablename"]
        await conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
    await conn.execute("DELETE FROM projection_positions WHERE projection = $1", projection)
