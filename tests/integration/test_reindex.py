"""Re-index by replay, on real servers and real models: a corpus indexed with the default model (MiniLM as ONNX
int8) moves to the 256-d distilled model while questions, uploads and deletes go on; the gate, the comparison on logged
questions, SIGKILLs mid-way, a replay of every read model from zero, and a rebuild of the active model's index.

This module runs its own nats-server and PostgreSQL (it switches the active index, which the other tests'
stack must not see); the llama.cpp server is the session's. The tests build on each other, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from projections.schema import vectors_table
from projections.views import create_pool
from ragbus.stack import ROOT, AgentStack, Servers
from streams import subjects
from streams.connect import connect
from streams.events import ChunksEmbedded, IndexCompared
from streams.publish import publish
from streams.reading import read_events
from streams.topology import CHUNKS, DEFAULT_EMBEDDING_MODEL, INDEXES, PARSER, index_durable
from tests.conftest import upload, wait_for_status

OLD = DEFAULT_EMBEDDING_MODEL
NEW = "minilm-distilled-256"
THIRD = "all-MiniLM-L6-v2"  # the packaged model on torch
CORPUS = Path(__file__).resolve().parent.parent / "quality" / "corpus"
QUESTIONS = [
    "what does the apache license say about patents",
    "can I sell copies of GPL software",
    "do I have to share my changes to an LGPL library",
    "what happens if I break the MPL terms",
    "is there any warranty",
    "what is a derivative work",
]


@pytest.fixture(scope="module")
async def rstack(llama, models_dir, tmp_path_factory) -> AsyncIterator[AgentStack]:
    work = tmp_path_factory.mktemp("reindex")
    servers = await Servers.start(work)
    stack = AgentStack.for_servers(
        servers, work / "logs", RAGBUS_LLM_URL=llama.url, RAGBUS_LLM_MODEL=llama.model,
        RAGBUS_LLM_TOKENIZER=str(llama.model_path), RAGBUS_MAX_ANSWER_TOKENS="48", RAGBUS_MODELS_DIR=str(models_dir),
        RAGBUS_LOG_LEVEL="INFO")
    for name in ("projector", "parser", "embedder", "generator", "gateway"):
        stack.start(name)
    try:
        await stack.wait_ready({PARSER: 1, index_durable(OLD): 1})
        yield stack
    finally:
        stack.stop_all()
        servers.stop()
        if os.environ.get("RAGBUS_KEEP_LOGS"):
            import shutil

            shutil.copytree(work / "logs", Path(os.environ["RAGBUS_KEEP_LOGS"]) / "reindex", dirs_exist_ok=True)


@pytest.fixture
async def rclient(rstack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=rstack.url, timeout=60.0) as c:
        yield c


@pytest.fixture
async def rpool(rstack):
    pool = await create_pool(rstack.env["RAGBUS_DATABASE_URL"])
    yield pool
    await pool.close()


async def cli(stack: AgentStack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real command, in a thread: the test's other clients go on meanwhile."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ragbus.cli", *args],
                          env={**os.environ, **stack.env, "COLUMNS": "160"}, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


async def chunk_ids(pool, model: str | None = None) -> set[str]:
    table = vectors_table(model) if model else "chunks"
    return {r["chunk_id"] for r in await pool.fetch(f"SELECT chunk_id FROM {table}")}


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f} s")
        await asyncio.sleep(0.25)


async def search(client: httpx.AsyncClient, query: str) -> dict:
    response = await client.post("/search", json={"query": query, "top_k": 5})
    assert response.status_code == 200, response.text
    return response.json()


async def ask(stack: AgentStack, question: str, answer_mode: str = "generative") -> dict:
    """One answer over the websocket. The checks that need citations ask in auto mode: SmolLM2 at 48 tokens
    sometimes writes nothing its passages support, and then the answer falls back to their own sentences."""
    async with ws_connect(stack.url.replace("http", "ws", 1) + "/ws/chat") as ws:
        await ws.send(json.dumps({"type": "ask", "question": question, "answer_mode": answer_mode}))
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] in ("done", "error"):
                return frame
    raise AssertionError("the socket closed without an answer")


async def answered_by(client: httpx.AsyncClient, model: str, timeout: float = 15.0) -> None:
    """The embedder follows index.activated from the log: a moment after the command, queries use it."""
    async def switched() -> bool:
        return (await search(client, QUESTIONS[0]))["embedding_model"] == model
    await until(switched, timeout, f"queries answered from {model}")


async def test_reindex_to_the_256d_model_while_questions_uploads_and_deletes_go_on(rstack, rclient, rpool):
    docs = {p.name: await upload(rclient, p.name, p.read_bytes()) for p in sorted(CORPUS.iterdir())}
    for body in docs.values():
        assert (await wait_for_status(rclient, body["doc_id"]))["status"] == "indexed"
    searches: list[dict] = []
    stop = asyncio.Event()

    async def keep_asking() -> None:  # one question a second, all through the re-index
        i = 0
        while not stop.is_set():
            response = await rclient.post("/search", json={"query": QUESTIONS[i % len(QUESTIONS)], "top_k": 5})
            searches.append({"status": response.status_code, **(response.json() if response.status_code == 200
                                                                  else {"error": response.text})})
            i += 1
            await asyncio.sleep(1.0)

    asker = asyncio.create_task(keep_asking())
    started = await cli(rstack, "reindex", "--model", NEW, "--no-wait")
    assert started.returncode == 0, started.stderr
    # Meanwhile another user uploads and deletes: both indexes must end with exactly the live chunks.
    added = [await upload(rclient, f"note-{i}.md", f"# Note {i}\n\nField notes number {i}: the river froze early "
                          f"and the ferry stopped on day {i}.\n".encode() * 8) for i in range(3)]
    for name in ("BSD.txt", "CC0-1.0.txt"):
        assert (await rclient.delete(f"/documents/{docs[name]['doc_id']}")).status_code == 202
    followed = await cli(rstack, "reindex", "--model", NEW, "--timeout", "400")  # follows until complete
    assert followed.returncode == 0, followed.stdout + followed.stderr
    for body in added:
        assert (await wait_for_status(rclient, body["doc_id"]))["status"] == "indexed"
    await asyncio.sleep(3)
    stop.set()
    await asyncio.wait_for(asker, 30)

    async def both_exact() -> bool:
        live = await chunk_ids(rpool)
        return bool(live) and await chunk_ids(rpool, OLD) == live == await chunk_ids(rpool, NEW)
    await until(both_exact, 60, "both indexes holding exactly the live chunks")
    deleted = [docs["BSD.txt"]["doc_id"], docs["CC0-1.0.txt"]["doc_id"]]
    gone = {r["chunk_id"] for r in await rpool.fetch("SELECT chunk_id FROM chunks WHERE doc_id = ANY($1)", deleted)}
    assert not gone  # deleted during the re-index, and not resurrected by the replay into the new index
    assert len(searches) >= 5 and all(s["status"] == 200 for s in searches), [s for s in searches if s["status"] != 200]
    assert {s["embedding_model"] for s in searches} == {OLD}  # every answer from the complete, active index
    assert all(s["passages"] for s in searches)

    switched = await cli(rstack, "reindex", "--activate", NEW)
    assert switched.returncode == 0, switched.stdout + switched.stderr
    await answered_by(rclient, NEW)
    done = await ask(rstack, "Can I charge money for distributing GPL software?", "auto")
    assert done["type"] == "done" and done["embedding_model"] == NEW and done["citations"], done
    cited = {c["doc_id"] for c in done["citations"]}
    assert cited <= {b["doc_id"] for b in [*docs.values(), *added]}
    assert (await rclient.post(f"/answers/{done['query_id']}/rating", json={"rating": "up"})).status_code == 202

    rolled = await cli(rstack, "reindex", "--rollback")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    await answered_by(rclient, OLD)
    again = await cli(rstack, "reindex", "--activate", NEW)
    assert again.returncode == 0, again.stdout + again.stderr
    await answered_by(rclient, NEW)
    listed = (await rclient.get("/indexes")).json()
    assert listed["active"] == NEW
    assert {i["model"]: i["state"] for i in listed["indexes"]} == {OLD: "standby", NEW: "active"}


async def test_the_gate_refuses_an_incomplete_index_and_compare_reports_on_logged_questions(rstack, rclient, rpool):
    for question in QUESTIONS[:4]:  # answered and rated: the log then knows good passages for these
        done = await ask(rstack, question, "auto")
        assert done["type"] == "done", done
        assert (await rclient.post(f"/answers/{done['query_id']}/rating", json={"rating": "up"})).status_code == 202
    rstack.kill("embedder", signal.SIGTERM)  # nothing embeds for the new index until it is back
    try:
        assert (await cli(rstack, "reindex", "--model", THIRD, "--no-wait")).returncode == 0
        refused = await cli(rstack, "reindex", "--activate", THIRD)
        # nothing embedded it yet: no vector at all (an index with some but not all is "incomplete": unit test)
        assert refused.returncode == 1 and "no vector yet" in refused.stderr, refused.stderr
        response = await rclient.post(f"/admin/indexes/{THIRD}/activate")
        assert response.status_code == 409 and "no vector yet" in response.json()["detail"]
    finally:
        rstack.start("embedder")
    assert (await search(rclient, QUESTIONS[1]))["embedding_model"] == NEW  # nothing switched
    assert (await cli(rstack, "reindex", "--model", THIRD, "--timeout", "400")).returncode == 0

    compared = await cli(rstack, "reindex", "--compare", THIRD)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "hit rate on judged" in compared.stdout and "overlap" in compared.stdout
    js_events = [e async for _s, e in _index_events(rstack) if isinstance(e, IndexCompared)]
    figures = js_events[-1].figures
    assert js_events[-1].baseline == NEW and js_events[-1].questions >= len(QUESTIONS)
    assert figures[NEW]["judged"] >= 4 and 0.0 <= figures[THIRD]["overlap"] <= 1.0
    assert figures[NEW]["hit_rate"] > 0  # the passages it cited itself, for questions rated up
    activated = await rclient.post(f"/admin/indexes/{THIRD}/activate")  # complete now: only quality may stop it
    if activated.status_code == 409:  # the distilled model may answer a judged question worse, and the gate says so
        assert "hit rate" in activated.json()["detail"] and "no vector" not in activated.json()["detail"]
        activated = await rclient.post(f"/admin/indexes/{THIRD}/activate", params={"force": "true"})
        assert activated.status_code == 200 and activated.json()["forced"], activated.text
    else:
        assert activated.status_code == 200 and activated.json()["passed"], activated.text
    await answered_by(rclient, THIRD)
    back = await rclient.post("/admin/indexes/rollback")
    assert back.status_code == 200 and back.json()["model"] == NEW
    await answered_by(rclient, NEW)


async def test_sigkill_of_the_reindexing_embedder_and_the_projector_mid_way_resumes_exactly(rstack, rclient, rpool):
    for model in (OLD, THIRD):
        assert (await cli(rstack, "reindex", "--drop", model)).returncode == 0
    refused = await cli(rstack, "reindex", "--drop", NEW)
    assert refused.returncode == 1 and "active" in refused.stderr
    more = [await upload(rclient, f"survey-{i:02d}.txt", "\n\n".join(
        f"Survey {i}, section {s}: the lighthouse keeper logged {s * 7 + i} ships and a storm from the "
        f"{['north', 'east', 'south', 'west'][s % 4]} that lasted {s + 2} days." for s in range(40)).encode())
        for i in range(12)]
    for body in more:
        assert (await wait_for_status(rclient, body["doc_id"]))["status"] == "indexed"
    live = await chunk_ids(rpool)
    assert (await cli(rstack, "reindex", "--model", THIRD, "--no-wait")).returncode == 0

    async def partway() -> bool:
        try:
            return 0 < len(await chunk_ids(rpool, THIRD)) < len(live) // 2
        except Exception:  # noqa: BLE001 - the table appears with the first vectors
            return False
    await until(partway, 300, f"{THIRD} part-way")
    rstack.kill("embedder")
    rstack.kill("projector")
    landed = len(await chunk_ids(rpool, THIRD))
    rstack.start("projector")
    rstack.start("embedder")
    assert (await cli(rstack, "reindex", "--model", THIRD, "--timeout", "400")).returncode == 0
    assert landed < len(live)

    async def exact() -> bool:
        return await chunk_ids(rpool, THIRD) == live
    await until(exact, 60, f"{THIRD} holding exactly the live chunks")
    assert await rpool.fetchval(f"SELECT count(*) FROM {vectors_table(THIRD)}") == len(live)
    nc_events = [e async for _s, e in _chunk_events(rstack, THIRD)]
    ids = [e.event_id for e in nc_events]
    assert len(ids) == len(set(ids))  # a batch redelivered after the kill was not stored twice


async def test_replaying_every_read_model_from_zero_ends_on_the_same_active_index_and_rows(rstack, rpool):
    async def snapshot() -> dict:
        active = await rpool.fetchval("SELECT model FROM embedding_indexes WHERE state = 'active'")
        rows = {m: [tuple(r) for r in await rpool.fetch(
            f"SELECT chunk_id, upload_id, embedding::text FROM {vectors_table(m)} ORDER BY chunk_id")]
            for m in (NEW, THIRD)}
        states = dict(await rpool.fetch("SELECT model, state FROM embedding_indexes ORDER BY model"))
        return {"active": active, "rows": rows, "states": states}

    before = await snapshot()
    assert before["active"] == NEW and all(before["rows"].values())
    replayed = await cli(rstack, "replay")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    after = await snapshot()
    assert after == before


async def _index_events(stack: AgentStack):
    nc = await connect(stack.settings(), "test-reindex")
    try:
        async for seq, event in read_events(nc.jetstream(), INDEXES, ["index.>"]):
            yield seq, event
    finally:
        await nc.close()


async def _chunk_events(stack: AgentStack, model: str):
    nc = await connect(stack.settings(), "test-reindex")
    try:
        subject = subjects.subject(ChunksEmbedded.SUBJECT, model) + ".*"
        async for seq, event in read_events(nc.jetstream(), CHUNKS, [subject]):
            yield seq, event
    finally:
        await nc.close()


async def test_rebuild_embeds_the_active_model_again_beside_it_and_switches(rstack, rclient, rpool):
    # An index that mixes vectors of two fingerprints (here: one batch sent again as a model with other bytes
    # would have sent it, e.g. from before an upgrade changed how chunks are embedded) cannot be dropped
    # while it answers: --list says so, and --rebuild builds it again under another name.
    last = [e async for _s, e in _chunk_events(rstack, NEW)][-1]
    stale = last.model_copy(update={"event_id": last.event_id + ":stale", "fingerprint": "before-the-upgrade"})
    nc = await connect(rstack.settings(), "test-reindex")
    try:
        await publish(nc.jetstream(), stale)
    finally:
        await nc.close()

    async def mixed() -> bool:
        return bool(await rpool.fetchval("SELECT fingerprint_mismatches FROM embedding_indexes WHERE model = $1", NEW))
    await until(mixed, 30, "the stale batch counted")
    shown = {i["model"]: i for i in (await rclient.get("/indexes")).json()["indexes"]}
    assert shown[NEW]["fingerprint_mismatches"] == 1  # what the web page's index line warns about
    listed = await cli(rstack, "reindex", "--list")
    assert listed.returncode == 0 and "(1 other)" in listed.stdout and "--rebuild" in listed.stdout, listed.stdout

    rebuilt = await cli(rstack, "reindex", "--rebuild", "--timeout", "400")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    again = f"{NEW}@2"
    assert f"{again} answers queries now" in rebuilt.stderr, rebuilt.stderr
    await answered_by(rclient, again)
    states = dict(await rpool.fetch("SELECT model, state FROM embedding_indexes"))
    assert states[NEW] == "standby" and states[again] == "active"
    row = await rpool.fetchrow("SELECT fingerprint, fingerprint_mismatches FROM embedding_indexes WHERE model = $1",
                               again)
    assert row["fingerprint"] == last.fingerprint and row["fingerprint_mismatches"] == 0
    # the same model on the same chunks: the very same vectors, for exactly the live chunks
    vectors = {m: dict(await rpool.fetch(f"SELECT chunk_id, embedding::text FROM {vectors_table(m)}"))
               for m in (NEW, again)}
    assert set(vectors[again]) == await chunk_ids(rpool) and vectors[again] == vectors[NEW]
    assert (await cli(rstack, "reindex", "--rollback")).returncode == 0  # the old one is still there
    await answered_by(rclient, NEW)
    # the same over HTTP (an admin key): started once however often asked, then the usual switch
    started = await rclient.post("/admin/indexes/rebuild")
    assert started.status_code == 202 and started.json()["model"] == f"{NEW}@3", started.text
    assert started.json()["source"] == NEW and not started.json()["already_under_way"]
    repeated = (await rclient.post("/admin/indexes/rebuild")).json()
    assert repeated["model"] == f"{NEW}@3" and repeated["already_under_way"]

    async def complete() -> bool:
        shown = {i["model"]: i for i in (await rclient.get("/indexes")).json()["indexes"]}
        return shown[f"{NEW}@3"]["progress"] == 1.0
    await until(complete, 300, f"{NEW}@3 complete")
    activated = await rclient.post(f"/admin/indexes/{NEW}@3/activate")
    assert activated.status_code == 200 and activated.json()["passed"], activated.text
    await answered_by(rclient, f"{NEW}@3")
