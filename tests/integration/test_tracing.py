"""Traces through the real agents: the session's stack exports OTLP/HTTP to a receiver in this process
(tests/otlp.py). One upload and one question each make one trace spanning the agents that handled it,
every span's parent in the same trace, the context carried from agent to agent in the NATS headers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

import websockets

from streams.events import DocumentUploaded
from tests.conftest import upload, wait_for_status
from tests.otlp import OtlpReceiver, ReceivedSpan

GATEWAY, PARSER, EMBEDDER, GENERATOR, PROJECTOR = (
    "ragbus-gateway", "ragbus-parser", "ragbus-embedder", "ragbus-generator", "ragbus-projector")


def _trace_of(otlp: OtlpReceiver, marker: str) -> tuple[str, list[ReceivedSpan]]:
    """The one trace whose spans name `marker` (a doc_id or query_id is in every subject), and all its spans."""
    trace_ids = {s.trace_id for s in otlp.spans() if marker in s.name}
    assert len(trace_ids) == 1, f"spans of {marker} in {len(trace_ids)} traces"
    trace_id = trace_ids.pop()
    return trace_id, [s for s in otlp.spans() if s.trace_id == trace_id]


async def _until(otlp: OtlpReceiver, marker: str, complete: Callable[[list[ReceivedSpan]], bool],
                 timeout: float = 30.0) -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while True:
        if any(marker in s.name for s in otlp.spans()):
            _, spans = _trace_of(otlp, marker)
            if complete(spans) or time.monotonic() > deadline:
                return spans
        elif time.monotonic() > deadline:
            raise AssertionError(f"no span of {marker} arrived")
        await asyncio.sleep(0.2)


def _ancestry(spans: list[ReceivedSpan], leaf: ReceivedSpan) -> list[str]:
    """The services from `leaf` up to the root, each once in a row (the path the context travelled)."""
    by_id = {s.span_id: s for s in spans}
    services: list[str] = []
    span: ReceivedSpan | None = leaf
    while span is not None:
        if not services or services[-1] != span.service:
            services.append(span.service)
        span = by_id.get(span.parent_id)
    return services


def _assert_one_tree(spans: list[ReceivedSpan], root_name: str) -> ReceivedSpan:
    """One root (the gateway's request span) and every other span's parent in the trace."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert [(r.service, r.name) for r in roots] == [(GATEWAY, root_name)], roots
    orphans = [(s.service, s.name) for s in spans if s.parent_id and s.parent_id not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"
    return roots[0]


def _summary(spans: list[ReceivedSpan]) -> str:
    return "\n".join(sorted(f"{s.service}: {s.name}" for s in spans))


async def test_an_upload_is_one_trace_from_the_gateway_through_parser_and_embedder_to_the_projector(
        client, stack, otlp: OtlpReceiver, js):
    name = f"traced-{uuid.uuid4().hex[:8]}.md"
    body = await upload(client, name, f"# Traced\n\nThe beacon of {name} is lit at dusk by a keeper.\n".encode())
    doc_id = body["doc_id"]
    assert (await wait_for_status(client, doc_id))["status"] == "indexed"

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {(s.service, s.name) for s in spans}
        return {(PROJECTOR, "chunks apply chunks.embedded"), (PROJECTOR, "documents apply document.parsed"),
                (PROJECTOR, "documents apply document.uploaded")} <= names

    spans = await _until(otlp, doc_id, complete)
    assert complete(spans), _summary(spans)
    assert {s.service for s in spans} == {GATEWAY, PARSER, EMBEDDER, PROJECTOR}, _summary(spans)
    root = _assert_one_tree(spans, "POST /documents")
    assert root.attributes["http.response.status_code"] == 202

    names = {(s.service, s.name) for s in spans}
    assert (PARSER, f"document.uploaded.{doc_id} process") in names  # FastStream's middleware, consuming
    assert (EMBEDDER, f"chunks.ready.{doc_id} process") in names  # the index worker's own span (nats.py)
    embedded = next(s for s in spans if s.name == "chunks apply chunks.embedded")
    assert _ancestry(spans, embedded) == [PROJECTOR, EMBEDDER, PARSER, GATEWAY]

    # the context is in the stored event's headers, next to its deterministic Nats-Msg-Id
    stored = await js.get_last_msg("DOCUMENTS", f"document.uploaded.{doc_id}")
    assert stored.headers["Nats-Msg-Id"] == DocumentUploaded.id_for(body["upload_id"])
    assert stored.headers["traceparent"].split("-")[1] == root.trace_id


async def test_a_question_is_one_trace_from_the_websocket_through_embedder_and_generator_to_the_projector(
        client, stack, otlp: OtlpReceiver, js):
    body = await upload(client, "traced-lighthouse.md", b"# Gull Rock\n\nThe Gull Rock light is red and "
                        b"flashes every five seconds.\n")
    assert (await wait_for_status(client, body["doc_id"]))["status"] == "indexed"
    async with websockets.connect(stack.url.replace("http", "ws", 1) + "/ws/chat") as ws:
        await ws.send(json.dumps({"type": "ask", "question": "What colour is the Gull Rock light?"}))
        while (frame := json.loads(await asyncio.wait_for(ws.recv(), 180)))["type"] not in ("done", "error"):
            if frame["type"] == "accepted":
                query_id = frame["query_id"]
    assert frame["type"] == "done", frame

    def complete(spans: list[ReceivedSpan]) -> bool:
        return any(s.service == PROJECTOR and s.name == "answers apply answer.done" for s in spans)

    spans = await _until(otlp, query_id, complete)
    assert complete(spans), _summary(spans)
    assert {s.service for s in spans} == {GATEWAY, EMBEDDER, GENERATOR, PROJECTOR}, _summary(spans)
    _assert_one_tree(spans, "WEBSOCKET /ws/chat ask")

    names = {(s.service, s.name) for s in spans}
    assert {(GATEWAY, f"query.asked.{query_id} publish"), (EMBEDDER, f"query.asked.{query_id} process"),
            (EMBEDDER, f"context.built.{query_id} publish"), (GENERATOR, f"context.built.{query_id} process"),
            (GENERATOR, f"answer.done.{query_id} publish")} <= names, _summary(spans)
    assert not [s for s in spans if s.name.startswith("answer.token.")]  # tokens are not traced one by one
    done = next(s for s in spans if s.name == "answers apply answer.done")
    assert _ancestry(spans, done) == [PROJECTOR, GENERATOR, EMBEDDER, GATEWAY]

    stored = await js.get_last_msg("ANSWERS", f"answer.done.{query_id}")
    assert stored.headers["Nats-Msg-Id"] == f"answer.done:{query_id}"
    assert stored.headers["traceparent"].split("-")[1] == done.trace_id
