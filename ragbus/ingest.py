"""`ragbus ingest PATH...`: upload files and folders through the gateway with a progress bar, wait until
each document is indexed or failed, print a summary, exit non-zero if any failed."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragbus.settings import ClientSettings

console = Console(stderr=True)
FINAL = ("indexed", "failed", "superseded", "deleted")  # nothing more will happen to these


@dataclass
class Outcome:
    path: Path
    name: str = ""  # the document's name: its path relative to the folder it was found in
    doc_id: str | None = None
    status: str = "pending"
    duplicate: bool = False
    detail: str = ""


def gateway_url() -> str:
    return ClientSettings().gateway_url.rstrip("/")


def collect(paths: list[str]) -> list[tuple[Path, str]]:
    """(file, document name) pairs: a file given by itself is named after itself; the files of a folder by
    their path below that folder (faq/index.html and howto/index.html are two documents, not two versions
    of one)."""
    files: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend((p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*"))
                         if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            files.append((path, path.name))
        else:
            console.print(f"[yellow]skipping {raw}: not a file or folder[/yellow]")
    return files


async def upload(client: httpx.AsyncClient, path: Path, name: str, strategy: str | None) -> Outcome:
    outcome = Outcome(path, name)
    params = {"chunk_strategy": strategy} if strategy else None
    try:
        with path.open("rb") as fh:
            response = await client.post("/documents", files={"file": (name, fh)}, params=params)
    except httpx.HTTPError as exc:
        outcome.status, outcome.detail = "failed", f"upload error: {exc}"
        return outcome
    if response.status_code == 202:
        body = response.json()
        outcome.doc_id, outcome.duplicate = body["doc_id"], body["duplicate"]
        outcome.status = body["status"]
    else:
        outcome.status = "refused"
        try:
            outcome.detail = f"{response.status_code}: {response.json().get('detail')}"
        except ValueError:
            outcome.detail = f"{response.status_code}: {response.text[:200]}"
    return outcome


async def wait_indexed(client: httpx.AsyncClient, outcomes: list[Outcome], timeout: float,
                       progress: Progress) -> None:
    # Every one is looked at again once all are uploaded, duplicates too: a later upload in the same run may
    # have replaced one that was indexed when it was accepted.
    waiting = [o for o in outcomes if o.doc_id]
    task = progress.add_task("indexing", total=len(waiting))
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for o in list(waiting):
            response = await client.get(f"/documents/{o.doc_id}")
            if response.status_code == 200:
                doc = response.json()
                o.status, o.detail = doc["status"], doc.get("error") or f"{doc['chunks']} chunks"
                if o.status == "superseded":
                    o.detail = "replaced by a later upload under the same name (its chunks left the index)"
                if o.status in FINAL:
                    waiting.remove(o)
                    progress.advance(task)
        if waiting:
            await asyncio.sleep(0.5)
    for o in waiting:
        o.detail = f"still {o.status} after {timeout:.0f}s"


async def ingest(args: argparse.Namespace) -> list[Outcome]:
    files = collect(args.paths)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    limits = asyncio.Semaphore(max(1, args.concurrency))
    async with httpx.AsyncClient(base_url=gateway_url(), timeout=120.0, headers=ClientSettings().headers()) as client:
        await may_upload(client)
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("uploading", total=len(files))

            async def one(path: Path, name: str) -> Outcome:
                async with limits:
                    outcome = await upload(client, path, name, args.chunk_strategy)
                progress.advance(task)
                return outcome

            outcomes = await asyncio.gather(*(one(p, n) for p, n in files))
            if not args.no_wait:
                await wait_indexed(client, outcomes, args.timeout, progress)
    return outcomes


class NotAllowed(Exception):
    pass


async def may_upload(client: httpx.AsyncClient) -> None:
    """Fail once, before any file, when the gateway would refuse every upload for want of a key."""
    who = (await client.get("/auth")).json()
    if who.get("keys_required") and not who.get("authenticated"):
        raise NotAllowed("this gateway requires an API key: set RAGBUS_API_KEY (`ragbus keys create --scope write`)")
    if "write" not in who.get("scopes", ["write"]):
        raise NotAllowed(f"the key {who.get('name')!r} may not upload (it lacks the 'write' scope)")


def summary(outcomes: list[Outcome]) -> Table:
    table = Table(title="ingest summary")
    for col in ("file", "named", "doc_id", "status", "detail"):
        table.add_column(col)
    colors = {"indexed": "green", "failed": "red", "refused": "red"}
    for o in outcomes:
        status = o.status + (" (duplicate)" if o.duplicate else "")
        color = colors.get(o.status, "yellow")
        table.add_row(str(o.path), o.name, o.doc_id or "-", f"[{color}]{status}[/{color}]", o.detail)
    return table


def run_ingest(args: argparse.Namespace) -> int:
    try:
        outcomes = asyncio.run(ingest(args))
    except httpx.ConnectError:
        console.print(f"[red]cannot reach the gateway at {gateway_url()}: is `ragbus up` running?[/red]")
        return 2
    except NotAllowed as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    console.print(summary(outcomes))
    bad = [o for o in outcomes if o.status in ("failed", "refused", "superseded", "deleted")]
    unfinished = [o for o in outcomes if o.status not in ("indexed", *FINAL, "refused") and not args.no_wait]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("indexed", "failed", "refused")}
    console.print(f"{len(outcomes)} files: {counts['indexed']} indexed, "
                  f"{sum(o.duplicate for o in outcomes)} duplicate, {counts['failed']} failed, "
                  f"{counts['refused']} refused")
    return 1 if bad or unfinished else 0
