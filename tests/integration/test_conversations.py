"""Answers worth trusting, end to end on the real bus: search, thresholds, follow-ups, ratings, resume,
and a down LLM server."""

from __future__ import annotations

import asyncio
import json
import time

import websockets

from tests.conftest import upload, wait_for_status
from tests.integration.test_chat_flow import LIGHTHOUSE

ORCHARD = b"""# Orchard care

Apple trees are pruned in late winter, before the buds break, to open the canopy to light.
Pear trees need cross-pollination from a second variety that flowers at the same time.
"""


async def _indexed(client, name: str, data: bytes) -> str:
    body = await upload(client, name, data)
    await wait_for_status(client, body["doc_id"])
    return body["doc_id"]


def _ws(url: str) -> str:
    return url.replace("http", "ws", 1) + "/ws/chat"


async def _frames_until_done(ws) -> list[dict]:
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 180))
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


async def test_search_returns_ranked_passages_with_all_scores_and_filters(client):
    lighthouse = await _indexed(client, "kestrel-lighthouse.md", LIGHTHOUSE)
    orchard = await _indexed(client, "orchard-care.md", ORCHARD)
    response = await client.post("/search", json={"query": "When are apple trees pruned?", "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    top = body["passages"][0]
    assert top["doc_id"] == orchard and "late winter" in top["text"]
    assert set(top["scores"]) == {"dense", "sentence", "keyword", "fused"} and top["scores"]["keyword"] > 0
    # every sentence of the passage with its similarity to the question; the best one is scores.sentence
    assert top["sentences"] and all(0 <= s["start"] < s["end"] <= len(top["text"]) for s in top["sentences"])
    assert max(s["score"] for s in top["sentences"]) == top["scores"]["sentence"]
    assert any("late winter" in top["text"][s["start"]:s["end"]] for s in top["sentences"])
    assert [p["n"] for p in body["passages"]] == list(range(1, len(body["passages"]) + 1))
    assert body["timings"]["embed_ms"] > 0 and body["timings"]["search_ms"] > 0
    only = await client.post("/search", json={"query": "When are apple trees pruned?",
                                              "filters": {"doc_ids": [lighthouse]}, "threshold": -1})
    assert {p["doc_id"] for p in only.json()["passages"]} == {lighthouse}
    assert (await client.post("/search", json={"query": ""})).status_code == 422


async def test_question_the_documents_do_not_cover_is_answered_without_the_llm(client):
    response = await client.post("/ask", json={"question": "What is the airspeed of a swallow?", "threshold": 0.95})
    assert response.status_code == 200
    body = response.json()
    assert "do not cover" in body["answer"] and body["model"] == "none" and body["citations"] == []


async def test_follow_up_is_rewritten_with_history_and_the_session_is_kept(client, js, stack):
    await _indexed(client, "kestrel-lighthouse.md", LIGHTHOUSE)
    session = f"s-{time.time_ns()}"
    first = (await client.post("/ask", json={"question": "Who is the keeper of the Kestrel Point lighthouse?",
                                             "session_id": session}, timeout=200)).json()
    second = (await client.post("/ask", json={"question": "Since when has she kept it?", "session_id": session},
                                timeout=200)).json()
    assert second["answer"] and second["timings"]["condense_ms"] > 0
    condensed = json.loads((await js.get_last_msg("QUERIES", f"query.condensed.{second['query_id']}")).data)
    assert condensed["asked"]["history"][0]["question"].startswith("Who is the keeper")
    assert condensed["standalone_question"]
    context = json.loads((await js.get_last_msg("QUERIES", f"context.built.{second['query_id']}")).data)
    assert context["history"] and context["passages"][0]["name"] == "kestrel-lighthouse.md"

    for _ in range(100):
        got = await client.get(f"/sessions/{session}")
        if got.status_code == 200 and len(got.json()["messages"]) == 2:
            break
        await asyncio.sleep(0.1)
    conversation = got.json()
    assert [m["query_id"] for m in conversation["messages"]] == [first["query_id"], second["query_id"]]
    assert conversation["title"].startswith("Who is the keeper") and conversation["turns"] == 2
    assert session in [s["session_id"] for s in (await client.get("/sessions")).json()["sessions"]]


async def test_rating_an_answer_is_an_event_kept_in_the_projection(client, js, pool):
    answer = (await client.post("/ask", json={"question": "How far can the Kestrel Point light be seen?"},
                                timeout=200)).json()
    for _ in range(100):
        if await pool.fetchval("SELECT 1 FROM answers WHERE query_id = $1", answer["query_id"]):
            break
        await asyncio.sleep(0.1)
    rated = await client.post(f"/answers/{answer['query_id']}/rating", json={"rating": "down", "comment": "vague"})
    assert rated.status_code == 202
    for _ in range(100):
        row = await pool.fetchrow("SELECT rating, rating_comment FROM answers WHERE query_id = $1", answer["query_id"])
        if row["rating"]:
            break
        await asyncio.sleep(0.1)
    assert tuple(row) == ("down", "vague")
    event = json.loads((await js.get_last_msg("ANSWERS", f"answer.rated.{answer['query_id']}")).data)
    assert event["rating"] == "down"
    assert (await client.post("/answers/nope/rating", json={"rating": "up"})).status_code == 404
    assert (await client.post(f"/answers/{answer['query_id']}/rating", json={"rating": "meh"})).status_code == 422


async def test_reconnecting_client_resumes_with_nothing_missing_or_repeated(client, stack):
    await _indexed(client, "kestrel-lighthouse.md", LIGHTHOUSE)
    async with websockets.connect(_ws(stack.url)) as ws:
        await ws.send(json.dumps({"type": "ask", "question": "Describe the Kestrel Point lighthouse in detail."}))
        accepted = json.loads(await ws.recv())
        seen = []
        while len(seen) < 3:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 120))
            assert frame["type"] == "token", frame
            seen.append(frame)
    # the browser lost its connection after 3 tokens; the answer goes on being generated meanwhile
    async with websockets.connect(_ws(stack.url)) as ws:
        await ws.send(json.dumps({"type": "resume", "query_id": accepted["query_id"], "after_seq": seen[-1]["seq"]}))
        rest = await _frames_until_done(ws)
    tokens = seen + [f for f in rest if f["type"] == "token"]
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert rest[-1]["type"] == "done"
    assert "".join(t["text"] for t in tokens).strip() == rest[-1]["answer"]
    # and once it is finished, a resume replays the remainder and the done frame from the log
    async with websockets.connect(_ws(stack.url)) as ws:
        await ws.send(json.dumps({"type": "resume", "query_id": accepted["query_id"], "after_seq": 0}))
        late = await _frames_until_done(ws)
    assert [f["seq"] for f in late if f["type"] == "token"] == list(range(1, len(tokens)))
    assert late[-1]["type"] == "done" and late[-1]["answer"] == rest[-1]["answer"]


async def test_down_llm_server_gives_a_quick_clear_error_frame(client, stack):
    stack.kill("generator-1", 15)
    stack.kill("generator-2", 15)
    stack.start("generator-dead", "generator", RAGBUS_LLM_URL="http://127.0.0.1:9/v1", RAGBUS_GENERATOR_ID="dead")
    try:
        await asyncio.sleep(3)  # let it bind the shared durable
        async with websockets.connect(_ws(stack.url)) as ws:
            started = time.monotonic()
            await ws.send(json.dumps({"type": "ask", "question": "Who cleans the lamp of the lighthouse?"}))
            frames = await _frames_until_done(ws)
            elapsed = time.monotonic() - started
        assert frames[-1]["type"] == "error" and "unavailable" in frames[-1]["message"], frames[-1]
        assert elapsed < 15, elapsed
    finally:
        stack.kill("generator-dead", 15)
        stack.start("generator-1", "generator", RAGBUS_GENERATOR_ID="generator-1")
        stack.start("generator-2", "generator", RAGBUS_GENERATOR_ID="generator-2")
        await asyncio.sleep(3)


async def test_resuming_an_unknown_question_is_an_immediate_error(stack):
    async with websockets.connect(_ws(stack.url)) as ws:
        started = time.monotonic()
        await ws.send(json.dumps({"type": "resume", "query_id": "0" * 32, "after_seq": 3}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "error" and "unknown question" in frame["message"]
    assert time.monotonic() - started < 5


async def test_stop_cancels_generation_and_the_answer_ends_stopped(client, stack):
    await _indexed(client, "kestrel-lighthouse.md", LIGHTHOUSE)
    async with websockets.connect(_ws(stack.url)) as ws:
        await ws.send(json.dumps({"type": "ask", "question": "Write a long, detailed history of the Kestrel Point "
                                  "lighthouse, its keeper and its light."}))
        accepted = json.loads(await ws.recv())
        first = json.loads(await asyncio.wait_for(ws.recv(), 120))
        assert first["type"] == "token"
        await ws.send(json.dumps({"type": "cancel", "query_id": accepted["query_id"]}))
        rest = await _frames_until_done(ws)
    done = rest[-1]
    assert done["type"] == "done" and done["stopped"] is True
    streamed = [first] + [f for f in rest if f["type"] == "token"]
    assert len(streamed) < 96  # RAGBUS_MAX_ANSWER_TOKENS in the test stack: it stopped early
    assert done["answer"] == "".join(t["text"] for t in streamed).strip()
    assert (await client.post("/answers/nope/cancel")).status_code == 404


async def test_a_cancel_already_in_the_log_stops_the_answer_and_a_later_one_too(js, nc):
    """The generator looks up a cancel from before it listened while it builds the prompt (off the first token's
    path); both ways of hearing of a cancel set `stopped`."""
    from types import SimpleNamespace

    from agents.generator.handlers import cancellation
    from streams.events import QueryCancelled
    from streams.publish import publish

    def cancel(query_id: str) -> QueryCancelled:
        return QueryCancelled(event_id=f"query.cancelled:{query_id}", query_id=query_id)

    broker = SimpleNamespace(connection=nc)
    earlier, later = "q-cancelled-before", "q-cancelled-while"
    await publish(js, cancel(earlier))
    async with cancellation(broker, earlier) as stopped:
        await asyncio.wait_for(stopped.wait(), 5)
    async with cancellation(broker, later) as stopped:
        await asyncio.sleep(0.3)
        assert not stopped.is_set()  # nothing in the log for this one
        await publish(js, cancel(later))
        await asyncio.wait_for(stopped.wait(), 5)
