"""What every FastStream agent shares: a broker bound to pre-declared durables, its app, and the process
entry point. Building an app has no side effects (`ragbus asyncapi` builds them all in one process);
logging and the metrics server start in `run_agent`, when an agent really runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import start_http_server

from streams.connect import broker_options, connect
from streams.logs import broker_logging, configure_logging
from streams.metrics import metrics_middlewares
from streams.settings import BusSettings
from streams.topology import Durable, advisories_of
from streams.tracing import configure_tracing, tracing_middlewares

log = logging.getLogger(__name__)


def make_broker(settings: BusSettings, name: str) -> NatsBroker:
    return NatsBroker(
        settings.servers,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=30.0,  # SIGTERM: stop fetching, finish the messages in hand
        # FastStream's Prometheus middleware only where something can scrape it: a process without
        # RAGBUS_METRICS_PORT serves no metrics (the gateway, with /metrics on its HTTP port, has its own broker)
        middlewares=(*tracing_middlewares(name), *(metrics_middlewares(name) if settings.metrics_port else ())),
        **broker_logging(),
        **broker_options(settings),
    )


def make_app(broker: NatsBroker, title: str, description: str, lifespan: Callable[..., Any] | None = None,
             ) -> FastStream:
    """The FastStream app; its AsyncAPI document (`ragbus asyncapi`) is generated from the subscribers."""
    from streams import __version__

    return FastStream(broker, lifespan=lifespan,
                      specification=AsyncAPI(broker, title=title, description=description, version=__version__))


def run_agent(create_app: Callable[[Any], FastStream], settings: BusSettings, service: str = "ragbus-agent",
              ) -> None:
    """The process entry point of one agent (`ragbus agent NAME`, one k3s pod): logs, metrics, traces, run until
    SIGTERM/SIGINT, on which FastStream stops fetching and finishes the messages in hand."""
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing(service)  # before the app: its broker takes the tracing middleware only if on
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    asyncio.run(create_app(settings).run())


async def require_durables(settings: BusSettings, *workers: Durable, also: tuple[Durable, ...] = ()) -> None:
    """At agent start: wait until `ragbus streams declare` has made the agent's durables (and the durables
    through which it hears of messages it gave up on, and `also`), on a connection of its own."""
    nc = await connect(settings, "ragbus-startup")
    try:
        await wait_for_durables(nc.jetstream(), workers + tuple(advisories_of(d) for d in workers) + also)
    finally:
        await nc.close()


async def wait_for_durables(js: JetStreamContext, durables: tuple[Durable, ...], timeout: float = 120.0) -> None:
    """Bounded wait for the declared topology, with a message that says what to run."""
    deadline = time.monotonic() + timeout
    for durable in durables:
        while True:
            try:
                await js.consumer_info(durable.stream, durable.name)
                break
            except NotFoundError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"consumer {durable.stream}/{durable.name} does not exist: run `ragbus streams declare`"
                    ) from None
                log.warning("waiting for %s/%s (run `ragbus streams declare`)", durable.stream, durable.name)
                await asyncio.sleep(2.0)
