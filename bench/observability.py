"""What metrics and tracing cost: the same ingest and the same questions with observability off and on, in one run.

    .venv/bin/python bench/observability.py [--docs 40] [--questions 12] [--rounds 2] [--json]

Each run starts a fresh system (nats-server, PostgreSQL + pgvector, llama.cpp with SmolLM2, projector, parser,
embedder, generator, gateway; `ragbus.stack`), so every ingest starts from an empty log and empty tables.
It uploads `--docs` documents of bench/corpus.py with POST /documents (8 in flight) until all are indexed
(chunks/s), then asks `--questions` questions with POST /ask one after another (latency p50), then stops.

- off: no RAGBUS_METRICS_PORT (agents install no Prometheus middleware, serve nothing, the projector polls
  nothing) and no OTEL_EXPORTER_OTLP_ENDPOINT (no tracing SDK at all). The gateway's /metrics exists in
  both modes (it is on its HTTP port) but nobody scrapes it when off.
- on: every agent with a metrics port, scraped every `--scrape-interval` s by this process (httpx, as
  Prometheus would), the gateway's /metrics too; every process exporting its spans over OTLP/HTTP to a
  receiver in this process (tests/otlp.py), which counts them.

Runs alternate off/on, then on/off (ABBA, ...), so that a machine that gets slower or faster during the run
affects both modes alike; the figures per mode are the mean over its runs, the ratios on / off of those.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from corpus import CorpusDoc, build_corpus, describe
from ingest import progress_bar, upload_all, wait_until_done
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ragbus.stack import AgentStack, Servers  # noqa: E402
from streams.topology import DEFAULT_EMBEDDING_MODEL, EMBEDDER_QUERIES, GENERATOR, PARSER, index_durable  # noqa: E402
from tests.otlp import OtlpReceiver  # noqa: E402

AGENTS = ("projector", "parser", "embedder", "generator", "gateway")
# what would switch observability on behind the benchmark's back: the off runs must not inherit them
OBSERVABILITY_ENV = ("RAGBUS_METRICS_PORT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
WARMUP_QUESTION = "What is this documentation about?"

err = Console(stderr=True)


# ---- scraping, as Prometheus would ------------------------------------------------------------------------------
@dataclass
class Scraper:
    targets: dict[str, str]  # process name -> metrics URL
    interval: float
    scrapes: int = 0  # successful target scrapes
    failures: int = 0
    bytes: int = 0
    samples: dict[str, int] = field(default_factory=dict)  # per target, at its last scrape
    faststream_seen: set[str] = field(default_factory=set)  # targets that showed faststream_* samples
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=max(self.interval, 2.0)) as client:
            while True:
                started = time.monotonic()
                await asyncio.gather(*(self._one(client, name, url) for name, url in self.targets.items()))
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def _one(self, client: httpx.AsyncClient, name: str, url: str) -> None:
        try:
            response = await client.get(url)
            response.raise_for_status()
        except httpx.HTTPError:
            self.failures += 1
            return
        text = response.text
        self.scrapes += 1
        self.bytes += len(response.content)
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        self.samples[name] = len(lines)
        if any(line.startswith("faststream_") for line in lines):
            self.faststream_seen.add(name)


# ---- one run ----------------------------------------------------------------------------------------------------
@dataclass
class Run:
    mode: str  # "off" or "on"
    index: int
    chunks: int = 0
    documents: int = 0
    failed: int = 0
    ingest_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # per question, in question order
    llm_answers: int = 0  # answers the LLM generated (the others: no passage retrieved)
    cpu_s: dict[str, float] = field(default_factory=dict)  # agents' and servers' CPU seconds, ingest / questions
    spans: int = 0
    spans_by_service: dict[str, int] = field(default_factory=dict)
    otlp_requests: int = 0
    scrapes: int = 0
    scrape_failures: int = 0
    scrape_bytes: int = 0
    samples_per_scrape: int = 0  # all targets together, at the last scrape
    targets: int = 0
    faststream_targets: int = 0
    load1: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.ingest_s if self.ingest_s else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


def stack_cpu_s(servers: Servers, agents: AgentStack) -> float:
    """CPU seconds (user + system) used so far by the agents and the servers, children included."""
    pids = [p.pid for p in agents.procs.values()]
    for server in (servers.nats, servers.postgres, servers.llama):
        if server is not None and server.pid:
            pids.append(server.pid)
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for p in (process, *process.children(recursive=True)):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def questions_for(docs: list[CorpusDoc], n: int, prefix: str = "What does the documentation say about") -> list[str]:
    """One question per document title (`012-the-with-statement.md` -> about "the with statement")."""
    titles = [d.name[4:].rsplit(".", 1)[0].replace("-", " ") for d in docs]
    return [f"{prefix} {titles[i % len(titles)]}?" for i in range(n)]


async def one_run(mode: str, index: int, args: argparse.Namespace, docs: list[CorpusDoc], questions: list[str],
                  workdir: Path) -> Run:
    run = Run(mode, index)
    on = mode == "on"
    receiver = OtlpReceiver() if on else None
    servers: Servers | None = None
    agents: AgentStack | None = None
    scraper: Scraper | None = None
    env = {"RAGBUS_LLM_CONTEXT_TOKENS": str(args.context_tokens), "RAGBUS_MAX_ANSWER_TOKENS": str(args.max_tokens),
           "RAGBUS_TEMPERATURE": "0.0", "RAGBUS_GENERATOR_ID": "generator-1", "RAGBUS_LOG_LEVEL": "WARNING"}
    if receiver is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url  # the SDK's defaults otherwise (batches every 5 s)
    try:
        with err.status(f"run {index + 1} ({mode}): starting nats-server, PostgreSQL, llama.cpp and the agents..."):
            servers = await Servers.start(workdir, llm=True, n_ctx=args.context_tokens, n_threads=args.llm_threads)
            agents = AgentStack.for_servers(servers, workdir / "logs", metrics=on, **env)
            for name in AGENTS:
                agents.start(name)
            await agents.wait_ready({PARSER: 1, index_durable(DEFAULT_EMBEDDING_MODEL): 1, EMBEDDER_QUERIES: 1,
                                     GENERATOR: 1})
        if on:
            targets = {name: f"http://127.0.0.1:{port}/metrics" for name, port in agents.metrics_ports.items()}
            scraper = Scraper({**targets, "gateway": f"{agents.url}/metrics"}, args.scrape_interval)
            scraper.start()
        cpu0 = stack_cpu_s(servers, agents)
        async with httpx.AsyncClient(base_url=agents.url, timeout=httpx.Timeout(args.timeout, connect=5.0)) as client:
            with progress_bar() as progress:
                started = time.perf_counter()
                accepted, refused, _ = await upload_all(client, docs, 8, progress)
                _, run.ingest_s, final = await wait_until_done(client, set(accepted), started, args.timeout,
                                                               progress)
            agents.check_alive()
            run.documents = len(accepted)
            run.failed = len(refused) + sum(d["status"] == "failed" for d in final.values())
            conn = await asyncpg.connect(servers.dsn())
            try:
                run.chunks = int(await conn.fetchval("SELECT count(*) FROM chunks"))
            finally:
                await conn.close()
            cpu1 = stack_cpu_s(servers, agents)
            with err.status(f"run {index + 1} ({mode}): questions..."):
                await ask(client, WARMUP_QUESTION)  # not measured: the first answer loads and warms everything
                for question in questions:
                    t = time.perf_counter()
                    body = await ask(client, question)
                    run.latencies_ms.append((time.perf_counter() - t) * 1000)
                    run.llm_answers += "ttft_ms" in (body.get("timings") or {})
            run.cpu_s = {"ingest": cpu1 - cpu0, "questions": stack_cpu_s(servers, agents) - cpu1}
        run.load1 = os.getloadavg()[0]
        if scraper is not None:
            await scraper.stop()
            run.scrapes, run.scrape_failures, run.scrape_bytes = scraper.scrapes, scraper.failures, scraper.bytes
            run.samples_per_scrape = sum(scraper.samples.values())
            run.targets, run.faststream_targets = len(scraper.targets), len(scraper.faststream_seen)
    finally:
        if scraper is not None:
            await scraper.stop()
        with err.status(f"run {index + 1} ({mode}): stopping..."):
            if agents is not None:
                agents.stop_all()  # SIGTERM: each process flushes its last spans on the way out
            if servers is not None:
                servers.stop()
        if receiver is not None:
            spans = receiver.spans()
            run.spans, run.otlp_requests = len(spans), receiver.requests
            run.spans_by_service = dict(sorted(Counter(s.service for s in spans).items()))
            receiver.stop()
    return run


async def ask(client: httpx.AsyncClient, question: str) -> dict[str, Any]:
    response = await client.post("/ask", json={"question": question})
    if response.status_code != 200:
        raise RuntimeError(f"POST /ask answered {response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


# ---- the whole benchmark ----------------------------------------------------------------------------------------
def order(rounds: int) -> list[str]:
    """off, on, on, off, off, on, ...: each pair of rounds is ABBA, which cancels a linear drift."""
    return [m for r in range(rounds) for m in (("off", "on") if r % 2 == 0 else ("on", "off"))]


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def ratio(on: float | None, off: float | None) -> float | None:
    return on / off if on is not None and off else None


def summarize(args: argparse.Namespace, docs: list[CorpusDoc], runs: list[Run]) -> dict[str, Any]:
    by = {m: [r for r in runs if r.mode == m] for m in ("off", "on")}
    cps = {m: mean([r.chunks_per_s for r in rs]) for m, rs in by.items()}
    p50 = {m: mean([r.p50_ms for r in rs]) for m, rs in by.items()}
    # the same questions in the same order in every run: per question, its latency on over off
    paired = [on / off for r_on, r_off in zip(by["on"], by["off"], strict=False)
              for on, off in zip(r_on.latencies_ms, r_off.latencies_ms, strict=True) if off > 0]
    cpu = {m: {phase: mean([r.cpu_s.get(phase, 0.0) for r in rs]) for phase in ("ingest", "questions")}
           for m, rs in by.items()}
    return {
        "benchmark": "observability",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"nproc": os.cpu_count(), "python": sys.version.split()[0],
                    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"documents": len(docs), "corpus": describe(docs), "questions": args.questions,
                     "rounds": args.rounds, "order": order(args.rounds), "max_tokens": args.max_tokens,
                     "context_tokens": args.context_tokens, "scrape_interval_s": args.scrape_interval,
                     "fresh_stack_per_run": True},
        "chunks_per_s": {**cps, "ratio_on_over_off": ratio(cps["on"], cps["off"])},
        "question_p50_ms": {**p50, "ratio_on_over_off": ratio(p50["on"], p50["off"]),
                            "paired_median_ratio": statistics.median(paired) if paired else None},
        "cpu_s": {**cpu, "ratio_ingest": ratio(cpu["on"]["ingest"], cpu["off"]["ingest"]),
                  "ratio_questions": ratio(cpu["on"]["questions"], cpu["off"]["questions"])},
        "spans_received": sum(r.spans for r in by["on"]),
        "metrics_scrapes": sum(r.scrapes for r in by["on"]),
        "scrape_failures": sum(r.scrape_failures for r in by["on"]),
        "runs": [{"mode": r.mode, "documents": r.documents, "failed": r.failed, "chunks": r.chunks,
                  "ingest_s": r.ingest_s, "chunks_per_s": r.chunks_per_s, "question_p50_ms": r.p50_ms,
                  "question_p90_ms": statistics.quantiles(r.latencies_ms, n=10)[-1] if len(r.latencies_ms) > 1
                  else None, "latencies_ms": r.latencies_ms, "llm_answers": r.llm_answers, "cpu_s": r.cpu_s,
                  "spans": r.spans, "spans_by_service": r.spans_by_service, "otlp_requests": r.otlp_requests,
                  "scrapes": r.scrapes, "scrape_failures": r.scrape_failures, "scrape_bytes": r.scrape_bytes,
                  "samples_per_scrape": r.samples_per_scrape, "targets": r.targets,
                  "targets_with_faststream_metrics": r.faststream_targets, "load1_at_end": r.load1}
                 for r in runs],
    }


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def report(result: dict[str, Any], console: Console) -> None:
    s, m = result["settings"], result["machine"]
    console.print(f"[bold]ragbus observability overhead[/] {result['date']} - {m['nproc']} cores, Python "
                  f"{m['python']}, load average at end {m['loadavg_at_end']}")
    console.print(f"{s['documents']} documents ({s['corpus']}), {s['questions']} questions (POST /ask, max_tokens "
                  f"{s['max_tokens']}, SmolLM2 on llama.cpp); runs {' / '.join(s['order'])}, each on a fresh stack "
                  f"(empty NATS and PostgreSQL); on = every agent's metrics port + the gateway's /metrics scraped "
                  f"every {s['scrape_interval_s']:g} s, OTLP/HTTP traces to a receiver here")
    runs = Table(title="runs")
    for col in ("#", "mode", "chunks", "ingest s", "chunks/s", "question p50 ms", "p90 ms", "LLM answers",
                "CPU s ingest / questions", "spans", "scrapes (failed)", "samples/scrape"):
        runs.add_column(col, justify="right")
    for i, r in enumerate(result["runs"], 1):
        on = r["mode"] == "on"
        runs.add_row(str(i), r["mode"], str(r["chunks"]), fmt(r["ingest_s"]), fmt(r["chunks_per_s"]),
                     fmt(r["question_p50_ms"], ".0f"), fmt(r["question_p90_ms"], ".0f"),
                     f"{r['llm_answers']}/{len(r['latencies_ms'])}",
                     f"{r['cpu_s']['ingest']:.0f} / {r['cpu_s']['questions']:.0f}",
                     str(r["spans"]) if on else "-", f"{r['scrapes']} ({r['scrape_failures']})" if on else "-",
                     str(r["samples_per_scrape"]) if on else "-")
    console.print(runs)
    table = Table(title="observability off vs on (mean over each mode's runs)")
    for col in ("", "off", "on", "on / off"):
        table.add_column(col, justify="right")
    c, q, cpu = result["chunks_per_s"], result["question_p50_ms"], result["cpu_s"]
    table.add_row("ingest chunks/s", fmt(c["off"]), fmt(c["on"]), fmt(c["ratio_on_over_off"], ".3f") + "x")
    table.add_row("question p50 (ms)", fmt(q["off"], ".0f"), fmt(q["on"], ".0f"),
                  fmt(q["ratio_on_over_off"], ".3f") + "x")
    table.add_row("question latency, paired median", "", "", fmt(q["paired_median_ratio"], ".3f") + "x")
    table.add_row("CPU s of the stack, ingest", fmt(cpu["off"]["ingest"], ".0f"), fmt(cpu["on"]["ingest"], ".0f"),
                  fmt(cpu["ratio_ingest"], ".3f") + "x")
    table.add_row("CPU s of the stack, questions", fmt(cpu["off"]["questions"], ".0f"),
                  fmt(cpu["on"]["questions"], ".0f"), fmt(cpu["ratio_questions"], ".3f") + "x")
    table.add_row("spans received (on runs)", "-", str(result["spans_received"]), "")
    table.add_row("metrics scrapes (on runs)", "-",
                  f"{result['metrics_scrapes']} ({result['scrape_failures']} failed)", "")
    console.print(table)
    for i, r in enumerate(result["runs"], 1):
        if r["mode"] == "on":
            console.print(f"run {i}: spans by service {r['spans_by_service']} in {r['otlp_requests']} OTLP requests; "
                          f"{r['targets_with_faststream_metrics']}/{r['targets']} scrape targets had faststream_* "
                          f"samples; {r['scrape_bytes'] / 1e6:.1f} MB scraped")
        if r["failed"]:
            console.print(f"[red]run {i}: {r['failed']} document(s) failed[/]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/observability.py",
        description="The overhead of metrics and tracing: ingest chunks/s and POST /ask latency p50 with "
        "observability off (no RAGBUS_METRICS_PORT, no OTEL_EXPORTER_OTLP_ENDPOINT) and on (every agent with a "
        "metrics port scraped by this process every --scrape-interval s, every process exporting traces over "
        "OTLP/HTTP to a receiver in this process), in one run, and the ratios on / off. Each run starts its own "
        "nats-server, PostgreSQL, llama.cpp (SmolLM2) and agents on free ports in a temporary directory (fresh, "
        "so every ingest starts from empty) and stops them afterwards; runs alternate off/on then on/off.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--docs", type=int, default=40, help="documents of bench/corpus.py to ingest per run")
    parser.add_argument("--questions", type=int, default=12, help="measured questions per run (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="pairs of runs: 1 = off, on; 2 = off, on, on, off; 3 = ... off, on")
    parser.add_argument("--scrape-interval", type=float, default=2.0, help="seconds between scrapes when on")
    parser.add_argument("--max-tokens", type=int, default=32, help="max answer tokens (RAGBUS_MAX_ANSWER_TOKENS)")
    parser.add_argument("--context-tokens", type=int, default=2048,
                        help="the LLM's context window (llama.cpp n_ctx and RAGBUS_LLM_CONTEXT_TOKENS)")
    parser.add_argument("--llm-threads", type=int, default=None, help="llama.cpp n_threads (default: its own)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the ingest or an answer")
    parser.add_argument("--workdir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, data) afterwards; it is always kept after an error")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (the report then goes to stderr)")
    args = parser.parse_args(argv)
    if args.docs < 1 or args.questions < 1 or args.rounds < 1:
        parser.error("--docs, --questions and --rounds must be at least 1")
    if not 0.1 <= args.scrape_interval <= 60:
        parser.error("--scrape-interval must be between 0.1 and 60 s")
    return args


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    for name in OBSERVABILITY_ENV:  # every agent inherits this environment
        os.environ.pop(name, None)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ragbus-bench-observability-"))
    workdir.mkdir(parents=True, exist_ok=True)
    keep = args.keep
    with err.status(f"building the corpus ({args.docs} documents)..."):
        docs = build_corpus(args.docs)
    questions = questions_for(docs, args.questions)
    runs: list[Run] = []
    try:
        for i, mode in enumerate(order(args.rounds)):
            runs.append(asyncio.run(one_run(mode, i, args, docs, questions, workdir / f"run-{i + 1}-{mode}")))
            r = runs[-1]
            err.print(f"run {i + 1} ({mode}): {r.chunks} chunks in {r.ingest_s:.1f} s = {r.chunks_per_s:.1f} "
                      f"chunks/s, question p50 {r.p50_ms:.0f} ms" + (f", {r.spans} spans, {r.scrapes} scrapes"
                                                                     if mode == "on" else ""))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: everything stopped[/]")
        return 130
    except Exception as exc:  # noqa: BLE001 - any failure: say what it was, keep the logs
        err.print(f"[red]failed:[/] {exc!r}")
        keep = True
        return 1
    finally:
        if keep:
            err.print(f"work directory kept: {workdir}")
        elif args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result = summarize(args, docs, runs)
    if args.json:  # JSON on stdout, the report on stderr
        print(json.dumps(result, indent=2))
    report(result, Console(width=160, stderr=args.json))
    return 1 if any(r.failed for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
