"""Input that must not wedge anything, and work the gateway refuses or stops, on the session's real stack:
websocket frames that are binary or not JSON, NaN thresholds, oversized metadata, too many questions on one
socket, an abandoned question, a gateway whose LLM is down, and folder ingest naming."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
from websockets.asyncio.client import connect as ws_connect

from ragbus.servers import free_port
from streams.topology import ANSWERS
from tests.conftest import ROOT, upload, wait_for_status


def ws_url(stack) -> str:
    return stack.url.replace("http", "ws", 1) + "/ws/chat"


async def next_frame(ws, timeout: float = 30.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_binary_and_malformed_frames_get_an_error_frame_and_the_socket_keeps_working(stack, client):
    body = await upload(client, "hygiene.md", b"# Hygiene\n\nThe socket survives bad frames and answers after them.")
    await wait_for_status(client, body["doc_id"])
    async with ws_connect(ws_url(stack)) as ws:
        await ws.send(b"\x00\x01binary")
        frame = await next_frame(ws)
        assert frame["type"] == "error" and "binary" in frame["message"], frame
        for bad, why in (("{not json", "not JSON"), ("[1, 2]", "JSON object"), ('{"type": "dance"}', "expected")):
            await ws.send(bad)
            frame = await next_frame(ws)
            assert frame["type"] == "error" and why in frame["message"], (bad, frame)
        await ws.send(json.dumps({"type": "ask", "question": "What survives bad frames?"}))
        frames = [await next_frame(ws)]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(await next_frame(ws, 120))
        assert frames[0]["type"] == "accepted" and frames[-1]["type"] == "done", frames[-1]


async def test_not_a_number_thresholds_and_oversized_metadata_are_refused_with_a_reason(client):
    for path, field in (("/search", "query"), ("/ask", "question")):
        response = await client.post(path, content=f'{{"{field}": "x", "threshold": NaN}}',
                                     headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, response.text)
        response = await client.post(path, content=f'{{"{field}": "x", "threshold": Infinity}}',
                                     headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, response.text)
    big = json.dumps({"notes": "x" * 20_000})
    response = await client.post("/documents", files={"file": ("meta.md", b"# Meta\n\nSmall text.")},
                                 data={"metadata": big})
    assert response.status_code == 400 and "too large" in response.json()["detail"]


async def test_a_degenerate_long_question_is_answered_not_a_gateway_error(client):
    response = await client.post("/ask", json={"question": "zq " * 1300}, timeout=300)
    assert response.status_code == 200, response.text  # an empty completion is an answer to report
    assert response.json()["answer"]


async def test_too_many_questions_on_one_socket_get_an_immediate_busy_frame(stack):
    async with ws_connect(ws_url(stack)) as ws:
        sent = time.monotonic()
        for i in range(12):  # one is answered, four may wait, the rest are refused at once
            await ws.send(json.dumps({"type": "ask", "question": f"question number {i} about nothing at all"}))
        busy = []
        while len(busy) < 7:
            frame = await next_frame(ws, 60)
            if frame["type"] == "busy":
                busy.append((frame, time.monotonic() - sent))
        assert all(f["retry_after"] >= 1 and "one connection" in f["message"] for f, _ in busy)
        assert max(t for _, t in busy) < 5.0  # immediate, not after a timeout


async def test_a_question_whose_client_went_away_is_cancelled_after_the_grace_period(stack, client, js, tmp_path):
    text = " ".join(f"Sentence {i} of a long document about rivers, bridges and the ferries between them."
                    for i in range(60))
    body = await upload(client, "rivers.md", f"# Rivers\n\n{text}".encode())
    await wait_for_status(client, body["doc_id"])
    gateway = await own_gateway(stack, tmp_path, RAGBUS_ABANDON_GRACE="0.5")  # no time to finish the answer
    try:
        await abandon_and_check(gateway[0], js)
    finally:
        gateway[1].terminate()
        gateway[1].wait(20)


async def own_gateway(stack, tmp_path, **env: str) -> tuple[str, subprocess.Popen]:
    """A second gateway on the session's bus and database, with settings of its own."""
    port = free_port()
    with (tmp_path / f"gateway-{port}.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ragbus.cli", "agent", "gateway"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, **stack.env, "RAGBUS_PORT": str(port), **env})
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        for _ in range(100):
            try:
                await c.get("/healthz")
                return url, proc
            except httpx.HTTPError:
                await asyncio.sleep(0.3)
    proc.terminate()
    raise AssertionError("the second gateway did not start")


async def abandon_and_check(url: str, js) -> None:
    async with ws_connect(url.replace("http", "ws", 1) + "/ws/chat") as ws:
        await ws.send(json.dumps({"type": "ask", "question": "Tell me everything about the rivers and ferries"}))
        accepted = await next_frame(ws)
        assert accepted["type"] == "accepted"
    query_id = accepted["query_id"]  # the socket is gone; nobody resumes it
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            done = json.loads((await js.get_last_msg(ANSWERS, f"answer.done.{query_id}")).data)
            break
        except Exception:  # noqa: BLE001 - not answered yet
            await asyncio.sleep(0.5)
    else:
        raise AssertionError("no answer.done for the abandoned question")
    queries = (await js.get_last_msg("QUERIES", f"query.cancelled.{query_id}")).data
    assert json.loads(queries)["query_id"] == query_id  # the gateway cancelled it
    assert done["stopped"] is True


async def test_readyz_says_which_dependency_is_down_when_the_llm_server_is(stack, tmp_path):
    url, proc = await own_gateway(stack, tmp_path, RAGBUS_LLM_URL=f"http://127.0.0.1:{free_port()}/v1")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            response = await c.get("/readyz")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["llm"] is False and body["nats"] is True and body["postgres"] is True
    finally:
        proc.terminate()
        proc.wait(20)


async def test_folder_ingest_names_documents_by_their_path_and_fails_on_a_replaced_one(stack, tmp_path):
    root = tmp_path / "manuals"
    for folder, words in (("faq", "questions people ask"), ("howto", "steps to follow")):
        (root / folder).mkdir(parents=True)
        (root / folder / "index.html").write_text(f"<html><body><h1>{folder}</h1><p>The {folder} page: {words}, "
                                                  f"unique to {folder}.</p></body></html>")
    env = {**os.environ, "RAGBUS_GATEWAY_URL": stack.url, "COLUMNS": "200"}
    run = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ragbus.cli", "ingest", str(root)],
                                  env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        names = {d["name"]: d["status"] for d in (await c.get("/documents")).json()["documents"]}
    assert names.get("faq/index.html") == "indexed" and names.get("howto/index.html") == "indexed"
    # The same name twice in one run: the second replaces the first, and ingest says so with exit 1.
    other = tmp_path / "other" / "faq"
    other.mkdir(parents=True)
    (other / "index.html").write_text("<html><body><p>A different faq page under the same name.</p></body></html>")
    again = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ragbus.cli", "ingest",
                                                     str(tmp_path / "other"), str(root)],
                                    env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "superseded" in again.stderr + again.stdout, again.stderr
