"""Bulk-ingest benchmark: chunks/s through the whole bus, next to the same chunks embedded in-process.

    .venv/bin/python bench/ingest.py [--docs 200] [--parsers 1] [--embedders 1] [--keep] [--json]

It starts its own nats-server and PostgreSQL + pgvector on free ports in a temporary directory, the
projector, N parser and M embedder replicas and the gateway as separate processes (no LLM: ingest never
reaches it), uploads a deterministic corpus over HTTP and waits until every document is indexed or failed.
Then, with the stack stopped, it embeds exactly the chunk texts the bus produced in this process (the
compute bound) and parses the same documents in this process. See bench/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from _stack import BenchStack
from corpus import CorpusDoc, build_corpus, describe
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.topology import DEFAULT_EMBEDDING_MODEL

MODEL = DEFAULT_EMBEDDING_MODEL  # the index the bus builds on a fresh system, and the in-process baseline's model
# The peer: LangChain's packages in a folder of their own (langchain-huggingface pins an older huggingface_hub
# than ragbus uses), installed from the package index on first use, without their dependencies (the rest is
# ragbus's own venv: torch, sentence-transformers, pypdf, python-docx, bs4).
PEER_DIR = Path("~/.cache/ragbus-bench/langchain").expanduser()
PEER_PACKAGES = ("langchain-postgres", "langchain-huggingface", "langchain-text-splitters", "langchain-core",
                 "langchain-protocol", "langsmith", "jsonpatch", "jsonpointer", "tenacity", "SQLAlchemy", "psycopg",
                 "psycopg-binary", "psycopg-pool", "orjson", "uuid_utils", "xxhash", "zstandard", "requests-toolbelt",
                 "distro")
EMBED_BATCH = 32  # the embedder agent's default batch (and the parser's chunks per chunks.ready event)
BASELINE_SLICE = 512  # texts per encode call in the baseline: batches well, still shows progress
NOISY_CORES = 0.25  # other processes' average load above which the figures are flagged as noisy
FINAL = ("indexed", "failed")
PARSED = ("parsed", *FINAL)

err = Console(stderr=True)


# ---- results -------------------------------------------------------------------------------------------
@dataclass
class BusRun:
    docs: int
    indexed: int
    failed: dict[str, str]  # name -> reason (refused uploads included)
    duplicates: int
    chunks: int
    chunks_announced: int  # sum of the documents' chunk_count: must equal `chunks`
    upload_s: float  # first upload sent -> last upload accepted
    parsed_s: float  # first upload sent -> every document parsed (or failed)
    indexed_s: float  # first upload sent -> every document indexed (or failed)
    cpu_s: dict[str, float]  # CPU seconds per process kind during the ingest
    other_cores: float  # average cores busy with processes outside the benchmark during the ingest
    texts: list[str] = field(default_factory=list, repr=False)
    doc_of_text: list[str] = field(default_factory=list, repr=False)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.indexed_s if self.indexed_s else 0.0


@dataclass
class Baseline:
    chunks: int
    seconds: float
    failed: int = 0
    other_cores: float = 0.0  # average cores busy with processes outside the benchmark meanwhile

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (any process), steal included: a shared or virtual machine
    gives the benchmark less than its cores, and the report should say so."""
    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))


def own_cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def other_cores(busy_s: float, ours_s: float, wall_s: float) -> float:
    return max(0.0, busy_s - ours_s) / wall_s if wall_s > 0 else 0.0


# ---- the bus run -----------------------------------------------------------------------------------------
def progress_bar() -> Progress:
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=err)


async def upload_all(client: httpx.AsyncClient, docs: list[CorpusDoc], concurrency: int,
                     progress: Progress) -> tuple[dict[str, str], dict[str, str], int]:
    """Returns ({doc_id: name}, {name: refusal}, duplicates)."""
    task = progress.add_task("uploading", total=len(docs))
    limit = asyncio.Semaphore(concurrency)
    accepted: dict[str, str] = {}
    refused: dict[str, str] = {}
    duplicates = 0

    async def one(doc: CorpusDoc) -> None:
        nonlocal duplicates
        async with limit:
            response = await client.post("/documents", files={"file": (doc.name, doc.data)})
        if response.status_code == 202:
            body = response.json()
            accepted[body["doc_id"]] = doc.name
            duplicates += bool(body["duplicate"])
        else:
            refused[doc.name] = f"upload refused: {response.status_code} {response.text[:200]}"
        progress.advance(task)

    await asyncio.gather(*(one(d) for d in docs))
    return accepted, refused, duplicates


async def wait_until_done(client: httpx.AsyncClient, doc_ids: set[str], started: float, timeout: float,
                          progress: Progress) -> tuple[float, float, dict[str, dict[str, Any]]]:
    """Poll GET /documents until every document is indexed or failed; returns the seconds since `started`
    at which all were parsed and all were done, and the final documents."""
    parsed_task = progress.add_task("parsed (or failed)", total=len(doc_ids))
    done_task = progress.add_task("indexed (or failed)", total=len(doc_ids))
    parsed_s = 0.0
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/documents")
        response.raise_for_status()
        now = time.perf_counter() - started
        docs = {d["doc_id"]: d for d in response.json()["documents"] if d["doc_id"] in doc_ids}
        statuses = Counter(d["status"] for d in docs.values())
        n_parsed, n_done = sum(statuses[s] for s in PARSED), sum(statuses[s] for s in FINAL)
        progress.update(parsed_task, completed=n_parsed)
        progress.update(done_task, completed=n_done)
        if n_parsed == len(doc_ids) and not parsed_s:
            parsed_s = now
        if n_done == len(doc_ids):
            return parsed_s, now, docs
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout:.0f} s: {dict(statuses)} of {len(doc_ids)} documents")
        await asyncio.sleep(0.5)


async def read_chunks(dsn: str) -> tuple[list[str], list[str]]:
    """What the bus's embedder ran through the model, document by document in ordinal order: each chunk's text
    under its document name and heading path (`embedding_context`), and their doc_ids."""
    from agents.embedder.service import embedded_text, embedding_context

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT doc_id, name, section, text FROM chunks ORDER BY doc_id, ordinal")
    finally:
        await conn.close()
    return ([embedded_text(embedding_context(r["name"], list(r["section"] or []), r["text"]), r["text"])
             for r in rows], [r["doc_id"] for r in rows])


async def run_bus(stack: BenchStack, docs: list[CorpusDoc], args: argparse.Namespace) -> BusRun:
    with err.status(f"starting nats-server, PostgreSQL, projector, {args.parsers} parser(s), "
                    f"{args.embedders} embedder(s), gateway in {stack.workdir} ..."):
        await stack.start()
    cpu_before, busy_before = stack.cpu_seconds(), machine_busy_s()
    async with httpx.AsyncClient(base_url=stack.url, timeout=120.0) as client:
        with progress_bar() as progress:
            started = time.perf_counter()
            accepted, refused, duplicates = await upload_all(client, docs, args.concurrency, progress)
            upload_s = time.perf_counter() - started
            parsed_s, indexed_s, final = await wait_until_done(client, set(accepted), started, args.timeout,
                                                               progress)
    cpu_after, busy_after = stack.cpu_seconds(), machine_busy_s()
    cpu_s = {k: cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_after}
    texts, doc_of_text = await read_chunks(stack.dsn)
    failed = {accepted[i]: d.get("error") or "failed" for i, d in final.items() if d["status"] == "failed"}
    return BusRun(
        docs=len(docs),
        indexed=sum(d["status"] == "indexed" for d in final.values()),
        failed={**refused, **failed},
        duplicates=duplicates,
        chunks=len(texts),
        chunks_announced=sum(d["chunks"] for d in final.values()),
        upload_s=upload_s,
        parsed_s=parsed_s,
        indexed_s=indexed_s,
        cpu_s=cpu_s,
        other_cores=other_cores(busy_after - busy_before, sum(cpu_s.values()), indexed_s),
        texts=texts,
        doc_of_text=doc_of_text,
    )


# ---- the in-process baselines ------------------------------------------------------------------------------
def parse_baseline(docs: list[CorpusDoc]) -> Baseline:
    """parse_document on every document, with the parser agent's settings (same env, same defaults)."""
    from agents.parser.service import ParseError, parse_document
    from agents.parser.settings import ParserSettings

    s = ParserSettings()
    options = {"strategy": s.chunk_strategy, "chunk_tokens": s.chunk_tokens, "overlap_tokens": s.chunk_overlap_tokens}
    parse_document(b"# warm-up\n\nLoads the tokenizer before the clock starts.", "warm-up.md", **options)
    chunks = failed = 0
    seconds = 0.0
    busy, ours = machine_busy_s(), own_cpu_s()
    with progress_bar() as progress:
        for doc in progress.track(docs, description="in-process parse"):
            t = time.perf_counter()
            try:
                chunks += len(parse_document(doc.data, doc.name, **options).chunks)
            except ParseError:
                failed += 1
            seconds += time.perf_counter() - t
    return Baseline(chunks, seconds, failed,
                    other_cores(machine_busy_s() - busy, own_cpu_s() - ours, seconds))


def slices(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def bus_batches(texts: list[str], doc_of_text: list[str]) -> list[list[str]]:
    """The batches the embedder agent gets: each document's chunks, EMBED_BATCH per chunks.ready event."""
    per_doc: dict[str, list[str]] = {}
    for text, doc_id in zip(texts, doc_of_text, strict=True):
        per_doc.setdefault(doc_id, []).append(text)
    return [batch for group in per_doc.values() for batch in slices(group, EMBED_BATCH)]


def embed_baselines(run: BusRun, with_bus_batches: bool, threads: int = 0) -> dict[str, Baseline]:
    """Time only the encode calls; the model is loaded (and warmed up) before."""
    from transformers.utils import logging as transformers_logging

    from agents.embedder.service import Embedder
    from agents.embedder.settings import EmbedderSettings

    transformers_logging.disable_progress_bar()  # its tqdm bar would garble rich's progress display
    with err.status(f"loading {MODEL} in-process ..."):
        # the index model of the bus run, on the bus's embedder's threads
        embedder = Embedder.load(MODEL, "", EmbedderSettings().models_dir, threads)
        embedder.embed(run.texts[:EMBED_BATCH] or ["warm-up"])
    plans = {"embed": list(slices(run.texts, BASELINE_SLICE))}
    # what the embedder agent runs: the same forward pass plus each sentence's vector pooled from it
    plans["embed_with_sentences"] = plans["embed"]
    if with_bus_batches:
        plans["embed_bus_batches"] = bus_batches(run.texts, run.doc_of_text)
    results = {}
    with progress_bar() as progress:
        for key, batches in plans.items():
            task = progress.add_task(f"in-process {key.replace('_', ' ')}", total=len(run.texts))
            busy, ours = machine_busy_s(), own_cpu_s()
            seconds = _timed_embed(embedder.embed_with_sentences if key == "embed_with_sentences" else embedder.embed,
                                   batches, progress, task)
            other = other_cores(machine_busy_s() - busy, own_cpu_s() - ours, seconds)
            results[key] = Baseline(len(run.texts), seconds, other_cores=other)
    return results


def peer_baseline(docs: list[CorpusDoc], workdir: Path) -> dict[str, Any]:
    """The same documents through a plain LangChain + PGVector pipeline (bench/peer_langchain.py), on a PostgreSQL
    of its own; the ragbus stack is down, so the peer has the machine to itself."""
    from agents.models import packaged_model_path
    from ragbus.servers import EmbeddedPostgres

    env = {**os.environ, "PYTHONPATH": str(PEER_DIR), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    probe = [sys.executable, "-c", "import langchain_postgres, langchain_huggingface, langchain_text_splitters"]
    if subprocess.run(probe, env=env, capture_output=True).returncode:
        with err.status(f"installing LangChain for the peer baseline into {PEER_DIR} ..."):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(PEER_DIR),
                            *PEER_PACKAGES], check=True)
    folder = workdir / "peer-docs"
    folder.mkdir(parents=True)
    for i, doc in enumerate(docs):
        (folder / f"{i:04d}-{doc.name}").write_bytes(doc.data)
    postgres = EmbeddedPostgres(workdir / "peer-postgres", password="peer")
    try:
        with err.status("starting a PostgreSQL for the peer ..."):
            postgres.start()
        dsn = postgres.dsn.replace("postgresql://postgres@", "postgresql+psycopg://postgres:peer@")
        with err.status(f"LangChain + PGVector: {len(docs)} documents (load, split 1000/200, embed, store) ..."):
            out = subprocess.run([sys.executable, str(Path(__file__).parent / "peer_langchain.py"), str(folder), dsn,
                                  str(packaged_model_path())], env=env, check=True, capture_output=True, text=True)
    finally:
        postgres.stop()
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed_embed(embed: Callable[[list[str]], Any], batches: list[list[str]], progress: Progress,
                 task: TaskID) -> float:
    seconds = 0.0
    for batch in batches:
        t = time.perf_counter()
        embed(batch)
        seconds += time.perf_counter() - t
        progress.advance(task, len(batch))
    return seconds


# ---- report ----------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    import torch

    return {
        "cores": len(os.sched_getaffinity(0)),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def results(args: argparse.Namespace, docs: list[CorpusDoc], run: BusRun, parse: Baseline,
            embeds: dict[str, Baseline], peer: dict[str, Any] | None) -> dict[str, Any]:
    embed = embeds["embed"]
    serial_s = parse.seconds + embed.seconds
    cpu_total = sum(run.cpu_s.values())
    out: dict[str, Any] = {
        "machine": machine(),
        "embedding_in_flight": args.in_flight or "the setting",
        "corpus": {
            "source": describe(docs),
            "docs": len(docs),
            "by_type": dict(Counter(d.doc_type for d in docs)),
            "text_kb": round(sum(d.text_chars for d in docs) / 1000),
            "bytes_kb": round(sum(len(d.data) for d in docs) / 1000),
        },
        "config": {"parsers": args.parsers, "embedders": args.embedders, "concurrency": args.concurrency,
                   "model": MODEL, "batch_size": EMBED_BATCH,
                   "embedding_threads": args.embedding_threads or len(os.sched_getaffinity(0))},
        "bus": {k: v for k, v in asdict(run).items() if k not in ("texts", "doc_of_text")}
        | {"chunks_per_s": run.chunks_per_s},
        "in_process": {k: asdict(b) | {"chunks_per_s": b.chunks_per_s} for k, b in embeds.items()}
        | {"parse": asdict(parse) | {"chunks_per_s": parse.chunks_per_s},
           "parse_then_embed": {"chunks": run.chunks, "seconds": serial_s,
                                "chunks_per_s": run.chunks / serial_s if serial_s else 0.0}},
        "ratio_bus_vs_embed": run.chunks_per_s / embed.chunks_per_s if embed.chunks_per_s else 0.0,
        "ratio_bus_vs_parse_then_embed": serial_s / run.indexed_s if run.indexed_s else 0.0,
        "cpu_utilisation": cpu_total / (run.indexed_s * len(os.sched_getaffinity(0))) if run.indexed_s else 0.0,
    }
    if "embed_bus_batches" in embeds:
        b = embeds["embed_bus_batches"].chunks_per_s
        out["ratio_bus_vs_embed_bus_batches"] = run.chunks_per_s / b if b else 0.0
    if peer is not None:  # time per corpus, not chunks/s: the two cut different chunks
        out["peer"] = peer
        out["ratio_peer_time_vs_bus_time"] = peer["seconds"] / run.indexed_s if run.indexed_s else 0.0
    return out


def rows(r: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(measure, value, notes) for the table; the headline rows are bold."""
    m, c, cfg, bus, ip = r["machine"], r["corpus"], r["config"], r["bus"], r["in_process"]
    types = ", ".join(f"{n} {k}" for k, n in sorted(c["by_type"].items()))
    yield "machine", f"{m['cores']} cores", f"{m['cpu']}, {m['memory_gb']} GB, torch threads {m['torch_threads']}"
    yield "corpus", f"{c['docs']} docs", f"{c['source']}; {types}; {c['text_kb']} KB text, {c['bytes_kb']} KB files"
    yield "bus: documents", f"{bus['indexed']} indexed", f"{len(bus['failed'])} failed, {bus['duplicates']} duplicate"
    yield "bus: chunks", str(bus["chunks"]), f"the documents announce {bus['chunks_announced']}"
    yield "bus: uploads done", f"{bus['upload_s']:.1f} s", f"{cfg['concurrency']} in flight"
    yield "bus: all parsed", f"{bus['parsed_s']:.1f} s", "from the first upload"
    yield "bus: all indexed", f"{bus['indexed_s']:.1f} s", "from the first upload (wall time)"
    yield "[bold]bus chunks/s", f"[bold]{bus['chunks_per_s']:.1f}", "upload → parse → embed → project"
    yield "model threads", str(cfg["embedding_threads"]), "texts side by side, in the bus's embedder and in-process"
    emb = ip["embed"]
    yield ("[bold]in-process embed chunks/s", f"[bold]{emb['chunks_per_s']:.1f}",
           f"{emb['seconds']:.1f} s for the same {emb['chunks']} texts, batch {cfg['batch_size']}")
    yield "[bold]ratio bus / in-process", f"[bold]{r['ratio_bus_vs_embed']:.2f}x", "1.00x = the compute bound"
    ws = ip["embed_with_sentences"]
    yield ("in-process embed + sentence vectors", f"{ws['chunks_per_s']:.1f}",
           f"{ws['seconds']:.1f} s, what the embedder agent runs: {emb['seconds'] / ws['seconds']:.2f}x the embed "
           "rate (sentences pooled from the same pass)")
    if "embed_bus_batches" in ip:
        b = ip["embed_bus_batches"]
        yield ("in-process embed, bus batches", f"{b['chunks_per_s']:.1f}",
               f"{b['seconds']:.1f} s; bus / this = {r['ratio_bus_vs_embed_bus_batches']:.2f}x; "
               f"other load {b['other_cores']:.2f} cores")
    p = ip["parse"]
    yield ("in-process parse chunks/s", f"{p['chunks_per_s']:.1f}",
           f"{p['seconds']:.1f} s, {p['chunks']} chunks, {p['failed']} failed")
    pe = ip["parse_then_embed"]
    yield ("in-process parse then embed", f"{pe['chunks_per_s']:.1f}",
           f"{pe['seconds']:.1f} s one after the other; bus / this = {r['ratio_bus_vs_parse_then_embed']:.2f}x")
    if "peer" in r:
        peer = r["peer"]
        yield ("[bold]LangChain + PGVector: corpus indexed", f"[bold]{peer['seconds']:.1f} s",
               f"{peer['chunks']} chunks (1000/200 characters), load+split {peer['load_split_s']:.1f} s, "
               f"embed+store {peer['embed_store_s']:.1f} s (torch MiniLM)")
        yield ("[bold]ragbus faster than LangChain", f"[bold]{r['ratio_peer_time_vs_bus_time']:.2f}x",
               f"its time / ragbus's {bus['indexed_s']:.1f} s through the bus, same documents")
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in sorted(bus["cpu_s"].items(), key=lambda kv: -kv[1]))
    load = f"during the bus run {bus['other_cores']:.2f} cores, during in-process embed {emb['other_cores']:.2f}"
    busy = max(bus["other_cores"], emb["other_cores"]) > NOISY_CORES
    yield ("other processes' load", "[red]busy machine" if busy else "quiet", load)
    yield ("CPU s during the ingest", f"{sum(bus['cpu_s'].values()):.0f} s",
           f"{cpu}; {r['cpu_utilisation']:.0%} of {m['cores']} cores")


def table(r: dict[str, Any]) -> Table:
    cfg = r["config"]
    t = Table(title=f"ragbus bulk ingest: {cfg['parsers']} parser(s), {cfg['embedders']} embedder(s)")
    for column, justify in (("measure", "left"), ("value", "right"), ("notes", "left")):
        t.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows(r):
        t.add_row(*row)
    return t


# ---- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/ingest.py",
        description="Bulk-ingest benchmark: upload a corpus through the whole bus (gateway → parser → embedder "
        "→ projector, real nats-server and PostgreSQL on free ports) and compare chunks/s with the same chunks "
        "embedded directly in this process (the compute bound). Prints bus/in-process as a ratio.",
        epilog="The corpus ships with Python (Language Reference topics and stdlib docstrings) rendered as "
        "Markdown, HTML, text, PDF and DOCX; nothing is downloaded. See bench/README.md.",
    )
    p.add_argument("--docs", type=int, default=200, help="documents to ingest (default: %(default)s)")
    p.add_argument("--parsers", type=int, default=1, help="parser replicas (default: %(default)s)")
    p.add_argument("--embedders", type=int, default=1, help="embedder replicas (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=8, help="uploads in flight (default: %(default)s)")
    p.add_argument("--in-flight", type=int, default=None,
                   help="chunks.ready batches each embedder holds (RAGBUS_EMBEDDING_IN_FLIGHT; 1: one at a time, "
                   "as before it was pipelined; default: the setting)")
    p.add_argument("--spin", action="store_true",
                   help="let the bus's embedders' onnxruntime threads busy-wait between calls "
                   "(RAGBUS_EMBEDDING_SPIN=true, the default before; the in-process baseline always spins)")
    p.add_argument("--embedding-threads", type=int, default=0,
                   help="texts the model runs side by side, one thread each, in the bus's embedders "
                   "(RAGBUS_EMBEDDING_THREADS) and in the in-process baseline alike (0: the usable cores); "
                   "fewer than the cores leaves the rest to parsing, PostgreSQL and NATS")
    p.add_argument("--seed", type=int, default=42, help="corpus order and format mix (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds to wait for every document to be indexed (default: %(default)s)")
    p.add_argument("--bus-batches", action="store_true",
                   help="also embed in-process in the bus's batches (per document, 32 per event)")
    p.add_argument("--no-peer", dest="peer", action="store_false",
                   help="skip the peer baseline (a plain LangChain + PGVector pipeline on the same documents)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, NATS and PostgreSQL data)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = p.parse_args(argv)
    if min(args.docs, args.parsers, args.embedders, args.concurrency) < 1:
        p.error("--docs, --parsers, --embedders and --concurrency must be at least 1")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # SIGTERM takes the same clean-up path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    with err.status(f"building the corpus ({args.docs} documents) ..."):
        docs = build_corpus(args.docs, args.seed)
    err.print(f"corpus: {describe(docs)}")
    workdir = Path(tempfile.mkdtemp(prefix="ragbus-bench-"))
    env = {"RAGBUS_EMBEDDING_IN_FLIGHT": str(args.in_flight)} if args.in_flight else {}
    if args.spin:
        env["RAGBUS_EMBEDDING_SPIN"] = "true"
    if args.embedding_threads:
        env["RAGBUS_EMBEDDING_THREADS"] = str(args.embedding_threads)
    stack = BenchStack(workdir, args.parsers, args.embedders, env)
    keep = args.keep
    try:
        run = asyncio.run(run_bus(stack, docs, args))
    except Exception:
        keep = True  # the logs explain what went wrong (an interrupt is no error: clean up as usual)
        raise
    finally:
        stack.stop()
        if keep:
            err.print(f"work directory kept: {workdir} (logs in {workdir / 'logs'})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    # The stack is down: the baselines have the machine to themselves, as the bus had.
    parse = parse_baseline(docs)
    embeds = embed_baselines(run, args.bus_batches, args.embedding_threads)
    peer = None
    if args.peer:
        peer_dir = Path(tempfile.mkdtemp(prefix="ragbus-bench-peer-"))
        try:
            peer = peer_baseline(docs, peer_dir)
        finally:
            shutil.rmtree(peer_dir, ignore_errors=True)
    r = results(args, docs, run, parse, embeds, peer)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        Console().print(table(r))
        for name, reason in sorted(run.failed.items()):
            err.print(f"[red]failed[/red] {name}: {reason}")
    return 1 if run.failed or run.chunks != parse.chunks else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: everything this benchmark started has been stopped[/yellow]")
        sys.exit(130)
