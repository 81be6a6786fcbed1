"""What the whole system holds in memory, per process, idle and under load; torch vs ONNX Runtime in the embedder.

    .venv/bin/python bench/memory.py [--configs torch,onnx] [--docs 40] [--load-docs 30] [--questions 4] [--json]

For each embedder configuration, on a fresh stack each (nats-server, PostgreSQL + pgvector, llama.cpp with SmolLM2,
projector, parser, embedder, generator, gateway; `ragbus.stack`, as bench/observability.py), the first index of the
fresh log declared on the configuration's model (`Servers.start(initial_model=...)`, as `ragbus up` does with
RAGBUS_EMBEDDING_MODEL set):
- torch: all-MiniLM-L6-v2 through sentence-transformers;
- onnx: all-MiniLM-L6-v2-onnx-int8 on onnxruntime (no torch in the embedder).

1. idle: uploads `--docs` documents of bench/corpus.py (POST /documents) until indexed, asks a warm-up and
   `--questions` questions (POST /ask), waits `--idle-s` s, then reads every process's RSS, PSS and USS (psutil's
   memory_full_info); a server or agent with children (PostgreSQL's backends, the parser's parse children) is
   the sum over its tree;
2. load: uploads `--load-docs` more while asking questions one after another until they are indexed, sampling every
   `--interval` s; each process's peak, and the peak of the totals (their sum in one sample).
It also notes each process's threads, whether torch / onnxruntime is mapped (/proc/PID/maps) and what its idle PSS
is made of (/proc/PID/smaps by mapping). With --supervisor, `ragbus up` itself is started once on its own (empty, its
default embedding model) to measure the supervisor process, which the stacks above do not run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import psutil
from cluster import ask
from corpus import CorpusDoc, build_corpus, describe
from ingest import progress_bar, upload_all, wait_until_done
from observability import AGENTS, OBSERVABILITY_ENV, WARMUP_QUESTION, fmt, questions_for
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.embedder.settings import EmbedderSettings  # noqa: E402
from agents.models import MINILM, MINILM_ONNX, ensure_built  # noqa: E402
from ragbus.credentials import Credentials  # noqa: E402
from ragbus.servers import free_port  # noqa: E402
from ragbus.settings import initial_index  # noqa: E402
from ragbus.stack import AgentStack, Servers  # noqa: E402
from streams.topology import EMBEDDER_QUERIES, GENERATOR, PARSER, index_durable  # noqa: E402

CONFIGS = {"torch": MINILM, "onnx": MINILM_ONNX}
NATIVE = ("nats-server", "postgres")  # neither Python nor a single process: no libraries or mappings to show
LLM = "llama-server"
TOTAL, TOTAL_NO_LLM = "total", "total without the LLM"
# onnxruntime's Python package links its runtime into the binding: libonnxruntime.so itself is not mapped
LIBRARIES = {"torch": "/libtorch_cpu.so", "onnxruntime": "/onnxruntime_pybind11_state"}
GOAL_MB = 1024  # issue 15: <= 1.0 GB PSS without the LLM
MB = 2**20

err = Console(stderr=True)


# ---- reading memory ---------------------------------------------------------------------------------------------
@dataclass
class Memory:
    rss: int = 0
    pss: int = 0
    uss: int = 0
    threads: int = 0
    processes: int = 0

    def _each(self, op: Callable[[int, int], int], other: Memory) -> Memory:
        return Memory(*(op(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)))

    def __add__(self, other: Memory) -> Memory:
        return self._each(int.__add__, other)

    def __sub__(self, other: Memory) -> Memory:
        return self._each(int.__sub__, other)

    def peak(self, other: Memory) -> Memory:
        return self._each(max, other)

    def mb(self) -> dict[str, float]:
        return {"rss_mb": self.rss / MB, "pss_mb": self.pss / MB, "uss_mb": self.uss / MB, "threads": self.threads,
                "processes": self.processes}


def measure(pid: int, tree: bool = True) -> Memory:
    """The process and, with `tree`, all its descendants. PSS splits each shared page among the processes that map
    it, so PSS adds up across processes; RSS counts a shared page in each of them (libraries, PostgreSQL's shared
    buffers, a forked parse child's inherited pages), so a sum of RSS overstates."""
    total = Memory()
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)] if tree else [root]
    except psutil.Error:
        return total
    for p in procs:
        try:
            m, threads = p.memory_full_info(), p.num_threads()
        except psutil.Error:  # ended meanwhile: a PostgreSQL backend, a parse child
            continue
        total += Memory(m.rss, m.pss, m.uss, threads, 1)
    return total


def snapshot(pids: dict[str, int]) -> dict[str, Memory]:
    """Every process (tree) by name, and the totals with and without the LLM server."""
    snap = {name: measure(pid) for name, pid in pids.items()}
    snap[TOTAL_NO_LLM] = sum((m for name, m in snap.items() if name != LLM), Memory())
    snap[TOTAL] = snap[TOTAL_NO_LLM] + snap.get(LLM, Memory())
    return snap


def libraries(pid: int) -> list[str]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return [name for name, lib in LIBRARIES.items() if lib in maps]


def pss_by_mapping(pid: int) -> dict[str, float]:
    """MB of PSS by what is mapped: torch's or onnxruntime's libraries, other code (the interpreter, extension
    modules), mapped files (the GGUF, safetensors), and anonymous memory (heap, Python objects, tensors, arenas)."""
    kinds: Counter[str] = Counter()
    kind = "anonymous"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if "-" in parts[0] and not parts[0].endswith(":"):  # a mapping's header: address perms offset dev inode path
            path = " ".join(parts[5:])
            file = path.rsplit("/", 1)[-1]
            kind = ("torch" if "/torch/" in path else "onnxruntime" if "/onnxruntime/" in path
                    else "other code" if ".so" in file or file.startswith("python")
                    else "files" if path.startswith("/") else "anonymous")
        elif parts[0] == "Pss:":
            kinds[kind] += int(parts[1]) * 1024
    return {k: v / MB for k, v in sorted(kinds.items())}


# ---- one configuration ------------------------------------------------------------------------------------------
async def ingest(client: httpx.AsyncClient, docs: list[CorpusDoc], progress: Progress,
                 timeout: float) -> tuple[int, int]:
    """Upload (8 in flight) until every document is indexed or failed: (chunks, documents not indexed)."""
    accepted, refused, _ = await upload_all(client, docs, 8, progress)
    _, _, final = await wait_until_done(client, set(accepted), time.perf_counter(), timeout, progress)
    return sum(d["chunks"] or 0 for d in final.values()), len(refused) + sum(
        d["status"] != "indexed" for d in final.values())


async def under_load(client: httpx.AsyncClient, pids: dict[str, int], docs: list[CorpusDoc], questions: list[str],
                     args: argparse.Namespace) -> dict[str, Any]:
    """Ingest `docs` while asking questions one after another; sample everything every `interval` s meanwhile."""
    peaks: dict[str, Memory] = {}
    samples = asked = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal samples
        while not done.is_set():
            for name, m in (await asyncio.to_thread(snapshot, pids)).items():
                peaks[name] = peaks.get(name, Memory()).peak(m)
            samples += 1
            try:
                await asyncio.wait_for(done.wait(), args.interval)
            except TimeoutError:
                pass

    async def keep_asking(progress: Progress) -> None:
        nonlocal asked
        task = progress.add_task("questions meanwhile", total=None)
        for question in itertools.cycle(questions):
            if done.is_set():
                return
            await ask(client, question)
            asked += 1
            progress.advance(task)

    started = time.perf_counter()
    with progress_bar() as progress:
        sampler, asker = asyncio.create_task(sample()), asyncio.create_task(keep_asking(progress))
        try:
            chunks, failed = await ingest(client, docs, progress, args.timeout)
        finally:
            done.set()
            await asyncio.gather(sampler, asker)
    return {"peaks": peaks, "chunks": chunks, "failed": failed, "questions": asked, "samples": samples,
            "seconds": time.perf_counter() - started}


async def one_config(config: str, args: argparse.Namespace, docs: list[CorpusDoc], load_docs: list[CorpusDoc],
                     workdir: Path) -> dict[str, Any]:
    model = CONFIGS[config]
    env = {"RAGBUS_EMBEDDING_MODEL": model, "RAGBUS_MODELS_DIR": str(args.models_dir),
           "RAGBUS_GENERATOR_ID": "generator-1", "RAGBUS_LOG_LEVEL": "WARNING"}
    if args.max_tokens:
        env["RAGBUS_MAX_ANSWER_TOKENS"] = str(args.max_tokens)
    with contextlib.ExitStack() as stop:  # on the way out, whatever happened: the agents, then the servers
        with err.status(f"{config}: starting nats-server, PostgreSQL, llama.cpp and the agents..."):
            servers = await Servers.start(workdir, llm=True, initial_model=model)  # the first index of the log
            stop.callback(servers.stop)
            # metrics ports as `ragbus up` gives them by default (nobody scrapes them here); no tracing, as its default
            agents = AgentStack.for_servers(servers, workdir / "logs", metrics=True, **env)
            stop.callback(agents.stop_all)
            for name in AGENTS:
                agents.start(name)
            await agents.wait_ready({PARSER: 1, index_durable(model): 1, EMBEDDER_QUERIES: 1, GENERATOR: 1})
        pids = {"nats-server": servers.nats.pid, "postgres": servers.postgres.pid,
                LLM: servers.llama.pid if servers.llama else None,
                **{name: proc.pid for name, proc in agents.procs.items()}}
        present = {name: pid for name, pid in pids.items() if pid}
        async with httpx.AsyncClient(base_url=agents.url, timeout=httpx.Timeout(args.timeout, connect=5.0)) as client:
            with progress_bar() as progress:
                chunks, failed = await ingest(client, docs, progress, args.timeout)
            with err.status(f"{config}: questions, then {args.idle_s:g} s idle..."):
                for question in [WARMUP_QUESTION, *questions_for(docs, args.questions)]:
                    await ask(client, question)
                await asyncio.sleep(args.idle_s)
                idle = snapshot(present)
                found = {name: {"libraries": libraries(pid), "pss_by_mapping_mb": pss_by_mapping(pid)}
                         for name, pid in present.items() if name not in NATIVE}
            load = await under_load(client, present, load_docs, questions_for(load_docs, len(load_docs)), args)
        agents.check_alive()
        err.print(f"{config}: measured; stopping")
    processes = {name: {"idle": idle[name].mb(), "load_peak": load["peaks"][name].mb(), **found.get(name, {})}
                 for name in idle}
    return {"embedding_model": model, "documents": len(docs), "chunks": chunks, "failed": failed + load["failed"],
            "load": {k: v for k, v in load.items() if k != "peaks"} | {"documents": len(load_docs)},
            "processes": processes}


# ---- `ragbus up` itself -----------------------------------------------------------------------------------------
async def supervisor(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start `ragbus up` (empty, on free ports), wait until every agent pulls, then measure the supervisor process
    on its own, and its whole tree (an empty system) for comparison."""
    port, nats_port = free_port(), free_port()
    model = initial_index()[0]  # what its `streams declare` will start: RAGBUS_EMBEDDING_MODEL or the default
    env = {**os.environ, "RAGBUS_NATS_PORT": str(nats_port), "RAGBUS_PG_PORT": str(free_port()),
           "RAGBUS_LLM_PORT": str(free_port()), "RAGBUS_MODELS_DIR": str(args.models_dir),
           "RAGBUS_LOG_LEVEL": "WARNING"}
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    with (workdir / "logs" / "ragbus-up.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ragbus.cli", "up", "--data-dir", str(workdir / "data"),
                                 "--port", str(port), "--metrics-port", str(free_port())],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                                start_new_session=True)
    try:
        with err.status(f"`ragbus up`: starting, then {args.idle_s:g} s idle..."):
            deadline = time.monotonic() + args.timeout
            async with httpx.AsyncClient(timeout=2.0) as client:  # /readyz first: NATS is up by then
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"ragbus up exited ({proc.returncode}): see {workdir / 'logs'}")
                    try:
                        if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError("ragbus up not ready")
                    await asyncio.sleep(0.5)
            credentials = Credentials.find(workdir / "data" / "secrets")
            assert credentials is not None
            # an AgentStack that starts nothing: only its wait for the agents to pull (their models loaded)
            view = AgentStack({"RAGBUS_NATS_URL": f"nats://127.0.0.1:{nats_port}", **credentials.agent_env("admin")},
                              workdir / "logs", port)
            await view.wait_ready({PARSER: 1, index_durable(model): 1, EMBEDDER_QUERIES: 1, GENERATOR: 1},
                                  args.timeout)
            await asyncio.sleep(args.idle_s)
            llm = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)
                   if "llama_cpp.server" in " ".join(p.cmdline())]
            tree = measure(proc.pid)
            return {"embedding_model": model, "supervisor": measure(proc.pid, tree=False).mb(), "tree": tree.mb(),
                    "tree_without_llm": (tree - sum((measure(pid) for pid in llm), Memory())).mb()}
    finally:
        with err.status("`ragbus up`: stopping..."):
            family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
            proc.send_signal(signal.SIGTERM)  # it stops its agents and servers in order
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                for p in [*family, psutil.Process(proc.pid)]:
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                proc.wait()


# ---- the report -------------------------------------------------------------------------------------------------
def comparison(result: dict[str, Any]) -> list[str]:
    runs, lines = result["configs"], []
    for name, r in runs.items():
        idle, peak = (r["processes"][TOTAL_NO_LLM][phase]["pss_mb"] for phase in ("idle", "load_peak"))
        lines.append(f"{name}: total without the LLM {idle:.0f} MB PSS idle ({_goal(idle)} the {GOAL_MB} MB goal), "
                     f"{peak:.0f} MB at the load peak ({_goal(peak)} it)")
    if {"torch", "onnx"} <= runs.keys():
        t, o = (runs[c]["processes"]["embedder"] for c in ("torch", "onnx"))
        for phase, label in (("idle", "idle"), ("load_peak", "load peak")):
            tp, op = t[phase]["pss_mb"], o[phase]["pss_mb"]
            lines.append(f"embedder PSS {label}: onnx {op:.0f} MB / torch {tp:.0f} MB = {op / tp:.2f}x "
                         f"(saves {tp - op:.0f} MB)")
    up = result.get("supervisor")
    if up:
        lines.append(f"`ragbus up` supervisor process: {up['supervisor']['rss_mb']:.0f} MB RSS, "
                     f"{up['supervisor']['pss_mb']:.0f} MB PSS (not in the totals above); the whole empty `ragbus up` "
                     f"tree ({up['embedding_model']}): {up['tree_without_llm']['pss_mb']:.0f} MB PSS without the LLM, "
                     f"{up['tree']['pss_mb']:.0f} MB with it")
    return lines


def _goal(pss_mb: float) -> str:
    return "meets" if pss_mb <= GOAL_MB else "misses"


def report(result: dict[str, Any], console: Console) -> None:
    s = result["settings"]
    console.print(f"[bold]ragbus memory[/] {result['date']} - {result['machine']['nproc']} cores; {s['documents']} "
                  f"documents + {s['load_documents']} under load ({s['corpus']}); MB = 2^20 bytes; a process with "
                  "children is its tree's sum; RSS sums count shared pages once per process, PSS sums do not")
    for config, r in result["configs"].items():
        ld = r["load"]
        table = Table(title=f"{config}: index {r['embedding_model']}; idle after {r['documents']} documents "
                      f"({r['chunks']} chunks) and {s['questions']} questions; load: {ld['documents']} documents "
                      f"({ld['chunks']} chunks) with {ld['questions']} questions meanwhile, {ld['seconds']:.0f} s, "
                      f"{ld['samples']} samples")
        for col in ("process", "idle RSS", "idle PSS", "idle USS", "peak RSS", "peak PSS", "threads", "processes",
                    "loads"):
            table.add_column(col, justify="left" if col in ("process", "loads") else "right")
        for name, p in r["processes"].items():
            idle, peak = p["idle"], p["load_peak"]
            table.add_row(name, fmt(idle["rss_mb"], ".0f"), fmt(idle["pss_mb"], ".0f"), fmt(idle["uss_mb"], ".0f"),
                          fmt(peak["rss_mb"], ".0f"), fmt(peak["pss_mb"], ".0f"), str(idle["threads"]),
                          str(idle["processes"]), ", ".join(p.get("libraries", [])))
        console.print(table)
        kinds = sorted({k for p in r["processes"].values() for k in p.get("pss_by_mapping_mb", {})})
        parts = Table(title=f"{config}: what each process's idle PSS is (MB, the main process only)")
        for col in ("process", *kinds):
            parts.add_column(col, justify="left" if col == "process" else "right")
        for name, p in r["processes"].items():
            if p.get("pss_by_mapping_mb"):
                parts.add_row(name, *(fmt(p["pss_by_mapping_mb"].get(k), ".0f") for k in kinds))
        console.print(parts)
        if r["failed"]:
            console.print(f"[red]{config}: {r['failed']} document(s) not indexed[/]")
    for line in comparison(result):
        console.print(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/memory.py",
        description="Per-process memory (RSS, PSS, USS) of the whole system, idle and under load, for each embedder "
        "configuration on a fresh stack of its own (nats-server, PostgreSQL, llama.cpp with SmolLM2 and the five "
        "agents on free ports in a temporary directory): torch = all-MiniLM-L6-v2 through sentence-transformers, "
        f"onnx = {MINILM_ONNX} on onnxruntime without torch. Idle: after --docs documents and --questions questions "
        "and --idle-s seconds; load: peaks while --load-docs more documents are ingested and questions asked.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--configs", default="torch,onnx", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--docs", type=int, default=40, help="documents of bench/corpus.py ingested before idle")
    parser.add_argument("--load-docs", type=int, default=30, help="more documents ingested under load")
    parser.add_argument("--questions", type=int, default=4, help="questions asked before idle (after a warm-up)")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds idle before the idle sample")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples under load")
    parser.add_argument("--max-tokens", type=int, default=0,
                        help="RAGBUS_MAX_ANSWER_TOKENS for the generator; 0: the generator's default")
    parser.add_argument("--models-dir", type=Path, default=EmbedderSettings().models_dir,
                        help="where the ONNX model is (built there first if missing, before anything is measured)")
    parser.add_argument("--supervisor", action=argparse.BooleanOptionalAction, default=True,
                        help="also start `ragbus up` once (empty) to measure the supervisor process itself")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for an ingest or an answer")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (servers' data, every process's log) afterwards, as "
                        "after an error")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (the report then goes to stderr)")
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not args.configs or set(args.configs) - CONFIGS.keys():
        parser.error(f"--configs takes a comma-separated list of {', '.join(CONFIGS)}")
    if min(args.docs, args.load_docs) < 1 or args.questions < 0 or args.interval <= 0:
        parser.error("--docs and --load-docs must be at least 1, --questions at least 0, --interval above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt: the same clean stop
    for name in OBSERVABILITY_ENV:  # every agent inherits this environment: no tracing, as `ragbus up`'s default
        os.environ.pop(name, None)
    workdir = Path(tempfile.mkdtemp(prefix="ragbus-bench-memory-"))
    with err.status(f"building the corpus ({args.docs} + {args.load_docs} documents)..."):
        corpus = build_corpus(args.docs + args.load_docs)
    docs, load_docs = corpus[:args.docs], corpus[args.docs:]
    result: dict[str, Any] = {
        "benchmark": "memory", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"nproc": os.cpu_count(), "python": sys.version.split()[0],
                    "memory_mb": psutil.virtual_memory().total / MB},
        "settings": {"configs": args.configs, "documents": len(docs), "load_documents": len(load_docs),
                     "corpus": describe(corpus), "questions": args.questions, "idle_s": args.idle_s,
                     "interval_s": args.interval, "max_tokens": args.max_tokens or None, "goal_mb": GOAL_MB},
        "configs": {}, "supervisor": None,
    }
    try:
        if "onnx" in args.configs:  # a first use builds it (torch, in a child process): not while measuring
            with err.status(f"{MINILM_ONNX}: building into {args.models_dir} if missing..."):
                ensure_built(MINILM_ONNX, args.models_dir)
        for config in args.configs:
            result["configs"][config] = asyncio.run(one_config(config, args, docs, load_docs, workdir / config))
        if args.supervisor:
            try:
                result["supervisor"] = asyncio.run(supervisor(args, workdir / "up"))
            except Exception as exc:  # noqa: BLE001 - an extra: the stacks' figures stand without it
                err.print(f"[red]`ragbus up` not measured:[/] {exc!r}")
                args.keep = True
    except BaseException:  # an error or an interrupt: everything is stopped; the logs say what happened
        err.print(f"work directory kept: {workdir}")
        raise
    if args.keep:
        err.print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    result["settings"]["load1_at_end"] = os.getloadavg()[0]
    result["comparison"] = comparison(result)
    if args.json:  # JSON on stdout, the report on stderr
        print(json.dumps(result, indent=2))
    report(result, Console(width=180, stderr=args.json))
    return 1 if any(r["failed"] for r in result["configs"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
