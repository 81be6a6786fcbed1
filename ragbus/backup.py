"""`ragbus backup DIR`: every stream of the log and the Object Store bucket as plain files (format:
ragbus/backup_files.py), while the system runs.

A running system gives a consistent cut this way: the durable consumers' acknowledged positions are read
first, then the streams downstream before upstream (answers before the questions they answer, chunks
before the documents they come from, the document bytes last). Whatever happened after a position was read
is in the backup as the work still to do: after a restore the agents do it again, and the deterministic
event ids (Nats-Msg-Id) and idempotent projections make that safe.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from ragbus.backup_files import (
    ConsumerBackup,
    Manifest,
    Message,
    Segment,
    StreamBackup,
    replace_if_changed,
    segment_start,
    sha256_of,
    write_manifest,
)
from streams.topology import (
    ANSWERS,
    CHUNKS,
    DEADLETTER,
    DOCUMENTS,
    INDEXES,
    KEYS,
    OBJECTS,
    QUERIES,
    STREAMS,
    TOKENS,
)

log = logging.getLogger(__name__)

# downstream first; a stream added to the topology and missing here is backed up before the documents
ORDER = (DEADLETTER, TOKENS, ANSWERS, QUERIES, CHUNKS, INDEXES, KEYS)
UPSTREAM = (DOCUMENTS, OBJECTS)

Progress = Callable[[str, int, int], None]  # stream, messages copied so far, messages in it


def backup_order() -> list[str]:
    middle = [s for s in STREAMS if s not in ORDER and s not in UPSTREAM]
    return [*ORDER, *middle, *UPSTREAM]


async def backup(nc: NATS, root: Path, progress: Progress | None = None) -> Manifest:
    """Write the backup into `root` (created if missing; an earlier backup there is updated in place)."""
    js = nc.jetstream()
    root.mkdir(parents=True, exist_ok=True)
    streams = []
    for name in backup_order():
        with contextlib.suppress(NotFoundError):
            streams.append((name, await js.stream_info(name)))
    consumers = [c for name, _ in streams for c in await _consumers(js, name)]  # before any stream: see above
    manifest = Manifest(created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                        server_version=str(nc.connected_server_version), streams=[], consumers=consumers)
    kept: set[Path] = set()
    for name, _ in streams:
        stream = await _copy_stream(js, root, name, progress)
        manifest.streams.append(stream)
        kept |= {root / s.file for s in stream.segments}
    write_manifest(root, manifest)
    _remove_stale(root / "streams", kept)
    return manifest


async def _consumers(js: JetStreamContext, stream: str) -> list[ConsumerBackup]:
    """The stream's durable consumers (ephemeral ones are some reader's, gone with it)."""
    found = []
    for info in await js.consumers_info(stream):
        if not info.config.durable_name:
            continue
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        found.append(ConsumerBackup(stream, info.name, info.config.as_dict(), floor or 0))
    return sorted(found, key=lambda c: c.name)


async def _copy_stream(js: JetStreamContext, root: Path, name: str, progress: Progress | None) -> StreamBackup:
    info = await js.stream_info(name)  # the bound: messages stored after this belong to the next backup
    state = info.state
    stream = StreamBackup(name, info.config.as_dict(), state.first_seq, state.last_seq, 0)
    folder = root / "streams" / name
    folder.mkdir(parents=True, exist_ok=True)
    writer: _SegmentWriter | None = None
    async for message in _messages(js, name, state.last_seq):
        if writer is None or segment_start(message.seq) != writer.start:
            if writer is not None:
                stream.segments.append(writer.close(root))
            writer = _SegmentWriter(folder, segment_start(message.seq))
        writer.add(message)
        stream.messages += 1
        if progress is not None:
            progress(name, stream.messages, state.messages)
    if writer is not None:
        stream.segments.append(writer.close(root))
    if progress is not None:
        progress(name, stream.messages, stream.messages)
    return stream


async def _messages(js: JetStreamContext, stream: str, last_seq: int, batch: int = 256) -> AsyncIterator[Message]:
    """Every message up to `last_seq`, in order, through an ack-less ephemeral consumer the server forgets."""
    if last_seq == 0:
        return
    sub = await js.pull_subscribe("", stream=stream, config=ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0, mem_storage=True))
    try:
        while True:
            pending = (await sub.consumer_info()).num_pending or 0
            if pending == 0:
                return
            for msg in await sub.fetch(min(pending, batch), timeout=10.0):
                message = _message(msg)
                if message.seq > last_seq:
                    return
                yield message
                if message.seq == last_seq:
                    return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _message(msg: Msg) -> Message:
    tokens = Msg.Metadata._get_metadata_fields(msg.reply)
    # the stored time in nanoseconds (nats-py's metadata rounds it to microseconds)
    time_ns = int(tokens[7] if len(tokens) == 9 else tokens[Msg.Ack.Timestamp])
    return Message(msg.metadata.sequence.stream, msg.subject, time_ns, dict(msg.headers or {}), msg.data)


class _SegmentWriter:
    """One segment file, written beside its final name and moved there only if its bytes changed."""

    def __init__(self, folder: Path, start: int) -> None:
        self.start, self.path = start, folder / f"{start:012d}.jsonl"
        self.tmp = folder / f".{self.path.name}.tmp"
        self.file = self.tmp.open("wb")
        self.first = self.last = self.count = 0

    def add(self, message: Message) -> None:
        self.file.write(message.line())
        self.first = self.first or message.seq
        self.last, self.count = message.seq, self.count + 1

    def close(self, root: Path) -> Segment:
        self.file.close()
        size = self.tmp.stat().st_size
        replace_if_changed(self.tmp, self.path)
        return Segment(str(self.path.relative_to(root)), self.first, self.last, self.count, size,
                       sha256_of(self.path))


def _remove_stale(folder: Path, kept: set[Path]) -> None:
    """Segments of an earlier backup that hold nothing now (their messages were deleted or expired)."""
    for path in folder.glob("*/*.jsonl"):
        if path not in kept:
            path.unlink()
    for path in folder.glob("*/.*.tmp"):
        path.unlink()
    for sub in folder.iterdir():
        if sub.is_dir() and not any(sub.iterdir()):
            shutil.rmtree(sub)
