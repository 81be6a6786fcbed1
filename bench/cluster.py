"""What a JetStream cluster costs and what losing a stream leader does: R1 vs R3 vs R3 with `sync_interval: always`,
and a leader-loss probe, in one run.

    .venv/bin/python bench/cluster.py [--docs 40] [--questions 12] [--rounds 1] [--probe-docs 30] [--json]

Each run starts a fresh system (PostgreSQL + pgvector, llama.cpp with SmolLM2, projector, parser, embedder,
generator, gateway; `ragbus.stack`) on one of three NATS set-ups:

- r1: one nats-server, every stream with one copy (the embedded default, what `ragbus up` runs);
- r3: three nats-servers as one JetStream cluster (`ragbus.servers.NatsCluster`), every stream, the document bucket
  and every durable with three copies (`declare_streams(js, replicas=3)`, i.e. `ragbus streams declare --replicas 3`);
  the agents get every member's URL;
- r3-always: the same cluster with `jetstream { sync_interval: always }`: every write fsynced before it is
  acknowledged, instead of nats-server's default (a sync every 2 minutes; with R3 a write is safe once a quorum of
  the three holds it in memory).

Workload per run: upload `--docs` documents of bench/corpus.py with POST /documents (8 in flight) until all are
indexed (chunks/s), then one unmeasured warm-up question and `--questions` questions with POST /ask one after
another (latency p50).

After the workload of every r3 run, the leader-loss probe on the same stack: `--probe-docs` more documents are
uploaded (8 in flight) while `--probe-questions` questions are asked one after another; once chunks are arriving,
the member leading the CHUNKS stream is SIGKILLed, the time until another member reports itself leader is
measured (from a connection to the survivors only), the member is started again `--down-for` s after that (same
store: it catches up), and the probe checks that every document was indexed with its exact chunk and vector counts and
that every question got exactly one answer.done. The stall is read from the rows the system writes (chunks +
answers in PostgreSQL, polled every 0.1 s): the time from the kill to the first new row, and the longest
stretch without a new row around the kill, next to the longest such stretch before it.

All the nats-servers of a cluster run on this machine and share its cores with everything else (a real cluster
has a node each), so R3's cost here includes three servers competing for the same CPUs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from corpus import CorpusDoc, build_corpus, describe
from ingest import progress_bar, upload_all, wait_until_done
from observability import fmt, mean, questions_for, ratio
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ragbus.credentials import Credentials  # noqa: E402
from ragbus.servers import EmbeddedPostgres, LlamaServer, NatsCluster  # noqa: E402
from ragbus.stack import AgentStack, Servers, prepare  # noqa: E402
from streams.connect import connect  # noqa: E402
from streams.settings import BusSettings  # noqa: E402
from streams.topology import (  # noqa: E402
    ANSWERS,
    CHUNKS,
    DEFAULT_EMBEDDING_MODEL,
    EMBEDDER_QUERIES,
    GENERATOR,
    OBJECTS,
    PARSER,
    STREAMS,
    index_durable,
)

AGENTS = ("projector", "parser", "embedder", "generator", "gateway")
MODES = ("r1", "r3", "r3-always")
LABELS = {"r1": "R1 (1 server)", "r3": "R3 (3 servers)", "r3-always": "R3, sync_interval: always"}
WARMUP_QUESTION = "What is this documentation about?"
FINAL = ("indexed", "failed")

err = Console(stderr=True)


# ---- one run ----------------------------------------------------------------------------------------------------
@dataclass
class Run:
    mode: str
    index: int
    chunks: int = 0
    documents: int = 0
    failed: int = 0
    ingest_s: float = 0.0
    replicas: dict[str, int] = field(default_factory=dict)  # stream -> copies, as the servers report them
    latencies_ms: list[float] = field(default_factory=list)  # per question, in question order
    llm_answers: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)  # "nats" / "stack" x "ingest" / "questions"
    probe: dict[str, Any] | None = None
    load1: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.ingest_s if self.ingest_s else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


async def start_servers(mode: str, workdir: Path, args: argparse.Namespace) -> tuple[Servers, NatsCluster | None]:
    llama_options = {"n_ctx": args.context_tokens, "n_threads": args.llm_threads}
    if mode == "r1":
        return await Servers.start(workdir, llm=True, **llama_options), None
    credentials = Credentials.ensure(workdir / "secrets")
    cluster = NatsCluster(workdir / "nats", users=credentials.nats_users(),
                          sync_interval="always" if mode == "r3-always" else None)
    postgres = EmbeddedPostgres(workdir / "postgres", password=credentials.postgres["postgres"])
    llama = LlamaServer(log_path=workdir / "logs" / "llama-server.log", **llama_options)
    # Servers only reads .url, .monitor_url, .start() and .stop() of its nats: the cluster has them all
    servers = Servers(cluster, postgres, credentials, llama, owned=True)  # type: ignore[arg-type]
    try:
        for server in (cluster, postgres, llama):
            await asyncio.to_thread(server.start)
        # what `ragbus up` prepares, with every stream, the bucket and every durable at three copies from the start
        await prepare(cluster, postgres, credentials, replicas=3)
    except BaseException:
        servers.stop()
        raise
    return servers, cluster


def nats_pids(servers: Servers, cluster: NatsCluster | None) -> list[int]:
    members = list(cluster.members.values()) if cluster is not None else [servers.nats]
    return [m.pid for m in members if m.pid and m.running]


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes, children included."""
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


def stack_cpu(servers: Servers, cluster: NatsCluster | None, agents: AgentStack) -> dict[str, float]:
    nats = nats_pids(servers, cluster)
    others = [p.pid for p in agents.procs.values()]
    others += [s.pid for s in (servers.postgres, servers.llama) if s is not None and s.pid]
    n = cpu_s(nats)
    return {"nats": n, "stack": n + cpu_s(others)}


async def stream_replicas(settings: BusSettings) -> dict[str, int]:
    nc = await connect(settings, "bench-cluster-check")
    try:
        js = nc.jetstream()
        return {name: (await js.stream_info(name)).config.num_replicas or 1 for name in (*STREAMS, OBJECTS)}
    finally:
        await nc.close()


async def one_run(mode: str, index: int, args: argparse.Namespace, docs: list[CorpusDoc], questions: list[str],
                  probe_docs: list[CorpusDoc], probe_questions: list[str], workdir: Path) -> Run:
    run = Run(mode, index)
    servers: Servers | None = None
    agents: AgentStack | None = None
    env = {"RAGBUS_LLM_CONTEXT_TOKENS": str(args.context_tokens), "RAGBUS_MAX_ANSWER_TOKENS": str(args.max_tokens),
           "RAGBUS_TEMPERATURE": "0.0", "RAGBUS_GENERATOR_ID": "generator-1", "RAGBUS_LOG_LEVEL": "WARNING"}
    tag = f"run {index + 1} ({mode})"
    try:
        with err.status(f"{tag}: starting NATS, PostgreSQL, llama.cpp and the agents..."):
            servers, cluster = await start_servers(mode, workdir, args)
            agents = AgentStack.for_servers(servers, workdir / "logs", **env)
            for name in AGENTS:
                agents.start(name)
            await agents.wait_ready({PARSER: 1, index_durable(DEFAULT_EMBEDDING_MODEL): 1, EMBEDDER_QUERIES: 1,
                                     GENERATOR: 1})
            run.replicas = await stream_replicas(servers.settings())
        wanted = 1 if mode == "r1" else 3
        if set(run.replicas.values()) != {wanted}:
            raise RuntimeError(f"{mode}: streams have {run.replicas} copies, not {wanted}")
        cpu0 = stack_cpu(servers, cluster, agents)
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
            cpu1 = stack_cpu(servers, cluster, agents)
            with err.status(f"{tag}: questions..."):
                await ask(client, WARMUP_QUESTION)  # not measured: the first answer loads and warms everything
                for question in questions:
                    t = time.perf_counter()
                    body = await ask(client, question)
                    run.latencies_ms.append((time.perf_counter() - t) * 1000)
                    run.llm_answers += "ttft_ms" in (body.get("timings") or {})
            cpu2 = stack_cpu(servers, cluster, agents)
            run.cpu_s = {f"{part}_{phase}": b[part] - a[part] for part in ("nats", "stack")
                         for phase, a, b in (("ingest", cpu0, cpu1), ("questions", cpu1, cpu2))}
            run.load1 = os.getloadavg()[0]
            if mode == "r3" and probe_docs and cluster is not None:
                with err.status(f"{tag}: leader-loss probe ({len(probe_docs)} documents, {len(probe_questions)} "
                                "questions, the CHUNKS leader SIGKILLed)..."):
                    run.probe = await leader_probe(servers, cluster, agents, client, probe_docs, probe_questions,
                                                   args)
                agents.check_alive()
    finally:
        with err.status(f"{tag}: stopping..."):
            if agents is not None:
                agents.stop_all()
            if servers is not None:
                servers.stop()
    return run


async def ask(client: httpx.AsyncClient, question: str) -> dict[str, Any]:
    """POST /ask as a patient client: told the system is busy (503, Retry-After), it asks again."""
    while True:
        response = await client.post("/ask", json={"question": question})
        if response.status_code != 503:
            break
        await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 3.0))
    if response.status_code != 200:
        raise RuntimeError(f"POST /ask answered {response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


# ---- the leader-loss probe --------------------------------------------------------------------------------------
async def leader_probe(servers: Servers, cluster: NatsCluster, agents: AgentStack, client: httpx.AsyncClient,
                       docs: list[CorpusDoc], questions: list[str], args: argparse.Namespace) -> dict[str, Any]:
    pool = await asyncpg.create_pool(servers.dsn(), min_size=1, max_size=2)
    admin = await connect(servers.settings(), "bench-cluster-probe", error_cb=_quiet)  # its server may be killed
    progress: list[tuple[float, int]] = []  # (monotonic time, chunks + answers rows)
    stop = asyncio.Event()

    async def rows() -> int:
        return int(await pool.fetchval("SELECT (SELECT count(*) FROM chunks) + (SELECT count(*) FROM answers)"))

    async def watch() -> None:
        while not stop.is_set():
            progress.append((time.monotonic(), await rows()))
            await asyncio.sleep(args.poll_interval)

    async def upload(doc: CorpusDoc, limit: asyncio.Semaphore) -> str:
        async with limit:
            while True:  # a patient client, as for /ask
                response = await client.post("/documents", files={"file": (doc.name, doc.data)})
                if response.status_code != 503:
                    break
                await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 3.0))
        if response.status_code != 202:
            raise RuntimeError(f"upload of {doc.name} refused: {response.status_code} {response.text[:200]}")
        return str(response.json()["doc_id"])

    async def ask_all() -> list[tuple[str, float]]:
        answered = []
        for question in questions:
            t = time.perf_counter()
            body = await ask(client, question)
            answered.append((str(body["query_id"]), (time.perf_counter() - t) * 1000))
        return answered

    survivors_nc = None
    try:
        baseline = await rows()
        watcher = asyncio.create_task(watch())
        started = time.monotonic()
        limit = asyncio.Semaphore(8)
        uploads = asyncio.gather(*(upload(d, limit) for d in docs))
        asks = asyncio.create_task(ask_all())
        while await rows() <= baseline:  # work in flight everywhere before the kill
            if time.monotonic() - started > args.timeout:
                raise TimeoutError("no chunk arrived during the probe")
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.kill_after)
        leader = (await admin.jetstream().stream_info(CHUNKS)).cluster.leader
        survivors = [m.url for name, m in cluster.members.items() if name != leader]
        # asked through the members that stay up: the time to a new leader is not a reconnect's
        survivors_nc = await connect(BusSettings(nats_url=",".join(survivors), nats_user=servers.settings().nats_user,
                                                 nats_password=servers.settings().nats_password),
                                     "bench-cluster-survivors", error_cb=_quiet)
        js = survivors_nc.jetstream(timeout=1.0)
        rows_at_kill = await rows()
        killed_at = time.monotonic()
        cluster.member(leader).kill()
        new_leader = None
        while new_leader in (None, leader):
            try:
                new_leader = (await js.stream_info(CHUNKS)).cluster.leader
            except Exception:  # noqa: BLE001 - no leader yet: the request times out or is refused
                new_leader = None
            elected_at = time.monotonic()
            if elected_at - killed_at > 120:
                raise TimeoutError(f"no new CHUNKS leader 120 s after {leader} was killed")
            if new_leader in (None, leader):
                await asyncio.sleep(0.05)
        await asyncio.sleep(args.down_for)  # the cluster on two members for a while
        restarted_at = time.monotonic()
        await asyncio.to_thread(cluster.member(leader).start)
        await asyncio.to_thread(cluster.wait_healthy, 120.0)
        healthy_at = time.monotonic()
        doc_ids = await uploads
        answered = await asks
        deadline = time.monotonic() + args.timeout
        while True:  # every probe document indexed (or failed)
            listed = (await client.get("/documents")).json()["documents"]
            status = {d["doc_id"]: d["status"] for d in listed if d["doc_id"] in set(doc_ids)}
            if len(status) == len(doc_ids) and all(s in FINAL for s in status.values()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"probe documents not done after {args.timeout:.0f} s: {status}")
            await asyncio.sleep(0.5)
        done_at = time.monotonic()
        await asyncio.sleep(1.0)  # the last answers rows
        stop.set()
        await watcher

        # the checks: nothing lost, doubled or left hanging
        query_ids = [q for q, _ in answered]
        announced = int(await pool.fetchval("SELECT coalesce(sum(chunk_count), 0) FROM documents "
                                            "WHERE doc_id = ANY($1)", doc_ids))
        chunk_rows = int(await pool.fetchval("SELECT count(*) FROM chunks WHERE doc_id = ANY($1)", doc_ids))
        vectors_table = await pool.fetchval("SELECT vectors_table FROM embedding_indexes WHERE state = 'active'")
        vector_rows = int(await pool.fetchval(f"SELECT count(*) FROM {vectors_table} v JOIN chunks c USING (chunk_id) "
                                              "WHERE c.doc_id = ANY($1)", doc_ids))
        answer_rows = int(await pool.fetchval("SELECT count(*) FROM answers WHERE query_id = ANY($1)", query_ids))
        info = await admin.jetstream().stream_info(ANSWERS, subjects_filter="answer.done.>")
        done_counts = [(info.state.subjects or {}).get(f"answer.done.{q}", 0) for q in query_ids]
        replicas_after = {}  # copies in sync: the leader and its current, online followers
        for name in (*STREAMS, OBJECTS):
            peers = (await admin.jetstream().stream_info(name)).cluster.replicas or []
            replicas_after[name] = 1 + sum(bool(p.current) and not p.offline for p in peers)
    finally:
        stop.set()
        if survivors_nc is not None:
            await survivors_nc.close()
        await admin.close()
        await pool.close()

    grew = [t for (_, n), (t, m) in itertools.pairwise(progress) if m > n]  # when new rows appeared
    before = [t for t in grew if t <= killed_at]
    first = next((t - killed_at for t in grew if t > killed_at), None)
    # the longest stretch without a new row that ends after the kill (the one around it included)
    around = [b - a for a, b in itertools.pairwise([*before[-1:], *[t for t in grew if t > killed_at]])]
    if not before and first is not None:
        around.append(first)
    failed = sum(s == "failed" for s in status.values())
    checks = {
        "every document indexed": failed == 0 and all(s == "indexed" for s in status.values()),
        "chunk rows = announced": chunk_rows == announced,
        "vectors = announced": vector_rows == announced,
        "one answer row per question": answer_rows == len(questions),
        "one answer.done per question": done_counts == [1] * len(questions),
        "all 3 copies of every stream in sync": set(replicas_after.values()) == {3},
    }
    return {
        "documents": len(doc_ids), "questions": len(questions), "killed": leader, "new_leader": new_leader,
        "kill_after_first_chunk_s": args.kill_after, "rows_before_kill": rows_at_kill - baseline,
        "new_leader_s": elected_at - killed_at, "first_progress_s": first,
        "longest_stall_s": max(around) if around else None,
        "longest_gap_before_kill_s": max((b - a for a, b in itertools.pairwise(before)), default=None),
        "down_s": restarted_at - killed_at, "rejoin_s": healthy_at - restarted_at,
        "probe_s": done_at - started, "all_indexed_after_kill_s": done_at - killed_at,
        "chunks": chunk_rows, "announced": announced, "vectors": vector_rows, "answers": answer_rows,
        "failed": failed, "question_ms": [ms for _, ms in answered],
        "max_question_ms": max((ms for _, ms in answered), default=None),
        "checks": checks, "ok": all(checks.values()), "poll_interval_s": args.poll_interval,
    }


async def _quiet(exc: Exception) -> None:
    """A connection's errors (its server SIGKILLed: unexpected EOF) are expected here; it reconnects by itself."""


# ---- the whole benchmark ----------------------------------------------------------------------------------------
def order(rounds: int) -> list[str]:
    """r1, r3, r3-always, then the other way round, ...: each pair of rounds cancels a linear drift."""
    return [m for r in range(rounds) for m in (MODES if r % 2 == 0 else MODES[::-1])]


def paired(a: list[Run], b: list[Run]) -> float | None:
    """Median over the same question in runs of two modes (the i-th run of each) of a's latency / b's."""
    values = [x / y for ra, rb in zip(a, b, strict=False)
              for x, y in zip(ra.latencies_ms, rb.latencies_ms, strict=True) if y > 0]
    return statistics.median(values) if values else None


PAIRS = (("r3", "r1"), ("r3-always", "r1"), ("r3-always", "r3"))


def summarize(args: argparse.Namespace, docs: list[CorpusDoc], runs: list[Run]) -> dict[str, Any]:
    by = {m: [r for r in runs if r.mode == m] for m in MODES}
    figures = {
        "chunks_per_s": {m: mean([r.chunks_per_s for r in rs]) for m, rs in by.items()},
        "question_p50_ms": {m: mean([r.p50_ms for r in rs]) for m, rs in by.items()},
        **{f"cpu_s_{k}": {m: mean([r.cpu_s[k] for r in rs]) for m, rs in by.items()}
           for k in ("nats_ingest", "stack_ingest", "nats_questions", "stack_questions")},
    }
    ratios = {name: {f"{a}/{b}": ratio(values[a], values[b]) for a, b in PAIRS} for name, values in figures.items()}
    ratios["question_paired_median"] = {f"{a}/{b}": paired(by[a], by[b]) for a, b in PAIRS}
    probes = [r.probe for r in runs if r.probe is not None]
    return {
        "benchmark": "cluster",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"nproc": os.cpu_count(), "python": sys.version.split()[0],
                    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                    "note": "every nats-server of the cluster runs on this machine, sharing its cores with the rest "
                            "of the stack (a real cluster has a node each): R3's cost here includes that"},
        "settings": {"documents": len(docs), "corpus": describe(docs), "questions": args.questions,
                     "rounds": args.rounds, "order": order(args.rounds), "max_tokens": args.max_tokens,
                     "context_tokens": args.context_tokens, "probe_documents": args.probe_docs,
                     "probe_questions": args.probe_questions, "kill_after_s": args.kill_after,
                     "down_for_s": args.down_for, "fresh_stack_per_run": True},
        **figures,
        "ratios": ratios,
        "leader_loss": probes,
        "runs": [{"mode": r.mode, "documents": r.documents, "failed": r.failed, "chunks": r.chunks,
                  "stream_replicas": r.replicas, "ingest_s": r.ingest_s, "chunks_per_s": r.chunks_per_s,
                  "question_p50_ms": r.p50_ms,
                  "question_p90_ms": statistics.quantiles(r.latencies_ms, n=10)[-1] if len(r.latencies_ms) > 1
                  else None, "latencies_ms": r.latencies_ms, "llm_answers": r.llm_answers, "cpu_s": r.cpu_s,
                  "load1_at_end": r.load1, "leader_loss": r.probe}
                 for r in runs],
    }


def report(result: dict[str, Any], console: Console) -> None:
    s, m = result["settings"], result["machine"]
    console.print(f"[bold]ragbus on a JetStream cluster: R1 vs R3[/] {result['date']} - {m['nproc']} cores, Python "
                  f"{m['python']}, load average at end {m['loadavg_at_end']}")
    console.print(f"{s['documents']} documents ({s['corpus']}), {s['questions']} questions (POST /ask, max_tokens "
                  f"{s['max_tokens']}, SmolLM2 on llama.cpp); runs {' / '.join(s['order'])}, each on a fresh stack")
    console.print(f"[yellow]note:[/] {m['note']}.")
    runs = Table(title="runs")
    for col in ("#", "mode", "copies", "chunks", "ingest s", "chunks/s", "question p50 ms", "p90 ms", "LLM answers",
                "CPU s nats ingest / questions", "CPU s stack ingest / questions"):
        runs.add_column(col, justify="right")
    for i, r in enumerate(result["runs"], 1):
        c = r["cpu_s"]
        runs.add_row(str(i), r["mode"], "/".join(sorted({str(v) for v in r["stream_replicas"].values()})),
                     str(r["chunks"]), fmt(r["ingest_s"]), fmt(r["chunks_per_s"]), fmt(r["question_p50_ms"], ".0f"),
                     fmt(r["question_p90_ms"], ".0f"), f"{r['llm_answers']}/{len(r['latencies_ms'])}",
                     f"{c['nats_ingest']:.1f} / {c['nats_questions']:.1f}",
                     f"{c['stack_ingest']:.0f} / {c['stack_questions']:.0f}")
    console.print(runs)
    table = Table(title="R1 vs R3 (mean over each mode's runs)")
    for col in ("", *(LABELS[mode] for mode in MODES), *(f"{a} / {b}" for a, b in PAIRS)):
        table.add_column(col, justify="right")
    ratios = result["ratios"]
    rows = (("ingest chunks/s", "chunks_per_s", ".1f"), ("question p50 (ms)", "question_p50_ms", ".0f"),
            ("CPU s nats-server(s), ingest", "cpu_s_nats_ingest", ".1f"),
            ("CPU s whole stack, ingest", "cpu_s_stack_ingest", ".0f"),
            ("CPU s nats-server(s), questions", "cpu_s_nats_questions", ".1f"),
            ("CPU s whole stack, questions", "cpu_s_stack_questions", ".0f"))
    for label, key, spec in rows:
        table.add_row(label, *(fmt(result[key][mode], spec) for mode in MODES),
                      *(fmt(ratios[key][f"{a}/{b}"], ".3f", "x") for a, b in PAIRS))
    table.add_row("question latency, paired median", "", "", "",
                  *(fmt(ratios["question_paired_median"][f"{a}/{b}"], ".3f", "x") for a, b in PAIRS))
    console.print(table)
    for p in result["leader_loss"]:
        t = Table(title=f"leader loss on R3: CHUNKS leader {p['killed']} SIGKILLed {p['kill_after_first_chunk_s']:g} s "
                        f"after the first chunk ({p['documents']} documents, {p['questions']} questions in flight)")
        t.add_column("", justify="left")
        t.add_column("seconds", justify="right")
        t.add_row(f"to a new leader ({p['new_leader']})", fmt(p["new_leader_s"], ".2f"))
        t.add_row("kill -> first new row (chunks + answers)", fmt(p["first_progress_s"], ".2f"))
        t.add_row("longest stretch without a new row, around the kill", fmt(p["longest_stall_s"], ".2f"))
        t.add_row("longest stretch without a new row before the kill (normal)", fmt(p["longest_gap_before_kill_s"],
                                                                                    ".2f"))
        t.add_row("member down / back in sync after its restart", f"{p['down_s']:.1f} / {p['rejoin_s']:.1f}")
        t.add_row("kill -> every document indexed", fmt(p["all_indexed_after_kill_s"], ".1f"))
        t.add_row("slowest question during the probe", fmt((p["max_question_ms"] or 0) / 1000, ".2f"))
        console.print(t)
        checks = ", ".join(f"{name}: {'ok' if good else '[red]FAILED[/]'}" for name, good in p["checks"].items())
        console.print(f"{p['chunks']} chunks (announced {p['announced']}), {p['vectors']} vectors, {p['answers']} "
                      f"answers; {checks}; rows polled every {p['poll_interval_s']:g} s")
    for i, r in enumerate(result["runs"], 1):
        if r["failed"]:
            console.print(f"[red]run {i}: {r['failed']} document(s) failed[/]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/cluster.py",
        description="What a 3-node JetStream cluster costs and what losing a stream leader does, in one run: the "
        "same ingest (chunks/s) and questions (POST /ask p50) on R1 (one nats-server, the embedded default), on R3 "
        "(three nats-servers as one cluster, every stream, the bucket and every durable with 3 copies) and on R3 "
        "with `sync_interval: always` (every write fsynced), with the ratios; then, on each R3 stack after its "
        "workload, a probe that SIGKILLs the CHUNKS stream's leader while documents and questions are in flight "
        "and measures the time to a new leader and the stall (from the chunks and answers rows), restarts the "
        "member and checks that nothing was lost or doubled. Each run starts its own servers (NATS, PostgreSQL, "
        "llama.cpp with SmolLM2) and five agents on free ports in a temporary directory and stops them "
        "afterwards. All the nats-servers share this machine's cores (a real cluster has a node each), so R3's "
        "cost here includes that.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--docs", type=int, default=40, help="documents of bench/corpus.py to ingest per run")
    parser.add_argument("--questions", type=int, default=12, help="measured questions per run (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of the three modes: 1 = r1, r3, r3-always; 2 = ... then r3-always, r3, r1")
    parser.add_argument("--probe-docs", type=int, default=30,
                        help="documents uploaded during the leader-loss probe (others than the workload's; 0: no "
                        "probe)")
    parser.add_argument("--probe-questions", type=int, default=8, help="questions asked during the probe")
    parser.add_argument("--kill-after", type=float, default=2.0,
                        help="seconds after the probe's first chunk row to SIGKILL the CHUNKS leader")
    parser.add_argument("--down-for", type=float, default=5.0,
                        help="seconds after the new leader's election to start the killed member again")
    parser.add_argument("--poll-interval", type=float, default=0.1,
                        help="seconds between counts of chunks + answers rows during the probe")
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
    if args.probe_docs < 0 or args.probe_questions < 0 or args.kill_after < 0 or args.down_for < 0:
        parser.error("--probe-docs, --probe-questions, --kill-after and --down-for cannot be negative")
    if not 0.01 <= args.poll_interval <= 5:
        parser.error("--poll-interval must be between 0.01 and 5 s")
    return args


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ragbus-bench-cluster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    keep = args.keep
    with err.status(f"building the corpus ({args.docs} + {args.probe_docs} documents)..."):
        everything = build_corpus(args.docs + args.probe_docs)  # a prefix-stable selection: the first --docs are
    docs, probe_docs = everything[:args.docs], everything[args.docs:]  # those of the other benchmarks
    questions = questions_for(docs, args.questions)
    probe_questions = questions_for(probe_docs or docs, args.probe_questions, "What is explained about")
    runs: list[Run] = []
    try:
        for i, mode in enumerate(order(args.rounds)):
            runs.append(asyncio.run(one_run(mode, i, args, docs, questions, probe_docs, probe_questions,
                                            workdir / f"run-{i + 1}-{mode}")))
            r = runs[-1]
            err.print(f"run {i + 1} ({mode}): {r.chunks} chunks in {r.ingest_s:.1f} s = {r.chunks_per_s:.1f} "
                      f"chunks/s, question p50 {r.p50_ms:.0f} ms")
            if r.probe is not None:
                p = r.probe
                err.print(f"  leader loss: {p['killed']} killed, new leader {p['new_leader']} after "
                          f"{p['new_leader_s']:.2f} s, first progress {fmt(p['first_progress_s'], '.2f')} s, "
                          f"longest stall {fmt(p['longest_stall_s'], '.2f')} s, checks "
                          f"{'ok' if p['ok'] else 'FAILED'}")
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
    report(result, Console(width=180, stderr=args.json))
    bad_probe = any(not p["ok"] for p in result["leader_loss"])
    return 1 if any(r.failed for r in runs) or bad_probe else 0


if __name__ == "__main__":
    sys.exit(main())
