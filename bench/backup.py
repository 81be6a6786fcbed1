"""Backup and restore of the log for the benchmark corpus, next to ingesting it, in one run.

    .venv/bin/python bench/backup.py [--docs 200] [--keep] [--json]

1. Ingests `--docs` documents of bench/corpus.py through the bus (bench/_stack.py: nats-server,
   PostgreSQL, projector, parser, embedder, gateway) until every one is indexed: the baseline.
2. `ragbus backup` of the running system (the same code, in this process), then again into the same folder
   (nothing changed: how much an incremental run rewrites), and its size.
3. Stops everything, starts an empty nats-server and PostgreSQL, `ragbus restore`s the backup, declares
   the topology and runs the projector alone until every read model has replayed the restored log, and
   checks the rebuilt chunk and vector counts against the original ones.
Ratios are against the ingest of the same run: restore + replay vs ingesting the documents again.
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

import asyncpg
import httpx
from _stack import BenchStack
from corpus import build_corpus, describe
from ingest import progress_bar, upload_all, wait_until_done
from rich.console import Console
from rich.table import Table

from ragbus.backup import backup
from ragbus.database import ensure_roles
from ragbus.restore import restore
from ragbus.stack import AgentStack, Servers, prepare
from streams.connect import connect

err = Console(stderr=True)


async def counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        vectors = await conn.fetchval("SELECT vectors_table FROM embedding_indexes WHERE state = 'active'")
        return {"documents": await conn.fetchval("SELECT count(*) FROM documents"),
                "chunks": await conn.fetchval("SELECT count(*) FROM chunks"),
                "vectors": await conn.fetchval(f"SELECT count(*) FROM {vectors}") if vectors else -1}
    finally:
        await conn.close()


def folder_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


async def replayed(dsn: str, wanted: dict[str, int], timeout: float) -> float:
    """Seconds until the rebuilt read models hold what the original ones held."""
    started = time.perf_counter()
    while True:
        try:
            if await counts(dsn) == wanted:
                return time.perf_counter() - started
        except asyncpg.UndefinedTableError:
            pass  # the vector table comes with the first vectors
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"read models not rebuilt after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    docs = build_corpus(args.docs, args.seed)
    err.print(f"corpus: {describe(docs)}")
    stack = BenchStack(workdir / "live")
    r: dict[str, Any] = {"docs": len(docs)}
    try:
        await stack.start()
        async with httpx.AsyncClient(base_url=stack.url, timeout=120.0) as client:
            with progress_bar() as progress:
                started = time.perf_counter()
                accepted, refused, _ = await upload_all(client, docs, 8, progress)
                _, r["ingest_s"], final = await wait_until_done(client, set(accepted), started, args.timeout,
                                                                progress)
        r["failed"] = len(refused) + sum(d["status"] == "failed" for d in final.values())
        r["before"] = await counts(stack.dsn)
        folder = workdir / "backup"
        assert stack.servers is not None
        nc = await connect(stack.servers.settings(), "bench-backup")
        try:
            t = time.perf_counter()
            manifest = await backup(nc, folder)
            r["backup_s"] = time.perf_counter() - t
            r["files"], r["bytes"] = folder_size(folder)
            r["messages"] = sum(s.messages for s in manifest.streams)
            mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*.jsonl")}
            t = time.perf_counter()
            await backup(nc, folder)
            r["backup_again_s"] = time.perf_counter() - t
            r["rewritten_segments"] = sum(p.stat().st_mtime_ns != m for p, m in mtimes.items())
        finally:
            await nc.close()
    finally:
        stack.stop()

    nats_server, postgres, credentials = Servers.secured(workdir / "restored")
    servers = Servers(nats_server, postgres, credentials, owned=True)
    agents: AgentStack | None = None
    try:
        nats_server.start()
        postgres.start()
        await ensure_roles(postgres.dsn, credentials)
        nc = await connect(servers.settings(), "bench-restore")
        try:
            t = time.perf_counter()
            await restore(nc, folder)
            r["restore_s"] = time.perf_counter() - t
        finally:
            await nc.close()
        await prepare(nats_server, postgres, credentials)
        agents = AgentStack.for_servers(servers, workdir / "restored" / "logs", RAGBUS_LOG_LEVEL="WARNING")
        agents.start("projector")
        r["replay_s"] = await replayed(servers.dsn(), r["before"], args.timeout)
        r["after"] = await counts(servers.dsn())
    finally:
        if agents is not None:
            agents.stop_all()
        servers.stop()
    return r


def table(r: dict[str, Any]) -> Table:
    t = Table(title=f"backup and restore, {r['docs']} documents ({r['before']['chunks']} chunks, "
                    f"{r['messages']} messages)")
    for col in ("what", "seconds", "vs ingest"):
        t.add_column(col, justify="right" if col != "what" else "left")
    ingest = r["ingest_s"]
    rows = [("ingest through the bus (baseline)", ingest),
            ("ragbus backup, running system", r["backup_s"]),
            (f"ragbus backup again, nothing new ({r['rewritten_segments']} segments rewritten)", r["backup_again_s"]),
            ("ragbus restore into an empty NATS", r["restore_s"]),
            ("projector replay of the restored log", r["replay_s"]),
            ("restore + replay", r["restore_s"] + r["replay_s"])]
    for what, seconds in rows:
        t.add_row(what, f"{seconds:.1f}", f"{seconds / ingest:.3f}x")
    t.add_row("backup size", f"{r['bytes'] / 1e6:.1f} MB in {r['files']} files", "")
    t.add_row("read models before → after", json.dumps(r["before"]) + " → " + json.dumps(r["after"]), "")
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=200, help="documents to ingest (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="corpus order and format mix (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per phase (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data, the backup)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ragbus-bench-backup-"))
    try:
        r = asyncio.run(run(args, workdir))
    except BaseException:
        err.print(f"work directory kept: {workdir}")
        raise
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        Console().print(table(r))
    return 0 if r["before"] == r["after"] and not r["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
