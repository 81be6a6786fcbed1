"""Operator commands: `ragbus streams declare`, `ragbus status`, `ragbus replay`."""

from __future__ import annotations

import time

from nats.js.api import StreamInfo
from nats.js.errors import NotFoundError
from rich.console import Console
from rich.table import Table

from projections import positions
from projections.app import ProjectorSettings, replay
from projections.registry import PROJECTIONS
from projections.schema import migrate
from projections.views import IndexView, create_pool
from ragbus.deadletters import list_dead_letters, retry
from ragbus.reindex import show_indexes
from ragbus.settings import admin_login, initial_index
from streams.connect import connect
from streams.declare import declare_streams
from streams.indexes import read_index_state
from streams.settings import BusSettings
from streams.topology import DURABLES, OBJECTS, STREAMS, index_durable

console = Console()


async def declare(replicas: int | None = None) -> int:
    settings = admin_login(BusSettings())
    nc = await connect(settings, "ragbus-declare")
    try:
        for line in await declare_streams(nc.jetstream(), *initial_index(), replicas=replicas):
            console.print(line)
    finally:
        await nc.close()
    return 0


async def status() -> int:
    settings = admin_login(ProjectorSettings())
    nc = await connect(settings, "ragbus-status")
    js = nc.jetstream()
    tails: dict[str, int] = {}
    try:
        streams = Table(title="Streams")
        for col in ("stream", "subjects", "messages", "bytes", "last seq", "copies"):
            streams.add_column(col)
        missing_peers: set[str] = set()
        for name in (*STREAMS, OBJECTS):
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                streams.add_row(name, "-", "[red]missing: run `ragbus streams declare`[/red]", "", "", "")
                continue
            tails[name] = info.state.last_seq
            copies, lost = _copies(info)
            missing_peers |= lost
            streams.add_row(name, ", ".join(info.config.subjects or []), str(info.state.messages),
                            _size(info.state.bytes), str(info.state.last_seq), copies)
        console.print(streams)
        if missing_peers:
            console.print(f"[yellow]cluster degraded: {', '.join(sorted(missing_peers))} offline[/yellow] "
                          "(each stream works while most of its copies are; bring the server back)")

        consumers = Table(title="Work queues (durable pull consumers)")
        for col in ("consumer", "pending", "in flight", "redelivered", "waiting pulls"):
            consumers.add_column(col)
        index_durables = tuple(index_durable(i.model) for i in (await read_index_state(js)).live())
        for d in DURABLES + index_durables:
            try:
                c = await js.consumer_info(d.stream, d.name)
            except NotFoundError:
                consumers.add_row(f"{d.stream}/{d.name}", "[red]missing[/red]", "", "", "")
                continue
            consumers.add_row(f"{d.stream}/{d.name}", str(c.num_pending), str(c.num_ack_pending),
                              str(c.num_redelivered), str(c.num_waiting))
        console.print(consumers)
        pending = [d for d in await list_dead_letters(js) if not d.retried]
        if pending:
            console.print(f"[yellow]{len(pending)} dead letter(s) not retried[/yellow] (`ragbus deadletters`):")
            for d in pending[-5:]:
                console.print(f"  #{d.seq} {d.stream}/{d.consumer}: {d.reason}")
    finally:
        await nc.close()

    pool = await create_pool(settings.database_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            rows = await positions.all_positions(conn)
        table = Table(title="Projections (position in each stream)")
        for col in ("projection", "stream", "position", "stream tail", "updated"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["projection"], r["stream"], str(r["last_seq"]), str(tails.get(r["stream"], "?")),
                          r["updated_at"].strftime("%Y-%m-%d %H:%M:%S"))
        console.print(table)
        show_indexes(await IndexView(pool).list(), console)
        counts = {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in ("documents", "chunks", "answers")}
        console.print("rows: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    finally:
        await pool.close()
    return 0


SILENT_PEER = 5.0  # seconds without a word from a stream's copy: its server is gone (the server's own
# `offline` flag comes much later); healthy peers answer the leader's heartbeats every second or so


def _copies(info: StreamInfo) -> tuple[str, set[str]]:
    """'R3: n1 (leader), n2, n3 offline' and the peers that are offline; 'R1' on a single server."""
    replicas = info.config.num_replicas or 1
    cluster = info.cluster
    if cluster is None or replicas == 1:
        return f"R{replicas}", set()
    peers = [f"{cluster.leader} (leader)" if cluster.leader else "[red]no leader[/red]"]
    lost: set[str] = set() if cluster.leader else {"the leader"}
    for peer in cluster.replicas or []:
        silent = (peer.active or 0) / 1e9  # nanoseconds since the leader last heard from it
        # active 0 and not current: this leader never heard from the copy (a follower forgets every peer but
        # its leader, so a leader elected after a server died has no time for it at all)
        unheard = not peer.active and not peer.current
        if peer.offline or silent > SILENT_PEER or unheard:
            since = f" ({silent:.0f} s)" if silent and not peer.offline else ""
            peers.append(f"[red]{peer.name} offline[/red]{since}")
            lost.add(str(peer.name))
        elif not peer.current:  # briefly behind is normal under load
            peers.append(f"[yellow]{peer.name} catching up[/yellow]")
        else:
            peers.append(str(peer.name))
    return f"R{replicas}: " + ", ".join(peers), lost


async def dead_letters(action: str, seqs: list[int]) -> int:
    settings = admin_login(BusSettings())
    nc = await connect(settings, "ragbus-deadletters")
    js = nc.jetstream()
    try:
        letters = await list_dead_letters(js)
        if action == "list":
            table = Table(title="Dead letters")
            for col in ("#", "when", "stream #seq", "consumer", "deliveries", "reason", "retried"):
                table.add_column(col)
            for d in letters:
                table.add_row(str(d.seq), d.at.strftime("%Y-%m-%d %H:%M:%S") if d.at else "-",
                              f"{d.stream} #{d.original_seq}", d.consumer, str(d.deliveries), d.reason,
                              "yes" if d.retried else "")
            console.print(table if letters else "no dead letters")
            return 0
        chosen = [d for d in letters if (d.seq in seqs if seqs else not d.retried)]
        missing = set(seqs) - {d.seq for d in letters}
        for seq in sorted(missing):
            console.print(f"[red]#{seq} is not a dead letter[/red]")
        for d in chosen:
            subject = await retry(js, d)
            console.print(f"retried #{d.seq}: republished {d.stream} #{d.original_seq} to {subject}")
        if not chosen:
            console.print("nothing to retry")
        return 1 if missing else 0
    finally:
        await nc.close()


async def replay_projections(names: list[str]) -> int:
    chosen = list(PROJECTIONS) if "all" in names else list(dict.fromkeys(names))
    started = time.perf_counter()
    with console.status(f"replaying {', '.join(chosen)} from the log..."):
        counts = await replay(chosen, admin_login(ProjectorSettings()))
    console.print(f"replayed {', '.join(chosen)} in {time.perf_counter() - started:.1f}s: "
                  + ", ".join(f"{t} {n} rows" for t, n in counts.items()))
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TB"
