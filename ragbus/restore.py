"""`ragbus restore DIR`: a backup (ragbus/backup_files.py) into an empty NATS, exactly: every message at
its original stream sequence (dead letters and re-index positions refer to sequences), with its subject,
headers and payload, then the durable consumers at their acknowledged positions. The projections are not in
the backup: the projector rebuilds them by replay when the system starts.

All or nothing: the whole backup is verified before the server is touched, every stored sequence is
checked against the backup's, and a restore that fails half-way deletes what it created.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, PubAck, StreamConfig
from nats.js.errors import APIError, NotFoundError

from ragbus.backup_files import BackupError, Manifest, StreamBackup, read_segment, verify

log = logging.getLogger(__name__)

FILLER = "Ragbus-Restore-Filler"  # header of the placeholders that keep a deleted message's sequence free
WINDOW = 2000  # publishes in flight
NO_MESSAGE = (10043, 10057)  # JetStream's error codes for a sequence with no message
RESTORE_WINDOW = 0.1  # seconds: nats-server's smallest duplicates window

Progress = Callable[[str, int, int], None]


async def restore(nc: NATS, root: Path, replicas: int | None = None, progress: Progress | None = None) -> Manifest:
    manifest = verify(root)
    js = nc.jetstream()
    await _require_empty(js, manifest)
    created: list[str] = []
    try:
        for stream in manifest.streams:
            created.append(stream.name)
            await _restore_stream(js, root, stream, replicas, progress)
        for consumer in manifest.consumers:
            config = ConsumerConfig.from_response(dict(consumer.config))
            if consumer.ack_floor > 0:  # go on after what was acknowledged; the rest is delivered again
                config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, consumer.ack_floor + 1
                config.opt_start_time = None
            if replicas is not None:
                config.num_replicas = None  # the stream's
            await js.add_consumer(consumer.stream, config)
    except BaseException:
        for name in created:
            try:
                await js.delete_stream(name)
            except Exception as e:  # noqa: BLE001 - the original error is the one to report
                log.warning("could not remove the half-restored stream %s: %s", name, e)
        raise
    return manifest


async def _require_empty(js: JetStreamContext, manifest: Manifest) -> None:
    existing = []
    for stream in manifest.streams:
        try:
            info = await js.stream_info(stream.name)
        except NotFoundError:
            continue
        existing.append(f"{stream.name} ({info.state.messages} messages)")
    if existing:
        raise BackupError("restore needs an empty NATS, but these streams exist: " + ", ".join(existing)
                          + ". Restore into a fresh server (a new data directory), before `ragbus up` or "
                          "`ragbus streams declare` run against it.")


async def _restore_stream(js: JetStreamContext, root: Path, stream: StreamBackup, replicas: int | None,
                          progress: Progress | None) -> None:
    wanted = StreamConfig.from_response(dict(stream.config))
    if replicas is not None:
        wanted.num_replicas = replicas
    if stream.first_seq > 1:
        wanted.first_seq = stream.first_seq
    # The shortest deduplication window while restoring: two messages with one Nats-Msg-Id, stored further
    # apart than the window, are both in the log and must both come back (the placer waits the window out
    # between them). The real window is set again at the end.
    await js.add_stream(wanted.evolve(duplicate_window=RESTORE_WINDOW))
    placer = _Placer(js, stream)
    done = 0
    for segment in stream.segments:
        for message in read_segment(root, segment):
            await placer.put(message.seq, message.subject, message.data,
                             {k: v for k, v in message.headers.items() if not k.startswith("Nats-Expected-")})
            done += 1
            if progress is not None:
                progress(stream.name, done, stream.messages)
    await placer.finish()
    await js.update_stream(wanted)
    info = await js.stream_info(stream.name)
    got = (info.state.messages, info.state.last_seq, info.state.first_seq if stream.messages else stream.first_seq)
    if got != (stream.messages, stream.last_seq, stream.first_seq):
        raise BackupError(f"stream {stream.name} restored as {got[0]} messages #{got[2]}..#{got[1]}, the backup "
                          f"has {stream.messages} messages #{stream.first_seq}..#{stream.last_seq}")
    if progress is not None:
        progress(stream.name, stream.messages, stream.messages)


class _Placer:
    """Publishes in order, pipelined, and checks that each message got its original sequence. A sequence
    the backup lacks (its message was deleted) gets a placeholder, deleted again at the end: JetStream
    cannot be told a sequence, only keep counting."""

    def __init__(self, js: JetStreamContext, stream: StreamBackup) -> None:
        self.js, self.stream = js, stream
        self.next = max(stream.first_seq, 1)
        self.fillers: list[int] = []
        self.acks: list[tuple[int, asyncio.Future[PubAck]]] = []
        self.sent_ids: dict[str, float] = {}  # Nats-Msg-Id -> when sent
        # a subject of the stream that no message uses (a real one might be rolled up, or limited)
        pattern = (stream.config.get("subjects") or [""])[0]
        self.filler_subject = ".".join("_ragbus_restore" if t in ("*", ">") else t for t in pattern.split("."))

    async def put(self, seq: int, subject: str, data: bytes, headers: dict[str, str]) -> None:
        while self.next < seq:
            await self._filler()
        if (msg_id := headers.get("Nats-Msg-Id")) is not None:
            loop = asyncio.get_running_loop()
            if msg_id in self.sent_ids and loop.time() - self.sent_ids[msg_id] < 2 * RESTORE_WINDOW:
                await self._check()  # its first copy is stored; wait until the server forgot its id
                await asyncio.sleep(2 * RESTORE_WINDOW)
            self.sent_ids[msg_id] = loop.time()
        await self._send(seq, subject, data, headers)

    async def _filler(self) -> None:
        self.fillers.append(self.next)
        await self._send(self.next, self.filler_subject, b"", {FILLER: "1"})

    async def _send(self, seq: int, subject: str, data: bytes, headers: dict[str, str]) -> None:
        future = await self.js.publish_async(subject, data, headers=headers or None)
        self.acks.append((seq, future))
        self.next = seq + 1
        if len(self.acks) >= WINDOW:
            await self._check()

    async def _check(self) -> None:
        for seq, future in self.acks:
            ack = await asyncio.wait_for(future, 30.0)
            if ack.seq != seq or ack.stream != self.stream.name:
                raise BackupError(f"stream {self.stream.name}: message #{seq} was stored as "
                                  f"{ack.stream} #{ack.seq}; is something else publishing to it?")
        self.acks.clear()

    async def finish(self) -> None:
        while self.next <= self.stream.last_seq:  # messages deleted at the end of the stream
            await self._filler()
        await self._check()
        for seq in self.fillers:
            try:
                await self.js.delete_msg(self.stream.name, seq)
            except APIError as e:
                if e.err_code not in NO_MESSAGE:
                    raise  # else it is gone already
