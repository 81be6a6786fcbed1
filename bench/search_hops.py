"""Retrieval through the bus, warm and cold: where a question's time goes before any prompt exists.

    .venv/bin/python bench/search_hops.py [--questions 20] [--json]

1. In this process, the embedder's model (the default index's, loaded as the embedder loads it) embeds one
   question at a time: back to back, then after the thread slept 20 ms or 200 ms before each question. The
   figure for a question that comes after a pause is what a chat system sees; back to back is what an in-process
   benchmark of the same code sees.
2. The whole stack as bench/chat.py starts it (nats-server, PostgreSQL, llama.cpp, every agent), a few license
   texts ingested, then POST /search (retrieval only) for each question: back to back, after an LLM generation
   each (what a chat answer does to the caches), after 2 s idle each, and back to back again. Per question:
   the request to query.asked stored (gateway), query.asked to context.built stored (embedder: embedding and
   search as its timings say, the rest is delivery, decoding and publishing), context.built to the response.
   JetStream's own timestamps of the stored events; same machine, same clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from chat import QUESTIONS, ChatStack, ask_direct, err, ingest, stored_at

from agents.embedder.service import Embedder
from agents.embedder.settings import EmbedderSettings
from streams.connect import connect
from streams.topology import DEFAULT_EMBEDDING_MODEL, QUERIES

LLM_PROMPT = [{"role": "user", "content": "Tell me about lighthouses."}]


def in_process(questions: list[str]) -> dict[str, float]:
    settings = EmbedderSettings()
    model = Embedder.load(DEFAULT_EMBEDDING_MODEL, "", settings.models_dir, threads=0, spin=False)
    model.embed(["warm-up"])
    result = {}
    for label, pause in (("back_to_back", 0.0), ("after_20ms", 0.02), ("after_200ms", 0.2)):
        times = []
        for q in questions:
            time.sleep(pause)
            started = time.perf_counter()
            model.embed([q])
            times.append((time.perf_counter() - started) * 1000)
        result[label] = statistics.median(times)
    return result


async def through_the_bus(questions: list[str]) -> dict[str, dict[str, float]]:
    os.environ["RAGBUS_QUESTIONS_PER_MINUTE"] = "0"  # the gateway's per-client limit would refuse the burst
    stack = ChatStack(Path(tempfile.mkdtemp(prefix="ragbus-bench-hops-")), 2048, 128, None, 320)
    with err.status("starting nats-server, PostgreSQL, llama.cpp and the agents..."):
        await stack.start()
    result: dict[str, dict[str, float]] = {}
    try:
        async with (httpx.AsyncClient(base_url=stack.url, timeout=60) as client,
                    httpx.AsyncClient(base_url=stack.llama.url, timeout=300) as llm):
            await ingest(client, stack, ["Apache-2.0", "MPL-2.0", "GPL-3", "BSD", "Artistic"])
            assert stack.servers is not None
            nc = await connect(stack.servers.settings(), "bench-search-hops")
            js = nc.jetstream()
            for n, mode in enumerate(("back_to_back", "after_llm", "after_2s_idle", "back_to_back_again")):
                rows = []
                for i, q in enumerate(questions):
                    if mode == "after_llm":
                        await ask_direct(llm, stack.llama.model, LLM_PROMPT, 48)
                    elif mode == "after_2s_idle":
                        await asyncio.sleep(2)
                    sent = time.time()
                    response = await client.post("/search", json={"query": f"{q} ({n}.{i})"})
                    received = time.time()
                    response.raise_for_status()
                    body = response.json()
                    asked = stored_at(await js.get_last_msg(QUERIES, f"query.asked.{body['query_id']}"))
                    built = stored_at(await js.get_last_msg(QUERIES, f"context.built.{body['query_id']}"))
                    t = body["timings"]
                    rows.append({"gateway": (asked - sent) * 1000, "embedder": (built - asked) * 1000,
                                 "embed": t["embed_ms"], "search": t["search_ms"],
                                 "embedder_rest": (built - asked) * 1000 - t["embed_ms"] - t["search_ms"],
                                 "response": (received - built) * 1000, "total": (received - sent) * 1000})
                result[mode] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            await nc.close()
    finally:
        stack.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/search_hops.py", description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=20, help="questions per condition (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    questions = [QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" #{i}")
                 for i in range(args.questions)]
    result: dict[str, Any] = {"questions": args.questions, "embedding_in_process_ms": in_process(questions),
                              "search_through_the_bus_ms": asyncio.run(through_the_bus(questions))}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    e = result["embedding_in_process_ms"]
    print(f"question embedding in this process, p50: back to back {e['back_to_back']:.2f} ms, after a 20 ms pause "
          f"{e['after_20ms']:.2f} ms, after a 200 ms pause {e['after_200ms']:.2f} ms")
    print("POST /search through the bus, p50 per question (ms):")
    heads = ("gateway", 8), ("embedder", 9), ("embed", 6), ("search", 7), ("rest", 5), ("response", 9), ("total", 6)
    print(" " * 20 + "".join(f" {h:>{w}}" for h, w in heads))
    for mode, r in result["search_through_the_bus_ms"].items():
        print(f"{mode:>20} {r['gateway']:8.1f} {r['embedder']:9.1f} {r['embed']:6.1f} {r['search']:7.1f} "
              f"{r['embedder_rest']:5.1f} {r['response']:9.1f} {r['total']:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
