"""New versions of documents: only their changed chunks go through the model (the embedder's cache of chunk
vectors, agents/embedder/cache.py), against the same uploads with the cache off, in one run.

    .venv/bin/python bench/versions.py [--docs 60] [--json]

Two stacks, one after the other, each on its own servers and free ports (nats-server, PostgreSQL + pgvector,
projector, parser, embedder, gateway; no LLM): the first with the default cache, the second with
`RAGBUS_EMBEDDING_CACHE_CHUNKS=0`. Each ingests the corpus (first versions: every chunk is new), then a second
version of every document under the same name and format: one paragraph of its middle section has a sentence
more (PDF, DOCX, HTML, Markdown and text, from bench/corpus.py). A phase's time runs from its first upload to
its last document indexed; `model texts` is the sum of `embedded_texts` over the phase's chunks.embedded events
(distinct texts the model ran), and the embedder's CPU seconds are its own and its children's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from _stack import BenchStack
from corpus import CorpusDoc, build_versions, describe
from ingest import progress_bar, upload_all, wait_until_done
from rich.console import Console
from rich.table import Table

from streams.connect import connect
from streams.events import ChunksEmbedded
from streams.reading import read_events
from streams.topology import CHUNKS

err = Console(stderr=True)


@dataclass
class Phase:
    seconds: float
    chunks: int
    model_texts: int
    embedder_cpu_s: float
    failed: int


async def _phase(stack: BenchStack, client: httpx.AsyncClient, docs: list[CorpusDoc], timeout: float) -> Phase:
    before = stack.cpu_seconds()
    with progress_bar() as progress:
        started = time.perf_counter()
        accepted, refused, _ = await upload_all(client, docs, 8, progress)
        _, seconds, final = await wait_until_done(client, set(accepted), started, timeout, progress)
    cpu = stack.cpu_seconds().get("embedder", 0.0) - before.get("embedder", 0.0)
    assert stack.agents is not None
    nc = await connect(stack.agents.settings(), "bench-versions")
    try:
        events = [e async for _s, e in read_events(nc.jetstream(), CHUNKS, ["chunks.embedded.>"])
                  if isinstance(e, ChunksEmbedded) and e.doc_id in accepted]
    finally:
        await nc.close()
    return Phase(seconds, sum(len(e.chunks) for e in events), sum(e.embedded_texts for e in events), cpu,
                 len(refused) + sum(d["status"] != "indexed" for d in final.values()))


async def _run(stack: BenchStack, first: list[CorpusDoc], second: list[CorpusDoc],
               timeout: float) -> dict[str, Phase]:
    await stack.start()
    async with httpx.AsyncClient(base_url=stack.url, timeout=120.0) as client:
        return {"first versions": await _phase(stack, client, first, timeout),
                "second versions": await _phase(stack, client, second, timeout)}


def measure(first: list[CorpusDoc], second: list[CorpusDoc], cache: int, timeout: float, keep: bool,
            ) -> dict[str, Phase]:
    workdir = Path(tempfile.mkdtemp(prefix="ragbus-bench-versions-"))
    stack = BenchStack(workdir, env={"RAGBUS_EMBEDDING_CACHE_CHUNKS": str(cache)})
    err.print(f"cache {cache or 'off'}: the ingest path in {workdir}")
    try:
        return asyncio.run(_run(stack, first, second, timeout))
    finally:
        stack.stop()
        if keep:
            err.print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=60, help="documents, each uploaded twice (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="corpus order and format mix (default: %(default)s)")
    p.add_argument("--cache", type=int, default=4096, help="RAGBUS_EMBEDDING_CACHE_CHUNKS of the first stack "
                   "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=1800.0, help="per phase (default: %(default)s s)")
    p.add_argument("--keep", action="store_true", help="keep the work directories (logs, data)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = p.parse_args(argv)
    first, second = build_versions(args.docs, args.seed)
    err.print(f"corpus: {describe(first)}; second versions: one paragraph more in each document's middle section")
    runs = {"cache on": measure(first, second, args.cache, args.timeout, args.keep),
            "cache off": measure(first, second, 0, args.timeout, args.keep)}
    on, off = runs["cache on"]["second versions"], runs["cache off"]["second versions"]
    result: dict[str, Any] = {
        "docs": args.docs, "cache_chunks": args.cache,
        "runs": {k: {phase: asdict(v) for phase, v in r.items()} for k, r in runs.items()},
        "second_versions_time_on_over_off": on.seconds / off.seconds if off.seconds else None,
        "second_versions_model_texts_on_over_off": on.model_texts / off.model_texts if off.model_texts else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        table = Table(title=f"{args.docs} documents, then a second version of each (same run)")
        for col in ("stack", "phase", "indexed in", "chunks", "model texts", "embedder CPU s", "failed"):
            table.add_column(col)
        for name, r in runs.items():
            for phase, v in r.items():
                table.add_row(name, phase, f"{v.seconds:.1f} s", str(v.chunks), str(v.model_texts),
                              f"{v.embedder_cpu_s:.1f}", str(v.failed))
        Console().print(table)
        Console().print(f"second versions, cache on / off: time {result['second_versions_time_on_over_off']:.2f}x, "
                        f"model texts {result['second_versions_model_texts_on_over_off']:.3f}x")
    return 1 if any(v.failed for r in runs.values() for v in r.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
