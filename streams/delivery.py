"""How a worker settles a JetStream message, declared once per subscriber.

    worker = Workers(router)

    @worker(PARSER, on_failure=document_failed, title=..., description=...)
    async def on_document_uploaded(event: DocumentUploaded, msg: NatsMessage, ...) -> None: ...

The rule is the same for every worker:
- the handler returned (its output events are published): ack;
- the input can never succeed (the handler raised `PoisonMessage`): the owner's failure event
  (`on_failure(event, reason)`, e.g. document.failed), a dead letter with the reason, then term;
- anything else is transient: nak with a growing delay, until the durable's max_deliver is reached, then
  the same as poison. Nothing is retried forever; nothing is dropped silently;
- a worker that died on the message every time never settles it: JetStream's max-deliveries advisory
  reaches the same agent through `<durable>-advisories`, and `on_failure` reports it all the same.
While the handler works, `settle` tells JetStream so (in_progress, every third of the durable's ack_wait):
ack_wait bounds the silence of a dead worker, not the length of the work, and can be short.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from faststream import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub

from streams.access import inbox_prefix
from streams.context import NatsBroker, NatsMessage
from streams.events import DeadLettered, Event
from streams.logs import correlated
from streams.publish import EventPublisher
from streams.topology import Durable, advisories_of

log = logging.getLogger(__name__)

OnFailure = Callable[[Any, str], Awaitable[None]]
Publish = Callable[[DeadLettered], Awaitable[object]]
GAVE_UP = ("{worker} stopped on this message {deliveries} times without finishing (crashed, killed or hung); "
           "`ragbus deadletters retry` after a fix")


class PoisonMessage(Exception):
    """Raised by a handler for input that will fail the same way on every delivery."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Delivery(Protocol):
    """The part of FastStream's NatsMessage that settling uses (a fake implements it in unit tests)."""

    async def ack(self) -> None: ...
    async def nack(self, delay: float | None = None) -> None: ...
    async def reject(self) -> None: ...
    async def in_progress(self) -> None: ...


class _Metadata(Protocol):
    num_delivered: int
    sequence: Any  # .stream


def _meta(msg: Any) -> _Metadata:
    # FastStream exposes no delivery count or stream position: the one place we read nats.py's own message
    return msg.raw_message.metadata  # type: ignore[no-any-return]


class JetStreamDelivery:
    """A message fetched with nats.py directly (a worker whose durable is only known at run time: one per
    embedding index) seen through the same settle calls as FastStream's NatsMessage."""

    def __init__(self, msg: Any) -> None:
        self.raw_message = msg

    async def ack(self) -> None:
        await self.raw_message.ack()

    async def nack(self, delay: float | None = None) -> None:
        await self.raw_message.nak(delay=delay)

    async def reject(self) -> None:
        await self.raw_message.term()

    async def in_progress(self) -> None:
        await self.raw_message.in_progress()


def retry_delay(deliveries: int) -> float:
    return min(2.0 ** deliveries, 60.0)


async def settle(msg: Any, durable: Durable, dead_letter: Publish, work: Callable[[], Awaitable[object]],
                 on_dead: Callable[[str], Awaitable[None]] | None = None) -> None:
    """Run `work` for one message and settle it by the rule above."""
    deliveries = _meta(msg).num_delivered
    try:
        async with keep_alive(msg, every=durable.ack_wait / 3):  # a live worker's message is never redelivered
            await work()
    except PoisonMessage as exc:
        await _dead_letter(msg, durable, dead_letter, exc.reason, on_dead)
        return
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if deliveries >= durable.max_deliver:
            log.error("giving up on %s after %d deliveries: %s", msg.raw_message.subject, deliveries, reason)
            await _dead_letter(msg, durable, dead_letter, f"gave up after {deliveries} attempts: {reason}", on_dead)
            return
        delay = retry_delay(deliveries)
        log.warning("transient failure on %s (delivery %d, retry in %.0fs): %s", msg.raw_message.subject,
                    deliveries, delay, reason, exc_info=exc)
        await msg.nack(delay=delay)
        return
    await msg.ack()


async def _dead_letter(msg: Any, durable: Durable, dead_letter: Publish, reason: str,
                       on_dead: Callable[[str], Awaitable[None]] | None) -> None:
    meta, raw = _meta(msg), msg.raw_message
    if on_dead is not None:
        await on_dead(reason)
    await dead_letter(DeadLettered(
        event_id=f"deadletter:{durable.stream}:{durable.name}:{meta.sequence.stream}",  # one per consumer
        original_subject=raw.subject,
        original_stream=durable.stream,
        original_seq=meta.sequence.stream,
        consumer=durable.name,
        reason=reason,
        deliveries=meta.num_delivered,
        payload=raw.data.decode(errors="replace"),
    ))
    await msg.reject()
    log.error("dead-lettered %s #%d: %s", raw.subject, meta.sequence.stream, reason)


class keep_alive:
    """Tell JetStream the message is still being worked on (`in_progress`) while a long step runs."""

    def __init__(self, msg: Delivery, every: float = 10.0) -> None:
        self.msg = msg
        self.every = every
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.msg.in_progress()
            except Exception as exc:  # noqa: BLE001 - a lost heartbeat must not kill the work itself
                log.debug("in_progress failed: %s", exc)

    async def __aenter__(self) -> keep_alive:
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def durable_subscription(durable: Durable, agent: str, fetch: int = 1) -> dict[str, Any]:
    """FastStream subscriber arguments binding to a durable declared in streams.topology (never created here).
    Deliveries come to `agent`'s own inbox prefix, the only inbox its NATS user may read (streams.access)."""
    return {
        "subject": durable.filter_subject,
        "stream": JStream(durable.stream, declare=False),
        "durable": durable.name,
        "pull_sub": PullSub(batch_size=fetch, timeout=5.0),
        "ack_policy": AckPolicy.MANUAL,  # settled by `settle`, never by FastStream's default (term on error)
        "inbox_prefix": f"{inbox_prefix(agent)}.".encode(),
    }


class Workers:
    """The durable workers of one agent, declared on its router with one settle policy."""

    def __init__(self, router: NatsRouter, agent: str) -> None:
        self.router = router
        self.agent = agent
        self.dead_letters = EventPublisher(
            router, DeadLettered,
            "A message that exhausted its deliveries or can never succeed, with the reason and the original "
            "payload; `ragbus deadletters` lists them.",
            address="deadletter.*.*")

    def __call__(self, durable: Durable, *, title: str, description: str, on_failure: OnFailure | None = None,
                 gave_up: str = GAVE_UP, fetch: int = 1) -> Callable[[Callable[..., Awaitable[None]]],
                                                                    Callable[..., Awaitable[None]]]:
        """Subscribe the decorated handler to `durable` and settle each message by the rule; `on_failure`
        publishes the owner's failure event for input that failed for good (`gave_up` words the reason when
        the worker died on it every time: {worker}, {deliveries})."""

        def declare(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
            self.router.subscriber(**durable_subscription(durable, self.agent, fetch), title=title,
                                   description=description)(self._settled(handler, durable, on_failure))
            self._gave_up(durable, _event_type(handler), on_failure, gave_up)
            return handler

        return declare

    def _settled(self, handler: Callable[..., Awaitable[None]], durable: Durable,
                 on_failure: OnFailure | None) -> Callable[..., Awaitable[None]]:
        signature = inspect.signature(handler)
        first = next(iter(signature.parameters))
        adds_msg = "msg" not in signature.parameters
        if adds_msg:  # settling needs the message even when the handler does not
            signature = signature.replace(parameters=[
                *signature.parameters.values(),
                inspect.Parameter("msg", inspect.Parameter.KEYWORD_ONLY, annotation=NatsMessage)])

        @functools.wraps(handler)
        async def settled(*args: Any, **kwargs: Any) -> None:
            bound = signature.bind(*args, **kwargs)
            msg = bound.arguments["msg"]
            if adds_msg:
                del bound.arguments["msg"]
            event = bound.arguments[first]

            async def on_dead(reason: str) -> None:
                if on_failure is not None:
                    await on_failure(event, reason)

            with correlated(getattr(event, "correlation_id", None)):
                await settle(msg, durable, self.dead_letters, lambda: handler(*bound.args, **bound.kwargs),
                             on_dead)

        settled.__signature__ = signature  # type: ignore[attr-defined]  # what FastStream injects by
        return settled

    def _gave_up(self, worker: Durable, event_type: type[Event], on_failure: OnFailure | None,
                 gave_up: str) -> None:
        """JetStream's max-deliveries advisory for `worker`: the original message (still in its stream) is
        reported through `on_failure`, and stays in DEADLETTER for `ragbus deadletters retry`."""
        durable = advisories_of(worker)

        async def on_advisory(advisory: dict[str, Any], msg: NatsMessage, broker: NatsBroker) -> None:
            original = await broker.connection.jetstream().get_msg(advisory["stream"], advisory["stream_seq"])
            deliveries = advisory.get("deliveries", 0)
            log.error("%s gave up on %s #%d after %d deliveries", worker.name, advisory["stream"],
                      advisory["stream_seq"], deliveries)
            if on_failure is not None:
                event = event_type.model_validate_json(original.data or b"{}")
                await on_failure(event, gave_up.format(worker=worker.name, deliveries=deliveries))

        async def settled(advisory: dict[str, Any], msg: NatsMessage, broker: NatsBroker) -> None:
            await settle(msg, durable, self.dead_letters, lambda: on_advisory(advisory, msg, broker))

        # FastStream names the operation (logs, AsyncAPI) after the function
        settled.__name__ = settled.__qualname__ = f"{worker.name.replace('-', '_')}_gave_up"
        self.router.subscriber(
            **durable_subscription(durable, self.agent), title=f"{worker.name} gave up",
            description=f"JetStream advisory: a {worker.stream} message reached max_deliver on `{worker.name}` "
            "without being settled; the agent reports the failure.",
        )(settled)


def _event_type(handler: Callable[..., Any]) -> type[Event]:
    """The event class of the handler's first parameter (what a gave-up advisory's original decodes to)."""
    hints = typing.get_type_hints(handler, include_extras=False)
    first = next(iter(inspect.signature(handler).parameters))
    cls = hints.get(first)
    if not (isinstance(cls, type) and issubclass(cls, Event)):
        raise TypeError(f"{handler.__qualname__}: the first parameter must be annotated with an event class")
    return cls
