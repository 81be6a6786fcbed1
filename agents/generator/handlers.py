"""Thin handlers: query.asked with history -> query.condensed; context.built -> answer.token* -> answer.done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from faststream.nats import NatsRouter
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Histogram

from agents.generator.attribution import Attribution, Attributor, Evidence
from agents.generator.llm import ChatClient, LLMError, LLMUnavailable
from agents.generator.repetition import RepetitionGuard
from agents.generator.service import (
    NO_SUPPORT,
    NO_TEXT,
    NOT_COVERED,
    auto_notice,
    build_prompt,
    citing_grammar,
    clean_standalone,
    condense_messages,
    cut_notice,
    repetition_notice,
    sources_for,
)
from agents.generator.settings import GeneratorSettings
from agents.generator.tokens import TokenCounter
from streams import subjects
from streams.context import Context, NatsBroker
from streams.delivery import PoisonMessage, Workers
from streams.events import (
    AnswerCompleted,
    AnswerFailed,
    AnswerMode,
    AnswerTokenGenerated,
    ContextBuilt,
    Passage,
    QueryAsked,
    QueryCancelled,
    QueryCondensed,
)
from streams.publish import EventPublisher
from streams.topology import CONDENSER, GENERATOR, QUERIES

log = logging.getLogger("ragbus.generator")
router = NatsRouter()
worker = Workers(router, "generator")
LLM = Annotated[ChatClient, Context("llm")]
Tokens = Annotated[TokenCounter, Context("tokens")]
Settings = Annotated[GeneratorSettings, Context("settings")]
Attribution_ = Annotated[Attributor, Context("attributor")]

# tokens/s is the counter's rate; the queue wait is from context.built (retrieval done) to a generator taking it
GENERATED_TOKENS = Counter("ragbus_generated_tokens_total", "Answer tokens streamed from the LLM", ["model"])
QUEUE_WAIT = Histogram("ragbus_generation_queue_wait_seconds", "From context.built to the start of generation",
                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))

publish_token = EventPublisher(router, AnswerTokenGenerated,
                               "One streamed piece of the answer, numbered by seq; published without waiting "
                               "for an ack per token, captured by the TOKENS stream.", wait_for_ack=False)
publish_done = EventPublisher(router, AnswerCompleted,
                              "The full answer with citations mapped to documents and pages, timings, model.")
publish_failed = EventPublisher(router, AnswerFailed, "Generation failed for good; the user gets an error frame.")
publish_condensed = EventPublisher(router, QueryCondensed,
                                   "A follow-up question rewritten with its conversation to stand alone.")


async def condense_failed(event: QueryAsked, reason: str) -> None:
    await publish_failed(AnswerFailed.caused_by(event, event_id=f"answer.failed:{event.query_id}",
                                                message=reason, stage="condense"))


async def generation_failed(event: ContextBuilt, reason: str) -> None:
    await publish_failed(AnswerFailed.caused_by(event, event_id=f"answer.failed:{event.query_id}",
                                                message=reason, stage="generation"))


@worker(CONDENSER, on_failure=condense_failed, gave_up="the follow-up question could not be processed",
        title="rewrite follow-up questions",
        description="A question with conversation history is rewritten by the LLM into one that stands alone "
        "(query.condensed), which retrieval then searches for. Questions without history pass untouched.")
async def on_query_asked(event: QueryAsked, llm: LLM, settings: Settings) -> None:
    if not event.history:
        return
    started = time.perf_counter()
    try:
        text = await llm.complete(condense_messages(event.question, event.history), settings.condense_tokens)
        standalone = clean_standalone(text, fallback=event.question)
    except LLMError as exc:
        # Retrieval can still go ahead with the question as asked; the answer step reports a down LLM.
        log.warning("could not rewrite follow-up %s (%s); searching for it as asked", event.query_id, exc)
        standalone = event.question
    await publish_condensed(QueryCondensed.caused_by(
        event, event_id=f"query.condensed:{event.query_id}", asked=event, standalone_question=standalone,
        condense_ms=(time.perf_counter() - started) * 1000))


@worker(GENERATOR, on_failure=generation_failed, gave_up="no generator could finish this answer",
        title="generate answers",
        description="Streams a grounded answer as answer.token.<query_id> events, then answer.done.<query_id>.")
async def on_context_built(event: ContextBuilt, broker: NatsBroker, llm: LLM, tokens: Tokens,
                           settings: Settings, attributor: Attribution_) -> None:
    if not event.generate:
        return  # retrieval only (POST /search)
    QUEUE_WAIT.observe(max((datetime.now(UTC) - event.occurred_at).total_seconds(), 0.0))
    try:
        async with cancellation(broker, event.query_id) as stopped:
            await answer(event, stopped, broker, llm, tokens, settings, attributor)
    except LLMUnavailable as exc:
        raise PoisonMessage(str(exc)) from exc  # fail this question now: the user sees an error at once


@asynccontextmanager
async def cancellation(broker: NatsBroker, query_id: str) -> AsyncIterator[asyncio.Event]:
    """Set when the user stops this answer (query.cancelled), whether before or while it streams."""
    stopped = asyncio.Event()
    subject = subjects.subject(QueryCancelled.SUBJECT, query_id)

    async def on_cancel(_: Msg) -> None:
        stopped.set()

    async def cancelled_before() -> None:  # a cancel from before we listened is in the log
        try:
            await broker.connection.jetstream().get_last_msg(QUERIES, subject)
            stopped.set()
        except NotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - the live subscription still sees a cancel from now on
            log.warning("could not look up an earlier cancel of %s: %r", query_id, exc)

    sub = await broker.connection.subscribe(subject, cb=on_cancel)
    # looked up while the prompt is built and sent, not before: the answer checks `stopped` at every token, and
    # the lookup is a round trip to the server (~1 ms) that the first token need not wait for
    lookup = asyncio.create_task(cancelled_before())
    try:
        yield stopped
    finally:
        lookup.cancel()  # a no-op once it is done
        with contextlib.suppress(asyncio.CancelledError):
            await lookup
        await sub.unsubscribe()


async def answer(event: ContextBuilt, stopped: asyncio.Event, broker: NatsBroker, llm: ChatClient,
                 tokens: TokenCounter, settings: GeneratorSettings, attributor: Attributor) -> None:
    started = time.perf_counter()
    mode = event.answer_mode or settings.answer_mode
    pieces: list[str] = []
    finish: list[str] = []
    first_token_at: float | None = None
    passages, prompt, prompt_ms = event.passages, None, 0.0
    evidence = None
    extracted_text = ""
    guard = RepetitionGuard()
    gathering: asyncio.Task[Evidence] | None = None
    if passages and not stopped.is_set() and mode == "extractive":
        # the passages' own sentences that answer the question best, cited; the LLM is not called
        extracted, evidence = await attributor.extract_from(event.standalone_question or event.question, passages,
                                                            event.embedding_model)
        extracted_text = extracted.answer
        first_token_at = time.perf_counter()
        await publish_token(token(event, 0, extracted_text or NO_TEXT))
        pieces.append(extracted_text or NO_TEXT)
    elif passages and not stopped.is_set():
        shown, focused = passages, settings.prompt_source_tokens > 0
        if focused:  # the sentences that answer the question; attribution reuses them
            shown, evidence = await attributor.focus(event.standalone_question or event.question, passages,
                                                     tokens.count, settings.prompt_source_tokens,
                                                     event.embedding_model)
        prompt = build_prompt(event.question, shown, event.history, tokens,
                              settings.llm_context_tokens, settings.max_answer_tokens)
        prompt_ms = (time.perf_counter() - started) * 1000
        if not focused or len(prompt.passages) < len(passages):
            # the sources are what the model was shown (a passage cut to fit the window, as it was cut)
            passages, evidence = prompt.passages, None
        # else every passage was shown by its best sentences: the sources are the whole passages, and the
        # attribution reuses their sentences (embedded for the cut, or from the first token on: not before it)
        grammar = citing_grammar([p.n for p in passages]) if settings.constrained_citing else None
        stream = llm.stream(prompt.messages, settings.max_answer_tokens, settings.temperature, grammar, finish)
        # closing the stream closes the HTTP request: the LLM server stops generating for a stopped answer
        async with contextlib.aclosing(stream):
            async for piece in stream:
                if stopped.is_set():
                    break
                if first_token_at is None and evidence is None:
                    gathering = asyncio.create_task(attributor.evidence(passages))
                first_token_at = first_token_at or time.perf_counter()
                await publish_token(token(event, len(pieces), piece))
                pieces.append(piece)
                GENERATED_TOKENS.labels(settings.llm_model).inc()
                if guard.feed(piece):
                    break  # a loop runs to any limit: stop the LLM here, the answer keeps what came before
        if not pieces and not stopped.is_set():
            # A completion with no text is an answer (a degenerate question, a model with nothing to add), not
            # a failure to retry: the user is told so.
            first_token_at = time.perf_counter()
            await publish_token(token(event, 0, NO_TEXT))
            pieces.append(NO_TEXT)
    elif not passages:
        # Nothing passed the similarity threshold: say so without asking the model to invent something.
        first_token_at = time.perf_counter()
        await publish_token(token(event, 0, NOT_COVERED))
        pieces.append(NOT_COVERED)
    await broker.connection.flush()  # every token is on the server before the done event that closes the stream
    streamed = "".join(pieces).strip()
    text = guard.kept() if guard.looping else streamed
    finished = time.perf_counter()
    streaming = max(finished - (first_token_at or started), 1e-6)
    truncated = bool(finish) and finish[-1] == "length" and not stopped.is_set() and not guard.looping
    decided = await decide(event, text, passages, mode, stopped.is_set(), attributor,
                           await gathering if gathering else evidence)
    notices = [cut_notice(settings.max_answer_tokens)] if truncated and decided.mode == "generative" else []
    if guard.looping and decided.mode == "generative":
        notices.append(repetition_notice())
    if decided.attribution.sentences and not decided.attribution.supported:
        notices.append(NO_SUPPORT)
    notices += decided.notices
    await publish_done(AnswerCompleted.caused_by(
        event, event_id=f"answer.done:{event.query_id}", answer=decided.text,
        citations=decided.attribution.citations, sentences=decided.attribution.sentences,
        supported=bool(decided.attribution.supported) if decided.attribution.sentences else None,
        answer_mode=decided.mode, requested_mode=mode if mode == "auto" else None,
        generated_answer=streamed if decided.text != streamed else None, truncated=truncated,
        repeating=guard.looping, notices=notices,
        sources=sources_for(passages),
        timings={
            **event.timings,
            "ttft_ms": ((first_token_at or finished) - started) * 1000,
            "generate_ms": (finished - started) * 1000,
            "tokens_per_s": len(pieces) / streaming,
            "prompt_tokens": prompt.tokens if prompt else 0,
            "prompt_ms": prompt_ms,  # the cut and the prompt, before the LLM request
            "attribution_ms": decided.ms,
        },
        model=settings.llm_model if passages and decided.mode == "generative" else "none",
        embedding_model=event.embedding_model, generator=settings.generator_id, tokens=len(pieces),
        stopped=stopped.is_set(),
    ))
    log.info("answered %s (%s) with %d tokens in %.1fs, %d of %d sentences supported", event.query_id,
             decided.mode, len(pieces), finished - started, decided.attribution.supported,
             len(decided.attribution.sentences))


@dataclass
class Decided:
    text: str
    mode: AnswerMode
    attribution: Attribution
    notices: list[str]
    ms: float


async def decide(event: ContextBuilt, text: str, passages: list[Passage], mode: AnswerMode, stopped: bool,
                 attributor: Attributor, evidence: Evidence | None) -> Decided:
    """Attribute the answer's sentences to the passages; in auto mode, fall back to the extractive answer when
    most of the generated one is unsupported. Depends only on context.built and the text: a replay agrees."""
    started = time.perf_counter()
    if not passages or text in (NO_TEXT, NOT_COVERED):
        return Decided(text, "extractive" if mode == "extractive" else "generative", Attribution([], []), [], 0.0)
    evidence = evidence or await attributor.evidence(passages)
    attribution = await attributor.attribute(text, evidence)
    chosen: AnswerMode = "extractive" if mode == "extractive" else "generative"
    notices: list[str] = []
    if mode == "auto" and not stopped and attribution.supported_share <= attributor.config.auto_supported_share:
        extracted = await attributor.extract(event.standalone_question or event.question, evidence)
        if extracted.answer:
            notices.append(auto_notice(attribution.supported, len(attribution.sentences)))
            text, chosen = extracted.answer, "extractive"
            attribution = await attributor.attribute(text, evidence)
    return Decided(text, chosen, attribution, notices, (time.perf_counter() - started) * 1000)


def token(event: ContextBuilt, seq: int, text: str) -> AnswerTokenGenerated:
    return AnswerTokenGenerated.caused_by(event, event_id=f"answer.token:{event.query_id}:{seq}", seq=seq, text=text)
