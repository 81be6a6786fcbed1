"""`ragbus backup` / `ragbus restore`: the log comes back exactly (sequences, gaps, headers, bytes, consumer
positions) on real nats-servers, a damaged or partial backup is refused before anything is touched, and a
wiped system restored from a backup rebuilds identical read models and keeps working."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ragbus.backup import _messages, backup
from ragbus.backup_files import MANIFEST, BackupError, verify
from ragbus.credentials import Credentials
from ragbus.restore import restore
from ragbus.servers import NatsServer
from streams.connect import connect
from streams.declare import declare_streams
from streams.settings import BusSettings
from streams.topology import DOCUMENTS, DOCUMENTS_BUCKET, PARSER, QUERIES, STREAMS, TOKENS
from tests.conftest import ROOT


def _admin(server: NatsServer, credentials: Credentials) -> BusSettings:
    return BusSettings(nats_url=server.url, nats_user="admin", nats_password=credentials.nats["admin"])


@pytest.fixture
def servers(tmp_path, credentials):
    started = []

    def start(name: str) -> NatsServer:
        server = NatsServer(tmp_path / name, users=credentials.nats_users()).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def _log(js, streams) -> dict[str, list[tuple]]:
    """Every stored message of every stream: (seq, subject, headers, data)."""
    log = {}
    for name in streams:
        last = (await js.stream_info(name)).state.last_seq
        log[name] = [(m.seq, m.subject, m.headers, m.data) async for m in _messages(js, name, last)]
    return log


def _files(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


async def _populate(js) -> None:
    """A log with what real ones have: gaps (deleted messages, a purged start, a deleted last message), two
    messages with one Nats-Msg-Id stored further apart than the window, binary Object Store chunks, and
    a durable part-way through its stream."""
    await declare_streams(js)
    for i in range(1500):  # more than one segment
        await js.publish(f"document.uploaded.d{i}", json.dumps({"i": i, "text": "é" * (i % 7)}).encode(),
                         headers={"Nats-Msg-Id": f"up:{i}", "X-Trace": f"t{i}"})
    await js.delete_msg(DOCUMENTS, 700)
    config = (await js.stream_info(DOCUMENTS)).config
    window = config.duplicate_window
    await js.update_stream(config.evolve(duplicate_window=0.1))
    # the server forgets ids older than the window on its own schedule (later on a loaded machine); a publish
    # it still calls a duplicate stores nothing, so asking again changes nothing in the log
    deadline = time.monotonic() + 10
    while True:
        await asyncio.sleep(0.3)
        again = await js.publish("document.uploaded.d3", b'{"again": true}', headers={"Nats-Msg-Id": "up:3"})
        if not again.duplicate or time.monotonic() > deadline:
            break
    assert not again.duplicate
    await js.update_stream(config.evolve(duplicate_window=window))
    for i in range(30):
        await js.publish(f"answer.token.q{i % 3}", json.dumps({"seq": i}).encode(), headers={"Nats-Msg-Id": f"t:{i}"})
    await js.purge_stream(TOKENS, seq=11)  # the first ten expired
    for i in range(5):
        await js.publish(f"query.asked.q{i}", b"{}", headers={"Nats-Msg-Id": f"q:{i}"})
    await js.delete_msg(QUERIES, (await js.stream_info(QUERIES)).state.last_seq)
    store = await js.object_store(DOCUMENTS_BUCKET)
    await store.put("kept", os.urandom(300_000))  # three chunks, not UTF-8
    await store.put("deleted", os.urandom(200_000))
    await store.delete("deleted")
    sub = await js.pull_subscribe_bind(PARSER.name, PARSER.stream)
    acked = 0
    while acked < 40:  # a fetch may bring fewer on a loaded machine; a plain ack may land after the backup
        for msg in await sub.fetch(40 - acked, timeout=5):
            await msg.ack_sync()
            acked += 1
    await sub.unsubscribe()


async def test_backup_restores_every_message_at_its_sequence_and_refuses_damage(servers, credentials, tmp_path):
    source = servers("source")
    nc = await connect(_admin(source, credentials), "test-backup")
    js = nc.jetstream()
    await _populate(js)
    folder = tmp_path / "backup"
    manifest = await backup(nc, folder)
    first = _files(folder)
    await asyncio.sleep(0.01)
    assert (await backup(nc, folder)).streams == manifest.streams
    again = _files(folder)
    # same log, same bytes: nothing rewritten, not even an mtime; only the manifest says when it was made
    assert {f: v for f, v in again.items() if f != MANIFEST} == {f: v for f, v in first.items() if f != MANIFEST}
    assert {k: v for k, v in json.loads((folder / MANIFEST).read_text()).items() if k != "created_at"} == {
        k: v for k, v in asdict(manifest).items() if k != "created_at"}
    names = [s.name for s in manifest.streams]
    assert set(STREAMS) | {f"OBJ_{DOCUMENTS_BUCKET}"} == set(names)
    original = await _log(js, names)
    parser_floor = (await js.consumer_info(PARSER.stream, PARSER.name)).ack_floor.stream_seq
    object_bytes = (await (await js.object_store(DOCUMENTS_BUCKET)).get("kept")).data
    await nc.close()

    # a damaged or partial backup: refused before any server is touched
    target = servers("target")
    nc = await connect(_admin(target, credentials), "test-restore")
    js = nc.jetstream()
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    segment = sorted((damaged / "streams" / DOCUMENTS).glob("*.jsonl"))[0]
    data = bytearray(segment.read_bytes())
    data[200] ^= 1  # one bit
    segment.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="does not match its checksum"):
        await restore(nc, damaged)
    segment.unlink()
    with pytest.raises(BackupError, match="is missing"):
        await restore(nc, damaged)
    (damaged / MANIFEST).unlink()
    with pytest.raises(BackupError, match=r"no MANIFEST\.json"):
        await restore(nc, damaged)
    assert await js.streams_info() == []

    await restore(nc, folder)
    restored = await _log(js, names)
    assert restored == original  # sequences, gaps, subjects, headers and bytes
    for name in names:
        before, after = manifest.stream(name), (await js.stream_info(name)).state
        assert (after.first_seq, after.last_seq, after.messages) == (before.first_seq, before.last_seq, before.messages)
        assert (await js.stream_info(name)).config.duplicate_window == before.config["duplicate_window"] / 1e9
    assert (await (await js.object_store(DOCUMENTS_BUCKET)).get("kept")).data == object_bytes
    # the durable goes on after what it had acknowledged
    assert parser_floor == 40
    sub = await js.pull_subscribe_bind(PARSER.name, PARSER.stream)
    assert (await sub.fetch(1, timeout=5))[0].metadata.sequence.stream == 41
    await sub.unsubscribe()
    await declare_streams(js)  # `ragbus up` on the restored server changes nothing of it
    assert (await js.consumer_info(PARSER.stream, PARSER.name)).config.deliver_policy == DeliverPolicy.BY_START_SEQUENCE
    # and a second restore into it is refused: it is not empty
    with pytest.raises(BackupError, match="needs an empty NATS"):
        await restore(nc, folder)
    # a new message continues the sequence
    ack = await js.publish("document.uploaded.new", b"{}", headers={"Nats-Msg-Id": "up:new"})
    assert ack.seq == manifest.stream(DOCUMENTS).last_seq + 1
    ephemeral = await js.pull_subscribe("", stream=DOCUMENTS, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    assert (await ephemeral.fetch(1, timeout=5))[0].metadata.sequence.stream == 1
    await nc.close()
    assert verify(folder).streams == manifest.streams

    # a restore that fails half-way (here: the last stream wants three replicas of a single server) leaves
    # the server as empty as it found it
    failing = tmp_path / "failing"
    shutil.copytree(folder, failing)
    raw = json.loads((failing / MANIFEST).read_text())
    raw["streams"][-1]["config"]["num_replicas"] = 3
    (failing / MANIFEST).write_text(json.dumps(raw))
    empty = servers("empty")
    nc = await connect(_admin(empty, credentials), "test-restore-fails")
    with pytest.raises(Exception, match="replicas"):
        await restore(nc, failing)
    assert await nc.jetstream().streams_info() == []
    await nc.close()


# ---- the whole system: wiped and restored from a backup taken while it ran ----------------------------------

LICENSE_TEXTS = {
    "warranty.txt": "Disclaimer of warranty. The software is provided as is, without warranty of any kind, "
                    "express or implied, including merchantability and fitness for a particular purpose.\n\n"
                    "Limitation of liability. In no event shall the authors be liable for any claim or damages.",
    "patents.md": "# Patent grant\n\nEach contributor grants you a perpetual, worldwide, royalty-free patent "
                  "license to make, use, sell and import the work.\n\n## Termination\n\nThe patent license "
                  "ends if you start patent litigation against anyone over the work.",
    "copyleft.txt": "Copyleft. If you distribute modified versions of the program you must release the source "
                    "code of your changes under the same license terms.",
    "obsolete.txt": "This note about fax numbers is out of date and will be deleted.",
}


async def _read_models(dsn: str) -> dict[str, list[str]]:
    """Every read-model table, rows sorted, as text (vectors included); positions without their clock."""
    from projections.views import create_pool

    pool = await create_pool(dsn)
    try:
        tables = [r["tablename"] for r in await pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")]
        models = {}
        for table in tables:
            query = (f"SELECT projection, stream, last_seq FROM {table}" if table == "projection_positions"
                     else f"SELECT * FROM {table}")
            models[table] = sorted(repr(tuple(r.values())) for r in await pool.fetch(query))
        return models
    finally:
        await pool.close()


async def _settled(dsn: str, timeout: float = 120.0) -> dict[str, list[str]]:
    """The read models once the projector has caught up: the same twice, a second apart."""
    deadline = asyncio.get_running_loop().time() + timeout
    previous = await _read_models(dsn)
    while True:
        await asyncio.sleep(1.0)
        now = await _read_models(dsn)
        if now == previous:
            return now
        assert asyncio.get_running_loop().time() < deadline, "the read models kept changing"
        previous = now


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ragbus.cli", *args], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _start(stack) -> None:
    for name in ("projector", "parser", "embedder", "generator", "gateway"):
        stack.start(name)


async def test_wiped_system_restored_from_a_backup_has_identical_read_models_and_works(llama, tmp_path):
    import httpx

    from ragbus.database import ensure_roles
    from ragbus.stack import AgentStack, Servers, prepare
    from tests.conftest import upload, wait_for_status

    llm = {"RAGBUS_LLM_URL": llama.url, "RAGBUS_LLM_MODEL": llama.model,
           "RAGBUS_LLM_TOKENIZER": str(llama.model_path), "RAGBUS_MAX_ANSWER_TOKENS": "32"}
    servers = await Servers.start(tmp_path)
    stack = AgentStack.for_servers(servers, tmp_path / "logs", **llm)
    _start(stack)
    try:
        await stack.wait_ready()
        async with httpx.AsyncClient(base_url=stack.url, timeout=120.0) as client:
            docs = {name: await upload(client, name, text.encode()) for name, text in LICENSE_TEXTS.items()}
            for body in docs.values():
                assert (await wait_for_status(client, body["doc_id"]))["status"] == "indexed"
            newer = await upload(client, "copyleft.txt", (LICENSE_TEXTS["copyleft.txt"] + " Version 2.").encode())
            assert (await wait_for_status(client, newer["doc_id"]))["status"] == "indexed"
            assert (await client.delete(f"/documents/{docs['obsolete.txt']['doc_id']}")).status_code == 202
            first = await client.post("/ask", json={"question": "is there any warranty?", "session_id": "s1"})
            assert first.status_code == 200, first.text
            second = await client.post("/ask", json={"question": "and what about patents?", "session_id": "s1"})
            assert second.status_code == 200, second.text
            rated = await client.post(f"/answers/{first.json()['query_id']}/rating", json={"rating": "up"})
            assert rated.status_code == 202
        before = await _settled(servers.dsn())
        assert len(before["documents"]) == 5 and len(before["answers"]) == 2 and before["sessions"]
        folder = tmp_path / "backup"
        done = _cli(stack.env, "backup", str(folder))  # while everything runs
        assert done.returncode == 0, done.stderr
    finally:
        stack.stop_all()
        servers.nats.stop()
        servers.postgres.stop()

    # wipe both servers' data; the same credentials (the secrets folder) come back
    shutil.rmtree(tmp_path / "nats")
    shutil.rmtree(tmp_path / "postgres")
    nats_server, postgres, credentials = Servers.secured(tmp_path)
    restored = Servers(nats_server, postgres, credentials, owned=True)
    nats_server.start()
    postgres.start()
    try:
        await ensure_roles(postgres.dsn, credentials)
        stack = AgentStack.for_servers(restored, tmp_path / "logs-restored", **llm)
        broken = tmp_path / "broken"
        shutil.copytree(folder, broken)
        next((broken / "streams" / "CHUNKS").glob("*.jsonl")).write_text("")
        refused = _cli(stack.env, "restore", str(broken))
        assert refused.returncode == 1 and "checksum" in refused.stderr, refused.stderr
        done = _cli(stack.env, "restore", str(folder))
        assert done.returncode == 0, done.stderr
        await prepare(nats_server, postgres, credentials)  # what `ragbus up` does first
        _start(stack)
        await stack.wait_ready()
        after = await _settled(restored.dsn())
        assert after == before  # documents, statuses, chunks and vectors, answers, sessions, ratings
        async with httpx.AsyncClient(base_url=stack.url, timeout=120.0) as client:
            added = await upload(client, "new.txt", b"Attribution. You must keep the copyright notices intact.")
            assert (await wait_for_status(client, added["doc_id"]))["status"] == "indexed"
            answer = await client.post("/ask", json={"question": "do I need to keep copyright notices?"})
            assert answer.status_code == 200 and answer.json()["answer"], answer.text
            # the passage sentences themselves, cited: the new document is found in the restored index
            quoted = await client.post("/ask", json={"question": "do I need to keep copyright notices?",
                                                     "answer_mode": "extractive"})
            assert quoted.status_code == 200, quoted.text
            assert any(c["name"] == "new.txt" for c in quoted.json()["citations"]), quoted.json()
    finally:
        stack.stop_all()
        restored.stop()
