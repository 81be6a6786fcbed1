"""Admission control: how much work the gateway takes on, so a client hears "busy" at once instead of waiting
into a timeout, and work nobody waits for any more is stopped.

- Rate limits per client (its API key where keys are on, else its address): a token bucket per kind of work;
  over the limit, HTTP answers 429 with Retry-After and the websocket a `busy` frame.
- Questions in flight, gateway-wide: at most `max_questions_in_flight`, and fewer when the answers measured
  lately (or, before any, an assumed time each) say the newest would wait longer than half the
  ask timeout.
- A question whose client went away is cancelled (query.cancelled) unless someone resumes it within a grace
  period: the generator stops instead of answering nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

log = logging.getLogger("ragbus.gateway")
REFUSED = Counter("ragbus_admission_refused_total", "Requests refused by admission control", ["why"])
IN_FLIGHT = Gauge("ragbus_questions_in_flight", "Questions this gateway is waiting for an answer to")


class Busy(Exception):
    """Refused now; `retry_after` seconds is when it is worth trying again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = max(1, math.ceil(retry_after))


class TokenBucket:
    """`rate` per minute per key, bursts up to `burst`; buckets of idle keys are forgotten."""

    def __init__(self, rate_per_minute: float, burst: int, what: str) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.what = what
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            REFUSED.labels(f"rate:{self.what}").inc()
            raise Busy(f"too many {self.what} from you: at most {self.rate * 60:g} a minute", (1 - tokens) / self.rate)
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # bounded memory: drop buckets that are full again
            full = [k for k, (t, a) in self._buckets.items() if t + (now - a) * self.rate >= self.burst]
            for k in full:
                del self._buckets[k]


@dataclass
class _Finished:
    at: float
    seconds: float


def _busy_seconds(finished: list[_Finished]) -> float:
    """The length of the union of the answers' [start, end] intervals."""
    busy, covered = 0.0, float("-inf")
    for start, end in sorted((f.at - f.seconds, f.at) for f in finished):
        busy += max(0.0, end - max(start, covered))  # the part not already counted
        covered = max(covered, end)
    return busy


class Admission:
    def __init__(self, questions_per_minute: float, uploads_per_minute: float, max_in_flight: int,
                 ask_timeout: float, abandon_grace: float, assumed_answer_s: float = 10.0) -> None:
        self.questions = TokenBucket(questions_per_minute, max(3, int(questions_per_minute // 4)), "questions")
        self.uploads = TokenBucket(uploads_per_minute, max(5, int(uploads_per_minute // 4)), "uploads")
        self.max_in_flight = max_in_flight
        self.ask_timeout = ask_timeout
        self.abandon_grace = abandon_grace
        self.assumed_answer_s = assumed_answer_s  # an answer's time until real answers say otherwise
        self.in_flight = 0
        self._finished: deque[_Finished] = deque(maxlen=200)
        self._cancels: dict[str, asyncio.Task[None]] = {}

    # ---- questions in flight ------------------------------------------------------------------------------
    def expected_wait(self) -> float:
        """Seconds the next question would wait for its answer: from the answers of the last minutes, or,
        before there are any, as if one generator took `assumed_answer_s` per answer."""
        now = time.monotonic()
        recent = [f for f in self._finished if now - f.at < 300]
        if len(recent) < 3:
            return (self.in_flight + 1) * self.assumed_answer_s
        # answers per second, all generators together, over the time some answer was being made: idle minutes
        # between questions are no slowness (counting them refused a burst after a quiet spell as "too busy")
        throughput = len(recent) / max(_busy_seconds(recent), 1e-3)
        return (self.in_flight + 1) / throughput

    @contextlib.contextmanager
    def question(self) -> Iterator[None]:
        """Hold a place for one question until its answer (or error) has been relayed."""
        if self.in_flight >= self.max_in_flight:
            REFUSED.labels("in_flight").inc()
            raise Busy(f"the system is answering {self.in_flight} questions already; try again shortly", 5)
        wait = self.expected_wait()
        if wait > self.ask_timeout / 2:
            REFUSED.labels("expected_wait").inc()
            raise Busy(f"too busy: a new question would wait about {wait:.0f} s for its answer", wait / 4)
        self.in_flight += 1
        IN_FLIGHT.set(self.in_flight)
        started = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= 1
            IN_FLIGHT.set(self.in_flight)
            self._finished.append(_Finished(time.monotonic(), time.monotonic() - started))

    # ---- abandoned questions ------------------------------------------------------------------------------
    def abandoned(self, query_id: str, cancel: Callable[[str], Awaitable[None]]) -> None:
        """The client of `query_id` went away mid-answer: cancel it after the grace period, unless resumed."""
        async def later() -> None:
            await asyncio.sleep(self.abandon_grace)
            self._cancels.pop(query_id, None)
            log.info("question %s abandoned by its client: cancelling it", query_id)
            with contextlib.suppress(Exception):
                await cancel(query_id)

        self.resumed(query_id)
        self._cancels[query_id] = asyncio.create_task(later())

    def resumed(self, query_id: str) -> None:
        task = self._cancels.pop(query_id, None)
        if task is not None:
            task.cancel()
