"""Thin handler: context.built -> stream answer.token events -> answer.done."""

from __future__ import annotations

import logging
import time

import nats
from faststream import AckPolicy
from faststream.nats import NatsMessage

from agents.generator.app import app, broker, settings
from agents.generator.llm import ChatClient, LLMError
from agents.generator.service import NOT_COVERED, build_messages, citations_for, sources_for
from streams.agent import (
    EventPublisher,
    dead_letter_publisher,
    durable_subscription,
    report_gave_up,
    wait_for_durables,
)
from streams.delivery import keep_alive, settle
from streams.events import AnswerCompleted, AnswerFailed, AnswerToken, ContextBuilt
from streams.topology import GENERATOR, advisories_of

log = logging.getLogger("ragbus.generator")


class State:
    llm: ChatClient


state = State()

publish_token = EventPublisher(broker, AnswerToken, None,
                               "One streamed piece of the answer, numbered by seq; published without waiting "
                               "for an ack per token, captured by the TOKENS stream.")
publish_done = EventPublisher(broker, AnswerCompleted, "ANSWERS",
                              "The full answer with citations mapped to documents and pages, timings, model.")
publish_failed = EventPublisher(broker, AnswerFailed, "ANSWERS",
                                "Generation failed for good; the user gets an error frame.")
publish_dead_letter = dead_letter_publisher(broker)


@app.on_startup
async def start() -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        await wait_for_durables(nc.jetstream(), (GENERATOR, advisories_of(GENERATOR)))
    finally:
        await nc.close()
    state.llm = ChatClient(settings.llm_url, settings.llm_model, settings.llm_timeout, settings.llm_api_key,
                           settings.llm_retries)


@app.after_shutdown
async def stop() -> None:
    if hasattr(state, "llm"):
        await state.llm.close()


@broker.subscriber(
    **durable_subscription(GENERATOR, batch_size=1),
    ack_policy=AckPolicy.MANUAL,
    title="generate answers",
    description="Streams a grounded answer as answer.token.<query_id> events, then answer.done.<query_id>.",
)
async def on_context_built(event: ContextBuilt, msg: NatsMessage) -> None:
    async def work() -> None:
        started = time.perf_counter()
        pieces: list[str] = []
        first_token_at: float | None = None
        if event.passages:
            messages = build_messages(event.question, event.passages, settings.context_chars)
            async with keep_alive(msg.raw_message, every=5.0):
                async for piece in state.llm.stream(messages, settings.max_answer_tokens, settings.temperature):
                    first_token_at = first_token_at or time.perf_counter()
                    await publish_token(token(event, len(pieces), piece))
                    pieces.append(piece)
            if not pieces:
                raise LLMError("the LLM server returned no text", transient=True)
        else:
            # Nothing retrieved: say so without asking the model to invent something.
            first_token_at = time.perf_counter()
            await publish_token(token(event, 0, NOT_COVERED))
            pieces.append(NOT_COVERED)
        await broker.connection.flush()  # every token is on the server before the done event that closes the stream
        answer = "".join(pieces).strip()
        finished = time.perf_counter()
        await publish_done(AnswerCompleted(
            event_id=f"answer.done:{event.query_id}",
            correlation_id=event.query_id,
            causation_id=event.event_id,
            query_id=event.query_id,
            question=event.question,
            session_id=event.session_id,
            answer=answer,
            citations=citations_for(answer, event.passages) if event.passages else [],
            sources=sources_for(event.passages),
            timings={
                **event.timings,
                "ttft_ms": ((first_token_at or finished) - started) * 1000,
                "generate_ms": (finished - started) * 1000,
                "tokens_per_s": len(pieces) / max(finished - (first_token_at or started), 1e-6),
            },
            model=settings.llm_model if event.passages else "none",
            generator=settings.generator_id,
            tokens=len(pieces),
        ))
        log.info("answered %s with %d tokens in %.1fs", event.query_id, len(pieces), finished - started)

    async def on_dead(reason: str) -> None:
        await publish_failed(AnswerFailed(
            event_id=f"answer.failed:{event.query_id}", correlation_id=event.query_id,
            causation_id=event.event_id, query_id=event.query_id, message=reason, stage="generation",
        ))

    await settle(msg.raw_message, GENERATOR, publish_dead_letter, work, on_dead)


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
    await publish_failed(AnswerFailed(
        event_id=f"answer.failed:{event.query_id}", correlation_id=event.query_id, causation_id=event.event_id,
        query_id=event.query_id, message="no generator could finish this answer", stage="generation",
    ))


report_gave_up(broker, GENERATOR, report_generation_gave_up, publish_dead_letter)
