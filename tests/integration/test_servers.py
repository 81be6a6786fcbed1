"""The three real servers start, work, keep their data across a restart, and stop."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest

from ragbus.servers import (
    EmbeddedPostgres,
    LlamaServer,
    NatsServer,
    ServerStartError,
    find_nats_server,
    find_smollm2_gguf,
    free_port,
    port_is_open,
)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_packaged_binaries_are_found() -> None:
    assert find_nats_server().is_file()
    gguf = find_smollm2_gguf()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 10_000_000


async def test_nats_jetstream_survives_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", port=free_port(), sync_interval="always")
    with server:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        assert "sync_interval: always" in server.config_path.read_text()
        nc = await nats.connect(server.url)
        try:
            assert nc.max_payload == 8 * 1024 * 1024
            js = nc.jetstream()
            await js.add_stream(name="SMOKE", subjects=["smoke.>"])
            ack = await js.publish("smoke.one", b"hello", headers={"Nats-Msg-Id": "m1"})
            assert ack.seq == 1
            dup = await js.publish("smoke.one", b"hello", headers={"Nats-Msg-Id": "m1"})
            assert dup.duplicate
        finally:
            await nc.close()
    assert not server.running and not port_is_open(server.port)
    server.stop()  # idempotent

    with server:  # same data_dir, a new free port
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            info = await js.stream_info("SMOKE")
            assert info.state.messages == 1
            msg = await js.get_last_msg("SMOKE", "smoke.one")
            assert msg.data == b"hello"
        finally:
            await nc.close()


def test_nats_start_failure_reports_log_tail(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = NatsServer(tmp_path / "nats", port=busy.getsockname()[1])
        with pytest.raises(ServerStartError) as err:
            server.start(timeout=10)
    assert "nats-server" in str(err.value) and "address already in use" in str(err.value)
    assert not server.running


def test_nats_refuses_a_second_server_on_the_same_data_dir(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats"):
        with pytest.raises(ServerStartError, match="already running"):
            NatsServer(tmp_path / "nats").start()


async def test_postgres_pgvector_survives_restart(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    with pg:
        assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/ragbus"
        conn = await asyncpg.connect(pg.dsn)
        try:
            await conn.execute("CREATE TABLE items (id int PRIMARY KEY, embedding vector(3))")
            await conn.execute("INSERT INTO items VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
            rows = await conn.fetch("SELECT id, embedding <=> '[1,0,0]' AS distance FROM items ORDER BY distance")
            assert [r["id"] for r in rows] == [1, 3, 2]
            assert rows[0]["distance"] == pytest.approx(0.0)
            assert rows[2]["distance"] == pytest.approx(1.0)
        finally:
            await conn.close()
    assert not pg.running

    with pg:  # same data_dir: no initdb, the table is still there
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM items") == 3
            ext = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            assert ext.startswith("0.8")
        finally:
            await conn.close()


async def test_llama_server_streams_chat(tmp_path: Path) -> None:
    with LlamaServer(log_path=tmp_path / "llama.log") as llm:
        assert llm.url == f"http://127.0.0.1:{llm.port}/v1"
        assert llm.model == "smollm2"
        body = {
            "model": llm.model,
            "messages": [{"role": "user", "content": "Name three colours."}],
            "stream": True,
            "max_tokens": 16,
            "temperature": 0,
        }
        chunks: list[str] = []
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=60) as client:
            async with client.stream("POST", f"{llm.url}/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[len("data: ") :])["choices"][0]["delta"]
                    if delta.get("content"):
                        chunks.append(delta["content"])
        assert len(chunks) >= 3, chunks
        assert time.monotonic() - started < 30
    assert not llm.running
