"""The system as separate processes on free ports, for the tests and the benchmarks: the servers
(nats-server, PostgreSQL + pgvector, optionally llama.cpp) and the agents, each the same `ragbus agent NAME`
process that `ragbus up` and k3s run, with a log file per process.

    servers = await Servers.start(workdir, llm=True)        # or Servers(nats, postgres, llama) already running
    agents = AgentStack.for_servers(servers, workdir / "logs", RAGBUS_LOG_LEVEL="WARNING")
    agents.start("projector"); agents.start("generator-2", "generator", RAGBUS_GENERATOR_ID="generator-2")
    await agents.wait_ready({PARSER: 1, index_durable(DEFAULT_EMBEDDING_MODEL): 1})
    ...
    agents.stop_all(); servers.stop()
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
from typing import Any

import httpx
import nats
from nats.js.errors import NotFoundError

from projections.schema import migrate
from projections.views import create_pool
from ragbus.credentials import Credentials
from ragbus.database import ensure_roles
from ragbus.servers import EmbeddedPostgres, LlamaServer, NatsCluster, NatsServer, free_port
from streams.connect import connect
from streams.declare import declare_streams
from streams.settings import BusSettings
from streams.topology import DEFAULT_EMBEDDING_MODEL, Durable

ROOT = Path(__file__).resolve().parent.parent


async def prepare(nats: NatsServer | NatsCluster, postgres: EmbeddedPostgres, credentials: Credentials,
                  replicas: int | None = None, initial_model: str = DEFAULT_EMBEDDING_MODEL) -> None:
    """What `ragbus up` does before the agents start: the database roles, the topology (with `replicas`
    copies of everything, on a cluster, and `initial_model` as the first index of a fresh log), the read models."""
    await ensure_roles(postgres.dsn, credentials)
    nc = await connect(BusSettings(nats_url=nats.url, **_nats_login(credentials, "admin")), "ragbus-prepare")
    try:
        await declare_streams(nc.jetstream(), initial_model, replicas=replicas)
    finally:
        await nc.close()
    pool = await create_pool(credentials.dsn(postgres.host_dsn, "projector"))
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    finally:
        await pool.close()


def _nats_login(credentials: Credentials, user: str) -> dict[str, str]:
    return {"nats_user": user, "nats_password": credentials.nats[user]}


@dataclass
class Servers:
    nats: NatsServer
    postgres: EmbeddedPostgres
    credentials: Credentials
    llama: LlamaServer | None = None
    owned: bool = False  # started by `start`, so `stop` stops them

    @staticmethod
    def secured(workdir: Path) -> tuple[NatsServer, EmbeddedPostgres, Credentials]:
        """A nats-server and a PostgreSQL (not started) that only let in the users of `credentials`."""
        credentials = Credentials.ensure(workdir / "secrets")
        return (NatsServer(workdir / "nats", users=credentials.nats_users()),
                EmbeddedPostgres(workdir / "postgres", password=credentials.postgres["postgres"]), credentials)

    @classmethod
    async def start(cls, workdir: Path, llm: bool = False, initial_model: str = DEFAULT_EMBEDDING_MODEL,
                    **llama_options: Any) -> Servers:
        nats_server, postgres, credentials = cls.secured(workdir)
        servers = cls(nats_server, postgres, credentials,
                      LlamaServer(log_path=workdir / "logs" / "llama-server.log", **llama_options) if llm else None,
                      owned=True)
        try:
            for server in (servers.nats, servers.postgres, servers.llama):
                if server is not None:
                    await asyncio.to_thread(server.start)
            await prepare(servers.nats, servers.postgres, credentials, initial_model=initial_model)
        except BaseException:
            servers.stop()
            raise
        return servers

    def settings(self, agent: str = "admin") -> BusSettings:
        """How `agent` (default: the CLI's admin) connects to NATS."""
        return BusSettings(nats_url=self.nats.url, **_nats_login(self.credentials, agent))

    def dsn(self, agent: str = "admin") -> str:
        return self.credentials.dsn(self.postgres.host_dsn, agent)

    def env(self) -> dict[str, str]:
        """What every process gets: where the servers are (each agent's own login is added per agent)."""
        env = {"RAGBUS_NATS_URL": self.nats.url, "RAGBUS_DATABASE_URL": self.postgres.host_dsn,
               "RAGBUS_NATS_MONITOR_URL": self.nats.monitor_url}
        if self.llama is not None:
            env |= {"RAGBUS_LLM_URL": self.llama.url, "RAGBUS_LLM_MODEL": self.llama.model,
                    "RAGBUS_LLM_TOKENIZER": str(self.llama.model_path)}
        return env

    def stop(self) -> None:
        if not self.owned:
            return
        for server in (self.llama, self.nats, self.postgres):
            if server is not None:
                server.stop()


@dataclass
class AgentStack:
    """Agents as child processes sharing one environment; the gateway listens on `port`."""

    env: dict[str, str]  # every process's, with the admin's login (what the CLI needs); agents get their own
    log_dir: Path
    port: int
    credentials: Credentials | None = None
    host_dsn: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    # with metrics: each agent process (not the gateway: /metrics on `port`) serves Prometheus on a port of its
    # own, the same one again when it is started again under its name
    metrics: bool = False
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_servers(cls, servers: Servers, log_dir: Path, metrics: bool = False, **env: str) -> AgentStack:
        """Rate limits are off unless `env` sets them: tests and benchmarks ask from one address, fast."""
        port = free_port()
        admin = {**servers.credentials.agent_env("admin"), "RAGBUS_DATABASE_URL": servers.dsn("admin")}
        return cls({**servers.env(), **admin, "RAGBUS_PORT": str(port), "RAGBUS_HOST": "127.0.0.1",
                    "RAGBUS_QUESTIONS_PER_MINUTE": "0", "RAGBUS_UPLOADS_PER_MINUTE": "0", **env}, log_dir, port,
                   servers.credentials, servers.postgres.host_dsn, metrics=metrics)

    def login(self, agent: str) -> dict[str, str]:
        """The agent's own NATS user and PostgreSQL role (least privilege), or nothing without credentials."""
        if self.credentials is None:
            return {}
        login = self.credentials.agent_env(agent)
        if agent in ("projector", "gateway", "embedder"):
            login["RAGBUS_DATABASE_URL"] = self.credentials.dsn(self.host_dsn, agent)
        else:
            login["RAGBUS_DATABASE_URL"] = ""  # no database for it
        return login

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, agent: str | None = None, **extra_env: str) -> subprocess.Popen:
        """Start agent `agent` (default: `name`) as process `name`, e.g. start("generator-2", "generator")."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.metrics and (agent or name) != "gateway" and "RAGBUS_METRICS_PORT" not in extra_env:
            extra_env["RAGBUS_METRICS_PORT"] = str(self.metrics_ports.setdefault(name, free_port()))
        with (self.log_dir / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "ragbus.cli", "agent", agent or name],
                env={**os.environ, **self.env, **self.login(agent or name), **extra_env}, stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=ROOT,
                start_new_session=True,  # Ctrl-C reaches only the test or benchmark, which stops them in order
            )
        self.procs[name] = proc
        self.roles[name] = agent or name
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        self.roles.pop(name, None)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        """Reverse start order (the gateway first, the projector last), SIGTERM then SIGKILL. Idempotent."""
        for name in reversed(list(self.procs)):
            _terminate(self.procs.pop(name))
        self.roles.clear()

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tails(self, chars: int = 1500) -> str:
        tails = [f"--- {name} ---\n{self.log(name)[-chars:]}" for name in self.procs if self.log(name).strip()]
        return "\n".join(tails)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        if dead:
            names = ", ".join(f"{name} (exit {code})" for name, code in dead.items())
            raise RuntimeError(f"agent(s) exited: {names}\n{self.log_tails()}")

    async def wait_ready(self, pulling: dict[Durable, int] | None = None, timeout: float = 240.0) -> None:
        """The gateway answers /readyz and each durable has at least that many pulling replicas (their models
        are loaded by then), so whatever is measured next does not include start-up."""
        deadline = time.monotonic() + timeout
        nc = await connect(self.settings(), "ragbus-wait")
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
                while True:
                    self.check_alive()
                    ready = await _gateway_ready(client)
                    for durable, replicas in (pulling or {}).items():
                        ready = ready and await _pulling(nc.jetstream(), durable, replicas)
                    if ready:
                        return
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"not ready after {timeout:.0f} s\n{self.log_tails()}")
                    await asyncio.sleep(0.3)
        finally:
            await nc.close()

    def settings(self) -> BusSettings:
        """The admin's NATS login, for a test or benchmark to look at the bus."""
        return BusSettings(nats_url=self.env["RAGBUS_NATS_URL"], nats_user=self.env.get("RAGBUS_NATS_USER", ""),
                           nats_password=self.env.get("RAGBUS_NATS_PASSWORD", ""))

    def pids(self) -> dict[str, list[int]]:
        """Process ids by role (the agent each process runs)."""
        by_role: dict[str, list[int]] = {}
        for name, proc in self.procs.items():
            by_role.setdefault(self.roles.get(name, name), []).append(proc.pid)
        return by_role


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


def _terminate(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
