"""Test fixtures: real nats-server (JetStream) and real PostgreSQL + pgvector, started on free ports.

The servers are session-scoped (starting PostgreSQL costs seconds); each test that needs a clean bus or
database says so. `stack` runs the real agents as separate processes, exactly as `ragbus up` does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import pytest

from projections.schema import migrate
from projections.views import create_pool
from ragbus.servers import EmbeddedPostgres, LlamaServer, NatsServer
from ragbus.servers.ports import free_port
from streams.declare import declare_streams

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    server = LlamaServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[nats.NATS]:
    connection = await nats.connect(nats_server.url)
    yield connection
    await connection.close()


@pytest.fixture
async def js(nc: nats.NATS) -> nats.js.JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def pool(postgres: EmbeddedPostgres):
    pool = await create_pool(postgres.dsn)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield pool
    await pool.close()


@dataclass
class Stack:
    """The whole system as separate processes against the session's servers."""

    env: dict[str, str]
    url: str
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, agent: str | None = None, **extra_env: str) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragbus.cli", "agent", agent or name],
            env={**os.environ, **self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


async def _wait_ready(url: str, stack: Stack, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError("gateway not ready:\n" + stack.log("gateway")[-3000:])


@pytest.fixture(scope="session")
async def stack(nats_server: NatsServer, postgres: EmbeddedPostgres, llama: LlamaServer,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    nc = await nats.connect(nats_server.url)
    await declare_streams(nc.jetstream())
    await nc.close()
    port = free_port()
    env = {
        "RAGBUS_NATS_URL": nats_server.url,
        "RAGBUS_DATABASE_URL": postgres.dsn,
        "RAGBUS_LLM_URL": llama.url,
        "RAGBUS_LLM_MODEL": llama.model,
        "RAGBUS_LLM_TOKENIZER": str(llama.model_path),
        "RAGBUS_PORT": str(port),
        "RAGBUS_HOST": "127.0.0.1",
        "RAGBUS_MAX_UPLOAD_BYTES": str(5 * 1024 * 1024),
        "RAGBUS_MAX_ANSWER_TOKENS": "96",
        "RAGBUS_LOG_LEVEL": "INFO",
    }
    log_dir = tmp_path_factory.mktemp("logs")
    stack = Stack(env, f"http://127.0.0.1:{port}", log_dir)
    stack.start("projector")
    stack.start("parser")
    stack.start("embedder")
    stack.start("generator-1", "generator", RAGBUS_GENERATOR_ID="generator-1")
    stack.start("generator-2", "generator", RAGBUS_GENERATOR_ID="generator-2")
    stack.start("gateway")
    try:
        await _wait_ready(stack.url, stack)
        yield stack
    finally:
        stack.stop_all()
        if os.environ.get("RAGBUS_KEEP_LOGS"):
            shutil.copytree(log_dir, os.environ["RAGBUS_KEEP_LOGS"], dirs_exist_ok=True)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60.0) as c:
        yield c


async def upload(client: httpx.AsyncClient, name: str, data: bytes, **params: str) -> dict:
    response = await client.post("/documents", files={"file": (name, data)}, params=params or None)
    assert response.status_code == 202, response.text
    return response.json()


async def wait_for_status(client: httpx.AsyncClient, doc_id: str, wanted: tuple[str, ...] = ("indexed", "failed"),
                          timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/documents/{doc_id}")
        if response.status_code == 200:
            doc = response.json()
            if doc["status"] in wanted:
                return doc
        await asyncio.sleep(0.25)
    raise AssertionError(f"{doc_id} did not reach {wanted} in {timeout}s: {doc}")
