"""`ragbus backup DIR` and `ragbus restore DIR`, with a progress bar per stream."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ragbus.backup_files import BackupError
from ragbus.settings import UpSettings, admin_login
from streams.connect import connect
from streams.settings import BusSettings

console = Console(stderr=True)

BACKUP_HELP = "write every stream and the document bytes to plain files, while the system runs"
BACKUP_DESCRIPTION = """\
Writes the whole event log (every stream: messages with headers and original timestamps) and the Object
Store bucket of uploaded documents into DIR as plain files: JSON lines per fixed range of sequences, a
MANIFEST.json and SHA256SUMS. The same log gives the same bytes, and backing up into the same DIR again
rewrites only what changed, so Borg or restic store each backup as a small increment. Safe while the
system runs. The read models (PostgreSQL) are not backed up: they are rebuilt from the log.
"""
RESTORE_HELP = "restore a backup into an empty NATS; the projections then rebuild by replay"
RESTORE_DESCRIPTION = """\
Verifies the whole backup (manifest, checksums, every message in order) and refuses a damaged or partial
one before touching the server; then recreates every stream with each message at its original sequence,
the document bytes, and the durable consumers at their acknowledged positions. It needs an empty NATS:
with RAGBUS_NATS_URL unset it starts the embedded nats-server of --data-dir itself (which must not have
streams yet: move its nats/ folder away first). Then start the system (`ragbus up`): the projector
rebuilds every read model from the restored log (on a PostgreSQL that kept old read models, run
`ragbus replay` too).
"""


def add_arguments(backup: argparse.ArgumentParser, restore: argparse.ArgumentParser) -> None:
    backup.add_argument("dir", help="the backup folder (created; an earlier backup in it is updated)")
    restore.add_argument("dir", help="a folder written by `ragbus backup`")
    restore.add_argument("--replicas", type=int, default=None,
                         help="replicas of the restored streams (default: as backed up)")
    restore.add_argument("--data-dir", default=str(UpSettings().data_dir),
                         help="the embedded system's data directory, used when RAGBUS_NATS_URL is unset "
                         "(default: %(default)s)")


def run_backup(args: argparse.Namespace) -> int:
    return _run(_backup(Path(args.dir)))


def run_restore(args: argparse.Namespace) -> int:
    return _run(_restore(Path(args.dir), args.replicas, Path(args.data_dir).expanduser()))


def _run(work: object) -> int:
    try:
        asyncio.run(work)  # type: ignore[arg-type]
    except BackupError as e:
        console.print(f"[red]{e}[/red]")
        return 1
    return 0


async def _backup(root: Path) -> None:
    from ragbus.backup import backup

    started = time.monotonic()
    nc = await connect(admin_login(BusSettings()), "ragbus-backup")
    try:
        with _bars() as progress:
            manifest = await backup(nc, root, progress)
    finally:
        await nc.close()
    messages = sum(s.messages for s in manifest.streams)
    size = sum(seg.bytes for s in manifest.streams for seg in s.segments)
    console.print(f"backed up {messages} messages of {len(manifest.streams)} streams and "
                  f"{len(manifest.consumers)} consumers into {root} ({size / 1e6:.1f} MB) in "
                  f"{time.monotonic() - started:.1f} s")


async def _restore(root: Path, replicas: int | None, data_dir: Path) -> None:
    from ragbus.backup_files import verify
    from ragbus.restore import restore

    started = time.monotonic()
    verify(root)  # before starting anything
    async with _nats(data_dir) as settings:
        nc = await connect(settings, "ragbus-restore")
        try:
            with _bars() as progress:
                manifest = await restore(nc, root, replicas, progress)
        finally:
            await nc.close()
    messages = sum(s.messages for s in manifest.streams)
    console.print(f"restored {messages} messages of {len(manifest.streams)} streams and "
                  f"{len(manifest.consumers)} consumers in {time.monotonic() - started:.1f} s; "
                  "now start the system (`ragbus up`): the projections rebuild from the log")


@contextlib.asynccontextmanager
async def _nats(data_dir: Path) -> AsyncIterator[BusSettings]:
    """The configured NATS; with none configured, the embedded nats-server of `data_dir`, for the restore."""
    if UpSettings().nats_url:
        yield admin_login(BusSettings())
        return
    from ragbus.credentials import Credentials
    from ragbus.servers import NatsServer

    data_dir.mkdir(parents=True, exist_ok=True)
    credentials = Credentials.ensure(data_dir / "secrets")
    server = NatsServer(data_dir / "nats", port=UpSettings().nats_port, users=credentials.nats_users())
    try:
        await asyncio.to_thread(server.start)
    except Exception as e:  # noqa: BLE001 - said to the user, with what to do
        raise BackupError(f"could not start the embedded nats-server in {data_dir / 'nats'} ({e}); is "
                          "`ragbus up` still running? Stop it first.") from None
    try:
        yield BusSettings(nats_url=server.url, nats_user="admin", nats_password=credentials.nats["admin"])
    finally:
        server.stop()


@contextlib.contextmanager
def _bars() -> Iterator[Callable[[str, int, int], None]]:
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not sys.stderr.isatty()) as bars:
        tasks: dict[str, TaskID] = {}

        def update(stream: str, done: int, total: int) -> None:
            if stream not in tasks:
                tasks[stream] = bars.add_task(stream, total=total)
            bars.update(tasks[stream], completed=done, total=max(total, done))

        yield update
