"""What every FastStream agent shares: a broker bound to pre-declared durables, logging, metrics, and
waiting at start for `ragbus streams declare` to have run (agents never declare streams themselves)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import nats
from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.specification import AsyncAPI
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError
from prometheus_client import start_http_server

from streams.delivery import settle
from streams.events import DeadLettered, Event
from streams.publish import headers_for
from streams.settings import BusSettings
from streams.topology import Durable, advisories_of

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("faststream").setLevel(logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG)


def make_broker(settings: BusSettings, name: str) -> NatsBroker:
    configure_logging(settings.log_level)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    return NatsBroker(
        settings.nats_url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=30.0,  # SIGTERM: stop fetching, finish the messages in hand
    )


def durable_subscription(durable: Durable, batch_size: int = 1) -> dict:
    """Keyword arguments that bind a FastStream subscriber to a durable declared in streams.topology."""
    return {
        "subject": durable.filter_subject,
        "stream": JStream(durable.stream, declare=False),
        "durable": durable.name,
        "pull_sub": PullSub(batch_size=batch_size, timeout=5.0),
    }


async def require_durables(nats_url: str, *workers: Durable) -> None:
    """At agent start: wait until `ragbus streams declare` has made the agent's durables (and the durables
    through which it hears of messages it gave up on), on a connection of its own."""
    nc = await nats.connect(nats_url)
    try:
        await wait_for_durables(nc.jetstream(), workers + tuple(advisories_of(d) for d in workers))
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


def make_app(broker: NatsBroker, title: str, description: str) -> FastStream:
    """The FastStream app; its AsyncAPI document (`ragbus asyncapi`) is generated from the subscribers."""
    from streams import __version__

    return FastStream(broker, specification=AsyncAPI(broker, title=title, description=description,
                                                     version=__version__))


class EventPublisher:
    """A FastStream publisher declared with the event's schema, so the AsyncAPI document shows exactly what
    the agent publishes; every publish carries the ragbus headers and the deterministic Nats-Msg-Id.

    `stream=None` publishes on core NATS into a stream-captured subject: stored, deduplicated, but without
    waiting for an ack (answer tokens)."""

    def __init__(self, broker: NatsBroker, cls: type[Event], stream: str | None, description: str,
                 address: str | None = None) -> None:
        self.cls = cls
        self.publisher = broker.publisher(
            address or f"{cls.SUBJECT}.*",
            stream=JStream(stream, declare=False) if stream else None,
            title=f"{cls.SUBJECT} ({cls.__name__})",
            description=description,
            schema=cls,
        )

    async def __call__(self, event: Event) -> PubAck | None:
        assert isinstance(event, self.cls), f"{type(event).__name__} is not {self.cls.__name__}"
        ack = await self.publisher.publish(  # type: ignore[func-returns-value]  # a PubAck when stream is set
            event, subject=event.subject(), headers=headers_for(event), correlation_id=event.correlation_id
        )
        return cast("PubAck | None", ack)


def dead_letter_publisher(broker: NatsBroker) -> EventPublisher:
    return EventPublisher(broker, DeadLettered, "DEADLETTER",
                          "A message that exhausted its deliveries or can never succeed, with the reason and "
                          "the original payload; `ragbus status` lists them.",
                          address="deadletter.*.*")


Report = Callable[[bytes, dict[str, Any]], Awaitable[None]]


def report_gave_up(broker: NatsBroker, worker: Durable, report: Report, dead_letter: EventPublisher) -> None:
    """Subscribe to JetStream's max-deliveries advisories for `worker`'s durable and call
    `report(original_payload, advisory)` for each, so a message a worker died on every time still ends in a
    failure event the user can see (and stays in DEADLETTER for `ragbus deadletters retry`)."""
    durable = advisories_of(worker)

    async def on_advisory(advisory: dict[str, Any], msg: NatsMessage) -> None:
        async def work() -> None:
            original = await broker.connection.jetstream().get_msg(advisory["stream"], advisory["stream_seq"])
            log.error("%s gave up on %s #%d after %d deliveries", worker.name, advisory["stream"],
                      advisory["stream_seq"], advisory.get("deliveries", 0))
            await report(original.data or b"", advisory)

        await settle(msg.raw_message, durable, dead_letter, work)

    broker.subscriber(
        **durable_subscription(durable), ack_policy=AckPolicy.MANUAL,
        title=f"{worker.name} gave up",
        description=f"JetStream advisory: a {worker.stream} message reached max_deliver on `{worker.name}` "
        "without being settled; the agent reports the failure.",
    )(on_advisory)
