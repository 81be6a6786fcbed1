"""The ingest path of ragbus as real processes, for benchmarks: nats-server, PostgreSQL + pgvector, the
projector, N parsers, M embedders and the gateway (no LLM and no generator: ingest never reaches them).

Everything lives in one work directory (server data and one log file per process) on free ports, and
`stop()` takes it all down in order, whatever happened before.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import psutil
from nats.js.errors import NotFoundError

from projections.schema import migrate
from projections.views import create_pool
from ragbus.servers import EmbeddedPostgres, ManagedServer, NatsServer, free_port
from streams.declare import declare_streams
from streams.topology import EMBEDDER_CHUNKS, PARSER, Durable

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Agent:
    name: str  # e.g. "parser-2"
    role: str  # the agent it runs: projector | parser | embedder | gateway
    proc: subprocess.Popen
    log_path: Path


@dataclass
class BenchStack:
    workdir: Path
    parsers: int = 1
    embedders: int = 1
    agents: list[Agent] = field(default_factory=list)
    nats: NatsServer | None = None
    postgres: EmbeddedPostgres | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dsn(self) -> str:
        assert self.postgres is not None
        return self.postgres.dsn

    # ---- start ---------------------------------------------------------------------------------------
    async def start(self, timeout: float = 240.0) -> None:
        self.nats = NatsServer(self.workdir / "nats")
        self.postgres = EmbeddedPostgres(self.workdir / "postgres")
        # blocking starts: nothing else runs yet, and both are needed before anything else
        self.nats.start()
        self.postgres.start()
        nc = await nats.connect(self.nats.url)
        try:
            await declare_streams(nc.jetstream())
        finally:
            await nc.close()
        pool = await create_pool(self.dsn)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        finally:
            await pool.close()
        self.port = free_port()
        self._spawn("projector", "projector")
        for i in range(1, self.parsers + 1):
            self._spawn(f"parser-{i}", "parser")
        for i in range(1, self.embedders + 1):
            self._spawn(f"embedder-{i}", "embedder")
        self._spawn("gateway", "gateway")
        await self._wait_ready(timeout)

    def _env(self) -> dict[str, str]:
        assert self.nats is not None
        return {
            **os.environ,
            "RAGBUS_NATS_URL": self.nats.url,
            "RAGBUS_DATABASE_URL": self.dsn,
            "RAGBUS_PORT": str(self.port),
            "RAGBUS_HOST": "127.0.0.1",
            "RAGBUS_LOG_LEVEL": "WARNING",
        }

    def _spawn(self, name: str, role: str) -> None:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "ragbus.cli", "agent", role],
                env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                start_new_session=True,  # Ctrl-C reaches only the benchmark, which then stops them in order
            )
        self.agents.append(Agent(name, role, proc, log_path))

    async def _wait_ready(self, timeout: float) -> None:
        """The gateway answers /readyz, and every parser and embedder replica is pulling work (its model is
        loaded by then): otherwise the measured time would include agent start-up."""
        assert self.nats is not None
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.nats.url)
        js = nc.jetstream()
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
                while True:
                    self._check_alive()
                    if (await _gateway_ready(client) and await _pulling(js, PARSER, self.parsers)
                            and await _pulling(js, EMBEDDER_CHUNKS, self.embedders)):
                        return
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the stack was not ready after {timeout:.0f} s\n{self.log_tails()}")
                    await asyncio.sleep(0.5)
        finally:
            await nc.close()

    def _check_alive(self) -> None:
        dead = [a for a in self.agents if a.proc.poll() is not None]
        if dead:
            names = ", ".join(f"{a.name} (exit {a.proc.returncode})" for a in dead)
            raise RuntimeError(f"agent(s) exited: {names}\n{self.log_tails()}")

    def log_tails(self, chars: int = 1500) -> str:
        out = []
        for a in self.agents:
            text = a.log_path.read_text(errors="replace") if a.log_path.exists() else ""
            if text.strip():
                out.append(f"--- {a.log_path} ---\n{text[-chars:]}")
        return "\n".join(out)

    # ---- measure -------------------------------------------------------------------------------------
    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far, per role, children included (PostgreSQL's backends too)."""
        totals: dict[str, float] = {}
        for agent in self.agents:
            totals[agent.role] = totals.get(agent.role, 0.0) + _cpu([agent.proc.pid])
        for role, server in (("nats-server", self.nats), ("postgres", self.postgres)):
            if server is not None and server.pid:
                try:
                    children = [c.pid for c in psutil.Process(server.pid).children(recursive=True)]
                except psutil.Error:
                    children = []
                totals[role] = _cpu([server.pid, *children])
        totals["benchmark"] = _cpu([os.getpid()])
        return totals

    # ---- stop ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Agents in reverse start order (gateway first, projector last), then the servers. Idempotent."""
        for agent in reversed(self.agents):
            _terminate(agent.proc)
        self.agents.clear()
        servers: list[ManagedServer | None] = [self.nats, self.postgres]
        for server in servers:
            if server is not None:
                server.stop()


async def _gateway_ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _pulling(js: nats.js.JetStreamContext, durable: Durable, replicas: int) -> bool:
    try:
        info = await js.consumer_info(durable.stream, durable.name)
    except NotFoundError:
        return False
    return (info.num_waiting or 0) >= replicas


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:  # a process that ended meanwhile
            continue
        # children_*: reaped children, e.g. the parser's per-document forks, PostgreSQL's ended backends
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _terminate(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
