"""Conversations and ratings (read from the answers projection), and retrieval without generation."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from agents.gateway.admission import Busy
from agents.gateway.auth import READ, UNAUTHORIZED, WRITE, Reader, client_id
from agents.gateway.chat import Filters
from agents.gateway.deps import AnswersDep, BusDep, SettingsDep
from agents.gateway.requests import BAD_BODY, Flag, RequestModel, Text, integer, number
from streams.events import AnswerFailed, AnswerRated, ContextBuilt, QueryAsked, SentenceScore

router = APIRouter(dependencies=[READ], responses=UNAUTHORIZED)


class SearchRequest(RequestModel):
    query: Text = Field(..., min_length=1, max_length=4000)
    top_k: integer(ge=1, le=50) | None = None
    filters: Filters = Field(default_factory=Filters)
    threshold: number(ge=-1.0, le=1.0) | None = None
    debug: Flag = Field(False, description="also list every candidate with its rank at each stage (dense, "
                        "keyword, fused) and what became of it (passage n, below threshold, near-duplicate, ...)")


class PassageOut(BaseModel):
    n: int
    chunk_id: str
    doc_id: str
    name: str
    page: int | None = None
    section: list[str] = []
    text: str
    score: float = Field(description="cosine similarity to the query")
    scores: dict[str, float] = Field(description="dense (cosine), sentence (the best sentence's cosine), keyword "
                                     "(BM25) and fused (cosine + weighted sentence and BM25 terms)")
    sentences: list[SentenceScore] = Field(default_factory=list, description="each sentence of the text, "
                                           "[start, end) in it, with its cosine similarity to the query")


class SearchResponse(BaseModel):
    query_id: str
    passages: list[PassageOut]
    timings: dict[str, float]
    embedding_model: str | None = Field(None, description="the embedding index that answered")
    candidates: list[dict[str, Any]] | None = Field(None, description="with debug: every candidate")


@router.post("/search", response_model=SearchResponse, tags=["search"],
             summary="Retrieval only: ranked passages with scores, no generated answer",
             responses={**BAD_BODY, 429: {"description": "too many questions from this client (Retry-After)"},
                        502: {"description": "retrieval failed (the reason is in the body)"},
                        504: {"description": "no retriever answered in time"}})
async def search(body: SearchRequest, request: Request, caller: Reader, bus: BusDep,
                 settings: SettingsDep) -> SearchResponse:
    try:
        request.app.state.admission.questions.take(client_id(request, caller))
    except Busy as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, exc.message,
                            headers={"Retry-After": str(exc.retry_after)}) from None
    query_id = uuid.uuid4().hex
    started = time.perf_counter()
    async with bus.watch(query_id, ContextBuilt.SUBJECT, AnswerFailed.SUBJECT) as queue:
        await bus.publish(QueryAsked(
            event_id=f"query.asked:{query_id}", query_id=query_id,
            question=body.query.strip(), top_k=body.top_k or settings.default_top_k,
            filters=body.filters.model_dump(exclude_defaults=True), threshold=body.threshold, generate=False,
            debug=body.debug, owner=caller.owner,
        ))
        try:
            event = await asyncio.wait_for(queue.get(), settings.search_timeout)
        except TimeoutError:
            raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, "no retriever answered in time; is the "
                                "embedder running? (`ragbus status`)") from None
    if event["type"] == "answer.failed":
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, event["message"])
    timings = {**event["timings"], "total_ms": (time.perf_counter() - started) * 1000}
    return SearchResponse(query_id=query_id, passages=event["passages"], timings=timings,
                          embedding_model=event.get("embedding_model"),
                          candidates=event.get("candidates") if body.debug else None)


class Turn(BaseModel):
    query_id: str
    question: str
    status: str
    answer: str | None = None
    error: str | None = None
    citations: list[dict[str, Any]] = []
    # sentences (each with supported, score, citations), supported, answer_mode, truncated, repeating, notices
    attribution: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    model: str | None = None
    rating: str | None = None
    created_at: datetime


class SessionSummary(BaseModel):
    session_id: str
    title: str
    turns: int
    created_at: datetime
    updated_at: datetime


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class SessionOut(SessionSummary):
    messages: list[Turn]


@router.get("/sessions", response_model=SessionList, tags=["conversations"],
            summary="Recent conversations (those of this API key)")
async def list_sessions(answers: AnswersDep, caller: Reader) -> SessionList:
    return SessionList(sessions=[SessionSummary(**s) for s in await answers.sessions(caller.owner)])


@router.get("/sessions/{session_id}", response_model=SessionOut, tags=["conversations"],
            summary="One conversation with its questions and answers", responses={404: {"description": "unknown"}})
async def get_session(session_id: str, answers: AnswersDep, caller: Reader) -> SessionOut:
    session = await answers.session(session_id)
    if session is None or session["owner"] != caller.owner:  # another key's: as if it did not exist
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no session {session_id}")
    return SessionOut(**session, messages=[Turn(**t) for t in await answers.for_session(session_id)])


class RatingIn(RequestModel):
    rating: Literal["up", "down"]
    comment: Text = Field("", max_length=2000)


@router.post("/answers/{query_id}/rating", status_code=status.HTTP_202_ACCEPTED, tags=["conversations"],
             summary="Thumbs up or down on an answer (an answer.rated event)",
             responses={**BAD_BODY, 404: {"description": "unknown answer"}}, dependencies=[WRITE])
async def rate_answer(query_id: str, body: RatingIn, caller: Reader, bus: BusDep,
                      answers: AnswersDep) -> dict[str, str]:
    # the log first-hand: a rating sent right after the done frame may beat the projector to the row
    answer = await answers.get(query_id) or await bus.stored_outcome(query_id)
    if answer is None or answer.get("owner") != caller.owner:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no answer {query_id}")
    await bus.publish(AnswerRated(
        event_id=f"answer.rated:{query_id}:{uuid.uuid4().hex[:12]}",
        query_id=query_id, rating=body.rating, comment=body.comment, owner=caller.owner,
    ))
    return {"query_id": query_id, "rating": body.rating}
