"""Retrieval latency at 10k and 100k chunks: `HybridSearch.search` (HNSW cosine + full text, fused) next to an
exact sequential-scan cosine top-k in the same run, on the same table, with the same questions.

    .venv/bin/python bench/retrieval.py [--sizes 10000 100000] [--queries 200] [--real 3000] [--json]

It starts only PostgreSQL + pgvector (in a temporary directory, on a free port), creates the schema with
`projections.schema.migrate` and MiniLM's vector table with `projections.schema.vectors_ddl`, and bulk-loads
with COPY the `chunks` table (the texts) and the vector table (`vectors_table(MODEL)`, the vectors):

- texts: overlapping 150-word windows over text installed on this machine (the license texts in
  /usr/share/common-licenses, the Python Language Reference topics, the standard library's docstrings, the
  READMEs of the installed Python packages, and the de-duplicated paragraphs of /usr/share/doc/*/copyright),
  so full-text search sees real words and realistic match counts;
- vectors: by default every window is embedded for real with the system's `Embedder` on the default model
  (all-MiniLM-L6-v2-onnx-int8; ~8 minutes for 100k windows on 2 cores, cached by model and texts for the next
  run). With `--real N`, only N windows, evenly spread, are real; every other window gets a vector derived from
  its two neighbouring real ones (interpolated by position, plus Gaussian noise, normalised), which is how 1M
  chunks can be simulated. The output says how close the derived vectors are to their real neighbours.
  Every window also gets its sentences (split as the embedder splits them) with vectors near the window's own
  (simulated: their cost is what counts here; bench/eval measures what real ones do for ranking).

Per size the HNSW index (on the vector table) is built after the load (as the schema defines it; the keyword
half's postings, `chunk_terms`, are added during the load as the projector adds them), the tables are vacuumed
and analysed, and then every question (real questions embedded with the model) runs three ways, interleaved and
in rotating order so that drift and caching hit all three alike:

- hybrid: `HybridSearch(pool, RetrievalConfig()).search(vector, question, top_k, model=...)`, exactly what
  the embedder agent runs for a question;
- exact: the baseline, `ORDER BY embedding <=> $1 LIMIT k` on the vector table with
  `SET LOCAL enable_indexscan = off` (a sequential scan computing every distance);
- hnsw: the same top-k through the HNSW index alone (the dense half of hybrid, same ef_search and iterative
  scan), for recall@k against exact and to show what the full-text half costs.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.embedder.service import Embedder
from agents.embedder.settings import EmbedderSettings
from projections.chunks import add_terms
from projections.retrieval import HybridSearch, RetrievalConfig, search_breadth
from projections.schema import CHUNKS, migrate, vectors_ddl, vectors_table
from projections.views import create_pool
from ragbus.servers import EmbeddedPostgres
from streams.sentences import pack_vectors, split_sentences
from streams.topology import DEFAULT_EMBEDDING_MODEL

MODEL = DEFAULT_EMBEDDING_MODEL  # the index a fresh system builds (ONNX int8: 100k real chunks embed in minutes)
CACHE = Path("~/.cache/ragbus-bench/retrieval").expanduser()  # real vectors, by model and texts: reruns skip them
WINDOW_WORDS = 150  # ~200 tokens, the parser's default chunk size
LICENSES = Path("/usr/share/common-licenses")
VECTORS = vectors_table(MODEL)  # the model's vector table, as the projection names it
CHUNK_COLUMNS = ("chunk_id", "doc_id", "upload_id", "ordinal", "name", "doc_type", "page", "section", "char_start",
                 "char_end", "text")
VECTOR_COLUMNS = ("chunk_id", "upload_id", "embedding", "sentence_spans", "sentence_vectors")
SENTENCE_NOISE = 0.5  # simulated sentence vectors: the window's vector plus this much noise (only their cost counts)
HNSW = f"{VECTORS}_hnsw"


def _index_statement(ddl: str, name: str) -> str:
    return re.search(rf"CREATE INDEX IF NOT EXISTS {name} [^;]+;", ddl).group(0)  # type: ignore[union-attr]


# index -> (its table, its definition exactly as the schema has it); dropped before a bulk load, rebuilt after
# it. The dimension appears only in the vector table's CREATE TABLE, not in its index statements.
INDEX_DDL = {HNSW: (VECTORS, _index_statement(vectors_ddl(VECTORS, 384), HNSW))}
# Above BULK chunks the postings' two indexes are dropped for the load too and built after it, from the schema's own
# definitions: maintained row by row, their random writes made the 1M load slow down until it did not finish in 25
# minutes. The rows are the projector's (add_terms; its ON CONFLICT DO NOTHING needs no index); only the indexes'
# physical order differs from one grown by ingest, as after a REINDEX.
BULK = 200_000
POSTINGS_DDL = {
    "chunk_terms_pkey": ("chunk_terms", "ALTER TABLE chunk_terms ADD "
                         + re.search(r"PRIMARY KEY \(lexeme, chunk_id\)[^-\n]*\)", CHUNKS).group(0)),  # type: ignore[union-attr]
    "chunk_terms_chunk_idx": ("chunk_terms", _index_statement(CHUNKS, "chunk_terms_chunk_idx")),
}

err = Console(stderr=True)


def progress_bar(transient: bool = True) -> Progress:
    columns = (TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err, transient=transient)


# ---- text ----------------------------------------------------------------------------------------------------
def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except (SyntaxError, ValueError):
        return []
    return [d for node in ast.walk(tree) if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                                       | ast.AsyncFunctionDef)
            and (d := ast.get_docstring(node)) and len(d) > 80]


def _new_paragraphs(text: str, seen: set[str]) -> str:
    """The paragraphs of `text` not seen before (license boilerplate, docstrings copied from class to class)."""
    kept = []
    for para in re.split(r"\n\s*\n", text):
        key = " ".join(para.split()).lower()
        if len(key) >= 40 and key not in seen:
            seen.add(key)
            kept.append(para)
    return "\n\n".join(kept)


def _html_text(path: Path) -> str:
    import warnings

    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(path.read_bytes(), "html.parser")
    for tag in soup(["script", "style"]):
        tag.decompose()
    return soup.get_text("\n")


def _site_docstrings(seen: set[str]) -> list[tuple[str, str]]:
    """The venv's packages' docstrings, one source per module, paragraphs de-duplicated; parsing 16k modules
    takes a minute, so the result is cached by the modules' paths, sizes and times."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    paths = [p for p in sorted(purelib.rglob("*.py")) if not {"test", "tests", "__pycache__"} & set(p.parts)]
    stamp = hashlib.sha256(json.dumps([(str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in paths]).encode())
    cached = CACHE / f"site-docstrings-{stamp.hexdigest()[:16]}.json"
    if cached.exists():
        found = [tuple(pair) for pair in json.loads(cached.read_text())]
    else:
        found = [(f"package {p.relative_to(purelib)}", "\n\n".join(docs)) for p in paths if (docs := _docstrings(p))]
        CACHE.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(found))
    return [(name, kept) for name, text in found if (kept := _new_paragraphs(text, seen))]


def sources() -> list[tuple[str, str]]:
    """(name, text) of installed documentation: deterministic for a given machine and venv. The Debian packages
    linux-doc-6.1, perl-doc, postgresql-doc-15 and debian-reference-en are read when installed: with them there is
    enough distinct text for 100k windows that overlap about as much as the parser's chunks (without them the
    windows overlap by 142 of 150 words, their exact top 10 are near duplicates, and HNSW recall says more about
    that than about a corpus)."""
    out: list[tuple[str, str]] = []
    if LICENSES.is_dir():
        for path in sorted(LICENSES.iterdir()):
            if path.is_file():
                out.append((f"license {path.name}", path.read_text(errors="replace")))
    with contextlib.suppress(ImportError):
        from pydoc_data.topics import topics

        out.extend((f"python reference: {k}", v) for k, v in sorted(topics.items()))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "idle_test", "site-packages", "lib2to3", "turtledemo", "__pycache__"}
    for path in sorted(stdlib.rglob("*.py")):
        if not skip & set(path.relative_to(stdlib).parts) and (docs := _docstrings(path)):
            out.append((f"stdlib {path.relative_to(stdlib)}", "\n\n".join(docs)))
    for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
        if len(text) > 1000:
            out.append((f"README {dist.metadata['Name']}", text))
    seen: set[str] = set()
    for path in sorted(Path("/usr/share/doc").glob("*/copyright")):
        with contextlib.suppress(OSError):
            if text := _new_paragraphs(path.read_text(errors="replace"), seen):
                out.append((f"copyright {path.parent.name}", text))
    kernel = Path("/usr/share/doc/linux-doc-6.1/html/_sources")
    out += [(f"kernel {p.relative_to(kernel)}", p.read_text(errors="replace")) for p in sorted(kernel.rglob("*.txt"))]
    out += [(f"perl {p.name}", p.read_text(errors="replace"))
            for p in sorted(Path("/usr/share/perl").glob("*/pod/*.pod"))]
    out += [(f"postgresql {p.name}", _html_text(p))
            for p in sorted(Path("/usr/share/doc/postgresql-doc-15/html").glob("*.html"))]
    out += [(f"debian-reference {p.name}", _html_text(p))
            for p in sorted(Path("/usr/share/debian-reference").glob("*.en.html"))]
    out += _site_docstrings(seen)
    return out


@dataclass
class Windows:
    texts: list[str]
    names: list[str]
    doc: np.ndarray  # document number of each window
    ordinal: np.ndarray  # window number within its document
    step: int
    source_words: int
    sources: int


def make_windows(docs: list[tuple[str, str]], wanted: int) -> Windows:
    """Overlapping windows of WINDOW_WORDS words, with the largest step that still gives `wanted` of them."""
    words = [text.split() for _name, text in docs]
    lengths = np.array([len(w) for w in words])
    usable = lengths >= 20

    def count(step: int) -> int:
        spans = np.maximum(lengths[usable] - WINDOW_WORDS, 0)
        return int(np.sum(spans // step + 1))

    step = WINDOW_WORDS
    while step > 1 and count(step) < wanted:
        step -= 1
    if count(step) < wanted:
        raise SystemExit(f"only {count(1)} windows of text available, fewer than {wanted}")
    texts, names, doc, ordinal = [], [], [], []
    for d, ((name, _text), w) in enumerate(zip(docs, words, strict=True)):
        if len(w) < 20:
            continue
        for o, start in enumerate(range(0, max(len(w) - WINDOW_WORDS, 0) + 1, step)):
            texts.append(" ".join(w[start:start + WINDOW_WORDS]))
            names.append(name)
            doc.append(d)
            ordinal.append(o)
    return Windows(texts, names, np.array(doc), np.array(ordinal), step, int(lengths.sum()), len(docs))


def derive_vectors(windows: Windows, embedder: Embedder, real: int, noise: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, float | None]]:
    """Real vectors for every k-th window; the others interpolated between their neighbouring real ones (same
    document) plus noise. Returns (vectors, is_real, stats)."""
    n = len(windows.texts)
    k = max(1, n // real) if real > 0 else 1  # 0: every window embedded for real
    anchors = np.arange(0, n, k)
    vectors = np.zeros((n, embedder.dim), dtype=np.float32)
    key = hashlib.sha256(json.dumps([embedder.fingerprint, [windows.texts[i] for i in anchors]]).encode())
    cached = CACHE / f"{embedder.name}-{len(anchors)}-{key.hexdigest()[:16]}.npy"
    if cached.exists():
        vectors[anchors] = np.load(cached)
        err.print(f"{len(anchors)} real vectors from {cached}")
    else:
        with progress_bar() as progress:
            task = progress.add_task(f"embedding {len(anchors)} real chunks", total=len(anchors))
            for start in range(0, len(anchors), 256):
                batch = anchors[start:start + 256]
                vectors[batch] = embedder.embed([windows.texts[i] for i in batch])
                progress.advance(task, len(batch))
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(cached, vectors[anchors])
    idx = np.arange(n)
    prev = (idx // k) * k
    nxt = np.minimum(prev + k, anchors[-1])
    t = np.where(nxt > prev, (idx - prev) / np.maximum(nxt - prev, 1), 0.0)[:, None].astype(np.float32)
    same_prev = windows.doc[prev] == windows.doc
    same_next = windows.doc[nxt] == windows.doc
    t = np.where((same_prev & same_next)[:, None], t, np.where(same_next[:, None] & ~same_prev[:, None], 1.0, 0.0))
    base = (1 - t) * vectors[prev] + t * vectors[nxt]
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    derived = base + rng.normal(0.0, noise, size=base.shape).astype(np.float32)
    derived /= np.linalg.norm(derived, axis=1, keepdims=True)
    is_real = np.zeros(n, dtype=bool)
    is_real[anchors] = True
    out = np.where(is_real[:, None], vectors, derived).astype(np.float32)
    nearest = np.where((idx - prev) <= (nxt - idx), prev, nxt)
    fake = ~is_real
    cos_nearest = np.sum(out[fake] * vectors[nearest[fake]], axis=1)
    # how alike are two real neighbours k windows apart (same document): what the derived ones bridge
    pairs = anchors[:-1][windows.doc[anchors[:-1]] == windows.doc[anchors[1:]]]
    cos_real = np.sum(vectors[pairs] * vectors[pairs + k], axis=1) if len(pairs) else np.array([np.nan])
    stats = {"real": int(is_real.sum()), "every_kth": k,
             "derived_cos_to_nearest_real_mean": float(np.mean(cos_nearest)) if fake.any() else None,
             "real_neighbours_cos_mean": float(np.nanmean(cos_real))}
    return out, is_real, stats


# ---- questions -------------------------------------------------------------------------------------------------
HANDWRITTEN = (
    "What does the Apache License say about patent grants?",
    "Can I use GPL code in a proprietary program?",
    "What is the difference between the GPL and the LGPL?",
    "Which license applies to the Debian packaging files?",
    "Is there a warranty for this software?",
    "What must be kept when redistributing source code under the BSD license?",
    "How do I install this package with pip?",
    "How do I read a file line by line in Python?",
    "How do I handle exceptions with try and except?",
    "What is a context manager and how is the with statement used?",
    "How do generators and the yield statement work?",
    "How do I format a string with f-strings?",
    "What is the difference between a list and a tuple?",
    "How are default argument values evaluated in a function definition?",
    "How does Python resolve names in nested scopes?",
    "How do I start a subprocess and read its output?",
    "How do I parse command-line arguments?",
    "How do I serialize an object to JSON?",
    "How can I make an HTTP request?",
    "How do I create a temporary directory that is removed afterwards?",
    "How do I run coroutines concurrently with asyncio?",
    "How do I compute a SHA-256 hash of a file?",
    "How do I sort a list of dictionaries by a key?",
    "What does the global statement do?",
    "How are floating point numbers represented?",
    "How do I match a regular expression against a string?",
    "How do I compress data with gzip?",
    "How do I log messages to a file?",
    "What happens when an object is garbage collected?",
    "How do I define a dataclass with default values?",
    "How do I validate data with a schema?",
    "How do I connect to a PostgreSQL database asynchronously?",
    "How do I write a command-line tool with subcommands?",
    "How does a websocket connection work?",
    "How do I stream a response from a web server?",
    "What is the copyright notice of the zlib library?",
    "Who holds the copyright of the GNU C Library?",
    "What are the conditions of the MIT license?",
    "What is the Artistic License?",
    "How do I convey a covered work in object code form?",
    # the Debian documentation packages sources() reads when installed (kernel, Perl, PostgreSQL, Debian)
    "How do I pass parameters to the kernel at boot time?",
    "How does the kernel's out-of-memory killer choose a process?",
    "How do I write a device tree binding?",
    "What is the difference between a spinlock and a mutex in the kernel?",
    "How do I submit a patch to the Linux kernel mailing list?",
    "How do cgroups limit the memory of a group of processes?",
    "How do I read a file line by line in Perl?",
    "What does the local keyword do in Perl?",
    "How do Perl regular expression modifiers work?",
    "How do I create an index concurrently in PostgreSQL?",
    "What does VACUUM do and when should autovacuum run?",
    "How do I set up streaming replication between two PostgreSQL servers?",
    "How do window functions work in SQL?",
    "What isolation levels does PostgreSQL support?",
    "How do I configure the network interfaces on Debian?",
    "How do I set up sudo for a user on Debian?",
)
TOPICS = ("assert statement", "assignment statements", "await expressions", "attribute access", "augmented "
          "assignment", "boolean operations", "break statement", "class definitions", "comparisons",
          "context managers", "del statement", "dictionaries", "exceptions", "for loops", "format strings",
          "function definitions", "imports", "lambda expressions", "list displays", "the nonlocal statement",
          "numeric types", "operator precedence", "the raise statement", "sequence types", "slicing",
          "special method names", "string methods", "truth value testing", "the try statement", "while loops",
          "the yield expression", "integer literals", "identifiers and keywords", "the execution model",
          "mapping types")
MODULES = ("os", "sys", "re", "json", "pathlib", "subprocess", "asyncio", "logging", "argparse", "collections",
           "itertools", "functools", "datetime", "typing", "dataclasses", "unittest", "threading",
           "multiprocessing", "socket", "ssl", "http.client", "urllib", "email", "csv", "sqlite3", "zipfile",
           "tarfile", "shutil", "tempfile", "hashlib", "hmac", "secrets", "random", "statistics", "decimal",
           "fractions", "math", "struct", "pickle", "copy", "contextlib", "inspect", "ast", "dis", "textwrap",
           "string", "difflib", "heapq", "bisect", "enum", "uuid", "base64", "gzip", "io", "select", "signal",
           "weakref", "abc", "queue", "sched")


def questions(count: int, seed: int) -> list[str]:
    packages = sorted({d.metadata["Name"] for d in metadata.distributions()
                       if len(d.metadata.get_payload() or "") > 1000})  # type: ignore[attr-defined]
    pool = list(HANDWRITTEN)
    pool += [f"How do {t} work in Python?" if t.endswith("s") else f"How does {t} work in Python?" for t in TOPICS]
    pool += [f"How do I use the {m} module?" for m in MODULES]
    pool += [f"What is the {p} package used for?" for p in packages]
    rng = random.Random(seed)
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(count)]


def simulated_sentences(text: str, vector: np.ndarray, seed: int) -> tuple[list[int], bytes]:
    """The window's sentences as the embedder splits them, each with a vector near the window's: retrieval reads
    and scores a candidate's sentences as it would on real ones, which is what this benchmark times."""
    spans = [(s.start, s.end) for s in split_sentences(text)] or [(0, len(text))]
    noise = np.random.default_rng(seed).normal(scale=SENTENCE_NOISE / np.sqrt(len(vector)),
                                               size=(len(spans), len(vector)))
    rows = vector[None, :] + noise
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return [o for span in spans for o in span], base64.b64decode(pack_vectors(rows.astype(np.float32)))


# ---- database --------------------------------------------------------------------------------------------------
async def load(conn: asyncpg.Connection, windows: Windows, vectors: np.ndarray, rows: np.ndarray,
               batch: int = 5000) -> float:
    """COPY the given rows (window numbers) into chunks (their texts) and the vector table (their vectors), as
    the projection would have them; returns seconds (both COPYs)."""
    started = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task(f"COPY {len(rows)} chunks", total=len(rows))
        for start in range(0, len(rows), batch):
            chunks: list[tuple[Any, ...]] = []
            vecs: list[tuple[Any, ...]] = []
            for i in rows[start:start + batch]:
                i = int(i)
                text = windows.texts[i].replace("\x00", "")  # PostgreSQL text has no NUL (the parser drops them too)
                chunk_id, upload_id = f"bench-{i:07d}", f"doc-{windows.doc[i]:05d}-0"
                chunks.append((chunk_id, f"doc-{windows.doc[i]:05d}", upload_id, int(windows.ordinal[i]),
                               windows.names[i], "text", None, [], 0, len(text), text))
                vecs.append((chunk_id, upload_id, vectors[i], *simulated_sentences(text, vectors[i], i)))
            await conn.copy_records_to_table("chunks", records=chunks, columns=CHUNK_COLUMNS)
            await conn.copy_records_to_table(VECTORS, records=vecs, columns=VECTOR_COLUMNS)
            await add_terms(conn, [c[0] for c in chunks])  # the keyword half's postings, as the projector adds them
            progress.advance(task, len(chunks))
    return time.perf_counter() - started


def dropped_indexes(rows: int, hnsw_with: str = "") -> dict[str, tuple[str, str]]:
    """The indexes a load of this many rows goes without (name -> (table, definition)); `hnsw_with`: build
    parameters tried instead of the schema's (--hnsw-with; pgvector's defaults are m 16, ef_construction 64)."""
    hnsw = {name: (table, ddl.rstrip(";") + f" WITH ({hnsw_with});" if hnsw_with else ddl)
            for name, (table, ddl) in INDEX_DDL.items()}
    return {**hnsw, **(POSTINGS_DDL if rows > BULK else {})}


async def build_indexes(dsn: str, conn: asyncpg.Connection, rows: int, hnsw_with: str = "") -> dict[str, float]:
    """The indexes dropped for the load, with a progress bar from pg_stat_progress_create_index."""
    # the HNSW graph must fit in it, or the build goes on disk and takes many times longer (1M chunks: ~2 GB)
    await conn.execute(f"SET maintenance_work_mem = '{'4GB' if rows > BULK else '1GB'}'")
    seconds: dict[str, float] = {}
    watcher = await asyncpg.connect(dsn)
    try:
        with progress_bar() as progress:
            for name, (table, ddl) in dropped_indexes(rows, hnsw_with).items():
                task = progress.add_task(f"CREATE INDEX {name}", total=rows)
                started = time.perf_counter()
                build = asyncio.ensure_future(conn.execute(ddl))
                while not build.done():
                    # a postings index has ~66 tuples per chunk: its build says how many it has in tuples_total
                    done, total = await watcher.fetchrow(
                        "SELECT max(tuples_done), max(tuples_total) FROM pg_stat_progress_create_index "
                        f"WHERE relid = '{table}'::regclass") or (None, None)
                    if done:
                        total = int(total) if total else rows
                        progress.update(task, total=total, completed=min(int(done), total))
                    await asyncio.wait([build], timeout=0.5)
                await build
                progress.update(task, completed=progress.tasks[task].total)
                seconds[name] = time.perf_counter() - started
    finally:
        await watcher.close()
    started = time.perf_counter()
    await conn.execute(f"VACUUM ANALYZE chunks, chunk_terms, term_stats, {VECTORS}")
    seconds["vacuum_analyze"] = time.perf_counter() - started
    return seconds


async def drop_indexes(conn: asyncpg.Connection, rows: int) -> None:
    for name, (table, ddl) in dropped_indexes(rows).items():
        if ddl.startswith("ALTER TABLE"):  # a key: its index goes with the constraint
            await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
        else:
            await conn.execute(f"DROP INDEX IF EXISTS {name}")


# the model's vectors are a table of their own: no model filter any more (the dense half of HybridSearch without
# filters is this very query, hence hnsw below)
EXACT_SQL = f"SELECT chunk_id, v.embedding <=> $1 AS distance FROM {VECTORS} v ORDER BY v.embedding <=> $1 LIMIT $2"
# the same query under another text: a prepared statement's cached generic plan would otherwise serve both (planned
# under whichever settings came first)
HNSW_SQL = EXACT_SQL.replace("SELECT", "SELECT /* hnsw */", 1)
# how many chunks the keyword half of HybridSearch scores for a question: those with any of its rarest lexemes
KEYWORD_MATCHES_SQL = """SELECT count(DISTINCT chunk_id) FROM chunk_terms WHERE lexeme IN (
    SELECT lexeme FROM (SELECT lexeme, sum(ndoc) OVER (ORDER BY ndoc, lexeme) AS postings FROM term_stats
                        WHERE lexeme = ANY($1::text[]) AND ndoc > 0 ORDER BY ndoc, lexeme LIMIT $2) rarest
    WHERE postings <= $3)"""


async def keyword_matches(pool: asyncpg.Pool, question: str) -> int:
    from projections.retrieval import MAX_LEXEMES, MAX_POSTINGS, question_lexemes

    return int(await pool.fetchval(KEYWORD_MATCHES_SQL, await question_lexemes(pool, question), MAX_LEXEMES,
                                   MAX_POSTINGS))


async def exact(pool: asyncpg.Pool, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off")
        rows = await conn.fetch(EXACT_SQL, vector, k)
    return [(r["chunk_id"], r["distance"]) for r in rows]


async def hnsw(pool: asyncpg.Pool, vector: np.ndarray, k: int, cfg: RetrievalConfig) -> list[tuple[str, float]]:
    async with pool.acquire() as conn, conn.transaction():
        await search_breadth(conn, VECTORS, cfg)  # as HybridSearch sets it
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        rows = await conn.fetch(HNSW_SQL, vector, k)
    return [(r["chunk_id"], r["distance"]) for r in rows]


def _plan_nodes(plan: dict[str, Any]) -> list[str]:
    node = plan["Node Type"] + (f" ({plan['Index Name']})" if plan.get("Index Name") else "")
    out = [node]
    for child in plan.get("Plans", []):
        out += _plan_nodes(child)
    return out


async def plans(pool: asyncpg.Pool, vector: np.ndarray, question: str, k: int,
                cfg: RetrievalConfig) -> dict[str, list[str]]:
    """Which scans each query uses (EXPLAIN with the real parameters): proves hybrid uses the indexes and
    the baseline does not."""
    from projections.retrieval import prepare_search, search_statements

    (keyword_sql, keyword_extra), (dense_sql, dense_extra) = search_statements(VECTORS, {})  # as HybridSearch
    out = {}
    async with pool.acquire() as conn:
        async with conn.transaction():
            lexemes = await prepare_search(conn, VECTORS, cfg, question)
            best = await conn.fetch(keyword_sql, lexemes, cfg.candidates, *keyword_extra)
        for name, setup, sql, args in (
            ("hybrid keyword", [], keyword_sql, (lexemes, cfg.candidates, *keyword_extra)),
            ("hybrid dense", ["SET LOCAL hnsw.iterative_scan = relaxed_order"], dense_sql,
             (vector, [r["chunk_id"] for r in best], [float(r["keyword"]) for r in best], cfg.candidates,
              *dense_extra)),
            ("exact", ["SET LOCAL enable_indexscan = off"], EXACT_SQL, (vector, k)),
            ("hnsw", ["SET LOCAL hnsw.iterative_scan = relaxed_order"], HNSW_SQL, (vector, k)),
        ):
            async with conn.transaction():
                await search_breadth(conn, VECTORS, cfg)
                for statement in setup:
                    await conn.execute(statement)
                plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args))[0]["Plan"]
            nodes = _plan_nodes(plan)
            out[name] = [n for n in nodes if "Scan" in n or "Gather" in n]
    return out


# ---- measuring -------------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def recalls(truth: set[str], got: set[str], windows: Windows) -> tuple[float, float]:
    """(recall@k, shared_recall) of the returned ids `got` against the exact top-k `truth`."""
    return len(truth & got) / max(len(truth), 1), shared_recall(truth, got, windows)


def shared_recall(truth: set[str], got: set[str], windows: Windows) -> float:
    """Recall that counts an exact top-k window as found when a returned one shares at least half of its words
    (same text, windows at most WINDOW_WORDS / 2 apart). Where the text runs out, windows overlap (1M: 140 of 150
    words) and each has near-copies of almost the same cosine: plain recall@k then measures how ties are broken.
    With windows further apart than that (100k: step 118) it equals plain recall."""
    reach = WINDOW_WORDS // 2 // windows.step

    def at(cid: str) -> int:
        return int(cid.removeprefix("bench-"))

    found = [at(g) for g in got]
    hits = sum(any(windows.doc[j] == windows.doc[i] and abs(j - i) <= reach for j in found)
               for i in map(at, truth))
    return hits / max(len(truth), 1)


async def measure_size(pool: asyncpg.Pool, qs: list[str], qvecs: np.ndarray, k: int, warmup: int,
                       cfg: RetrievalConfig, sweep: list[int], windows: Windows,
                       embedder: Embedder) -> dict[str, Any]:
    search = HybridSearch(pool, cfg)
    times: dict[str, list[float]] = {"hybrid": [], "exact": [], "hnsw": []}
    recall_at_k: list[float] = []
    shared: list[float] = []  # shared_recall
    truths: list[set[str]] = []
    similarity_kept: list[float] = []  # sum of hnsw's top-k cosine similarities / exact's: near-ties cost ~0
    hybrid_counts: list[int] = []

    async def run(method: str, i: int) -> Any:
        if method == "hybrid":
            return await search.search(qvecs[i], qs[i], k, model=MODEL)
        if method == "exact":
            return await exact(pool, qvecs[i], k)
        return await hnsw(pool, qvecs[i], k, cfg)

    methods = list(times)
    with progress_bar() as progress:
        task = progress.add_task("warm-up", total=warmup * 3)
        for i in range(warmup):
            for method in methods:
                await run(method, i % len(qs))
                progress.advance(task)
        task = progress.add_task(f"{len(qs)} questions x 3 ways", total=len(qs) * 3)
        for i in range(len(qs)):
            results = {}
            for j in range(3):  # rotate the order: hybrid, exact, hnsw / exact, hnsw, hybrid / ...
                method = methods[(i + j) % 3]
                started = time.perf_counter()
                results[method] = await run(method, i)
                times[method].append((time.perf_counter() - started) * 1000)
                progress.advance(task)
            truth = {cid for cid, _d in results["exact"]}
            truths.append(truth)
            got = {cid for cid, _d in results["hnsw"]}
            plain, near_copy = recalls(truth, got, windows)
            recall_at_k.append(plain)
            shared.append(near_copy)
            best = sum(1 - d for _c, d in results["exact"])
            similarity_kept.append(sum(1 - d for _c, d in results["hnsw"]) / best if best else 1.0)
            hybrid_counts.append(len(results["hybrid"]))
    swept: dict[str, dict[str, float]] = {}
    with progress_bar() as progress:  # HNSW alone at other search breadths, against the same exact top-k
        task = progress.add_task(f"ef_search {sweep}", total=len(sweep) * len(qs))
        for ef in sweep:
            other = RetrievalConfig(ef_search=ef)
            ms, found, near = [], [], []
            for i, truth in enumerate(truths):
                started = time.perf_counter()
                top = await hnsw(pool, qvecs[i], k, other)
                ms.append((time.perf_counter() - started) * 1000)
                ids = {cid for cid, _d in top}
                plain, near_copy = recalls(truth, ids, windows)
                found.append(plain)
                near.append(near_copy)
                progress.advance(task)
            swept[str(ef)] = {"recall": float(np.mean(found)), "shared_recall": float(np.mean(near)),
                              "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95)}
    from_question = await question_to_passages(search, embedder, qs, k)
    with err.status("counting the keyword half's matches per question..."):
        matches = np.array([await keyword_matches(pool, q) for q in qs])
    heavy = matches >= np.percentile(matches, 90)  # the tenth of the questions whose keyword query matches most
    hybrid_ms = np.array(times["hybrid"])
    return {
        **{m: {"p50_ms": pct(t, 50), "p95_ms": pct(t, 95), "mean_ms": float(np.mean(t))} for m, t in times.items()},
        "recall_at_k_hnsw_vs_exact": float(np.mean(recall_at_k)),
        "shared_recall_at_k_hnsw_vs_exact": float(np.mean(shared)),
        "ef_search_sweep": swept,
        "similarity_kept_hnsw_vs_exact": float(np.mean(similarity_kept)),
        "keyword_matches": {"mean": float(matches.mean()), "p95": pct(matches.tolist(), 95), "max": int(matches.max()),
                            "max_question": qs[int(matches.argmax())],
                            "hybrid_p50_ms_top10pct_matches": float(np.median(hybrid_ms[heavy])),
                            "hybrid_p50_ms_other_90pct": float(np.median(hybrid_ms[~heavy]))
                            if (~heavy).any() else None},
        "hybrid_passages_mean": float(np.mean(hybrid_counts)),
        "question_to_passages": from_question,
        "plans": await plans(pool, qvecs[0], qs[0], k, cfg),
        "ef_search": await _breadth(pool, cfg),
    }


async def question_to_passages(search: HybridSearch, embedder: Embedder, qs: list[str], k: int) -> dict[str, Any]:
    """A question's text to its passages, as the embedder's retrieval does it (the question embedded by the real
    model in its worker thread): the vector first and then the whole search ("sequential", how it was done
    before), against the search given the embedding in flight, its keyword half running meanwhile ("overlapped",
    HybridSearch.search with an awaitable). The order alternates per question."""
    times: dict[str, list[float]] = {"sequential": [], "overlapped": []}
    with progress_bar() as progress:
        task = progress.add_task(f"{len(qs)} questions from their text, 2 ways", total=len(qs) * 2)
        for i, q in enumerate(qs):
            for way in (("sequential", "overlapped") if i % 2 else ("overlapped", "sequential")):
                started = time.perf_counter()
                if way == "sequential":
                    vector = (await embedder.embed_async([q]))[0]
                    await search.search(vector, q, k, model=MODEL)
                else:
                    async def embed(text: str = q) -> np.ndarray:
                        return (await embedder.embed_async([text]))[0]
                    await search.search(embed(), q, k, model=MODEL)
                times[way].append((time.perf_counter() - started) * 1000)
                progress.advance(task)
    return {way: {"p50_ms": pct(t, 50), "p95_ms": pct(t, 95)} for way, t in times.items()}


async def _breadth(pool: asyncpg.Pool, cfg: RetrievalConfig) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return await search_breadth(conn, VECTORS, cfg)


async def table_sizes(conn: asyncpg.Connection) -> dict[str, str]:
    """'table': the whole chunk index as before, now chunks + the vector table (each with its indexes and TOAST);
    then each of the two tables alone, the HNSW index and the keyword half's postings."""
    rows = await conn.fetch(
        f"""SELECT 'table' AS what,
                  pg_size_pretty(pg_total_relation_size('chunks') + pg_total_relation_size('{VECTORS}')) AS size
           UNION ALL SELECT 'chunks', pg_size_pretty(pg_total_relation_size('chunks'))
           UNION ALL SELECT '{VECTORS}', pg_size_pretty(pg_total_relation_size('{VECTORS}'))
           UNION ALL SELECT 'chunk_terms', pg_size_pretty(pg_total_relation_size('chunk_terms'))
           UNION ALL SELECT indexrelname, pg_size_pretty(pg_relation_size(indexrelid))
           FROM pg_stat_user_indexes WHERE indexrelname = '{HNSW}'""")
    return {r["what"]: r["size"] for r in rows}


async def run(args: argparse.Namespace, postgres: EmbeddedPostgres) -> dict[str, Any]:
    sizes = sorted(set(args.sizes))
    with err.status("reading installed documentation..."):
        docs = sources()
        windows = make_windows(docs, sizes[-1])
    err.print(f"{len(windows.texts)} windows of {WINDOW_WORDS} words (step {windows.step}) over {windows.sources} "
              f"sources, {windows.source_words} words")
    with err.status("loading the embedding model..."):
        embedder = Embedder.load(MODEL, "", EmbedderSettings().models_dir)
        embedder.embed(["warm-up"])
    started = time.perf_counter()
    vectors, _is_real, vstats = derive_vectors(windows, embedder, args.real, args.noise, args.seed)
    vstats["embed_s"] = time.perf_counter() - started
    qs = questions(args.queries, args.seed)
    qvecs = embedder.embed(qs)
    order = np.random.default_rng(args.seed).permutation(len(windows.texts))[:sizes[-1]]

    cfg = RetrievalConfig()
    conn = await asyncpg.connect(postgres.dsn)
    await register_vector(conn)
    pool = await create_pool(postgres.dsn)
    results: dict[str, Any] = {}
    try:
        await migrate(conn)
        await conn.execute(vectors_ddl(VECTORS, embedder.dim))  # as the projection does on a model's first vectors
        loaded = 0
        for size in sizes:
            err.print(f"[bold]{size} chunks[/]")
            await drop_indexes(conn, size)
            load_s = await load(conn, windows, vectors, order[loaded:size])
            loaded = size
            build = await build_indexes(postgres.dsn, conn, size, args.hnsw_with)
            count = await conn.fetchval("SELECT count(*) FROM chunks")
            vector_count = await conn.fetchval(f"SELECT count(*) FROM {VECTORS}")
            assert count == vector_count == size, (count, vector_count, size)
            # index_build_s is keyed by index name, as before: the HNSW index is now f"{VECTORS}_hnsw" (it was
            # chunks_embedding_hnsw); load_s covers both COPYs (chunks and the vector table)
            results[str(size)] = {"chunks": size, "load_s": load_s, "index_build_s": build,
                                  "sizes": await table_sizes(conn),
                                  **await measure_size(pool, qs, qvecs, args.top_k, args.warmup, cfg,
                                                       args.ef_search, windows, embedder)}
    finally:
        await pool.close()
        await conn.close()
    return {
        "benchmark": "retrieval",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "settings": {"sizes": sizes, "queries": len(qs), "top_k": args.top_k, "warmup": args.warmup,
                     "hnsw_with": args.hnsw_with or "schema",
                     "retrieval_config": cfg.__dict__, "window_words": WINDOW_WORDS, "window_step": windows.step,
                     "sources": windows.sources, "source_words": windows.source_words, "noise": args.noise},
        "vectors": vstats,
        "sizes": results,
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}


def report(result: dict[str, Any], console: Console) -> None:
    s, m, v = result["settings"], result["machine"], result["vectors"]
    console.print(f"[bold]ragbus retrieval benchmark[/] {result['date']} - {m['nproc']} cores, {m['cpu']}, "
                  f"load average at end {m['loadavg_at_end']}")
    if v["derived_cos_to_nearest_real_mean"] is None:
        vectors = f"all {v['real']} embedded for real with {MODEL} ({v['embed_s']:.0f} s)."
    else:
        vectors = (f"{v['real']} embedded for real with {MODEL} (every {v['every_kth']}th window, {v['embed_s']:.0f} "
                   f"s); the rest DERIVED = interpolation of the two neighbouring real ones + noise sigma {s['noise']} "
                   f"(cosine to nearest real: mean {v['derived_cos_to_nearest_real_mean']:.3f}; real neighbours "
                   f"{v['every_kth']} windows apart: {v['real_neighbours_cos_mean']:.3f}).")
    console.print(f"chunks: {WINDOW_WORDS}-word windows (step {s['window_step']}) over {s['sources']} installed "
                  f"texts ({s['source_words']} words). Vectors: {vectors}")
    console.print(f"{s['queries']} real questions embedded with the model, top_k {s['top_k']}, {s['warmup']} warm-up "
                  f"rounds; RetrievalConfig defaults (candidates {s['retrieval_config']['candidates']}, "
                  f"ef_search {s['retrieval_config']['ef_search'] or 'by table size'}); times include pool acquire + "
                  "transaction, "
                  "as the embedder agent runs them. HNSW built "
                  + (f"WITH ({s['hnsw_with']})" if s["hnsw_with"] != "schema" else "as the schema has it"))
    table = Table(title="retrieval latency (ms): hybrid = HybridSearch.search; exact = seq-scan cosine top-k "
                        "(baseline); hnsw = dense top-k via the index")
    for col in ("chunks", "hybrid p50", "hybrid p95", "exact p50", "exact p95", "hnsw p50", "hnsw p95",
                "hybrid/exact p50", "hnsw/exact p50", f"recall@{s['top_k']} hnsw", "shared recall", "similarity kept"):
        table.add_column(col, justify="right")
    sizes = [result["sizes"][str(n)] for n in s["sizes"]]
    for r in sizes:
        table.add_row(f"{r['chunks']:,}", *(f"{r[m][p]:.1f}" for m in ("hybrid", "exact", "hnsw")
                                            for p in ("p50_ms", "p95_ms")),
                      f"{r['hybrid']['p50_ms'] / r['exact']['p50_ms']:.2f}x",
                      f"{r['hnsw']['p50_ms'] / r['exact']['p50_ms']:.2f}x",
                      f"{r['recall_at_k_hnsw_vs_exact']:.3f}",
                      f"{r['shared_recall_at_k_hnsw_vs_exact']:.3f}",
                      f"{r['similarity_kept_hnsw_vs_exact']:.4f}")
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        label = f"{hi['chunks'] // 1000}k/{lo['chunks'] // 1000}k"
        cells = []
        for m in ("hybrid", "exact", "hnsw"):
            cells += [f"{hi[m]['p50_ms'] / lo[m]['p50_ms']:.2f}x", f"{hi[m]['p95_ms'] / lo[m]['p95_ms']:.2f}x"]
        table.add_row(label, *cells, "", "", "", "", "")
    console.print(table)
    console.print("similarity kept = sum of the cosine similarities of hnsw's top-k / the same sum for exact's "
                  "top-k (1.0000: the passages missed were as similar as the ones returned); shared recall counts "
                  "an exact window as found when a returned one shares half of its words (= recall when windows "
                  "do not overlap that much)")
    for r in sizes:
        b = r["index_build_s"]
        console.print(f"{r['chunks']:,} chunks (ef_search {r['ef_search']}): COPY {r['load_s']:.1f} s, HNSW build "
                      f"{b[HNSW]:.1f} s, "
                      + "".join(f"{name} {b[name]:.1f} s, " for name in POSTINGS_DDL if name in b) +
                      f"VACUUM ANALYZE {b['vacuum_analyze']:.1f} s; sizes "
                      f"{r['sizes']}; hybrid returned {r['hybrid_passages_mean']:.1f} passages on average")
        km = r["keyword_matches"]
        other = km["hybrid_p50_ms_other_90pct"]
        console.print(f"   keyword half of hybrid matches (and ranks) per question: mean {km['mean']:,.0f} rows "
                      f"({km['mean'] / r['chunks']:.1%} of the table), p95 {km['p95']:,.0f}, max {km['max']:,} "
                      f"({km['max_question']!r}); hybrid p50 for the 10% of questions matching most: "
                      f"{km['hybrid_p50_ms_top10pct_matches']:.1f} ms, for the other 90%: "
                      f"{'n/a' if other is None else f'{other:.1f}'} ms")
        if r["ef_search_sweep"]:
            console.print("   HNSW alone by ef_search (recall@k vs exact, shared recall, p50 / p95 ms): " + "; ".join(
                f"{ef}: {e['recall']:.3f}, {e['shared_recall']:.3f}, "
                f"{e['p50_ms']:.1f} / {e['p95_ms']:.1f}"
                for ef, e in r["ef_search_sweep"].items()))
        qp = r.get("question_to_passages")
        if qp:
            seq, over = qp["sequential"], qp["overlapped"]
            console.print(f"   question text to passages (embedding + hybrid), p50 / p95 ms: embedding first "
                          f"{seq['p50_ms']:.1f} / {seq['p95_ms']:.1f}, keyword half while embedding "
                          f"{over['p50_ms']:.1f} / {over['p95_ms']:.1f} "
                          f"({over['p50_ms'] / seq['p50_ms']:.2f}x p50)")
        console.print("   plans: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in r["plans"].items()))


# ---- main ------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/retrieval.py",
        description="Retrieval latency of HybridSearch.search at 10k and 100k chunks, against an exact "
        "sequential-scan cosine top-k in the same run (and HNSW recall). Starts its own PostgreSQL + pgvector "
        "on a free port in a temporary directory and loads the embedding model in-process; stops everything "
        "on exit, Ctrl-C or error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="table sizes, in chunks")
    parser.add_argument("--queries", type=int, default=200, help="questions per size (each run 3 ways)")
    parser.add_argument("--real", type=int, default=0,
                        help="chunks embedded for real, the rest derived from them (0: all real; cached in "
                        f"{CACHE})")
    parser.add_argument("--noise", type=float, default=0.02, help="std of the noise added to derived vectors")
    parser.add_argument("--top-k", type=int, default=10, help="passages asked for (and k of exact and recall@k)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up questions per size (not measured)")
    parser.add_argument("--ef-search", type=int, nargs="*", default=[40, 80, 120, 200, 400],
                        help="also time HNSW alone at these hnsw.ef_search values, with recall against the same "
                        "exact top-k (none: skip)")
    parser.add_argument("--hnsw-with", default="", metavar="PARAMS",
                        help="HNSW build parameters to try instead of the schema's, e.g. 'm = 24, ef_construction = "
                        "128' (the report then is of that index, not of what the system builds)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (PostgreSQL data, log); it is always kept after an error")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (the report then goes to stderr)")
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.queries < 1 or args.real < 0 or args.real == 1:
        parser.error("sizes and --queries must be positive, --real 0 (all real) or at least 2")
    return args


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ragbus-bench-retrieval-"))
    postgres = EmbeddedPostgres(workdir / "postgres")
    keep = args.keep
    try:
        with err.status("starting PostgreSQL..."):
            postgres.start()
        result = asyncio.run(run(args, postgres))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: stopping PostgreSQL[/]")
        return 130
    except Exception as exc:  # noqa: BLE001 - any failure: say what it was, keep the data, stop everything
        err.print(f"[red]failed:[/] {exc!r}")
        keep = True
        return 1
    finally:
        postgres.stop()
        if keep:
            err.print(f"work directory kept: {workdir}")
        elif args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:  # JSON on stdout, the report on stderr
        print(json.dumps(result, indent=2))
    report(result, Console(width=160, stderr=args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
