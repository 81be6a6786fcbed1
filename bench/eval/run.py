"""ragbus and a plain dense baseline on the evaluation set, in one run: hit@1/3/5 and MRR@5 per kind.

    .venv/bin/python bench/eval/run.py [--set debian|sphinx] [--baseline 1000/200] [--trace-dir DIR] [--json]

ragbus is measured as users get it: its own nats-server and PostgreSQL (free ports, a temporary directory),
the projector, parser, embedder and gateway as processes, the corpus uploaded with POST /documents and every
question asked through POST /search (top 5, debug on: the trace says where the answer passage ranked at
each stage). The baseline (baseline.py: LangChain-style character chunks, MiniLM, exact cosine) runs in this
process afterwards, with the stack stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE)]

import baseline  # noqa: E402
import check  # noqa: E402
import score  # noqa: E402

from ragbus.settings import initial_index  # noqa: E402
from ragbus.stack import AgentStack, Servers  # noqa: E402
from streams.topology import PARSER, index_durable  # noqa: E402

MODEL = initial_index()[0]  # the first index's model: RAGBUS_EMBEDDING_MODEL, as on a fresh system


async def ragbus_rankings(questions: list[dict[str, Any]], workdir: Path, corpus: Path = check.CORPUS,
                          ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Rankings (doc, text) and debug traces per question id, from a fresh stack with its first index (the
    default model, or RAGBUS_EMBEDDING_MODEL)."""
    servers = await Servers.start(workdir, initial_model=MODEL)
    agents = AgentStack.for_servers(servers, workdir / "logs", RAGBUS_LOG_LEVEL="WARNING")
    try:
        for name in ("projector", "parser", "embedder", "gateway"):
            agents.start(name)
        await agents.wait_ready({PARSER: 1, index_durable(MODEL): 1})
        async with httpx.AsyncClient(base_url=agents.url, timeout=120.0) as client:
            started = time.perf_counter()
            ids = []
            for path in sorted(corpus.iterdir()):
                response = await client.post("/documents", files={"file": (path.name, path.read_bytes())})
                response.raise_for_status()
                ids.append(response.json()["doc_id"])
            while True:
                docs = [(await client.get(f"/documents/{d}")).json() for d in ids]
                if all(d["status"] in ("indexed", "failed") for d in docs):
                    break
                await asyncio.sleep(0.5)
            ingest_s = time.perf_counter() - started
            rankings, traces, latencies = {}, {}, []
            for q in questions:
                response = await client.post("/search", json={"query": q["question"], "top_k": score.TOP_K,
                                                              "debug": True})
                response.raise_for_status()
                body = response.json()
                latencies.append(body["timings"]["total_ms"])
                rankings[q["id"]] = [{"doc": p["name"], "text": p["text"]} for p in body["passages"]]
                traces[q["id"]] = body.get("candidates") or []
        latencies.sort()
        info = {"documents": len(docs), "chunks": sum(d["chunks"] for d in docs), "ingest_s": round(ingest_s, 1),
                "search_p50_ms": round(latencies[len(latencies) // 2], 1),
                "failed": [d["name"] for d in docs if d["status"] == "failed"]}
        return rankings, traces, info
    finally:
        agents.stop_all()
        servers.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/eval/run.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=baseline.chunking, action="append", metavar="SIZE/OVERLAP",
                        help="the baseline's character chunking, repeatable (default: 1000/200)")
    parser.add_argument("--trace-dir", type=Path, help="write ragbus's per-question traces here")
    parser.add_argument("--json", action="store_true", help="all results as one JSON object on stdout")
    parser.add_argument("--set", choices=check.SETS, default="debian",
                        help="evaluation set: debian (Debian FAQ, Git, APT) or sphinx (Sphinx-built HTML manuals); "
                        "default %(default)s")
    args = parser.parse_args()
    corpus, questions_path = check.SETS[args.set]
    problems = check.check(questions_path, corpus)
    if problems:
        print("\n".join(["the evaluation set is inconsistent:", *problems]), file=sys.stderr)
        return 1
    questions = check.load_questions(questions_path)
    workdir = Path(tempfile.mkdtemp(prefix="ragbus-eval-"))
    try:
        print(f"ragbus on {len(questions)} questions: starting, ingesting, asking...", file=sys.stderr)
        rankings, traces, info = asyncio.run(ragbus_rankings(questions, workdir, corpus))
    except BaseException:
        print(f"work directory kept: {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    results: dict[str, Any] = {"ragbus": {"metrics": score.score(questions, rankings), **info}}
    if args.trace_dir:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
        (args.trace_dir / "ragbus-trace.json").write_text(json.dumps(
            [{**row, "candidates": traces[row["id"]]} for row in score.trace(questions, rankings)], indent=1,
            ensure_ascii=False) + "\n")
    print("dense baseline (in this process)...", file=sys.stderr)
    model = baseline.load_model(baseline.model_path(), threads=None)
    for size, overlap in args.baseline or [(1000, 200)]:
        metrics, _rows, timings = baseline.run(model, questions, size, overlap, score.TOP_K, corpus)
        results[f"baseline {size}/{overlap}"] = {"metrics": metrics, **timings}
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        r = results["ragbus"]
        print(score.format_table(r["metrics"], f"ragbus ({MODEL}): {r['documents']} documents, "
                                 f"{r['chunks']} chunks, ingest {r['ingest_s']} s, POST /search p50 "
                                 f"{r['search_p50_ms']} ms"))
        for name, r in results.items():
            if name != "ragbus":
                print("\n" + score.format_table(r["metrics"], f"{name} (dense MiniLM, character chunks): "
                                                f"{r['chunks']} chunks"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
