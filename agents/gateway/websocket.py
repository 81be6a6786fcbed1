"""The websocket chat, /ws/chat: questions in, answers streamed token by token, resumable.

Client frames: {"type": "ask", "question", "session_id"?, "top_k"?, "filters"?, "threshold"?, "answer_mode"?},
{"type": "resume", "query_id", "after_seq"} and {"type": "cancel", "query_id"} (at any time).
Server frames: accepted, token {query_id, seq, text}, then done {answer, citations, sources, timings, model,
embedding_model, stopped, sentences, supported, answer_mode, truncated, repeating, notices, ...} or error {message};
busy {message, retry_after} when admission refuses; status
{state: ok | reconnecting, message} when NATS, the database or the LLM goes away or comes back.
Where keys are required, a socket without a valid one (header or the page's cookie) gets one error frame
{code: "unauthorized"} and is closed with code 4401.

Asks and resumes are answered one after the other, in order, at most `max_questions_per_socket` waiting.
A frame that is not JSON, not an object, binary, or not one of those gets an error frame; the socket goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from agents.gateway.admission import Busy
from agents.gateway.auth import Caller, authenticate, client_id
from agents.gateway.chat import (
    AskRequest,
    Refused,
    ResumeRequest,
    WsMessage,
    answer_frames,
    cancel_question,
    check_question,
    first_error,
    resume_frames,
    until_projected,
)
from streams.tracing import span

log = logging.getLogger("ragbus.gateway")
router = APIRouter()
UNAUTHORIZED_CLOSE = 4401  # the application range (4000-4999); "401" inside it, as some APIs do


def parse_frame(message: dict[str, Any]) -> dict[str, Any] | str:
    """A client frame as a dict, or the reason it is not one (for the error frame)."""
    text = message.get("text")
    if text is None:
        return 'binary frames are not understood: send JSON text, e.g. {"type": "ask", "question": "..."}'
    try:
        frame = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(frame, dict):
        return 'expected a JSON object, e.g. {"type": "ask", "question": "..."}'
    return frame


def busy_frame(exc: Busy, query_id: str | None = None) -> dict[str, Any]:
    return {"type": "busy", "query_id": query_id, "message": exc.message, "retry_after": exc.retry_after}


@router.websocket("/ws/chat")
async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        caller = authenticate(websocket)
    except HTTPException as exc:  # said in a frame the page can read (a refused handshake tells it nothing)
        await websocket.send_json({"type": "error", "code": "unauthorized", "message": exc.detail})
        await websocket.close(code=UNAUTHORIZED_CLOSE, reason="API key required")
        return
    state = websocket.app.state
    settings, admission, health = state.settings, state.admission, state.health
    lock = asyncio.Lock()
    inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    active: list[str] = []  # the query being streamed to this socket, if any

    async def send(frame: dict[str, Any]) -> None:
        async with lock:  # the reader, the health watcher and the answer share the socket
            await websocket.send_json(frame)

    async def read() -> None:
        """Reads while answers stream, so a cancel takes effect at once; None marks the end."""
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                frame = parse_frame(message)
                if isinstance(frame, str):
                    await send({"type": "error", "message": frame})
                elif frame.get("type") == "cancel" and frame.get("query_id"):
                    query_id = str(frame["query_id"])[:64]
                    try:
                        await check_question(state.bus, query_id, caller)
                        await cancel_question(state.bus, query_id)
                    except Refused as exc:
                        await send({"type": "error", "query_id": query_id, "message": exc.message})
                elif inbox.qsize() >= settings.max_questions_per_socket:
                    await send(busy_frame(Busy(f"at most {settings.max_questions_per_socket} questions may wait "
                                               "on one connection", 5)))
                else:
                    inbox.put_nowait(frame)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            inbox.put_nowait(None)

    unlisten = health.listen(send)
    reader = asyncio.create_task(read())
    try:
        if not health.ready:
            await send(health.frame())
        while (message := await inbox.get()) is not None:
            await answer_one(message, send, active, state, caller, client_id(websocket, caller))
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away mid-answer; the answer goes on in the log, resumable for a while
    finally:
        unlisten()
        reader.cancel()
        if active:  # nobody reads this answer now: stop it unless the client resumes it soon
            admission.abandoned(active[0], lambda q: cancel_question(state.bus, q))


async def answer_one(message: dict[str, Any], send: Any, active: list[str], state: Any, caller: Caller,
                     client: str) -> None:
    """One ask or resume, start to end; what cannot be done is said in a frame, never by closing the socket."""
    admission = state.admission
    try:
        kind = WsMessage.model_validate(message).type
        fields = {k: v for k, v in message.items() if k != "type"}
        if kind == "ask":
            ask = AskRequest.model_validate(fields)
            admission.questions.take(client)
            frames = answer_frames(state.bus, state.answers, ask, state.settings, caller)
        else:
            resume = ResumeRequest.model_validate(fields)
            admission.resumed(resume.query_id)
            frames = resume_frames(state.bus, resume, state.settings, caller)
    except ValidationError as exc:
        await send({"type": "error", "message": first_error(exc)})
        return
    except Busy as exc:
        await send(busy_frame(exc))
        return
    try:
        # a span per question (or resume), not per socket: each question is a trace of its own
        with (admission.question() if kind == "ask" else contextlib.nullcontext(),
              span(f"WEBSOCKET /ws/chat {kind}", kind=SpanKind.SERVER)):
            async for frame in frames:
                if frame["type"] == "accepted":
                    active[:] = [frame["query_id"]]
                await send(frame)
                if frame["type"] in ("done", "error"):
                    active.clear()
                if frame["type"] == "done" and frame.get("session_id"):
                    await until_projected(state.bus, state.answers, frame["query_id"])
    except Busy as exc:
        await send(busy_frame(exc))
    except Refused as exc:
        await send({"type": "error", "message": exc.message})
    except (WebSocketDisconnect, RuntimeError):
        raise
    except Exception as exc:  # noqa: BLE001 - NATS or the database failing under us: say so, keep the socket
        log.warning("question failed in the gateway: %r", exc)
        query_id = active[0] if active else None
        active.clear()
        await send({"type": "error", "query_id": query_id,
                    "message": f"the system is temporarily unavailable ({type(exc).__name__}); try again shortly"})
