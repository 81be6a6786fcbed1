"""How a worker settles a JetStream message: ack, nak with backoff, or term + dead letter.

Agents use FastStream with `AckPolicy.MANUAL` and call `settle` so that the rule is the same everywhere:
- the work succeeded (its output events are published): ack;
- the input can never succeed (`PoisonMessage`): dead-letter it with the reason, then term;
- anything else is treated as transient: nak with a growing delay, until the durable's max_deliver is
  reached, then dead-letter and term. Nothing is retried forever; nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from streams.events import DeadLettered
from streams.topology import Durable

log = logging.getLogger(__name__)

OnDead = Callable[[str], Awaitable[None]]
Publish = Callable[[DeadLettered], Awaitable[object]]


class PoisonMessage(Exception):
    """Raised by a handler for input that will fail the same way on every delivery."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def retry_delay(deliveries: int) -> float:
    return min(2.0 ** deliveries, 60.0)


async def settle(
    msg: Msg,
    durable: Durable,
    dead_letter: Publish,
    work: Callable[[], Awaitable[None]],
    on_dead: OnDead | None = None,
) -> None:
    """Run `work` for one message and settle it. `on_dead(reason)` lets the agent publish a domain event
    (e.g. document.failed) before the message is dead-lettered, so the user sees a status, not silence."""
    deliveries = msg.metadata.num_delivered
    try:
        await work()
    except PoisonMessage as exc:
        await _dead_letter(msg, durable, dead_letter, exc.reason, on_dead)
        return
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if deliveries >= durable.max_deliver:
            log.error("giving up on %s after %d deliveries: %s", msg.subject, deliveries, reason)
            await _dead_letter(msg, durable, dead_letter, f"gave up after {deliveries} attempts: {reason}", on_dead)
            return
        delay = retry_delay(deliveries)
        log.warning("transient failure on %s (delivery %d, retry in %.0fs): %s", msg.subject,
                    deliveries, delay, reason, exc_info=exc)
        await msg.nak(delay=delay)
        return
    await msg.ack()


async def _dead_letter(msg: Msg, durable: Durable, dead_letter: Publish, reason: str,
                       on_dead: OnDead | None) -> None:
    meta = msg.metadata
    if on_dead is not None:
        await on_dead(reason)
    event = DeadLettered(
        event_id=f"deadletter:{durable.stream}:{meta.sequence.stream}",
        correlation_id=f"{durable.stream}-{meta.sequence.stream}",
        original_subject=msg.subject,
        original_stream=durable.stream,
        original_seq=meta.sequence.stream,
        consumer=durable.name,
        reason=reason,
        deliveries=meta.num_delivered,
        payload=msg.data.decode(errors="replace"),
    )
    await dead_letter(event)
    await msg.term()
    log.error("dead-lettered %s #%d: %s", msg.subject, meta.sequence.stream, reason)


class keep_alive:
    """Tell JetStream the message is still being worked on (`in_progress`) while a long step runs, so
    ack_wait bounds the silence of a dead worker, not the length of the work."""

    def __init__(self, msg: Msg, every: float = 10.0) -> None:
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
