"""Re-index benchmark: replaying the log into a new embedding index, next to a fresh ingest of the same corpus.

    .venv/bin/python bench/reindex.py [--models all-MiniLM-L6-v2-onnx-int8 minilm-distilled-256] [--json] [--keep]

One run, on its own nats-server and PostgreSQL (free ports, a temporary directory), with the projector, the
parser, the embedder and the gateway as processes (no LLM: retrieval is what changes):

1. builds every model first (not timed), then ingests the evaluation corpus (bench/eval: 29 Debian / Git /
   APT documents) with all-MiniLM-L6-v2: the *fresh ingest* (upload -> parse -> embed -> project);
2. asks the evaluation questions through POST /search while nothing else runs: *idle* latency, and the
   quality of the MiniLM index (hit@1/3/5, MRR@5 over the 206 questions, literal and paraphrased);
3. for each model: `index.started` (the replay of every chunks.ready through an embedder of that model),
   questions asked one after the other all along (*during* latency), until the new index is complete; then
   the switch, the quality of that index on the same questions, the switch back and a drop. The first
   model is MiniLM itself under another name ("all-MiniLM-L6-v2-replay", loaded from the packaged folder):
   the same embedding work as the fresh ingest, without parsing, so the two times compare directly.

Figures are ratios against baselines of the same run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

EVAL = Path(__file__).resolve().parent / "eval"
sys.path[:0] = [str(EVAL.parent.parent), str(EVAL)]

import score as evaluation  # noqa: E402  (bench/eval/score.py)

from agents import models as catalogue  # noqa: E402
from projections.views import IndexView, create_pool  # noqa: E402
from ragbus.stack import AgentStack, Servers  # noqa: E402
from streams.connect import connect  # noqa: E402
from streams.indexing import activate_index, drop_index, judge, start_index  # noqa: E402
from streams.topology import DEFAULT_EMBEDDING_MODEL, PARSER, index_durable  # noqa: E402

REPLAY = f"{DEFAULT_EMBEDDING_MODEL}-replay"
err = Console(stderr=True)


def pct(values: list[float], q: float) -> float:
    return float(statistics.quantiles(values, n=100)[int(q) - 1]) if len(values) >= 2 else float(values[0])


class Bench:
    def __init__(self, workdir: Path, models: list[str]) -> None:
        self.workdir, self.models = workdir, models
        self.questions = json.loads((EVAL / "questions.json").read_text())
        self.servers: Servers | None = None
        self.agents: AgentStack | None = None

    async def start(self) -> None:
        models_dir = self.workdir / "models"
        for name in self.models:  # builds are not what is measured
            with err.status(f"building {name}..."):
                await asyncio.to_thread(catalogue.ensure_built, name, models_dir)
        self.servers = await Servers.start(self.workdir)
        self.agents = AgentStack.for_servers(self.servers, self.workdir / "logs", RAGBUS_MODELS_DIR=str(models_dir),
                                             RAGBUS_LOG_LEVEL="WARNING")
        for name in ("projector", "parser", "embedder", "gateway"):
            self.agents.start(name)
        with err.status("starting the agents..."):
            await self.agents.wait_ready({PARSER: 1, index_durable(DEFAULT_EMBEDDING_MODEL): 1})

    def stop(self) -> None:
        if self.agents:
            self.agents.stop_all()
        if self.servers:
            self.servers.stop()

    async def run(self) -> dict[str, Any]:
        assert self.agents is not None and self.servers is not None
        nc = await connect(self.servers.settings(), "bench-reindex")
        pool = await create_pool(self.servers.dsn())
        js, view = nc.jetstream(), IndexView(pool)
        result: dict[str, Any] = {"questions": len(self.questions)}
        try:
            async with httpx.AsyncClient(base_url=self.agents.url, timeout=120.0) as client:
                result["ingest"] = await self.ingest(client)
                result["idle"] = await self.latency(client, rounds=2)
                result["quality"] = {DEFAULT_EMBEDDING_MODEL: await self.quality(client)}
                result["reindex"] = {}
                for model in [REPLAY, *self.models]:
                    quiet = await self.reindex(client, js, view, model, questions=False)
                    result["quality"][model] = quiet.pop("quality")
                    loaded = await self.reindex(client, js, view, model, questions=True)
                    loaded.pop("quality")
                    result["reindex"][model] = {**quiet, "under_questions": loaded}
        finally:
            await pool.close()
            await nc.close()
        return result

    async def ingest(self, client: httpx.AsyncClient) -> dict[str, float]:
        files = sorted(p for p in (EVAL / "corpus").iterdir() if p.is_file())
        started = time.perf_counter()
        ids = []
        with err.status(f"fresh ingest of {len(files)} documents with {DEFAULT_EMBEDDING_MODEL}..."):
            for path in files:
                response = await client.post("/documents", files={"file": (path.name, path.read_bytes())})
                response.raise_for_status()
                ids.append(response.json()["doc_id"])
            while True:
                docs = [(await client.get(f"/documents/{d}")).json() for d in ids]
                if all(d["status"] in ("indexed", "failed") for d in docs):
                    break
                await asyncio.sleep(0.5)
        seconds = time.perf_counter() - started
        failed = [d["name"] for d in docs if d["status"] == "failed"]
        if failed:
            raise RuntimeError(f"documents failed: {failed}")
        chunks = sum(d["chunks"] for d in docs)
        return {"documents": len(docs), "chunks": chunks, "seconds": seconds, "chunks_per_s": chunks / seconds}

    async def search(self, client: httpx.AsyncClient, question: str) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        response = await client.post("/search", json={"query": question, "top_k": evaluation.TOP_K})
        response.raise_for_status()
        return (time.perf_counter() - started) * 1000, response.json()

    async def latency(self, client: httpx.AsyncClient, rounds: int = 1, until: asyncio.Event | None = None,
                      ) -> dict[str, float]:
        """POST /search one question after another (the evaluation questions in turn): `rounds` times through
        them, or until `until` is set."""
        times, server, i = [], [], 0
        while (until is None and i < rounds * len(self.questions)) or (until is not None and not until.is_set()):
            ms, body = await self.search(client, self.questions[i % len(self.questions)]["question"])
            times.append(ms)
            server.append(body["timings"].get("embed_ms", 0) + body["timings"].get("search_ms", 0))
            i += 1
        return {"n": len(times), "p50_ms": pct(times, 50), "p95_ms": pct(times, 95),
                "server_p50_ms": pct(server, 50), "server_p95_ms": pct(server, 95)}

    async def quality(self, client: httpx.AsyncClient) -> dict[str, dict[str, float]]:
        rankings, model = {}, None
        for q in self.questions:
            _ms, body = await self.search(client, q["question"])
            model = body.get("embedding_model")
            rankings[q["id"]] = [{"doc": p["name"], "text": p["text"]} for p in body["passages"]]
        result = evaluation.score(self.questions, rankings)
        result["index"] = {"model": model}  # type: ignore[dict-item]
        return result

    async def reindex(self, client: httpx.AsyncClient, js: Any, view: IndexView, model: str,
                      questions: bool) -> dict[str, Any]:
        """One re-index into `model`, alone (throughput) or with questions asked all along (their latency);
        then the switch, the quality of the new index, the switch back and the drop."""
        source = str(catalogue.packaged_model_path()) if model == REPLAY else ""
        done = asyncio.Event()
        asking = asyncio.create_task(self.latency(client, until=done)) if questions else None
        started = time.perf_counter()
        await start_index(js, model, source)
        with err.status(f"re-indexing into {model} while questions go on..."):
            while True:
                index = await view.get(model)
                if index and index["dim"] is not None and index["live_chunks"] and not index["missing"]:
                    break
                await asyncio.sleep(0.2)
        seconds = time.perf_counter() - started
        done.set()
        during = await asking if asking else None
        chunks = index["live_chunks"]
        await activate_index(js, judge(index, await view.active()))
        await self.until_answering(client, model)
        quality = await self.quality(client)
        await activate_index(js, judge(await view.get(DEFAULT_EMBEDDING_MODEL), await view.active()),
                             reason="rollback")
        await self.until_answering(client, DEFAULT_EMBEDDING_MODEL)
        await drop_index(js, model)
        return {"chunks": chunks, "seconds": seconds, "chunks_per_s": chunks / seconds, "during": during,
                "dim": index["dim"], "quality": quality}

    async def until_answering(self, client: httpx.AsyncClient, model: str) -> None:
        while (await self.search(client, "warm-up"))[1].get("embedding_model") != model:
            await asyncio.sleep(0.2)


def report(r: dict[str, Any], console: Console) -> None:
    ingest, idle = r["ingest"], r["idle"]
    table = Table(title=f"re-index by replay vs a fresh ingest ({ingest['documents']} documents, "
                  f"{ingest['chunks']} chunks; bench/eval corpus)")
    for col in ("", "seconds", "chunks/s", "vs fresh ingest", "with questions: chunks/s",
                "query p50 / p95 ms", "vs idle (p50 / p95)"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row(f"fresh ingest, {DEFAULT_EMBEDDING_MODEL}", f"{ingest['seconds']:.1f}",
                  f"{ingest['chunks_per_s']:.1f}", "1.00x", "", f"{idle['p50_ms']:.0f} / {idle['p95_ms']:.0f} (idle)",
                  "")
    for model, x in r["reindex"].items():
        loaded = x["under_questions"]
        d = loaded["during"]
        table.add_row(f"re-index into {model} ({x['dim']}-d)", f"{x['seconds']:.1f}", f"{x['chunks_per_s']:.1f}",
                      f"{x['chunks_per_s'] / ingest['chunks_per_s']:.2f}x", f"{loaded['chunks_per_s']:.1f}",
                      f"{d['p50_ms']:.0f} / {d['p95_ms']:.0f} ({d['n']} questions)",
                      f"{d['p50_ms'] / idle['p50_ms']:.2f}x / {d['p95_ms'] / idle['p95_ms']:.2f}x")
    console.print(table)
    quality = Table(title=f"retrieval quality per index, POST /search top 5, {r['questions']} questions (bench/eval)")
    for col in ("index", "kind", "hit@1", "hit@3", "hit@5", "MRR@5"):
        quality.add_column(col)
    for model, q in r["quality"].items():
        for kind in ("literal", "paraphrased", "overall"):
            v = q[kind]
            quality.add_row(model if kind == "literal" else "", kind, f"{v['hit@1']:.3f}", f"{v['hit@3']:.3f}",
                            f"{v['hit@5']:.3f}", f"{v['mrr@5']:.3f}")
    console.print(quality)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/reindex.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--models", nargs="*", default=["all-MiniLM-L6-v2-onnx-int8", "minilm-distilled-256"],
                        help="models to re-index into after the MiniLM replay (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="results as JSON on stdout (the table on stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in catalogue.CATALOG]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; the catalogue has {list(catalogue.CATALOG)}")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="ragbus-bench-reindex-"))
    bench = Bench(workdir, args.models)
    keep = args.keep
    try:
        asyncio.run(bench.start())
        result = asyncio.run(bench.run())
    except BaseException:
        keep = True
        raise
    finally:
        bench.stop()
        if keep:
            err.print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    report(result, Console(stderr=args.json, width=150))
    return 0


if __name__ == "__main__":
    sys.exit(main())
