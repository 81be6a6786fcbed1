"""In-process retrieval experiments on bench/eval (and, as a second never-tuned set, tests/quality).

Parses the corpus with ragbus's own parser (defaults: structure/200/40), embeds with a chosen model (vectors
cached in $RAGBUS_EVAL_CACHE, default ~/.cache/ragbus-eval, keyed by model fingerprint and text), loads the
chunks into a real PostgreSQL + pgvector (EmbeddedPostgres on a free port, projections.schema.migrate,
vectors_ddl) and evaluates retrieval variants on the questions, with a per-question trace (dense rank, keyword
rank, fused rank of the gold passage, miss kind) and the per-kind table of bench/eval/score.py.

The dense half is exact numpy cosine (equivalent to HNSW at this size); the keyword half is PostgreSQL
(ts_rank_cd on the real chunks.tsv, or BM25 in SQL). The `system` variant runs the real HybridSearch.search
(HNSW + full text + RRF) and reproduces the POST /search figures; `rrf` is its numpy re-implementation.

    H=bench/eval/experiments/harness.py
    .venv/bin/python $H                                   # presets system;rrf;dense;dense_raw;keyword
    .venv/bin/python $H --variants "system;dense;fuse=lin,wk=0.1" --trace-dir /tmp/tr
    .venv/bin/python $H --compose ctx --text-headings --variants "system;recommended" --latency 3
    .venv/bin/python $H --model all-MiniLM-L6-v2 --qset quality --variants "system;dense"
    .venv/bin/python $H --model /path/to/finetuned --docs-split A   # questions on documents of half A only

--variants takes ';'-separated specs. A spec is a comma-separated list of key=value, optionally after a preset
name (PRESETS: system, rrf, dense, dense_raw, keyword, recommended = RECOMMENDED), e.g. `rrf,k=10` or `fuse=lin,ws=0.5,kw=bm25post,wk=0.2`.
Keys (DEFAULTS):

  fuse   rrf | rrf3 | lin | tie | dense  (rrf3: RRF of chunk cosine, max sentence cosine (weight ws) and keyword;
         rrf: sum w/(k+rank); lin: weighted sum of scores; tie: dense cosine rounded to
         `tie` decimals, keyword score breaks ties; dense: dense only)
  k, wd, wk        RRF constant and weights of the dense / keyword ranks
  cand             candidates taken from each half (both: 40 today)
  thr, dup         similarity threshold on the dense cosine, near-duplicate cosine (0 / 1 switch them off)
  kw     text | head | bm25 | bm25h | bm25sql | bm25post   keyword index: text = ts_rank_cd on the real
         chunks.tsv; head = ts_rank_cd on setweight(title+section,'A') || setweight(text,'D'); bm25, bm25h = BM25
         over the same lexemes, in Python, on the text / heading path + text; bm25sql = BM25 computed in
         PostgreSQL on heading path + text over the kq (a number, default 8) rarest question lexemes (BM25_SQL);
         bm25post = the same from an inverted-index table (BM25_POSTINGS_SQL), what the latency figures use
  kq     any2 | or | rare | rare_any2   keyword query: today's any-two-of-the-longest-8 lexemes; a plain OR;
         the 8 rarest lexemes (corpus document frequency, from ts_stat) OR-ed / any-two-of
  kwn    max | raw | cov | covc   keyword score normalisation in `lin` (divide by the question's best |
         ts_rank_cd/(1+r) | divide by the question's IDF mass, what HybridSearch does since 2026-12-03 |
         the same, capped at 1)
  wc, ws, wh, wdoc  `lin` weights of: chunk cosine (wc, default 1), max cosine over the chunk's sentences (ws),
         cosine to the chunk's heading path (wh), the document's best chunk cosine (wdoc)
  tb     kw | dense: RRF ties go to the keyword half's pick (as the system's SQL row order) | the higher cosine
  toc    1: chunks the parser flags as a table of contents (chunking.mark_contents) are no candidates
  wsec, wnb         `lin` weights of the best cosine in the chunk's section, of its better neighbour chunk
  alt, wa           `lin` weight of the cosine to a second vector per chunk, embedded with compose `alt`
                    (alt=d2q: the chunk text followed by its --doc2query questions)
  wq     `lin` weight of the best cosine to the chunk's --doc2query questions (LLM-written from the chunk alone)
  prf, prfk         pseudo-relevance feedback: q + prf * mean of the top prfk chunk vectors, normalised
  rr     rerank the fused top `rr` (e.g. 20) by wc*cos + ws*maxsent + wh*head (+ wk*kw), 0: no rerank stage
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
EVAL = HERE.parent
ROOT = EVAL.parent.parent
sys.path[:0] = [str(ROOT), str(EVAL)]
warnings.filterwarnings("ignore")  # bs4's XMLParsedAsHTMLWarning on the DocBook pages

import score  # noqa: E402  (bench/eval/score.py)

CACHE = Path(os.environ.get("RAGBUS_EVAL_CACHE", Path.home() / ".cache" / "ragbus-eval"))
QSETS = {
    "eval": (EVAL / "corpus", EVAL / "questions.json"),
    "quality": (ROOT / "tests" / "quality" / "corpus", ROOT / "tests" / "quality" / "questions.json"),
    "sphinx": (EVAL / "sphinx" / "corpus", EVAL / "sphinx" / "questions.json"),
}
# Half the eval documents (every other one in name order): for the domain-adaptation generalisation test.
def doc_split(names: Sequence[str]) -> dict[str, str]:
    return {n: "AB"[i % 2] for i, n in enumerate(sorted(names))}


# --- corpus ---------------------------------------------------------------------------------------------------


@dataclass
class Chunk:
    idx: int
    doc: str
    title: str
    section: tuple[str, ...]
    text: str
    ordinal: int
    start: int
    end: int
    doc_type: str
    toc: bool = False  # mostly the document's own headings: the parser's flag (chunking.mark_contents)

    @property
    def chunk_id(self) -> str:
        return f"{self.doc}#{self.ordinal:04d}"

    def path(self) -> list[str]:
        """Title, then the heading path, without repeating the title (HTML pages open with it as a heading)."""
        parts = [self.title] if self.title else []
        for s in self.section:
            if s and s not in parts:
                parts.append(s)
        return parts


@dataclass
class Corpus:
    chunks: list[Chunk]
    texts: dict[str, str]  # doc -> full extracted text
    parse_s: float


def text_segments(text: str) -> list[Any] | None:
    """The parser's plain-text headings (ragbus's own since 2026-12-04: `--text-headings` re-applies them)."""
    from agents.parser.formats import plain_text_segments

    return plain_text_segments(text)


def load_corpus(corpus_dir: Path, strategy: str = "structure", tokens: int = 200, overlap: int = 40,
                headings: bool = False) -> Corpus:
    """headings: give plain-text documents a heading structure (text_segments), as formats.extract_text could."""
    from agents.parser.chunking import chunk_document
    from agents.parser.service import parse_document

    started = time.perf_counter()
    chunks: list[Chunk] = []
    texts = {}
    for path in sorted(p for p in corpus_dir.iterdir() if p.is_file()):
        parsed = parse_document(path.read_bytes(), path.name, strategy=strategy, chunk_tokens=tokens,
                                overlap_tokens=overlap)
        texts[path.name] = parsed.text
        title = parsed.title or path.name
        drafts = parsed.chunks
        if headings and parsed.doc_type == "text" and parsed.chunks:
            segments = text_segments(parsed.text)
            if segments:
                drafts = chunk_document(parsed.text, segments, strategy=strategy, chunk_tokens=tokens,
                                        overlap_tokens=overlap)
        for c in drafts:
            chunks.append(Chunk(len(chunks), path.name, title, tuple(c.section), c.text, c.ordinal, c.char_start,
                                c.char_end, parsed.doc_type, c.toc))
    return Corpus(chunks, texts, time.perf_counter() - started)


# chunk text key -> questions SmolLM2 wrote for that chunk (doc2query.py; loaded by --doc2query)
GENERATED: dict[str, list[str]] = {}


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# document file name -> the lines of its <pre> blocks (loaded by --compose prose)
CODE_LINES: dict[str, set[str]] = {}


def load_code_lines(corpus_dir: Path) -> None:
    from bs4 import BeautifulSoup

    for path in corpus_dir.iterdir():
        if path.suffix in (".html", ".htm"):
            soup = BeautifulSoup(path.read_bytes(), "html.parser")
            CODE_LINES[path.name] = {line.strip() for pre in soup.find_all("pre")
                                     for line in pre.get_text().split("\n") if line.strip()}


def prose(chunk: Chunk) -> str:
    """The chunk text without the lines of its document's code blocks (the whole text if that leaves little)."""
    code = CODE_LINES.get(chunk.doc, set())
    kept = "\n".join(line for line in chunk.text.split("\n") if line.strip() not in code)
    return kept if len(kept) >= 40 else chunk.text


def compose(chunk: Chunk, mode: str) -> str:
    """What gets embedded for a chunk. text: today's chunk text alone; title: title + text; ctx: title, heading
    path and text; ctxn: file name, heading path and text; sec: heading path (no title) + text; head: the title +
    heading path alone; prose: the text without its code blocks' lines."""
    if mode == "text":
        return chunk.text
    if mode == "prose":
        return prose(chunk)
    if mode == "d2q":
        return "\n".join([chunk.text, *GENERATED.get(text_key(chunk.text), [])])
    if mode == "ctxn":  # what the embedder composes (agents/embedder/service.py embedding_context)
        from agents.embedder.service import embedded_text, embedding_context

        return embedded_text(embedding_context(chunk.doc, list(chunk.section), chunk.text), chunk.text)
    elif mode == "ctxl":  # the file name and the innermost heading only
        path = [chunk.doc, *[s for s in chunk.section if s][-1:]]
    elif mode == "name":  # the file name alone
        return f"{chunk.doc}\n\n{chunk.text}"
    else:
        path = chunk.path() if mode in ("ctx", "head") else [chunk.title] if mode == "title" else list(chunk.section)
    if mode == "head":
        return " > ".join(path) or chunk.title
    # the chunk usually starts with its own heading (structure strategy): do not repeat it
    if path and chunk.text.startswith(path[-1]):
        path = path[:-1]
    prefix = " > ".join(path)
    return f"{prefix}\n\n{chunk.text}" if prefix else chunk.text


def sentences(chunk: Chunk) -> list[str]:
    """The chunk's sentences (ragbus's own sentence splitter); very short ones are glued to the next."""
    from agents.parser.chunking import sentence_spans

    spans = sentence_spans(chunk.text, 0, len(chunk.text))
    out: list[str] = []
    carry = ""
    for a, b in spans:
        s = (carry + " " + chunk.text[a:b]).strip() if carry else chunk.text[a:b]
        if len(s) < 25:
            carry = s
            continue
        carry = ""
        out.append(s)
    if carry:
        out.append(carry) if not out else out.__setitem__(-1, out[-1] + " " + carry)
    return out or [chunk.text]


def sentence_spans_glued(text: str) -> list[tuple[int, int]]:
    """`sentences`, as character spans of the text (the same gluing of short fragments)."""
    from agents.parser.chunking import sentence_spans

    out: list[list[int]] = []
    carry: list[int] | None = None
    for a, b in sentence_spans(text, 0, len(text)):
        span = [carry[0], b] if carry else [a, b]
        if len(text[span[0]:span[1]].strip()) < 25:
            carry = span
            continue
        carry = None
        out.append(span)
    if carry:
        out.append(carry) if not out else out[-1].__setitem__(1, carry[1])
    return [(a, b) for a, b in out] or [(0, len(text))]


def late_sentence_vectors(model: Any, texts: Sequence[str]) -> list[np.ndarray]:
    """Sentence vectors from the chunk's own forward pass ("late chunking"): the mean of the output token
    states whose characters lie in each sentence, normalised. No model call beyond the chunk's. A sentence past
    the model's 256-token window gets the chunk's vector."""
    out = []
    for text in texts:
        enc = model.tokenizer.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        hidden = model.session.run(None, {k: v for k, v in feed.items() if k in model.inputs})[0][0]
        offsets = np.array(enc.offsets)
        special = np.array(enc.special_tokens_mask, dtype=bool)
        whole = hidden.mean(axis=0)
        vecs = []
        for a, b in sentence_spans_glued(text):
            inside = (offsets[:, 0] >= a) & (offsets[:, 1] <= b) & ~special & (offsets[:, 1] > offsets[:, 0])
            v = hidden[inside].mean(axis=0) if inside.any() else whole
            vecs.append(v / (np.linalg.norm(v) or 1.0))
        out.append(np.stack(vecs).astype(np.float32))
    return out


# --- embeddings, cached ---------------------------------------------------------------------------------------


class Embeddings:
    """A model (catalogue name or folder) with a sqlite cache of vectors keyed by (model fingerprint, text)."""

    def __init__(self, name: str, models_dir: Path, threads: int = 2) -> None:
        self.name, self.models_dir, self.threads = name, models_dir, threads
        self._model: Any = None
        self.fingerprint = self._fingerprint()
        CACHE.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(CACHE / "embeddings.sqlite")
        self.db.execute("CREATE TABLE IF NOT EXISTS v (fp TEXT, h TEXT, vec BLOB, PRIMARY KEY (fp, h))")
        self.encode_s = 0.0
        self.encoded = 0

    def _fingerprint(self) -> str:
        from agents import models

        if self.name == models.MINILM:
            return models.fingerprint(models.packaged_model_path())
        if self.name in models.CATALOG:
            return models.fingerprint(models.ensure_built(self.name, self.models_dir))
        return models.fingerprint(Path(self.name))

    @property
    def model(self) -> Any:
        if self._model is None:
            from agents.models import load_model

            self._model = load_model(self.name, self.models_dir, self.threads)
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            part = unique[i:i + 500]
            rows = self.db.execute(f"SELECT h, vec FROM v WHERE fp = ? AND h IN ({','.join('?' * len(part))})",
                                   [self.fingerprint, *part]).fetchall()
            found.update((h, np.frombuffer(b, dtype=np.float32)) for h, b in rows)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            started = time.perf_counter()
            vecs = self.model.encode(list(missing.values()))
            self.encode_s += time.perf_counter() - started
            self.encoded += len(missing)
            self.db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?, ?)",
                                [(self.fingerprint, k, v.astype(np.float32).tobytes())
                                 for k, v in zip(missing, vecs, strict=True)])
            self.db.commit()
            found.update(zip(missing, vecs, strict=True))
        return np.stack([found[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 384), np.float32)


# --- PostgreSQL -----------------------------------------------------------------------------------------------


class Database:
    """EmbeddedPostgres in a temporary folder with ragbus's schema; chunks and one vector table loaded."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="ragbus-harness-")
        self.pg: Any = None
        self.pool: Any = None

    async def start(self) -> None:
        import asyncpg
        from pgvector.asyncpg import register_vector

        from projections.schema import migrate
        from ragbus.servers import EmbeddedPostgres

        self.pg = EmbeddedPostgres(Path(self.tmp.name) / "pg")
        await asyncio.to_thread(self.pg.start)
        self.pool = await asyncpg.create_pool(self.pg.dsn, min_size=1, max_size=2, init=register_vector)
        async with self.pool.acquire() as conn:
            await migrate(conn)
            # the `text` keyword variants rank PostgreSQL full text on the chunks, as ragbus did before BM25
            # (the schema dropped the column when nothing read it any more)
            await conn.execute("ALTER TABLE chunks ADD COLUMN IF NOT EXISTS tsv tsvector "
                               "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED")
            await conn.execute("CREATE INDEX IF NOT EXISTS chunks_tsv_idx ON chunks USING gin (tsv)")

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)
        self.tmp.cleanup()

    async def load(self, chunks: Sequence[Chunk], model: str, vectors: np.ndarray) -> None:
        """Replace the chunks, their keyword postings (as the projector writes them) and the model's vector table
        (HNSW, as vectors_ddl): the `system` variant then searches what POST /search would."""
        from projections.chunks import add_terms
        from projections.schema import vectors_ddl, vectors_table

        table = vectors_table(model)
        async with self.pool.acquire() as conn:
            await conn.execute("TRUNCATE chunks, chunk_terms, term_stats")
            await conn.execute("UPDATE term_corpus SET n = 0, total_len = 0")
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            await conn.execute(vectors_ddl(table, vectors.shape[1]))
            await conn.executemany(
                """INSERT INTO chunks (chunk_id, doc_id, upload_id, ordinal, name, doc_type, page, section,
                   char_start, char_end, text, toc) VALUES ($1, $2, $2, $3, $2, $4, NULL, $5, $6, $7, $8, $9)""",
                [(c.chunk_id, c.doc, c.ordinal, c.doc_type, list(c.section), c.start, c.end, c.text, c.toc)
                 for c in chunks])
            await add_terms(conn, [c.chunk_id for c in chunks if not c.toc])
            await conn.executemany(f"INSERT INTO {table} VALUES ($1, $2, $3, $4)",
                                   [(c.chunk_id, c.doc, v, c.toc) for c, v in zip(chunks, vectors, strict=True)])
            # the heading-weighted full-text variant (an experiment table beside the real one)
            await conn.execute("DROP TABLE IF EXISTS kw_head")
            await conn.execute("CREATE TABLE kw_head (chunk_id text PRIMARY KEY, tsv tsvector)")
            await conn.executemany(
                """INSERT INTO kw_head VALUES ($1, setweight(to_tsvector('english', $2), 'A')
                   || setweight(to_tsvector('english', $3), 'D'))""",
                [(c.chunk_id, " ".join(c.path()), c.text) for c in chunks])
            # BM25 in SQL: heading path + text lexemes, each chunk's length in lexeme occurrences, and the corpus
            # statistics a projector would keep up to date at ingest (lexeme -> document frequency; N; mean length)
            await conn.execute(BM25_DDL)
            await conn.executemany(
                "INSERT INTO kw_bm25 (chunk_id, tsv) VALUES ($1, to_tsvector('english', $2))",
                [(c.chunk_id, " ".join(c.path()) + "\n" + c.text) for c in chunks])
            await conn.execute(BM25_STATS)
            await conn.execute("ANALYZE")

    async def bm25_sql(self, lexemes: list[str], limit: int = 40, rare: int = 8,
                       sql: str | None = None) -> list[tuple[str, float]]:
        """BM25 (k1 1.2, b 0.75) computed by PostgreSQL over the `rare` question lexemes of lowest document
        frequency (frequent ones weigh little and would make the OR match most of a large table)."""
        if not lexemes:
            return []
        async with self.pool.acquire() as conn:
            return [(r["chunk_id"], float(r["score"])) for r in
                    await conn.fetch(sql or BM25_SQL, list(dict.fromkeys(lexemes)), rare, limit)]

    async def lexemes(self, questions: Sequence[str]) -> list[list[str]]:
        from projections.retrieval import _LEXEMES

        async with self.pool.acquire() as conn:
            return [list(await conn.fetchval(_LEXEMES, q) or []) for q in questions]

    async def doc_freq(self) -> dict[str, int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT word, ndoc FROM ts_stat('SELECT tsv FROM chunks')")
        return {r["word"]: r["ndoc"] for r in rows}

    async def keyword(self, tsquery: str, index: str, limit: int = 200) -> list[tuple[str, float]]:
        """(chunk_id, ts_rank_cd(.., 32)) of the matching chunks, best first, ties by chunk_id (as retrieval.py)."""
        source = "chunks" if index == "text" else "kw_head"
        sql = f"""SELECT chunk_id, ts_rank_cd(tsv, q, 32) AS s FROM {source}, to_tsquery('simple', $1) q
                  WHERE tsv @@ q ORDER BY s DESC, chunk_id LIMIT $2"""
        if not tsquery:
            return []
        async with self.pool.acquire() as conn:
            return [(r["chunk_id"], float(r["s"])) for r in await conn.fetch(sql, tsquery, limit)]

    async def system_search(self, vector: np.ndarray, question: str, model: str, top_k: int = 5,
                            **config: Any) -> list[dict[str, Any]]:
        from projections.retrieval import HybridSearch, RetrievalConfig

        # The harness's vector table holds no sentence vectors, so each chunk would count as its own one
        # sentence (1.5 x cosine): without the sentence term, this is ragbus's ranking before them.
        config.setdefault("sentence_weight", 0.0)
        return await HybridSearch(self.pool, RetrievalConfig(**config)).search(vector, question, top_k,
                                                                               model=model)


BM25_DDL = """
DROP TABLE IF EXISTS kw_bm25, bm25_lexemes, bm25_corpus;
CREATE TABLE kw_bm25 (chunk_id text PRIMARY KEY, tsv tsvector NOT NULL, len int);
CREATE INDEX kw_bm25_tsv ON kw_bm25 USING gin (tsv);
"""
BM25_STATS = """
UPDATE kw_bm25 SET len = (SELECT coalesce(sum(coalesce(array_length(u.positions, 1), 1)), 0) FROM unnest(tsv) u);
CREATE TABLE bm25_lexemes AS SELECT word AS lexeme, ndoc FROM ts_stat('SELECT tsv FROM kw_bm25');
ALTER TABLE bm25_lexemes ADD PRIMARY KEY (lexeme);
CREATE TABLE bm25_corpus AS SELECT count(*)::float8 AS n, avg(len)::float8 AS avglen FROM kw_bm25;
-- the same as an inverted index: one row per (lexeme, chunk), what a projector would insert with each chunk
CREATE TABLE bm25_postings AS SELECT u.lexeme, k.chunk_id, coalesce(array_length(u.positions, 1), 1) AS tf,
       k.len FROM kw_bm25 k, unnest(k.tsv) u;
CREATE INDEX bm25_postings_lexeme ON bm25_postings (lexeme) INCLUDE (chunk_id, tf, len);
"""
BM25_POSTINGS_SQL = """
WITH corpus AS (SELECT n, avglen FROM bm25_corpus),
q AS (
    SELECT s.lexeme, ln(1 + (corpus.n - s.ndoc + 0.5) / (s.ndoc + 0.5)) AS idf
    FROM bm25_lexemes s, corpus WHERE s.lexeme = ANY($1::text[]) ORDER BY s.ndoc, s.lexeme LIMIT $2
)
SELECT p.chunk_id, sum(q.idf * p.tf * 2.2 / (p.tf + 1.2 * (0.25 + 0.75 * p.len / corpus.avglen))) AS score
FROM q JOIN bm25_postings p USING (lexeme) CROSS JOIN corpus
GROUP BY p.chunk_id ORDER BY score DESC, p.chunk_id LIMIT $3
"""
# sum of the IDFs of the question lexemes BM25 uses: what a chunk holding each once, at mean length, scores
BM25_IDF_MASS_SQL = """
WITH corpus AS (SELECT n, avglen FROM bm25_corpus)
SELECT sum(idf) FROM (
    SELECT ln(1 + (corpus.n - s.ndoc + 0.5) / (s.ndoc + 0.5)) AS idf
    FROM bm25_lexemes s, corpus WHERE s.lexeme = ANY($1::text[]) ORDER BY s.ndoc, s.lexeme LIMIT $2
) q
"""
BM25_SQL = """
WITH corpus AS (SELECT n, avglen FROM bm25_corpus),
q AS (
    SELECT s.lexeme, ln(1 + (corpus.n - s.ndoc + 0.5) / (s.ndoc + 0.5)) AS idf
    FROM bm25_lexemes s, corpus WHERE s.lexeme = ANY($1::text[]) ORDER BY s.ndoc, s.lexeme LIMIT $2
),
tsq AS (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS query FROM q),
m AS (SELECT k.chunk_id, k.tsv, k.len FROM kw_bm25 k, tsq WHERE k.tsv @@ tsq.query)
SELECT m.chunk_id, sum(q.idf * t.tf * 2.2 / (t.tf + 1.2 * (0.25 + 0.75 * m.len / corpus.avglen))) AS score
FROM m CROSS JOIN LATERAL (SELECT u.lexeme, coalesce(array_length(u.positions, 1), 1) AS tf FROM unnest(m.tsv) u) t
JOIN q ON q.lexeme = t.lexeme CROSS JOIN corpus
GROUP BY m.chunk_id ORDER BY score DESC, m.chunk_id LIMIT $3
"""


def keyword_query(lexemes: list[str]) -> str:
    """The keyword half of the old ranking (ts_rank_cd, before BM25): one or two lexemes OR-ed; more, then any
    two of the longest MAX_LEXEMES."""
    from projections.retrieval import MAX_LEXEMES

    words = sorted(dict.fromkeys(lexemes), key=len, reverse=True)[:MAX_LEXEMES]
    quoted = ["'" + w.replace("'", "''") + "'" for w in words]
    if len(quoted) <= 2:
        return " | ".join(quoted)
    return " | ".join(f"({a} & {b})" for i, a in enumerate(quoted) for b in quoted[i + 1:])


def keyword_queries(lexemes: list[str], df: dict[str, int], mode: str) -> str:
    from projections.retrieval import MAX_LEXEMES

    words = list(dict.fromkeys(lexemes))
    quoted = lambda ws: ["'" + w.replace("'", "''") + "'" for w in ws]  # noqa: E731
    if mode == "any2":
        return keyword_query(words)
    if mode == "or":
        return " | ".join(quoted(words))
    present = sorted((w for w in words if df.get(w, 0) > 0), key=lambda w: (df[w], -len(w)))[:MAX_LEXEMES]
    if mode == "rare":
        return " | ".join(quoted(present))
    if mode == "rare_any2":
        q = quoted(present)
        return " | ".join(q) if len(q) <= 2 else " | ".join(f"({a} & {b})" for i, a in enumerate(q) for b in q[i + 1:])
    raise ValueError(f"unknown keyword query mode {mode!r}")


# --- the experiment state ---------------------------------------------------------------------------------------


@dataclass
class State:
    corpus: Corpus
    questions: list[dict[str, Any]]
    emb: Embeddings
    compose: str
    db: Database
    model_table: str
    C: np.ndarray = field(default=None)  # chunk vectors (composed text)
    Q: np.ndarray = field(default=None)  # question vectors
    S: np.ndarray = field(default=None)  # question x chunk: max cosine over the chunk's sentences
    H: np.ndarray = field(default=None)  # question x chunk: cosine to the chunk's heading path
    gold: list[set[int]] = field(default=None)
    kw: dict[tuple[str, str], list[list[tuple[int, float]]]] = field(default_factory=dict)
    kideal: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # the IDF mass per question
    lex: list[list[str]] = field(default=None)
    df: dict[str, int] = field(default=None)
    timings: dict[str, float] = field(default_factory=dict)
    late: bool = False  # sentence vectors from the chunk's own forward pass (--late-sentences)

    @property
    def sims(self) -> np.ndarray:
        if not hasattr(self, "_sims"):
            self._sims = self.Q @ self.C.T
        return self._sims

    def sentence_sims(self) -> np.ndarray:
        if self.S is None and self.late:
            started = time.perf_counter()
            per = late_sentence_vectors(self.emb.model, [compose(c, self.compose) for c in self.corpus.chunks])
            self.timings["late_sentences"] = sum(len(v) for v in per)
            self.timings["late_sentence_s"] = round(time.perf_counter() - started, 1)
            self.S = np.stack([(self.Q @ v.T).max(axis=1) for v in per], axis=1).astype(np.float32)
        if self.S is None:
            started = time.perf_counter()
            per = [sentences(c) for c in self.corpus.chunks]
            flat = [s for ss in per for s in ss]
            V = self.emb.encode(flat)
            self.timings["sentences"] = len(flat)
            self.timings["sentence_embed_s"] = round(time.perf_counter() - started, 1)
            full = self.Q @ V.T
            starts = np.concatenate(([0], np.cumsum([len(ss) for ss in per])[:-1]))
            S = np.maximum.reduceat(full, starts, axis=1)
            self.S = S.astype(np.float32)
        return self.S

    def generated_sims(self) -> np.ndarray:
        """question x chunk: the best cosine to the chunk's generated questions (0 for a chunk without any)."""
        if not hasattr(self, "_gen"):
            per = [GENERATED.get(text_key(c.text), []) for c in self.corpus.chunks]
            flat = [g for gs in per for g in gs]
            full = self.Q @ self.emb.encode(flat).T if flat else np.zeros((len(self.Q), 0), np.float32)
            G = np.zeros((len(self.Q), len(per)), np.float32)
            at = 0
            for i, gs in enumerate(per):
                if gs:
                    G[:, i] = full[:, at:at + len(gs)].max(axis=1)
                at += len(gs)
            self._gen = G
        return self._gen

    def alt_sims(self, mode: str) -> np.ndarray:
        """question x chunk cosine for the chunks embedded in another composition (a second vector per chunk)."""
        if not hasattr(self, "_alt"):
            self._alt = {}
        if mode not in self._alt:
            self._alt[mode] = (self.Q @ self.emb.encode([compose(c, mode) for c in self.corpus.chunks]).T)
        return self._alt[mode]

    def static_sims(self) -> np.ndarray:
        """question x chunk cosine with the static model distilled from MiniLM (model2vec, 256-d): a second,
        word-level view of the same texts."""
        if not hasattr(self, "_static"):
            static = Embeddings("minilm-distilled-256", self.emb.models_dir)
            self._static = static.encode([q["question"] for q in self.questions]) @ \
                static.encode([compose(c, self.compose) for c in self.corpus.chunks]).T
        return self._static

    def section_groups(self) -> np.ndarray:
        """An id per (document, heading path): the chunks of one section share it."""
        ids: dict[tuple[str, tuple[str, ...]], int] = {}
        return np.array([ids.setdefault((c.doc, c.section), len(ids)) for c in self.corpus.chunks])

    def heading_sims(self) -> np.ndarray:
        if self.H is None:
            heads = [compose(c, "head") for c in self.corpus.chunks]
            V = self.emb.encode(heads)
            self.H = (self.Q @ V.T).astype(np.float32)
        return self.H

    async def bm25(self, index: str, k1: float = 1.2, b: float = 0.75) -> list[list[tuple[int, float]]]:
        """BM25 over PostgreSQL's own lexemes (to_tsvector('english')), every question lexeme OR-ed: a reference
        for what a better keyword score would give (PostgreSQL has no BM25; it would need a lexeme-stats table)."""
        source = "chunks" if index == "bm25" else "kw_head"
        async with self.db.pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT chunk_id, u.lexeme AS w, coalesce(array_length(u.positions, 1), 1) AS n "
                                    f"FROM {source}, unnest(tsv) u")
        ids = {c.chunk_id: c.idx for c in self.corpus.chunks}
        tf: dict[str, dict[int, int]] = defaultdict(dict)
        length = np.zeros(len(self.corpus.chunks))
        for r in rows:
            i = ids[r["chunk_id"]]
            tf[r["w"]][i] = r["n"]
            length[i] += r["n"]
        avg = length.mean() or 1.0
        n = len(self.corpus.chunks)
        out = []
        for lex in self.lex:
            score = np.zeros(n)
            for w in dict.fromkeys(lex):
                posting = tf.get(w)
                if not posting:
                    continue
                idf = np.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
                for i, f in posting.items():
                    score[i] += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * length[i] / avg))
            order = [int(i) for i in np.argsort(-score, kind="stable") if score[i] > 0][:200]
            out.append([(i, float(score[i])) for i in order])
        return out

    async def keyword(self, index: str, mode: str) -> list[list[tuple[int, float]]]:
        key = (index, mode)
        if key not in self.kw and index in ("bm25", "bm25h"):
            self.kw[key] = await self.bm25(index)
        if key not in self.kw and index in ("bm25sql", "bm25post"):  # the SQL versions (heading path + text)
            ids = {c.chunk_id: c.idx for c in self.corpus.chunks}
            rare = {"any2": 8, "rare": 8, "or": 1000}.get(mode, int(mode) if mode.isdigit() else 8)
            sql = BM25_SQL if index == "bm25sql" else BM25_POSTINGS_SQL
            self.kw[key] = [[(ids[c], x) for c, x in await self.db.bm25_sql(lex, 200, rare, sql)] for lex in self.lex]
            async with self.db.pool.acquire() as conn:  # the question's IDF mass (kwn=cov)
                self.kideal[key] = [float(await conn.fetchval(BM25_IDF_MASS_SQL, list(dict.fromkeys(lex)), rare)
                                          or 0.0) for lex in self.lex]
        if key not in self.kw:
            if self.df is None:
                self.df = await self.db.doc_freq()
            ids = {c.chunk_id: c.idx for c in self.corpus.chunks}
            out = []
            for lex in self.lex:
                rows = await self.db.keyword(keyword_queries(lex, self.df, mode), index)
                out.append([(ids[cid], s) for cid, s in rows])
            self.kw[key] = out
        return self.kw[key]


_WORD = re.compile(r"[A-Za-z]+")


def edits1(word: str) -> set[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return ({a + b[1:] for a, b in splits if b} | {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
            | {a + c + b[1:] for a, b in splits if b for c in letters} | {a + c + b for a, b in splits for c in letters})


def spell_corrector(corpus: Corpus, min_len: int = 5, min_count: int = 2):
    """A query-side corrector built from the corpus alone: a question word of >= min_len letters that the corpus
    never uses becomes the corpus's most frequent word one edit away (delete, swap, replace, insert), if any."""
    counts: dict[str, int] = defaultdict(int)
    for text in corpus.texts.values():
        for w in _WORD.findall(text.lower()):
            counts[w] += 1

    def correct(question: str) -> str:
        def fix(m: re.Match) -> str:
            w = m.group()
            lw = w.lower()
            if len(lw) < min_len or counts.get(lw, 0) > 0:
                return w
            best = max((c for c in edits1(lw) if counts.get(c, 0) >= min_count), key=lambda c: counts[c],
                       default=None)
            return best or w
        return _WORD.sub(fix, question)

    return correct


async def prepare(corpus_dir: Path, questions: list[dict[str, Any]], model: str, models_dir: Path,
                  strategy: str, tokens: int, overlap: int, mode: str, db: Database, headings: bool = False,
                  spell: bool = False) -> State:
    corpus = load_corpus(corpus_dir, strategy, tokens, overlap, headings)
    if spell:  # rewrite the questions as the system would before embedding and full-text search
        correct = spell_corrector(corpus)
        questions = [{**q, "question": correct(q["question"])} for q in questions]
    emb = Embeddings(model, models_dir)
    started = time.perf_counter()
    C = emb.encode([compose(c, mode) for c in corpus.chunks])
    embed_s = time.perf_counter() - started
    Q = emb.encode([q["question"] for q in questions])
    table_model = f"harness-{emb.fingerprint}-{mode}"
    await db.load(corpus.chunks, table_model, C)
    gold = [{c.idx for c in corpus.chunks if score.is_hit(q, {"doc": c.doc, "text": c.text})} for q in questions]
    state = State(corpus, questions, emb, mode, db, table_model, C=C, Q=Q, gold=gold)
    state.lex = await db.lexemes([q["question"] for q in questions])
    state.timings.update(parse_s=round(corpus.parse_s, 2), chunks=len(corpus.chunks), chunk_embed_s=round(embed_s, 1),
                         newly_encoded=emb.encoded)
    return state


# --- variants ---------------------------------------------------------------------------------------------------

PRESETS = {
    "system": "system",  # the real HybridSearch.search over HNSW + PostgreSQL full text
    "rrf": "fuse=rrf,k=60,cand=40,thr=0.2,dup=0.95",  # numpy re-implementation of today's fusion
    "dense": "fuse=dense,cand=40,thr=0.2,dup=0.95",
    "dense_raw": "fuse=dense,cand=40,thr=0,dup=1",
    "keyword": "fuse=keyword,cand=40,thr=0,dup=1",
}
DEFAULTS = dict(fuse="rrf", k=60.0, wd=1.0, wk=1.0, cand=40, thr=0.2, dup=0.95, kw="text", kq="any2", kwn="max",
                wc=1.0, ws=0.0, wh=0.0, wdoc=0.0, rr=0, tie=2, tb="kw", toc=0,
                wsec=0.0, wnb=0.0, prf=0.0, prfk=3, alt="", wa=0.0, wq=0.0, wst=0.0)


def parse_variant(spec: str) -> dict[str, Any]:
    first, _, rest = spec.partition(",")
    if first in PRESETS:  # a preset, optionally with overrides: "dense,thr=0"
        spec = PRESETS[first] + ("," + rest if rest else "")
    if spec.startswith("system"):
        return {"fuse": "system"}
    out = dict(DEFAULTS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown variant key {key!r} in {spec!r}")
        default = DEFAULTS[key]
        out[key] = type(default)(float(value)) if isinstance(default, int) and not isinstance(default, bool) \
            else type(default)(value)
    return out


async def run_variant(state: State, spec: str, top_k: int = score.TOP_K) -> tuple[dict, list[dict], dict]:
    """Rankings for every question; returns (metrics, trace rows, info)."""
    v = parse_variant(spec)
    chunks = state.corpus.chunks
    rankings: dict[str, list[dict[str, Any]]] = {}
    rows = []
    timing: list[float] = []
    if v["fuse"] == "system":
        for qi, q in enumerate(state.questions):
            started = time.perf_counter()
            found = await state.db.system_search(state.Q[qi], q["question"], state.model_table, top_k)
            timing.append(time.perf_counter() - started)
            rankings[q["id"]] = [{"doc": p["name"], "text": p["text"]} for p in found]
            rows.append(_trace_row(state, qi, None, None, [_idx(state, p["chunk_id"]) for p in found]))
        metrics = score.score(state.questions, rankings, top_k)
        return metrics, rows, {"search_p50_ms": round(1000 * statistics.median(timing), 2)}

    sims = state.sims
    S = state.sentence_sims() if v["ws"] else None
    H = state.heading_sims() if v["wh"] else None
    A = state.alt_sims(v["alt"]) if v["wa"] else None
    G = state.generated_sims() if v["wq"] else None
    ST = state.static_sims() if v["wst"] else None
    kw_lists = await state.keyword(v["kw"], v["kq"])  # always: the trace shows the keyword rank
    cand = int(v["cand"])
    groups = state.section_groups()
    chosen_ids: dict[str, list[str]] = {}
    for qi, q in enumerate(state.questions):
        started = time.perf_counter()
        s = sims[qi]
        if v["prf"]:  # pseudo-relevance feedback: move the question towards its top prfk chunks, search again
            top = np.argsort(-s)[: int(v["prfk"])]
            qv = state.Q[qi] + v["prf"] * state.C[top].mean(axis=0)
            s = state.C @ (qv / np.linalg.norm(qv))
        if v["wsec"]:
            secmax = np.full(groups.max() + 1, -1.0)
            np.maximum.at(secmax, groups, s)
        dense_order = np.argsort(-s, kind="stable")
        dense_top = dense_order[:cand]
        kw_all = kw_lists[qi] if kw_lists is not None else []
        kw_top = kw_all[:cand]
        d_rank = {int(i): r for r, i in enumerate(dense_top, start=1)}
        k_rank = {i: r for r, (i, _) in enumerate(kw_top, start=1)}
        k_score = dict(kw_top)
        if v["toc"]:  # table-of-contents chunks are not candidates (as if flagged at ingest and filtered)
            dense_top = [int(i) for i in dense_order if not chunks[int(i)].toc][:cand]
            kw_top = [(i, x) for i, x in kw_all if not chunks[i].toc][:cand]
            d_rank = {int(i): r for r, i in enumerate(dense_top, start=1)}
            k_rank = {i: r for r, (i, _) in enumerate(kw_top, start=1)}
            k_score = dict(kw_top)
        if v["fuse"] == "keyword":
            pool = [i for i, _ in kw_top]
        else:
            kws = list(k_rank) if v["fuse"] != "dense" else []
            # tb=kw: keyword rows first, so equal RRF sums keep the keyword half's pick, as the SQL's row order
            # does in HybridSearch (measured: the `system` variant); tb=dense: ties go to the higher cosine
            pool = list(dict.fromkeys([*kws, *map(int, dense_top)] if v["tb"] == "kw" else
                                      sorted({*kws, *map(int, dense_top)}, key=lambda i: -float(s[i]))))
        kmax = max(k_score.values(), default=0.0) or 1.0
        kideal = state.kideal.get((v["kw"], v["kq"]), [0.0] * len(state.questions))[qi]

        def kwv(i: int) -> float:
            raw = k_score.get(i, 0.0)
            if v["kwn"] == "cov":  # share of the question's IDF mass the chunk matches: weak matches weigh little
                return raw / (kideal or 1.0)
            if v["kwn"] == "covc":
                return min(1.0, raw / (kideal or 1.0))
            return raw / kmax if v["kwn"] == "max" else raw

        docmax: dict[str, float] = {}
        if v["wdoc"]:
            for i in dense_top:
                docmax.setdefault(chunks[int(i)].doc, float(s[int(i)]))

        def lin(i: int) -> float:
            x = v["wc"] * float(s[i]) + v["wk"] * kwv(i)
            if S is not None:
                x += v["ws"] * float(S[qi, i])
            if H is not None:
                x += v["wh"] * float(H[qi, i])
            if v["wdoc"]:
                x += v["wdoc"] * docmax.get(chunks[i].doc, 0.0)
            if v["wsec"]:
                x += v["wsec"] * float(secmax[groups[i]])
            if A is not None:
                x += v["wa"] * float(A[qi, i])
            if G is not None:
                x += v["wq"] * float(G[qi, i])
            if ST is not None:
                x += v["wst"] * float(ST[qi, i])
            if v["wnb"]:
                nb = [float(s[j]) for j in (i - 1, i + 1) if 0 <= j < len(chunks) and chunks[j].doc == chunks[i].doc]
                x += v["wnb"] * max(nb, default=float(s[i]))
            return x

        if v["fuse"] == "rrf":
            key = lambda i: (v["wd"] / (v["k"] + d_rank[i]) if i in d_rank else 0.0) + \
                (v["wk"] / (v["k"] + k_rank[i]) if i in k_rank else 0.0)  # noqa: E731
        elif v["fuse"] == "lin":
            key = lin
        elif v["fuse"] == "rrf3":  # RRF over three rankings of the pool: chunk cosine, max sentence cosine, keyword
            Sq = state.sentence_sims()[qi]
            r_d = {i: r for r, i in enumerate(sorted(pool, key=lambda i: -float(s[i])), start=1)}
            r_s = {i: r for r, i in enumerate(sorted(pool, key=lambda i: -float(Sq[i])), start=1)}
            key = lambda i: v["wd"] / (v["k"] + r_d[i]) + v["ws"] / (v["k"] + r_s[i]) + \
                (v["wk"] / (v["k"] + k_rank[i]) if i in k_rank else 0.0)  # noqa: E731
        elif v["fuse"] == "tie":
            key = lambda i: (round(float(s[i]), int(v["tie"])), kwv(i))  # noqa: E731
        elif v["fuse"] == "dense":
            key = lambda i: float(s[i])  # noqa: E731
        elif v["fuse"] == "keyword":
            key = lambda i: k_score.get(i, 0.0)  # noqa: E731
        else:
            raise SystemExit(f"unknown fuse {v['fuse']!r}")
        ordered = sorted((i for i in pool if s[i] >= v["thr"]), key=key, reverse=True)
        if v["rr"]:
            head, tail = ordered[:int(v["rr"])], ordered[int(v["rr"]):]
            ordered = sorted(head, key=lin, reverse=True) + tail
        chosen: list[int] = []
        for i in ordered:
            if v["dup"] < 1 and any(float(state.C[i] @ state.C[j]) >= v["dup"] for j in chosen):
                continue
            chosen.append(i)
            if len(chosen) == top_k:
                break
        timing.append(time.perf_counter() - started)
        rankings[q["id"]] = [{"doc": chunks[i].doc, "text": chunks[i].text} for i in chosen]
        chosen_ids[q["id"]] = [chunks[i].chunk_id for i in chosen]
        full_dense_rank = {int(i): r for r, i in enumerate(dense_order, start=1)}
        full_kw_rank = {i: r for r, (i, _) in enumerate(kw_all, start=1)}
        row = _trace_row(state, qi, full_dense_rank, full_kw_rank, chosen)
        row["pool_rank"] = next((r for r, i in enumerate(ordered, start=1) if i in state.gold[qi]), None)
        row["pool_size"] = len(ordered)
        rows.append(row)
    metrics = score.score(state.questions, rankings, top_k)
    return metrics, rows, {"fuse_p50_ms": round(1000 * statistics.median(timing), 3), "chosen": chosen_ids}


def _idx(state: State, chunk_id: str) -> int:
    doc, _, ordinal = chunk_id.rpartition("#")
    return next(c.idx for c in state.corpus.chunks if c.doc == doc and c.ordinal == int(ordinal))


def _trace_row(state: State, qi: int, dense_rank: dict | None, kw_rank: dict | None, chosen: list[int]) -> dict:
    q = state.questions[qi]
    gold = state.gold[qi]
    best = lambda ranks: min((ranks[g] for g in gold if g in ranks), default=None) if ranks is not None else None  # noqa: E731
    fused = next((r for r, i in enumerate(chosen, start=1) if i in gold), None)
    top = [state.corpus.chunks[i] for i in chosen[:3]]
    if fused is not None:
        miss = None
    elif any(c.doc == q["doc"] for c in top):
        miss = "right-doc-wrong-chunk"
    else:
        miss = "wrong-doc"
    return {"id": q["id"], "kind": q.get("kind", "quality"), "question": q["question"], "doc": q["doc"],
            "dense_rank": best(dense_rank), "keyword_rank": best(kw_rank), "fused_rank": fused, "miss": miss,
            "gold_chunks": sorted(state.corpus.chunks[g].chunk_id for g in gold),
            "top3": [f"{c.chunk_id} {(' > '.join(c.section[-1:]))[:60]}" for c in top]}


def row_of(name: str, metrics: dict) -> dict[str, Any]:
    L, P, O = (metrics.get(k, {}) for k in ("literal", "paraphrased", "overall"))
    pick = lambda m: [round(m.get("hit@1", 0), 3), round(m.get("hit@3", 0), 3), round(m.get("mrr@5", 0), 3)]  # noqa: E731
    return {"variant": name, "L": pick(L), "P": pick(P), "O_h3": round(O.get("hit@3", 0), 3),
            "O": pick(O)}


def format_rows(rows: Iterable[dict[str, Any]]) -> str:
    lines = [f"{'variant':<58} {'L h1':>6}{'L h3':>6}{'L mrr':>6} | {'P h1':>6}{'P h3':>6}{'P mrr':>6} | "
             f"{'all h1':>6}{'all h3':>7}{'all mrr':>8}"]
    for r in rows:
        L, P, O = r["L"], r["P"], r["O"]
        lines.append(f"{r['variant'][:58]:<58} {L[0]:>6.3f}{L[1]:>6.3f}{L[2]:>6.3f} | {P[0]:>6.3f}{P[1]:>6.3f}"
                     f"{P[2]:>6.3f} | {O[0]:>6.3f}{O[1]:>7.3f}{O[2]:>8.3f}")
    return "\n".join(lines)


def load_questions(qset: str, split: str | None) -> list[dict[str, Any]]:
    corpus_dir, path = QSETS[qset]
    questions = json.loads(path.read_text(encoding="utf-8"))
    for i, q in enumerate(questions):
        q.setdefault("id", f"{qset}-{i:03d}")
        q.setdefault("kind", "paraphrased" if qset == "eval" else "quality")
    if split:
        halves = doc_split([p.name for p in corpus_dir.iterdir()])
        questions = [q for q in questions if halves[q["doc"]] == split]
    return questions


DEFAULT_VARIANTS = "system;rrf;dense;dense_raw;keyword"
RECOMMENDED = "fuse=lin,wc=1,ws=0.5,kw=bm25post,kq=8,wk=0.2,cand=40,thr=0.2,dup=0.95,toc=1"

PRESETS["recommended"] = RECOMMENDED

PROPOSED_DENSE = """SELECT v.chunk_id FROM {vectors} v ORDER BY v.embedding <=> $1 LIMIT $2"""
PROPOSED_SCORES = """
SELECT v.chunk_id, 1 - (v.embedding <=> $1) AS dense, v.embedding,
       (SELECT max(1 - (s.embedding <=> $1)) FROM sentence_vectors s WHERE s.chunk_id = v.chunk_id) AS sentence
FROM {vectors} v WHERE v.chunk_id = ANY($2::text[])
"""


async def latency(state: State, variant: str, rounds: int, models_dir: Path) -> dict[str, Any]:
    """p50/p90 ms per question: embedding the question (ONNX int8 and torch MiniLM, one at a time, 2 threads),
    today's HybridSearch.search, and the proposed pipeline in PostgreSQL (HNSW top cand, BM25 top cand, then
    cosine + max sentence cosine of the union in one query, fused in Python). Same database, interleaved."""
    from projections.retrieval import _LEXEMES

    v = parse_variant(variant)
    per = [sentences(c) for c in state.corpus.chunks]
    started = time.perf_counter()
    flat = [x for ss in per for x in ss]
    V = state.emb.encode(flat)
    sent_s = time.perf_counter() - started
    async with state.db.pool.acquire() as conn:
        await conn.execute("DROP TABLE IF EXISTS sentence_vectors")
        await conn.execute(f"CREATE TABLE sentence_vectors (chunk_id text NOT NULL, embedding vector({V.shape[1]}))")
        owners = [c.chunk_id for c, ss in zip(state.corpus.chunks, per, strict=True) for _ in ss]
        await conn.copy_records_to_table("sentence_vectors", records=list(zip(owners, V, strict=True)))
        await conn.execute("CREATE INDEX ON sentence_vectors (chunk_id)")
        await conn.execute("ANALYZE sentence_vectors")
    from projections.schema import vectors_table

    table = vectors_table(state.model_table)
    toc = {c.chunk_id for c in state.corpus.chunks if c.toc}
    times: dict[str, list[float]] = defaultdict(list)
    parts: dict[str, list[float]] = defaultdict(list)

    async def proposed(qi: int) -> list[str]:
        q = state.questions[qi]
        vec = state.Q[qi]
        async with state.db.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.ef_search = 80")
            t0 = time.perf_counter()
            lex = list(await conn.fetchval(_LEXEMES, q["question"]) or [])
            t1 = time.perf_counter()
            dense = [r["chunk_id"] for r in await conn.fetch(PROPOSED_DENSE.format(vectors=table), vec,
                                                               int(v["cand"]) + len(toc))]
            t2 = time.perf_counter()
            kw = await conn.fetch(BM25_POSTINGS_SQL if v["kw"] == "bm25post" else BM25_SQL, lex, int(v["kq"]) if str(v["kq"]).isdigit() else 8,
                                  int(v["cand"]) + len(toc)) if lex else []
            t3 = time.perf_counter()
            dense = [c for c in dense if c not in toc][: int(v["cand"])]
            kws = {r["chunk_id"]: float(r["score"]) for r in kw if r["chunk_id"] not in toc}
            kws = dict(list(kws.items())[: int(v["cand"])])
            rows = await conn.fetch(PROPOSED_SCORES.format(vectors=table), vec, list({*dense, *kws}))
            t4 = time.perf_counter()
        for name, a, b in (("lexemes", t0, t1), ("hnsw", t1, t2), ("bm25", t2, t3), ("scores+sentences", t3, t4)):
            parts[name].append(1000 * (b - a))
        kmax = max(kws.values(), default=0.0) or 1.0
        scored = sorted(((v["wc"] * r["dense"] + v["ws"] * (r["sentence"] or 0) + v["wk"] * kws.get(r["chunk_id"], 0)
                          / kmax, r) for r in rows if r["dense"] >= v["thr"]), key=lambda t: -t[0])
        chosen, vecs = [], []
        for _, r in scored:
            e = np.asarray(r["embedding"].to_numpy() if hasattr(r["embedding"], "to_numpy") else r["embedding"],
                           dtype=np.float32)
            if any(float(e @ x) >= v["dup"] for x in vecs):
                continue
            chosen.append(r["chunk_id"])
            vecs.append(e)
            if len(chosen) == score.TOP_K:
                break
        return chosen

    # correctness: the SQL pipeline must give the harness's rankings
    _, _, info = await run_variant(state, variant)
    agree = 0
    for qi, q in enumerate(state.questions):
        agree += (await proposed(qi)) == info["chosen"][q["id"]]
    for _ in range(rounds):
        for qi, q in enumerate(state.questions):
            t0 = time.perf_counter()
            await state.db.system_search(state.Q[qi], q["question"], state.model_table)
            t1 = time.perf_counter()
            await proposed(qi)
            t2 = time.perf_counter()
            times["today_search_ms"].append(1000 * (t1 - t0))
            times["proposed_search_ms"].append(1000 * (t2 - t1))
    from agents.models import MINILM, MINILM_ONNX, load_model

    for name in (MINILM_ONNX, MINILM):
        model = load_model(name, models_dir, 2)
        model.encode(["warm up"])
        for q in state.questions:
            t0 = time.perf_counter()
            model.encode([q["question"]])
            times[f"embed_{name}_ms"].append(1000 * (time.perf_counter() - t0))
        del model
    out: dict[str, Any] = {k: {"p50": round(statistics.median(x), 2),
                               "p90": round(sorted(x)[int(0.9 * len(x))], 2), "n": len(x)} for k, x in times.items()}
    out["proposed_parts_p50_ms"] = {k: round(statistics.median(x), 2) for k, x in parts.items()}
    out["sql_agrees_with_harness"] = f"{agree}/{len(state.questions)}"
    out["ingest"] = {"chunks": len(state.corpus.chunks), "sentences": len(flat),
                     "sentence_embed_s": round(sent_s, 1), "encoder": state.emb.name,
                     "newly_encoded": state.emb.encoded}
    return out


async def main_async(args: argparse.Namespace) -> int:
    corpus_dir, _ = QSETS[args.qset]
    questions = load_questions(args.qset, args.docs_split)
    strategy, tokens, overlap = args.chunking.split("/")
    if args.compose == "prose":
        load_code_lines(corpus_dir)
    db = Database()
    await db.start()
    try:
        state = await prepare(corpus_dir, questions, args.model, args.models_dir, strategy, int(tokens),
                              int(overlap), args.compose, db, args.text_headings, args.spell)
        state.late = args.late_sentences
        if args.doc2query:
            # only the lines that are questions: the others are the 135M model rambling on about the passage
            GENERATED.update({k: [g for g in gs if g.endswith("?")]
                              for k, gs in json.loads(args.doc2query.read_text()).items()})
        if args.hyde:  # HyDE: the question's vector moved towards an LLM-written answer (never the gold passage)
            written = json.loads(args.hyde.read_text())
            texts = [written.get(q["question"], "") for q in state.questions]
            if args.hyde_mode == "concat":
                Q = state.emb.encode([f"{q['question']}\n{t}" for q, t in zip(state.questions, texts, strict=True)])
            else:
                Q = state.Q + args.hyde_weight * state.emb.encode(texts)
            state.Q = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)
            if hasattr(state, "_sims"):
                del state._sims
        label = f"{Path(args.model).name} {args.chunking} compose={args.compose} qset={args.qset}" + \
            (" text-headings" if args.text_headings else "") + (" spell" if args.spell else "") + \
            (f" split={args.docs_split}" if args.docs_split else "") + \
            (f" hyde={args.hyde_mode}:{args.hyde_weight:g}" if args.hyde else "") + \
            (" late-sentences" if args.late_sentences else "")
        print(f"# {label}: {state.timings}", file=sys.stderr)
        results = []
        for spec in [s for s in args.variants.split(";") if s.strip()]:
            metrics, trace_rows, info = await run_variant(state, spec.strip())
            row = row_of(spec.strip(), metrics)
            row.update(info={k: x for k, x in info.items() if k != "chosen"}, config=label)
            results.append(row)
            if args.trace_dir:
                args.trace_dir.mkdir(parents=True, exist_ok=True)
                name = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", f"{Path(args.model).name}-{args.chunking}-{args.compose}-{spec}")
                (args.trace_dir / f"{name}.json").write_text(json.dumps(trace_rows, indent=1, ensure_ascii=False))
        print(f"## {label}")
        print(format_rows(results))
        if args.latency:
            lat = await latency(state, args.latency_variant, args.latency, args.models_dir)
            print(json.dumps(lat, indent=1))
        if args.json:
            with args.json.open("a") as fh:
                for r in results:
                    fh.write(json.dumps(r) + "\n")
    finally:
        await db.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2-onnx-int8", help="catalogue name or model folder")
    parser.add_argument("--models-dir", type=Path, default=CACHE / "models")
    parser.add_argument("--chunking", default="structure/200/40", help="STRATEGY/TOKENS/OVERLAP")
    parser.add_argument("--compose", default="text", choices=["text", "title", "ctx", "ctxn", "sec", "prose", "name", "ctxl"])
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="';'-separated variant specs or presets")
    parser.add_argument("--text-headings", action="store_true",
                        help="give plain-text documents headings (text_segments) before structure chunking")
    parser.add_argument("--spell", action="store_true",
                        help="correct question words unknown to the corpus (one edit away; spell_corrector)")
    parser.add_argument("--qset", default="eval", choices=list(QSETS))
    parser.add_argument("--docs-split", choices=["A", "B"], help="only questions on documents of this half")
    parser.add_argument("--trace-dir", type=Path)
    parser.add_argument("--latency", type=int, default=0, metavar="ROUNDS",
                        help="also time today's search, the proposed SQL pipeline and question embedding")
    parser.add_argument("--latency-variant", default=RECOMMENDED)
    parser.add_argument("--json", type=Path, help="append result rows (JSON lines) to this file")
    parser.add_argument("--hyde", type=Path, help="JSON {question: LLM-written answer} (HyDE), e.g. from hyde.py")
    parser.add_argument("--hyde-mode", default="add", choices=["add", "concat"],
                        help="add: question vector + w * answer vector; concat: embed 'question\\nanswer'")
    parser.add_argument("--hyde-weight", type=float, default=1.0)
    parser.add_argument("--doc2query", type=Path, help="JSON {chunk text key: questions} from doc2query.py (wq, alt=d2q)")
    parser.add_argument("--late-sentences", action="store_true",
                        help="ws= sentence vectors pooled from the chunk's own forward pass instead of one model call "
                        "per sentence (ONNX models)")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
