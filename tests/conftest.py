"""Test fixtures: real nats-server (JetStream) and real PostgreSQL + pgvector, started on free ports.

The servers are session-scoped (starting PostgreSQL costs seconds); each test that needs a clean bus or
database says so. `stack` runs the real agents as separate processes, exactly as `ragbus up` does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest

from projections.schema import migrate
from projections.views import create_pool
from ragbus.credentials import Credentials
from ragbus.servers import EmbeddedPostgres, LlamaServer, NatsServer
from ragbus.stack import ROOT, AgentStack, Servers, prepare
from streams.connect import connect
from streams.settings import BusSettings
from tests.otlp import OtlpReceiver

__all__ = ["ROOT", "active_vectors", "upload", "wait_for_status"]


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> tuple[NatsServer, EmbeddedPostgres, Credentials]:
    """The session's servers, secured as `ragbus up` secures them: a NATS user per agent, PostgreSQL roles
    with passwords, nothing anonymous (not started yet)."""
    return Servers.secured(tmp_path_factory.mktemp("servers"))


@pytest.fixture(scope="session")
def credentials(secured) -> Credentials:
    return secured[2]


@pytest.fixture(scope="session")
def nats_server(secured) -> Iterator[NatsServer]:
    server = secured[0]
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres(secured) -> Iterator[EmbeddedPostgres]:
    server = secured[1]
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def prepared(nats_server: NatsServer, postgres: EmbeddedPostgres, credentials: Credentials) -> None:
    """Roles, streams and read models, as `ragbus up` makes them before the agents start."""
    await prepare(nats_server, postgres, credentials)


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    server = LlamaServer()
    server.start()
    # a build that answers /models can still die on its first prompt (see scripts/install.sh): say so here,
    # with the server's own last lines, rather than as a dozen unready stacks later
    try:
        httpx.post(f"{server.url}/completions", json={"model": server.model, "prompt": "Red, green and",
                                                       "max_tokens": 2}, timeout=60).raise_for_status()
    except httpx.HTTPError as exc:
        server.stop()
        pytest.fail(f"the llama.cpp server does not complete a prompt: {exc!r}\n{server.log_tail()}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every catalogue embedding model built once for the session from the packaged MiniLM, with the network
    cut: any download attempt fails the build. The session's embedders load them from here."""
    from agents import models

    folder = tmp_path_factory.mktemp("models")

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network access during an embedding model build")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        for name in models.CATALOG:
            models.ensure_built(name, folder, isolated=False)  # in this process, so that the patch applies
    return folder


@pytest.fixture
def restore_logging():
    """For tests that call configure_logging: the root logger's handlers and level as they were."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def nc(nats_server: NatsServer, credentials: Credentials, prepared: None) -> AsyncIterator[nats.NATS]:
    """A connection as the CLI's admin user."""
    connection = await connect(BusSettings(nats_url=nats_server.url, nats_user="admin",
                                           nats_password=credentials.nats["admin"]), "ragbus-test")
    yield connection
    await connection.close()


@pytest.fixture
async def js(nc: nats.NATS) -> nats.js.JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def pool(postgres: EmbeddedPostgres, credentials: Credentials, prepared: None):
    """The read models, as the projector's role (which owns them) sees them."""
    pool = await create_pool(credentials.dsn(postgres.host_dsn, "projector"))
    async with pool.acquire() as conn:
        await migrate(conn)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    """Where the session's agents export their traces (OTLP/HTTP), kept in memory."""
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
async def stack(nats_server: NatsServer, postgres: EmbeddedPostgres, llama: LlamaServer, credentials: Credentials,
                prepared: None, otlp: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory,
                ) -> AsyncIterator[AgentStack]:
    """The whole system as separate processes against the session's servers, as `ragbus up` runs it (two
    generators, so load sharing is exercised), tracing to `otlp` (spans sent every 100 ms), each agent with a
    Prometheus port of its own (`stack.metrics_ports`)."""
    servers = Servers(nats_server, postgres, credentials, llama)
    log_dir = tmp_path_factory.mktemp("logs")
    stack = AgentStack.for_servers(servers, log_dir, metrics=True, RAGBUS_MAX_UPLOAD_BYTES=str(5 * 1024 * 1024),
                                   RAGBUS_MAX_ANSWER_TOKENS="96", RAGBUS_LOG_LEVEL="INFO", RAGBUS_ABANDON_GRACE="5",
                                   RAGBUS_ASSUMED_ANSWER_SECONDS="2", OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
                                   OTEL_BSP_SCHEDULE_DELAY="100")
    stack.start("projector")
    stack.start("parser")
    stack.start("embedder")
    stack.start("generator-1", "generator", RAGBUS_GENERATOR_ID="generator-1")
    stack.start("generator-2", "generator", RAGBUS_GENERATOR_ID="generator-2")
    stack.start("gateway")
    try:
        await stack.wait_ready(timeout=120.0)
        yield stack
    finally:
        stack.stop_all()
        if os.environ.get("RAGBUS_KEEP_LOGS"):
            shutil.copytree(log_dir, os.environ["RAGBUS_KEEP_LOGS"], dirs_exist_ok=True)


@pytest.fixture
async def client(stack: AgentStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60.0) as c:
        yield c


async def upload(client: httpx.AsyncClient, name: str, data: bytes, **params: str) -> dict:
    response = await client.post("/documents", files={"file": (name, data)}, params=params or None)
    assert response.status_code == 202, response.text
    return response.json()


async def active_vectors(pool) -> str:
    """The vector table of the index that answers queries."""
    table = await pool.fetchval("SELECT vectors_table FROM embedding_indexes WHERE state = 'active'")
    assert table, "no active embedding index"
    return table


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
