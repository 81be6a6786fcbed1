"""Questions in, answers out: POST /ask (whole answer) and the websocket /ws/chat (token by token, resumable).

Both subscribe to the query's answer subjects before publishing query.asked, then relay what the
generators publish: answer.token.<query_id> as token frames, answer.done/failed as the closing frame.
A client that lost its connection sends {"type": "resume", "query_id", "after_seq"} and gets the tokens it
missed from the TOKENS stream, then the rest live, with nothing missing or repeated.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, Field, ValidationError

from agents.gateway.admission import Admission, Busy
from agents.gateway.auth import READ, UNAUTHORIZED, Caller, Reader, client_id
from agents.gateway.bus import Bus
from agents.gateway.deps import AnswersDep, BusDep, SettingsDep
from agents.gateway.requests import BAD_BODY, RequestModel, Text, integer, number
from agents.gateway.settings import GatewaySettings
from projections.views import AnswerView
from streams.events import AnswerCompleted, AnswerFailed, AnswerTokenGenerated, QueryAsked, QueryCancelled, Turn

log = logging.getLogger("ragbus.gateway")
router = APIRouter(tags=["chat"], dependencies=[READ], responses=UNAUTHORIZED)
QUESTIONS = Counter("ragbus_questions_total", "Questions by outcome", ["outcome"])
TTFT = Histogram("ragbus_time_to_first_token_seconds", "From question to first token at the gateway")
OUTCOME_CHECK_S = 5.0  # how often a silent answer's outcome is looked up in the log
ANSWER_SUBJECTS = (AnswerTokenGenerated.SUBJECT, AnswerCompleted.SUBJECT, AnswerFailed.SUBJECT)


class Filters(RequestModel):
    doc_ids: list[Text] = Field(default_factory=list, max_length=200)
    names: list[Text] = Field(default_factory=list, max_length=200)
    tags: list[Text] = Field(default_factory=list, max_length=50)
    doc_types: list[Text] = Field(default_factory=list, max_length=10)


class AskRequest(RequestModel):
    question: Text = Field(..., min_length=1, max_length=4000)
    top_k: integer(ge=1, le=50) | None = None
    filters: Filters = Field(default_factory=Filters)
    threshold: number(ge=-1.0, le=1.0) | None = Field(None, description="minimum cosine similarity of passages")
    session_id: Text | None = Field(None, max_length=200, description="conversation id: earlier turns are used")
    answer_mode: Literal["generative", "extractive", "auto"] | None = Field(
        None, description="generative: the LLM answers; extractive: the sources' own best sentences, cited, no "
        "LLM; auto: generative unless most of its sentences are unsupported. Default: RAGBUS_ANSWER_MODE")


class ResumeRequest(RequestModel):
    query_id: Text = Field(..., min_length=1, max_length=64)
    after_seq: integer(ge=-1) = Field(-1, description="the last token seq the client has; -1 for none")


class CitationOut(BaseModel):
    n: int
    doc_id: str
    name: str
    page: int | None = None
    text: str
    score: float = Field(..., description="with `sentence`: how well the passage supports that sentence")
    sentence: int | None = Field(None, description="the answer sentence (index into `sentences`) it supports")


class SentenceOut(BaseModel):
    i: int
    start: int
    end: int
    text: str
    supported: bool
    score: float = Field(..., description="the best passage's support score (also when below the threshold)")
    best: int | None = None
    citations: list[int] = Field(default_factory=list, description="the n of the passages that support it")
    markers: list[int] = Field(default_factory=list, description="the [n] markers the model wrote in it")
    corrected: bool = False


class AskResponse(BaseModel):
    query_id: str
    session_id: str | None = None
    answer: str
    citations: list[CitationOut]
    sentences: list[SentenceOut] = Field(default_factory=list, description="each sentence and its support")
    supported: bool | None = Field(None, description="some sentence is supported; null: not attributed")
    answer_mode: str = "generative"
    requested_mode: str | None = None
    generated_answer: str | None = Field(None, description="the generated text as streamed, when the answer "
                                         "differs from it (auto chose extractive, or a loop was trimmed)")
    truncated: bool = Field(False, description="the model stopped at the answer token limit")
    repeating: bool = Field(False, description="the model began repeating itself: stopped, the loop trimmed")
    notices: list[str] = Field(default_factory=list)
    timings: dict[str, float]
    model: str | None = None
    embedding_model: str | None = Field(None, description="the embedding index the sources came from")


def done_frame(event: dict[str, Any], started: float | None = None) -> dict[str, Any]:
    timings = dict(event.get("timings") or {})
    if started is not None:
        timings["total_ms"] = (time.perf_counter() - started) * 1000
    return {"type": "done", "query_id": event["query_id"], "session_id": event.get("session_id"),
            "answer": event["answer"], "citations": event["citations"], "sources": event.get("sources", []),
            "timings": timings, "model": event.get("model"), "embedding_model": event.get("embedding_model"),
            "generator": event.get("generator"),
            "stopped": event.get("stopped", False),
            "sentences": event.get("sentences", []), "supported": event.get("supported"),
            "answer_mode": event.get("answer_mode", "generative"), "requested_mode": event.get("requested_mode"),
            "generated_answer": event.get("generated_answer"), "truncated": event.get("truncated", False),
            "repeating": event.get("repeating", False), "notices": event.get("notices", [])}


def error_frame(query_id: str, message: str) -> dict[str, Any]:
    return {"type": "error", "query_id": query_id, "message": message}


class Refused(Exception):
    """Not this caller's to see or continue (another key's session or question), or unknown: one message for
    both, so a key cannot probe which ids exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def check_session(answers: AnswerView, session_id: str | None, caller: Caller) -> None:
    if session_id:
        session = await answers.session(session_id)
        if session is not None and session["owner"] != caller.owner:
            raise Refused(f"no session {session_id}")


async def check_question(bus: Bus, query_id: str, caller: Caller) -> None:
    asked = await bus.asked(query_id)
    if asked is None or asked.get("owner") != caller.owner:
        raise Refused(f"unknown question {query_id}")


async def history_for(answers: AnswerView, session_id: str | None, turns: int) -> list[Turn]:
    if not session_id:
        return []
    rows = await answers.for_session(session_id, limit=turns)
    return [Turn(question=r["question"], answer=(r["answer"] or "")[:1000]) for r in rows if r["status"] == "done"]


async def relay(bus: Bus, queue: asyncio.Queue[dict[str, Any]], query_id: str, next_seq: int, deadline: float,
                started: float) -> AsyncIterator[dict[str, Any]]:
    """Token frames from `next_seq` on (earlier or repeated ones are dropped; a gap, e.g. tokens published
    while this gateway's connection to NATS was down, is filled from the TOKENS stream), then done or error."""
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), timeout=min(max(deadline - time.perf_counter(), 0.01),
                                                                    OUTCOME_CHECK_S))
        except TimeoutError:
            # A live notification can be lost (this gateway's connection to NATS dropped meanwhile): the log
            # has the outcome all the same.
            stored = await _stored_outcome(bus, query_id)
            if stored is not None:
                event = stored
            elif time.perf_counter() < deadline:
                continue
            else:
                QUESTIONS.labels("timeout").inc()
                yield error_frame(query_id, "no answer in time; is a generator running? (`ragbus status`)")
                return
        kind = event.get("type")
        if kind == "answer.token":
            if event["seq"] < next_seq:
                continue  # a redelivered question re-streams tokens the client already has
            if event["seq"] > next_seq:
                for missed in await bus.stored_tokens(query_id):
                    if next_seq <= missed["seq"] < event["seq"]:
                        next_seq = missed["seq"] + 1
                        yield {"type": "token", "query_id": query_id, "seq": missed["seq"], "text": missed["text"]}
            if event["seq"] == 0:
                TTFT.observe(time.perf_counter() - started)
            next_seq = event["seq"] + 1
            yield {"type": "token", "query_id": query_id, "seq": event["seq"], "text": event["text"]}
        elif kind == "answer.done":
            QUESTIONS.labels("answered").inc()
            yield done_frame(event, started)
            return
        elif kind == "answer.failed":
            QUESTIONS.labels("failed").inc()
            yield error_frame(query_id, event["message"])
            return


async def _stored_outcome(bus: Bus, query_id: str) -> dict[str, Any] | None:
    try:
        return await bus.stored_outcome(query_id)
    except Exception:  # noqa: BLE001 - NATS is down: the next check, or the live event, will tell
        return None


async def until_projected(bus: Bus, answers: AnswerView, query_id: str, timeout: float = 3.0) -> None:
    """Read-your-writes: a follow-up sent right after this answer must find it in the session's history,
    so the caller's next request waits (briefly) until the projector has folded the answer in."""

    async def present() -> bool:
        return await answers.get(query_id) is not None

    await bus.until_projected("answers", query_id, present, timeout)


async def answer_frames(bus: Bus, answers: AnswerView, ask: AskRequest, settings: GatewaySettings,
                        caller: Caller) -> AsyncIterator[dict[str, Any]]:
    """Frames for one question: accepted, token*, then done or error. Raises Refused for another key's
    session before anything is published."""
    await check_session(answers, ask.session_id, caller)
    query_id = uuid.uuid4().hex
    started = time.perf_counter()
    async with bus.watch(query_id, *ANSWER_SUBJECTS) as queue:
        await bus.publish(QueryAsked(
            event_id=f"query.asked:{query_id}", query_id=query_id,
            question=ask.question.strip(), top_k=ask.top_k or settings.default_top_k,
            filters=ask.filters.model_dump(exclude_defaults=True), threshold=ask.threshold,
            session_id=ask.session_id, history=await history_for(answers, ask.session_id, settings.history_turns),
            owner=caller.owner, answer_mode=ask.answer_mode,
        ))
        yield {"type": "accepted", "query_id": query_id, "session_id": ask.session_id}
        async for frame in relay(bus, queue, query_id, 0, started + settings.ask_timeout, started):
            yield frame


async def resume_frames(bus: Bus, resume: ResumeRequest, settings: GatewaySettings,
                        caller: Caller) -> AsyncIterator[dict]:
    """The rest of an answer after `after_seq`: stored tokens, then live ones or the stored outcome."""
    query_id, started = resume.query_id, time.perf_counter()
    try:
        await check_question(bus, query_id, caller)
    except Refused as exc:
        yield error_frame(query_id, exc.message)
        return
    async with bus.watch(query_id, *ANSWER_SUBJECTS) as queue:  # live first: no token can fall in between
        next_seq = resume.after_seq + 1
        for event in await bus.stored_tokens(query_id):
            if event["seq"] >= next_seq:
                next_seq = event["seq"] + 1
                yield {"type": "token", "query_id": query_id, "seq": event["seq"], "text": event["text"]}
        outcome = await bus.stored_outcome(query_id)
        if outcome is not None:
            is_done = outcome.get("type") == "answer.done"
            yield done_frame(outcome) if is_done else error_frame(query_id, outcome["message"])
            return
        async for frame in relay(bus, queue, query_id, next_seq, started + settings.ask_timeout, started):
            yield frame


def refused(exc: Busy, code: int) -> HTTPException:
    return HTTPException(code, exc.message, headers={"Retry-After": str(exc.retry_after)})


@router.post("/ask", response_model=AskResponse, summary="Ask a question; returns the whole cited answer",
             responses={**BAD_BODY, 404: {"description": "no such session (or another key's)"},
                        429: {"description": "too many questions from this client (Retry-After)"},
                        503: {"description": "too busy to take the question now (Retry-After)"},
                        504: {"description": "no answer in time (the question is cancelled)"},
                        502: {"description": "answer failed"}})
async def ask(body: AskRequest, request: Request, caller: Reader, bus: BusDep, answers: AnswersDep,
              settings: SettingsDep) -> AskResponse:
    admission: Admission = request.app.state.admission
    try:
        admission.questions.take(client_id(request, caller))
    except Busy as exc:
        raise refused(exc, status.HTTP_429_TOO_MANY_REQUESTS) from None
    try:
        await check_session(answers, body.session_id, caller)
    except Refused as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, exc.message) from None
    try:
        with admission.question():
            async for frame in answer_frames(bus, answers, body, settings, caller):
                if frame["type"] == "done":
                    if body.session_id:
                        await until_projected(bus, answers, frame["query_id"])
                    return AskResponse(**frame)
                if frame["type"] == "error":
                    if "in time" in frame["message"]:  # nobody waits for it any more: stop it
                        await cancel_question(bus, frame["query_id"])
                        raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, frame["message"])
                    raise HTTPException(status.HTTP_502_BAD_GATEWAY, frame["message"])
    except Busy as exc:
        raise refused(exc, status.HTTP_503_SERVICE_UNAVAILABLE) from None
    raise HTTPException(status.HTTP_502_BAD_GATEWAY, "the answer stream ended without an answer")


class WsMessage(BaseModel):
    type: Literal["ask", "resume", "cancel"]


async def cancel_question(bus: Bus, query_id: str) -> None:
    await bus.publish(QueryCancelled(event_id=f"query.cancelled:{query_id}", query_id=query_id))


@router.post("/answers/{query_id}/cancel", status_code=status.HTTP_202_ACCEPTED, tags=["chat"],
             summary="Stop generating an answer (a query.cancelled event); its done frame carries stopped: true",
             responses={404: {"description": "unknown question"}})
async def cancel(query_id: str, caller: Reader, bus: BusDep) -> dict[str, str]:
    try:
        await check_question(bus, query_id, caller)
    except Refused as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, exc.message) from None
    await cancel_question(bus, query_id)
    return {"query_id": query_id, "status": "cancelling"}


def first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if where == "type":
        return ('expected {"type": "ask", "question": ...}, {"type": "resume", "query_id": ..., "after_seq": ...} '
                'or {"type": "cancel", "query_id": ...}')
    return f"{where}: {err['msg']}"
