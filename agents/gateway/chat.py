"""Questions in, answers out: POST /ask (whole answer) and the websocket /ws/chat (token by token).

Both subscribe to the query's answer subjects before publishing query.asked, then relay what the
generators publish: answer.token.<query_id> as token frames, answer.done/failed as the closing frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect, status
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, Field, ValidationError

from agents.gateway.bus import Bus
from agents.gateway.deps import BusDep, SettingsDep
from streams.events import QueryAsked

log = logging.getLogger("ragbus.gateway")
router = APIRouter(tags=["chat"])
QUESTIONS = Counter("ragbus_questions_total", "Questions by outcome", ["outcome"])
TTFT = Histogram("ragbus_time_to_first_token_seconds", "From question to first token at the gateway")


class AskRequest(BaseModel):
    question: str = Field(..., min_length=1, max_length=4000)
    top_k: int | None = Field(None, ge=1, le=50)
    filters: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = Field(None, max_length=200)


class CitationOut(BaseModel):
    n: int
    doc_id: str
    name: str
    page: int | None = None
    text: str
    score: float


class AskResponse(BaseModel):
    query_id: str
    answer: str
    citations: list[CitationOut]
    timings: dict[str, float]
    model: str | None = None


async def answer_frames(bus: Bus, ask: AskRequest, default_top_k: int, timeout: float) -> AsyncIterator[dict]:
    """Frames for one question: accepted, token*, then done or error."""
    query_id = uuid.uuid4().hex
    started = time.perf_counter()
    async with bus.answer_frames(query_id) as queue:
        await bus.publish(QueryAsked(
            event_id=f"query.asked:{query_id}", correlation_id=query_id, query_id=query_id,
            question=ask.question.strip(), top_k=ask.top_k or default_top_k, filters=ask.filters,
            session_id=ask.session_id,
        ))
        yield {"type": "accepted", "query_id": query_id}
        next_seq = 0
        deadline = started + timeout
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=max(deadline - time.perf_counter(), 0.01))
            except TimeoutError:
                QUESTIONS.labels("timeout").inc()
                yield {"type": "error", "query_id": query_id,
                       "message": f"no answer within {timeout:.0f} s; is a generator running?"}
                return
            kind = event.get("type")
            if kind == "answer.token":
                if event["seq"] < next_seq:
                    continue  # a redelivered question re-streams tokens the client already has
                if next_seq == 0:
                    TTFT.observe(time.perf_counter() - started)
                next_seq = event["seq"] + 1
                yield {"type": "token", "query_id": query_id, "seq": event["seq"], "text": event["text"]}
            elif kind == "answer.done":
                QUESTIONS.labels("answered").inc()
                yield {"type": "done", "query_id": query_id, "answer": event["answer"],
                       "citations": event["citations"], "sources": event.get("sources", []),
                       "timings": {**event["timings"], "total_ms": (time.perf_counter() - started) * 1000},
                       "model": event.get("model"), "generator": event.get("generator")}
                return
            elif kind == "answer.failed":
                QUESTIONS.labels("failed").inc()
                yield {"type": "error", "query_id": query_id, "message": event["message"]}
                return


@router.post("/ask", response_model=AskResponse, summary="Ask a question; returns the whole cited answer",
             responses={504: {"description": "no answer in time"}, 502: {"description": "answer failed"}})
async def ask(body: AskRequest, bus: BusDep, settings: SettingsDep) -> AskResponse:
    async for frame in answer_frames(bus, body, settings.default_top_k, settings.ask_timeout):
        if frame["type"] == "done":
            return AskResponse(**frame)
        if frame["type"] == "error":
            code = status.HTTP_504_GATEWAY_TIMEOUT if "no answer within" in frame["message"] else 502
            raise HTTPException(code, frame["message"])
    raise HTTPException(status.HTTP_502_BAD_GATEWAY, "the answer stream ended without an answer")


@router.websocket("/ws/chat")
async def chat(websocket: WebSocket) -> None:
    """Client sends {"type": "ask", "question", "session_id"?, "top_k"?, "filters"?}; the server streams
    {"type": "token", "query_id", "seq", "text"} frames, then {"type": "done", ...} or {"type": "error"}."""
    await websocket.accept()
    app = websocket.app
    try:
        while True:
            message = await websocket.receive_json()
            if not isinstance(message, dict) or message.get("type") != "ask":
                await websocket.send_json({"type": "error", "message": 'expected {"type": "ask", "question": ...}'})
                continue
            try:
                ask_request = AskRequest.model_validate(message)
            except ValidationError as exc:
                await websocket.send_json({"type": "error", "message": _first_error(exc)})
                continue
            async for frame in answer_frames(app.state.bus, ask_request, app.state.settings.default_top_k,
                                             app.state.settings.ask_timeout):
                await websocket.send_json(frame)
    except WebSocketDisconnect:
        return
    except ValueError:
        await websocket.close(code=1003, reason="frames must be JSON")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
