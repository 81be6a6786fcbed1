"""The system's gauges, from the one process that sees all of it: the projector polls JetStream and the read
models every few seconds and its /metrics serves the last snapshot. So a durable's lag is known while the
agent that owns it is down, and it is counted once, not by every replica.

What it asks NATS is read-only (stream, consumer and account info: streams.access grants the projector just
that). JetStream's storage comes from the account info; its limit from the account's, or else from the
server's own (`/jsz` on the monitoring port, RAGBUS_NATS_MONITOR_URL), which nats-server derives from the
volume's free space when it starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from projections import positions
from projections.projector import Projector
from projections.views import DOCUMENT_STATUSES, documents_by_status
from streams.topology import DEADLETTER, DURABLES, MAX_DELIVERIES_ADVISORY, STREAMS, Durable, index_durable

log = logging.getLogger(__name__)
POLL_SECONDS = 5.0
DEAD_LETTER_KINDS = {"deadletter": "gave_up", MAX_DELIVERIES_ADVISORY: "max_deliveries"}
RETRIED = "deadletter.retried"

_HELP = {
    "ragbus_consumer_pending": ("Messages of a durable not yet delivered (its lag)", ("stream", "durable")),
    "ragbus_consumer_ack_pending": ("Messages of a durable delivered and not yet settled", ("stream", "durable")),
    "ragbus_consumer_redelivered": ("Messages of a durable delivered more than once, not yet settled",
                                    ("stream", "durable")),
    "ragbus_consumer_waiting_pulls": ("Pull requests waiting on a durable (idle workers)", ("stream", "durable")),
    "ragbus_dead_letters": ("Messages in DEADLETTER, by the durable that gave up and how (gave_up: the handler "
                            "dead-lettered it; max_deliveries: JetStream's advisory, it was never settled)",
                            ("stream", "consumer", "kind")),
    "ragbus_dead_letters_retried": ("Dead letters republished by `ragbus deadletters retry`", ()),
    "ragbus_stream_messages": ("Messages in a stream", ("stream",)),
    "ragbus_stream_bytes": ("Bytes in a stream", ("stream",)),
    "ragbus_stream_last_seq": ("A stream's last sequence number (its tail)", ("stream",)),
    "ragbus_projection_position": ("A projection's stored position in a stream (PostgreSQL)", ("projection", "stream")),
    "ragbus_projection_lag": ("Messages of a stream past what a projection has seen (stream tail - position)",
                              ("projection", "stream")),
    "ragbus_documents": ("Documents by status (the documents read model; indexed is derived)", ("status",)),
    "ragbus_jetstream_storage_used_bytes": ("JetStream file storage used by the account", ()),
    "ragbus_jetstream_storage_reserved_bytes": ("JetStream file storage reserved by streams' max_bytes", ()),
    "ragbus_jetstream_storage_limit_bytes": ("JetStream file storage limit (the account's, else the server's)", ()),
    "ragbus_monitor_last_poll_timestamp_seconds": ("When the projector last read the system's state", ()),
}


@dataclass
class Snapshot:
    samples: dict[str, list[tuple[tuple[str, ...], float]]] = field(default_factory=dict)

    def add(self, name: str, value: float, *labels: str) -> None:
        assert name in _HELP and len(labels) == len(_HELP[name][1]), name
        self.samples.setdefault(name, []).append((labels, float(value)))


class SystemMetrics(Collector):
    """Serves the last snapshot: a durable or projection that is gone leaves no stale series behind."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        for name, (doc, labels) in _HELP.items():
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            for values, value in self.snapshot.samples.get(name, []):
                family.add_metric(list(values), value)
            yield family


async def read_state(nc: NATS, pool: asyncpg.Pool, projector: Projector, monitor_url: str = "") -> Snapshot:
    js = nc.jetstream()
    snap = Snapshot()
    async with pool.acquire() as conn:
        stored = {(r["projection"], r["stream"]): int(r["last_seq"]) for r in await positions.all_positions(conn)}
        models = [r["model"] for r in await conn.fetch("SELECT model FROM embedding_indexes WHERE state <> 'dropped'")]
        by_status = await documents_by_status(conn)
    for status in sorted(set(DOCUMENT_STATUSES) | set(by_status)):
        snap.add("ragbus_documents", by_status.get(status, 0), status)

    tails: dict[str, int] = {}
    for name in STREAMS:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            continue
        tails[name] = info.state.last_seq
        snap.add("ragbus_stream_messages", info.state.messages, name)
        snap.add("ragbus_stream_bytes", info.state.bytes, name)
        snap.add("ragbus_stream_last_seq", info.state.last_seq, name)

    durables: tuple[Durable, ...] = DURABLES + tuple(index_durable(m) for m in models)
    for d in durables:
        try:
            c = await js.consumer_info(d.stream, d.name)
        except NotFoundError:
            continue
        for metric, value in (("pending", c.num_pending), ("ack_pending", c.num_ack_pending),
                              ("redelivered", c.num_redelivered), ("waiting_pulls", c.num_waiting)):
            snap.add(f"ragbus_consumer_{metric}", value or 0, d.stream, d.name)

    await _dead_letters(nc, snap, durables)

    readers = {(r.projection.name, r.source.stream): r for r in projector.readers}
    for (projection, stream), reader in sorted(readers.items()):
        position = stored.get((projection, stream), 0)
        snap.add("ragbus_projection_position", position, projection, stream)
        if stream in tails:
            # what the reader saw counts too: a filtered source's last event can be far below the tail
            seen = max(position, reader.caught_up_to)
            snap.add("ragbus_projection_lag", max(tails[stream] - seen, 0), projection, stream)

    await _storage(nc, snap, monitor_url)
    snap.add("ragbus_monitor_last_poll_timestamp_seconds", time.time())
    return snap


async def _dead_letters(nc: NATS, snap: Snapshot, durables: Iterable[Durable]) -> None:
    """Per-subject counts of DEADLETTER: `deadletter.<stream>.<consumer>`, the advisory's
    `<advisory>.<stream>.<consumer>`, `deadletter.retried.<seq>`. Every durable shows 0 until it has some."""
    try:
        info = await nc.jetstream().stream_info(DEADLETTER, subjects_filter=">")
    except NotFoundError:
        return
    counts = {(d.stream, d.name, kind): 0 for d in durables for kind in DEAD_LETTER_KINDS.values()}
    retried = 0
    for subject, n in (info.state.subjects or {}).items():
        if subject.startswith(f"{RETRIED}."):
            retried += n
            continue
        for prefix, kind in DEAD_LETTER_KINDS.items():
            rest = subject.removeprefix(f"{prefix}.")
            if rest != subject and rest.count(".") == 1:
                stream, consumer = rest.split(".")
                counts[stream, consumer, kind] = counts.get((stream, consumer, kind), 0) + n
    for (stream, consumer, kind), n in sorted(counts.items()):
        snap.add("ragbus_dead_letters", n, stream, consumer, kind)
    snap.add("ragbus_dead_letters_retried", retried)


async def _storage(nc: NATS, snap: Snapshot, monitor_url: str) -> None:
    account = json.loads((await nc.request("$JS.API.INFO", b"", timeout=5.0)).data)
    snap.add("ragbus_jetstream_storage_used_bytes", account.get("storage", 0))
    snap.add("ragbus_jetstream_storage_reserved_bytes", account.get("reserved_storage", 0))
    limit = (account.get("limits") or {}).get("max_storage", -1)
    if limit <= 0 and monitor_url:
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                limit = (await client.get(f"{monitor_url.rstrip('/')}/jsz")).json()["config"]["max_storage"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("no JetStream storage limit from %s/jsz: %r", monitor_url, exc)
    if limit > 0:
        snap.add("ragbus_jetstream_storage_limit_bytes", limit)


async def run_monitor(nc: NATS, pool: asyncpg.Pool, projector: Projector, stop: asyncio.Event,
                      monitor_url: str = "", every: float = POLL_SECONDS) -> None:
    """Poll until `stop`; a failed poll keeps the last snapshot (its timestamp shows it is old) and is logged."""
    metrics = SystemMetrics()
    REGISTRY.register(metrics)
    try:
        while not stop.is_set():
            try:
                metrics.snapshot = await read_state(nc, pool, projector, monitor_url)
            except Exception as exc:  # noqa: BLE001 - NATS or PostgreSQL away: the projector itself goes on
                log.warning("system metrics not updated: %r", exc)
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass
    finally:
        REGISTRY.unregister(metrics)
