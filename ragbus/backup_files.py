"""The on-disk format of `ragbus backup DIR`, shared by the backup and the restore.

    DIR/MANIFEST.json                     what the backup holds: per stream its config, sequence range,
                                          message count and segment files (with sha256); per durable
                                          consumer its config and acknowledged position. Written last.
    DIR/SHA256SUMS                        the same checksums for `sha256sum -c` (or restic/borg checks)
    DIR/streams/<STREAM>/<first>.jsonl    one JSON object per message, in sequence order:
        {"data": "...", "headers": {...}, "seq": 17, "subject": "...", "time": "2026-12-01T20:57:55.123456789Z"}
        ("data_b64" instead of "data" for bytes that are not UTF-8, e.g. Object Store chunks)

Segments cover fixed sequence ranges (SEGMENT_SEQS each), so a message always lands in the same file; the
lines are canonical JSON (sorted keys), so the same log gives the same bytes, and a later backup into the
same DIR rewrites only the segments that changed (the last one, as the log grows): what Borg and restic
deduplicate best. A backup without a readable MANIFEST.json, or with a segment whose checksum, count or
sequence range disagrees with it, is refused as a whole.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "ragbus-backup"
VERSION = 1
MANIFEST = "MANIFEST.json"
SUMS = "SHA256SUMS"
SEGMENT_SEQS = 1024


class BackupError(Exception):
    """A backup that cannot be written, read or restored; the message says why, for a person."""


@dataclass(frozen=True)
class Message:
    seq: int
    subject: str
    time_ns: int  # when JetStream stored it (nanoseconds since the epoch)
    headers: dict[str, str]
    data: bytes

    def line(self) -> bytes:
        record: dict[str, Any] = {"seq": self.seq, "subject": self.subject, "time": format_ns(self.time_ns),
                                  "headers": dict(sorted(self.headers.items()))}
        try:
            record["data"] = self.data.decode("utf-8")
        except UnicodeDecodeError:
            record["data_b64"] = base64.b64encode(self.data).decode("ascii")
        return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> Message:
        record = json.loads(line)
        data = (base64.b64decode(record["data_b64"], validate=True) if "data_b64" in record
                else record["data"].encode("utf-8"))
        return cls(int(record["seq"]), str(record["subject"]), parse_ns(record["time"]),
                   {str(k): str(v) for k, v in record.get("headers", {}).items()}, data)


def format_ns(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"


def parse_ns(text: str) -> int:
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = int(datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])


def segment_start(seq: int) -> int:
    return (seq - 1) // SEGMENT_SEQS * SEGMENT_SEQS + 1


@dataclass
class Segment:
    file: str  # relative to DIR
    first_seq: int
    last_seq: int
    messages: int
    bytes: int
    sha256: str


@dataclass
class StreamBackup:
    name: str
    config: dict[str, Any]  # as nats-server reports it (StreamConfig.as_dict)
    first_seq: int  # the stream's state when its copy began: restored exactly, gaps included
    last_seq: int
    messages: int
    segments: list[Segment] = field(default_factory=list)


@dataclass
class ConsumerBackup:
    stream: str
    name: str
    config: dict[str, Any]
    ack_floor: int  # every message up to here was acknowledged when the backup began


@dataclass
class Manifest:
    created_at: str
    server_version: str
    streams: list[StreamBackup]
    consumers: list[ConsumerBackup]
    format: str = FORMAT
    version: int = VERSION

    def stream(self, name: str) -> StreamBackup:
        return next(s for s in self.streams if s.name == name)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def replace_if_changed(tmp: Path, target: Path) -> None:
    """Move `tmp` over `target` unless they hold the same bytes: an unchanged segment keeps its file (and
    mtime), so file-level backup tools skip it."""
    if target.exists() and target.stat().st_size == tmp.stat().st_size and sha256_of(target) == sha256_of(tmp):
        tmp.unlink()
    else:
        os.replace(tmp, target)


def write_manifest(root: Path, manifest: Manifest) -> None:
    """The manifest and SHA256SUMS, each replaced atomically; the manifest last, so that a backup cut off
    before it keeps the previous complete one (or none) and never a manifest naming missing files."""
    lines = [f"{s.sha256}  {s.file}\n" for stream in manifest.streams for s in stream.segments]
    tmp = root / f".{SUMS}.tmp"
    tmp.write_text("".join(lines))
    replace_if_changed(tmp, root / SUMS)
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(asdict(manifest), indent=1, sort_keys=True) + "\n")
    replace_if_changed(tmp, root / MANIFEST)


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if not path.is_file():
        raise BackupError(f"{root} is not a ragbus backup (no {MANIFEST}): an interrupted backup or a wrong folder")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise BackupError(f"{path} is not a ragbus backup manifest")
        if raw.get("version") != VERSION:
            raise BackupError(f"{path} has format version {raw.get('version')}; this ragbus reads {VERSION}")
        streams = [StreamBackup(**{**s, "segments": [Segment(**seg) for seg in s["segments"]]})
                   for s in raw["streams"]]
        consumers = [ConsumerBackup(**c) for c in raw["consumers"]]
        return Manifest(raw["created_at"], raw["server_version"], streams, consumers)
    except (ValueError, KeyError, TypeError) as e:
        raise BackupError(f"{path} is damaged: {e}") from None


def read_segment(root: Path, segment: Segment) -> Iterator[Message]:
    with (root / segment.file).open("rb") as f:
        for line in f:
            yield Message.parse(line)


def verify(root: Path) -> Manifest:
    """Every check that needs no server, before anything is restored: the manifest, each segment's
    checksum, and that its lines are messages in order within its range, as many as the manifest says."""
    manifest = read_manifest(root)
    for stream in manifest.streams:
        total, previous = 0, stream.first_seq - 1
        for segment in stream.segments:
            path = root / segment.file
            if not path.is_file():
                raise BackupError(f"backup incomplete: {segment.file} is missing")
            if sha256_of(path) != segment.sha256:
                raise BackupError(f"backup damaged: {segment.file} does not match its checksum")
            count = 0
            try:
                for message in read_segment(root, segment):
                    if not (previous < message.seq <= segment.last_seq and message.seq >= segment.first_seq):
                        raise BackupError(f"backup damaged: {segment.file} has message #{message.seq} out of order")
                    previous, count = message.seq, count + 1
            except (ValueError, KeyError, TypeError) as e:
                raise BackupError(f"backup damaged: {segment.file} line {count + 1} is unreadable ({e})") from None
            if count != segment.messages:
                raise BackupError(f"backup damaged: {segment.file} has {count} messages, the manifest says "
                                  f"{segment.messages}")
            total += count
        if total != stream.messages or previous > stream.last_seq:
            raise BackupError(f"backup damaged: stream {stream.name} has {total} messages in its files, the "
                              f"manifest says {stream.messages}")
    streams = {s.name for s in manifest.streams}
    for consumer in manifest.consumers:
        if consumer.stream not in streams:
            raise BackupError(f"backup damaged: consumer {consumer.name} belongs to {consumer.stream}, not in it")
    return manifest
