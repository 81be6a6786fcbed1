"""Admission control's rules on their own (no servers): rate limits, the in-flight bound, the predicted wait,
and cancelling abandoned questions unless resumed."""

from __future__ import annotations

import asyncio
import time

import pytest

from agents.gateway.admission import Admission, Busy, TokenBucket, _Finished


def test_a_client_over_its_rate_is_told_when_to_come_back_and_others_are_not_affected():
    bucket = TokenBucket(rate_per_minute=60, burst=3, what="questions")
    for _ in range(3):
        bucket.take("a")
    with pytest.raises(Busy) as refused:
        bucket.take("a")
    assert 1 <= refused.value.retry_after <= 2 and "60 a minute" in refused.value.message
    bucket.take("b")  # per client


def test_a_rate_of_zero_means_no_limit():
    bucket = TokenBucket(0, 1, "uploads")
    for _ in range(1000):
        bucket.take("a")


def test_questions_in_flight_are_bounded_and_released_when_answered():
    admission = Admission(0, 0, max_in_flight=2, ask_timeout=1000, abandon_grace=1)
    with admission.question(), admission.question():
        assert admission.in_flight == 2
        with pytest.raises(Busy), admission.question():
            pass
    assert admission.in_flight == 0
    with admission.question():
        assert admission.in_flight == 1


def test_a_question_that_would_wait_too_long_by_the_recent_answers_is_refused():
    admission = Admission(0, 0, max_in_flight=100, ask_timeout=100, abandon_grace=1)
    assert admission.expected_wait() == 10.0  # no history: as if one generator took 10 s an answer
    admission.in_flight = 5
    with pytest.raises(Busy), admission.question():  # 6 x 10 s > half of 100 s
        pass
    admission.in_flight = 0
    for _ in range(3):
        with admission.question():
            pass  # three answers at once: a high throughput
    assert admission.expected_wait() < 5
    admission._finished.clear()
    now = time.monotonic()
    admission._finished.extend(_Finished(now - 60 + i, 20.0) for i in range(3))  # 3 answers in a minute
    admission.ask_timeout = 10
    admission.in_flight = 10
    with pytest.raises(Busy) as refused, admission.question():
        pass
    assert "would wait" in refused.value.message


def test_quiet_minutes_between_answers_do_not_count_as_slowness():
    admission = Admission(0, 0, max_in_flight=100, ask_timeout=60, abandon_grace=1)
    now = time.monotonic()
    # three 2-second answers, minutes apart: the system answers one every 2 s when it is asked
    admission._finished.extend(_Finished(now - t, 2.0) for t in (250, 150, 50))
    admission.in_flight = 9
    assert admission.expected_wait() == pytest.approx(20.0)
    with admission.question():  # 20 s <= half of 60 s: admitted (counting the idle time said ~2000 s)
        pass
    # two generators answering side by side: their overlapping answers count once in the busy time
    admission._finished.clear()
    admission._finished.extend([_Finished(now - 10, 10.0), _Finished(now - 10, 10.0)])
    admission._finished.append(_Finished(now, 10.0))
    admission.in_flight = 0
    assert admission.expected_wait() == pytest.approx(1 / (3 / 20))


async def test_an_abandoned_question_is_cancelled_after_the_grace_period_unless_resumed():
    admission = Admission(0, 0, max_in_flight=2, ask_timeout=180, abandon_grace=0.05)
    cancelled: list[str] = []

    async def cancel(query_id: str) -> None:
        cancelled.append(query_id)

    admission.abandoned("q1", cancel)
    admission.abandoned("q2", cancel)
    admission.resumed("q2")
    await asyncio.sleep(0.2)
    assert cancelled == ["q1"]
