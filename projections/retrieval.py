"""Hybrid retrieval over the chunk projection: pgvector HNSW cosine + BM25 over PostgreSQL's lexemes, fused
linearly (cosine + a weighted best sentence cosine + a weighted BM25 as a share of the question's IDF mass), with a
similarity threshold, metadata filters and near-duplicate removal. Chunks flagged as a table of contents are no
candidates. Every candidate's sentences are scored from the sentence vectors the embedder made at ingest: a
question asked in other words often matches one sentence of the answer better than the whole chunk, and the
generator cuts its prompt by these scores.

Why not reciprocal rank fusion (what this did before, bench/eval/experiments/README.md): RRF gives the keyword
ranking the weight of the dense one, and a chunk in both lists always beats one in a single list; for a
question in other words than the document's, the chunks in both lists are those sharing its frequent words,
not the answer. ts_rank_cd has no IDF either. Measured on bench/eval (paraphrased questions), dense alone beat
RRF; cosine + 0.2 BM25 beats both, on literal questions too."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
from prometheus_client import Histogram

from projections.lexemes import tsvector_sql
from projections.schema import vectors_table
from streams.sentences import packed_bytes, packed_cosines

# The stages of answering a question's retrieval: embed (the question, in the embedder), search (the SQL:
# lexemes, HNSW and BM25 candidates), fuse (scores, threshold, near-duplicates)
RETRIEVAL_SECONDS = Histogram("ragbus_retrieval_stage_seconds", "Time per retrieval stage", ["stage"],
                              buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))


@dataclass(frozen=True)
class RetrievalConfig:
    candidates: int = 40  # taken from each of the dense and the keyword ranking before fusion
    keyword_weight: float = 0.2  # fused = cosine + keyword_weight * bm25 / (the question's IDF mass) ...
    sentence_weight: float = 0.5  # ... + sentence_weight * the best cosine of one of the chunk's sentences
    min_similarity: float = 0.2  # passages less similar than this (cosine) are not context at all
    duplicate_similarity: float = 0.95  # a passage this close to a better-ranked one adds nothing
    ef_search: int = 0  # HNSW search breadth (recall vs speed); 0: by the index's size (`search_breadth`)


# HNSW's recall at a fixed search breadth falls as the graph grows. Measured on 100k real chunks
# (bench/retrieval.py, recall@10 of HNSW vs an exact scan, two builds): ef_search 80 gives 0.956-0.963 at 10k
# chunks but 0.911-0.914 at 100k; 200 gives 0.951-0.956 there, 400 0.970. So the breadth grows with the table: 80
# up to 10k chunks, then as n^0.45 (225 at 100k), at most 400. The estimate is PostgreSQL's row count of the vector
# table (0 before its first ANALYZE: the base breadth).
EF_BASE, EF_MAX, EF_BASE_ROWS, EF_GROWTH = 80, 400, 10_000, 0.45
# $2 (cfg.ef_search) if set, else grown with the row estimate of table $1 (pg_class c)
_EF = f"""CASE WHEN $2::int > 0 THEN $2::int ELSE least({EF_MAX}, greatest({EF_BASE},
       round({EF_BASE} * power(greatest(c.reltuples, 0) / {EF_BASE_ROWS}, {EF_GROWTH})))::int) END::text"""
_BREADTH = f"SELECT set_config('hnsw.ef_search', {_EF}, true) FROM pg_class c WHERE c.oid = $1::regclass"


async def search_breadth(conn: asyncpg.Connection, table: str, cfg: RetrievalConfig) -> int:
    """Set hnsw.ef_search for this transaction (cfg.ef_search, or 0: by the size of `table`); returns it."""
    return int(await conn.fetchval(_BREADTH, table, cfg.ef_search) or EF_BASE)


# Lexemes come as the chunk_terms postings were made (projections.lexemes: stemmed, code names with parts).
_LEXEMES_OF = "tsvector_to_array(" + tsvector_sql("{0}::text") + ")"
_LEXEMES = f"SELECT {_LEXEMES_OF.format('$1')}"
# The breadth, the iterative scan and the lexemes in one round trip instead of three, on the path to the first
# token (the search's SQL went from 2.0 to 1.8 ms p50 at 88 chunks). With filters, iterative_scan keeps scanning
# the HNSW graph until enough rows pass them (pgvector >= 0.8).
_PREPARE = (f"SELECT set_config('hnsw.ef_search', {_EF}, true), set_config('hnsw.iterative_scan', 'relaxed_order', "
            f"true), {_LEXEMES_OF.format('$3')} AS lexemes FROM pg_class c WHERE c.oid = $1::regclass")


async def prepare_search(conn: asyncpg.Connection, table: str, cfg: RetrievalConfig, question: str) -> list[str]:
    """Set this transaction's HNSW breadth (as search_breadth) and iterative scan; returns the question's distinct
    lexemes (as question_lexemes)."""
    row = await conn.fetchrow(_PREPARE, table, cfg.ef_search, question)
    return list(dict.fromkeys(row["lexemes"] or [])) if row else []


# BM25 reads the postings of the question's rarest lexemes only: frequent ones weigh next to nothing, and at
# 100k chunks their postings would be most of the table. Rarest first, lexemes are taken while their postings add
# up to at most MAX_POSTINGS rows: the keyword half's cost is bounded whatever the corpus size (bench/retrieval.py:
# at 100k chunks the 8 rarest lexemes of a question matched 54 % of the table, 278 ms p50).
MAX_LEXEMES = 8
MAX_POSTINGS = 2000
BM25_K1, BM25_B = 1.2, 0.75


async def question_lexemes(conn: asyncpg.Connection | asyncpg.Pool, question: str) -> list[str]:
    """The question's distinct lexemes: what the keyword statement takes as $1."""
    return list(dict.fromkeys(await conn.fetchval(_LEXEMES, question) or []))

# The search is two statements in one transaction. The keyword half needs only the question's words, so it runs
# while the question is being embedded (HybridSearch.search takes the vector as an awaitable): PostgreSQL works
# on the other core meanwhile, and after the vector only the HNSW half and the join are left on the path to the
# first token. {vectors} is the index's table (from embedding_indexes, never user input). Without filters the
# dense half reads the vector table alone, so the HNSW index drives it; with filters it joins the chunks it
# filters on.
_KEYWORD_SQL = f"""
WITH corpus AS (
    SELECT greatest(n, 1)::float8 AS n, greatest(total_len::float8 / greatest(n, 1), 1) AS avglen FROM term_corpus
), q AS (
    SELECT lexeme, idf FROM (
        SELECT s.lexeme, ln(1 + (corpus.n - s.ndoc + 0.5) / (s.ndoc + 0.5)) AS idf,
               sum(s.ndoc) OVER (ORDER BY s.ndoc, s.lexeme) AS postings
        FROM term_stats s, corpus WHERE s.lexeme = ANY($1::text[]) AND s.ndoc > 0
        ORDER BY s.ndoc, s.lexeme LIMIT {MAX_LEXEMES}
    ) rarest WHERE postings <= {MAX_POSTINGS}
), bm25 AS (
    SELECT p.chunk_id,
           sum(q.idf * p.tf * {BM25_K1 + 1} / (p.tf + {BM25_K1} * ({1 - BM25_B} + {BM25_B} * p.len / corpus.avglen)))
               AS keyword
    FROM q JOIN chunk_terms p USING (lexeme) CROSS JOIN corpus GROUP BY p.chunk_id
)
-- best first, each scored chunk is looked up by its key until $2 pass (OFFSET 0 and LATERAL ... LIMIT 1 keep
-- the planner from flattening this into a join: it guesses tens of thousands of postings rows and then read
-- the whole vector and chunk tables, 43 of 65 ms at 100k chunks, to check the few hundred there are)
SELECT k.chunk_id, k.keyword, (SELECT sum(idf) FROM q) AS idf_mass
FROM (SELECT * FROM bm25 ORDER BY keyword DESC, chunk_id OFFSET 0) k
CROSS JOIN LATERAL (
    SELECT 1 FROM {{vectors}} v {{dense_join}} WHERE v.chunk_id = k.chunk_id AND {{where}} LIMIT 1
) present
LIMIT $2
"""
# $2 / $3: the keyword half's chunk ids and scores, best first
_DENSE_SQL = """
WITH keyword AS (
    SELECT chunk_id, keyword, rank FROM unnest($2::text[], $3::float8[]) WITH ORDINALITY AS k(chunk_id, keyword, rank)
), dense AS (
    SELECT chunk_id, row_number() OVER () AS rank FROM (
        SELECT v.chunk_id FROM {vectors} v {dense_join} WHERE NOT v.toc AND {where}
        ORDER BY v.embedding <=> $1 LIMIT $4
    ) ranked
)
SELECT c.chunk_id, c.doc_id, c.name, c.page, c.section, c.text, c.ordinal, v.embedding,
       v.sentence_spans, v.sentence_vectors, 1 - (v.embedding <=> $1) AS dense, coalesce(k.keyword, 0) AS keyword,
       d.rank AS dense_rank, k.rank AS keyword_rank
FROM dense d FULL JOIN keyword k USING (chunk_id) JOIN chunks c USING (chunk_id) JOIN {vectors} v USING (chunk_id)
"""


def search_statements(table: str, filters: dict[str, Any]) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
    """(keyword SQL, its filter arguments), (dense SQL, its filter arguments) for the index `table`."""
    statements = []
    for sql, first_arg in ((_KEYWORD_SQL, 3), (_DENSE_SQL, 5)):
        join, where, extra = _filters(filters, first_arg=first_arg)
        dense_join = f"JOIN chunks c USING (chunk_id) {join}" if where != "TRUE" else ""
        statements.append((sql.format(vectors=table, where=where, dense_join=dense_join), extra))
    return statements[0], statements[1]


def _filters(filters: dict[str, Any], first_arg: int) -> tuple[str, str, list[Any]]:
    """SQL join, where clause and arguments for the metadata filters (numbered after the fixed ones)."""
    clauses, args, join = ["TRUE"], [], ""

    def arg(value: Any) -> str:
        args.append(value)
        return f"${first_arg + len(args) - 1}"

    if doc_ids := filters.get("doc_ids"):
        clauses.append(f"c.doc_id = ANY({arg(list(doc_ids))})")
    if names := filters.get("names"):
        clauses.append(f"c.name = ANY({arg(list(names))})")
    if doc_types := filters.get("doc_types"):
        clauses.append(f"c.doc_type = ANY({arg(list(doc_types))})")
    if tags := filters.get("tags"):
        join = "JOIN documents dm ON dm.upload_id = c.upload_id"
        clauses.append(f"(dm.metadata -> 'tags') ?| {arg(list(tags))}::text[]")
    return join, " AND ".join(clauses), args


def sentence_cosines(rows: list[dict[str, Any]], question: np.ndarray) -> list[np.ndarray]:
    """Each candidate's sentence cosines to the (unit) question, from the index's sentence vectors (empty for a
    chunk embedded before them). All candidates' vectors go through one matrix product: per row, the unpacking
    and the dicts of every sentence were most of the search's Python time (~1.5 ms of 40 candidates)."""
    dim = len(question)
    raws = []
    for row in rows:
        packed, offsets = row.get("sentence_vectors"), row.get("sentence_spans")
        raws.append(packed_bytes(packed) if packed and offsets else b"")
    if not rows:
        return []
    cosines = packed_cosines(b"".join(raws), dim, question)
    return np.split(cosines, np.cumsum([len(raw) // dim for raw in raws])[:-1])


def sentence_scores(row: dict[str, Any], cosines: np.ndarray) -> list[dict[str, Any]]:
    """A passage's sentences (their spans in its text) with their cosine to the question."""
    offsets = row.get("sentence_spans") or []
    return [{"start": int(offsets[2 * k]), "end": int(offsets[2 * k + 1]), "score": round(float(c), 4)}
            for k, c in enumerate(cosines)]


def fuse(rows: list[dict[str, Any]], question: np.ndarray, top_k: int, cfg: RetrievalConfig, threshold: float,
         trace: list[dict[str, Any]] | None = None, idf_mass: float = 0.0) -> list[dict[str, Any]]:
    """Keep rows at or above the threshold, rank by the fused score (ties: cosine), drop near-duplicates,
    number 1..top_k. With `trace`, every candidate's ranks, scores and what became of it are appended there
    (POST /search with debug).

    BM25 enters as a share of the question's IDF mass (`idf_mass`: the sum of the IDFs of the lexemes it used,
    what a chunk holding each of them once at mean length scores), not of the best match: the best match of a
    question asked in other words than the documents' shares one rare word of six and should weigh little, while
    a chunk with the question's own words weighs fully. On the Sphinx evaluation set (bench/eval/experiments)
    dividing by the best match cost paraphrased questions what dense alone finds."""
    norm = idf_mass or max((float(r["keyword"]) for r in rows), default=0.0) or 1.0
    question = np.asarray(question, dtype=np.float32)
    question = question / (np.linalg.norm(question) or 1.0)
    for row, cosines in zip(rows, sentence_cosines(rows, question), strict=True):
        row["cosines"] = cosines
        # a chunk without sentence vectors counts as one sentence
        row["sentence"] = round(float(cosines.max()), 4) if len(cosines) else float(row["dense"])
        row["fused"] = (float(row["dense"]) + cfg.sentence_weight * row["sentence"]
                        + cfg.keyword_weight * float(row["keyword"]) / norm)
    ordered = sorted(rows, key=lambda r: (r["fused"], r["dense"]), reverse=True)
    outcome: dict[str, str] = {}
    chosen: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    for row in ordered:
        if row["dense"] < threshold:
            outcome[row["chunk_id"]] = f"below the similarity threshold {threshold:g}"
            continue
        if len(chosen) == top_k:
            outcome[row["chunk_id"]] = f"beyond top_k {top_k}"
            continue
        vector = np.asarray(row["embedding"].to_numpy() if hasattr(row["embedding"], "to_numpy")
                            else row["embedding"], dtype=np.float32)
        vector /= np.linalg.norm(vector) or 1.0
        twin = next((i for i, v in enumerate(vectors) if float(vector @ v) >= cfg.duplicate_similarity), None)
        if twin is not None:
            outcome[row["chunk_id"]] = f"near-duplicate of passage {twin + 1}"
            continue
        chosen.append(row)
        vectors.append(vector)
        outcome[row["chunk_id"]] = f"passage {len(chosen)}"
    if trace is not None:
        trace.extend({"chunk_id": r["chunk_id"], "name": r["name"], "dense_rank": r["dense_rank"],
                      "keyword_rank": r["keyword_rank"], "fused_rank": i, **_scores(r),
                      "outcome": outcome[r["chunk_id"]]} for i, r in enumerate(ordered, start=1))
    return [
        {
            "n": n, "chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "name": r["name"], "page": r["page"],
            "section": list(r["section"] or []), "text": r["text"], "score": round(float(r["dense"]), 4),
            "scores": _scores(r), "sentences": sentence_scores(r, r["cosines"]),
        }
        for n, r in enumerate(chosen, start=1)
    ]


def _scores(row: dict[str, Any]) -> dict[str, float]:
    return {"dense": round(float(row["dense"]), 4), "sentence": round(float(row["sentence"]), 4),
            "keyword": round(float(row["keyword"]), 4), "fused": round(float(row["fused"]), 5)}


class HybridSearch:
    def __init__(self, pool: asyncpg.Pool, config: RetrievalConfig | None = None) -> None:
        self.pool = pool
        self.config = config or RetrievalConfig()

    async def search(self, embedding: np.ndarray | Awaitable[np.ndarray], query: str, top_k: int,
                     filters: dict[str, Any] | None = None, threshold: float | None = None, *, model: str,
                     trace: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The `top_k` passages for a question embedded by `model`, from that model's index (`trace`: see
        `fuse`). `embedding` may still be on its way (an awaitable): the keyword half runs meanwhile."""
        cfg = self.config
        table = vectors_table(model)
        (keyword_sql, keyword_args), (dense_sql, dense_args) = search_statements(table, filters or {})
        pending = asyncio.ensure_future(embedding) if inspect.isawaitable(embedding) else None
        started = time.perf_counter()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                lexemes = await prepare_search(conn, table, cfg, query)
                best = await conn.fetch(keyword_sql, lexemes, cfg.candidates, *keyword_args)
                if pending is not None:
                    waited = time.perf_counter()
                    embedding = await pending
                    started += time.perf_counter() - waited  # the search's own time, not the embedding's
                vector = np.asarray(embedding, dtype=np.float32)
                rows = await conn.fetch(dense_sql, vector, [r["chunk_id"] for r in best],
                                        [float(r["keyword"]) for r in best], cfg.candidates, *dense_args)
        except asyncpg.UndefinedTableError:  # the index has no vectors yet (nothing uploaded so far)
            if pending is not None:
                await pending  # the caller's embedding errors are still its errors
            return []
        except BaseException:
            if pending is not None:
                pending.cancel()  # a no-op once it is done
            raise
        searched = time.perf_counter()
        RETRIEVAL_SECONDS.labels("search").observe(searched - started)
        threshold = cfg.min_similarity if threshold is None else threshold
        idf_mass = float(best[0]["idf_mass"] or 0.0) if best else 0.0
        passages = fuse([dict(r) for r in rows], vector, top_k, cfg, threshold, trace, idf_mass)
        RETRIEVAL_SECONDS.labels("fuse").observe(time.perf_counter() - searched)
        return passages
