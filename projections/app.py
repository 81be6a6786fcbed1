"""`ragbus agent projector`: the process that keeps every read model up to date, and `ragbus replay`."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from projections.monitor import run_monitor
from projections.projector import Projector
from projections.registry import PROJECTIONS
from projections.schema import drop_projection, migrate
from projections.views import create_pool
from streams.connect import connect
from streams.logs import configure_logging
from streams.settings import BusSettings, DatabaseSettings
from streams.tracing import configure_tracing

log = logging.getLogger("ragbus.projector")


class ProjectorSettings(BusSettings, DatabaseSettings):
    # nats-server's monitoring endpoint (http://host:8222): JetStream's storage limit for the metrics, when the
    # account has none of its own (projections.monitor)
    nats_monitor_url: str = ""


async def run_projector(settings: ProjectorSettings | None = None) -> None:
    settings = settings or ProjectorSettings()
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing("ragbus-projector")
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    nc = await connect(settings, "ragbus-projector", max_reconnect_attempts=-1)
    pool = await create_pool(settings.database_url)
    async with pool.acquire() as conn:
        await migrate(conn)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("projector running: %s", ", ".join(PROJECTIONS))
    try:
        # Each batch is one transaction, so stopping between batches loses nothing.
        projector = Projector(list(PROJECTIONS.values()), nc, pool)
        # the system's gauges (lag of every durable, dead letters, projection lag, documents, storage)
        monitor = [run_monitor(nc, pool, projector, stop, settings.nats_monitor_url)] if settings.metrics_port else []
        await asyncio.gather(projector.run(stop), *monitor)
    finally:
        await pool.close()
        await nc.drain()
        log.info("projector stopped")


async def replay(names: list[str], settings: ProjectorSettings | None = None) -> dict[str, int]:
    """Drop the named projections' tables and rebuild them from the streams; returns row counts."""
    settings = settings or ProjectorSettings()
    nc = await connect(settings, "ragbus-replay")
    pool = await create_pool(settings.database_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            for name in names:
                await drop_projection(conn, name)
        await Projector([PROJECTIONS[n] for n in names], nc, pool).catch_up()
        counts = {}
        for name in names:
            for table in _tables(name):
                counts[table] = await pool.fetchval(f"SELECT count(*) FROM {table}")
        return counts
    finally:
        await pool.close()
        await nc.drain()


def _tables(name: str) -> tuple[str, ...]:
    from projections.schema import TABLES

    return TABLES[name]
