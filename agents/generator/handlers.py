"""Thin handlers: query.asked with history -> query.condensed; context.built -> answer.token* -> answer.done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream import AckPolicy
from faststream.nats import NatsMessage
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from agents.generator.app import app, broker, settings
from agents.generator.llm import ChatClient, CircuitBreaker, LLMError, LLMUnavailable
from agents.generator.service import (
    NOT_COVERED,
    build_prompt,
    citations_for,
    clean_standalone,
    condense_messages,
    sources_for,
)
from agents.generator.tokens import TokenCounter
from streams import subjects
from streams.agent import (
    EventPublisher,
    dead_letter_publisher,
    durable_subscription,
    report_gave_up,
    require_durables,
)
from streams.delivery import PoisonMessage, keep_alive, settle
from streams.events import AnswerCompleted, AnswerFailed, AnswerToken, ContextBuilt, QueryAsked, QueryCondensed
from streams.topology import CONDENSER, GENERATOR

log = logging.getLogger("ragbus.generator")


class State:
    llm: ChatClient
    tokens: TokenCounter


state = State()

publish_token = EventPublisher(broker, AnswerToken, None,
                               "One streamed piece of the answer, numbered by seq; published without waiting "
                               "for an ack per token, captured by the TOKENS stream.")
publish_done = EventPublisher(broker, AnswerCompleted, "ANSWERS",
                              "The full answer with citations mapped to documents and pages, timings, model.")
publish_failed = EventPublisher(broker, AnswerFailed, "ANSWERS",
                                "Generation failed for good; the user gets an error frame.")
publish_condensed = EventPublisher(broker, QueryCondensed, "QUERIES",
                                   "A follow-up question rewritten with its conversation to stand alone.")
publish_dead_letter = dead_letter_publisher(broker)


@app.on_startup
async def start() -> None:
    await require_durables(settings.nats_url, GENERATOR, CONDENSER)
    state.llm = ChatClient(settings.llm_url, settings.llm_model, settings.llm_timeout, settings.llm_api_key,
                           settings.llm_retries, CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown))
    state.tokens = await asyncio.to_thread(TokenCounter, settings.llm_tokenizer)


@app.after_shutdown
async def stop() -> None:
    if hasattr(state, "llm"):
        await state.llm.close()


@broker.subscriber(
    **durable_subscription(CONDENSER, batch_size=1),
    ack_policy=AckPolicy.MANUAL,
    title="rewrite follow-up questions",
    description="A question with conversation history is rewritten by the LLM into one that stands alone "
    "(query.condensed), which retrieval then searches for. Questions without history pass untouched.",
)
async def on_query_asked(event: QueryAsked, msg: NatsMessage) -> None:
    if not event.history:
        await msg.raw_message.ack()
        return

    async def work() -> None:
        started = time.perf_counter()
        try:
            async with keep_alive(msg.raw_message, every=5.0):
                text = await state.llm.complete(condense_messages(event.question, event.history),
                                                settings.condense_tokens)
            standalone = clean_standalone(text, fallback=event.question)
        except LLMError as exc:
            # Retrieval can still go ahead with the question as asked; the answer step reports a down LLM.
            log.warning("could not rewrite follow-up %s (%s); searching for it as asked", event.query_id, exc)
            standalone = event.question
        await publish_condensed(QueryCondensed(
            event_id=f"query.condensed:{event.query_id}", correlation_id=event.query_id,
            causation_id=event.event_id, asked=event, standalone_question=standalone,
            condense_ms=(time.perf_counter() - started) * 1000,
        ))

    await settle(msg.raw_message, CONDENSER, publish_dead_letter, work)


@broker.subscriber(
    **durable_subscription(GENERATOR, batch_size=1),
    ack_policy=AckPolicy.MANUAL,
    title="generate answers",
    description="Streams a grounded answer as answer.token.<query_id> events, then answer.done.<query_id>.",
)
async def on_context_built(event: ContextBuilt, msg: NatsMessage) -> None:
    if not event.generate:
        await msg.raw_message.ack()  # retrieval only (POST /search)
        return

    async def work() -> None:
        try:
            await answer(event, msg)
        except LLMUnavailable as exc:
            raise PoisonMessage(str(exc)) from exc  # fail this question now: the user sees an error at once

    async def on_dead(reason: str) -> None:
        await publish_failed(generation_failed(event, reason))

    await settle(msg.raw_message, GENERATOR, publish_dead_letter, work, on_dead)


@asynccontextmanager
async def cancellation(query_id: str) -> AsyncIterator[asyncio.Event]:
    """Set when the user stops this answer (query.cancelled), whether before or while it streams."""
    stopped = asyncio.Event()
    subject = subjects.subject(subjects.QUERY_CANCELLED, query_id)

    async def on_cancel(_: Msg) -> None:
        stopped.set()

    sub = await broker.connection.subscribe(subject, cb=on_cancel)
    try:
        with contextlib.suppress(NotFoundError):  # a cancel from before we listened is in the log
            await broker.connection.jetstream().get_last_msg("QUERIES", subject)
            stopped.set()
        yield stopped
    finally:
        await sub.unsubscribe()


async def answer(event: ContextBuilt, msg: NatsMessage) -> None:
    async with cancellation(event.query_id) as stopped:
        await _answer(event, msg, stopped)


async def _answer(event: ContextBuilt, msg: NatsMessage, stopped: asyncio.Event) -> None:
    started = time.perf_counter()
    pieces: list[str] = []
    first_token_at: float | None = None
    passages, prompt_tokens = event.passages, 0
    if passages and not stopped.is_set():
        prompt = build_prompt(event.question, passages, event.history, state.tokens,
                              settings.llm_context_tokens, settings.max_answer_tokens)
        passages, prompt_tokens = prompt.passages, prompt.tokens
        stream = state.llm.stream(prompt.messages, settings.max_answer_tokens, settings.temperature)
        # closing the stream closes the HTTP request: the LLM server stops generating for a stopped answer
        async with keep_alive(msg.raw_message, every=5.0), contextlib.aclosing(stream):
            async for piece in stream:
                if stopped.is_set():
                    break
                first_token_at = first_token_at or time.perf_counter()
                await publish_token(token(event, len(pieces), piece))
                pieces.append(piece)
        if not pieces and not stopped.is_set():
            raise LLMError("the LLM server returned no text", transient=True)
    elif not passages:
        # Nothing passed the similarity threshold: say so without asking the model to invent something.
        first_token_at = time.perf_counter()
        await publish_token(token(event, 0, NOT_COVERED))
        pieces.append(NOT_COVERED)
    await broker.connection.flush()  # every token is on the server before the done event that closes the stream
    text = "".join(pieces).strip()
    finished = time.perf_counter()
    streaming = max(finished - (first_token_at or started), 1e-6)
    await publish_done(AnswerCompleted(
        event_id=f"answer.done:{event.query_id}",
        correlation_id=event.query_id,
        causation_id=event.event_id,
        query_id=event.query_id,
        question=event.question,
        session_id=event.session_id,
        answer=text,
        citations=citations_for(text, passages) if passages else [],
        sources=sources_for(passages),
        timings={
            **event.timings,
            "ttft_ms": ((first_token_at or finished) - started) * 1000,
            "generate_ms": (finished - started) * 1000,
            "tokens_per_s": len(pieces) / streaming,
            "prompt_tokens": prompt_tokens,
        },
        model=settings.llm_model if passages else "none",
        generator=settings.generator_id,
        tokens=len(pieces),
        stopped=stopped.is_set(),
    ))
    log.info("answered %s with %d tokens in %.1fs", event.query_id, len(pieces), finished - started)


def generation_failed(event: ContextBuilt, reason: str) -> AnswerFailed:
    return AnswerFailed(
        event_id=f"answer.failed:{event.query_id}", correlation_id=event.query_id, causation_id=event.event_id,
        query_id=event.query_id, message=reason, stage="generation", question=event.question,
        session_id=event.session_id,
    )


def token(event: ContextBuilt, seq: int, text: str) -> AnswerToken:
    return AnswerToken(
        event_id=f"answer.token:{event.query_id}:{seq}",
        correlation_id=event.query_id,
        causation_id=event.event_id,
        query_id=event.query_id,
        seq=seq,
        text=text,
    )


async def report_generation_gave_up(payload: bytes, advisory: dict) -> None:
    event = ContextBuilt.model_validate_json(payload)
    await publish_failed(generation_failed(event, "no generator could finish this answer"))


async def report_condenser_gave_up(payload: bytes, advisory: dict) -> None:
    event = QueryAsked.model_validate_json(payload)
    await publish_failed(AnswerFailed(
        event_id=f"answer.failed:{event.query_id}", correlation_id=event.query_id, causation_id=event.event_id,
        query_id=event.query_id, message="the follow-up question could not be processed", stage="condense",
        question=event.question, session_id=event.session_id,
    ))


report_gave_up(broker, GENERATOR, report_generation_gave_up, publish_dead_letter)
report_gave_up(broker, CONDENSER, report_condenser_gave_up, publish_dead_letter)
