"""`ragbus up`: the embedded default. Real servers from their wheels, every agent as a child process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from projections.schema import migrate
from projections.views import create_pool
from ragbus.credentials import Credentials
from ragbus.database import ensure_roles
from ragbus.settings import UpSettings, initial_index
from ragbus.supervisor import Child, Supervisor
from streams.connect import connect
from streams.declare import declare_streams
from streams.logs import configure_logging
from streams.settings import BusSettings

log = logging.getLogger("ragbus.up")


def _agent(name: str, env: dict[str, str]) -> Child:
    return Child(name, [sys.executable, "-m", "ragbus.cli", "agent", name.split("-")[0]], env)


def _replicas(name: str, count: int, env: dict[str, str]) -> list[Child]:
    """Replicas of one agent share its durable pull consumer: each fetches as it has capacity."""
    if count <= 1:
        return [_agent(name, env)]
    return [_agent(f"{name}-{i + 1}", env) for i in range(count)]


def metrics_ports(children: list[Child], base: int, gateway_port: int) -> list[str]:
    """Each agent process its own RAGBUS_METRICS_PORT, from `base` on in start order (0: none); the gateway
    serves /metrics on its HTTP port. Returns the scrape targets, for the log."""
    targets = []
    for offset, child in enumerate(c for c in children if c.name != "gateway"):
        child.env["RAGBUS_METRICS_PORT"] = str(base + offset if base else 0)
        if base:
            targets.append(f"{child.name} :{base + offset}")
    return [*targets, f"gateway :{gateway_port}/metrics"]


@dataclass
class Logins:
    """Who each agent is on the embedded servers (its own NATS user, its PostgreSQL role); an external
    server's login comes from the environment, the same for every agent."""

    credentials: Credentials
    nats: bool  # the embedded nats-server: one user per agent
    pg_host_dsn: str | None  # the embedded PostgreSQL: one role per agent

    def env(self, agent: str) -> dict[str, str]:
        env = self.credentials.agent_env(agent) if self.nats else {}
        if self.pg_host_dsn:
            env["RAGBUS_DATABASE_URL"] = (self.credentials.dsn(self.pg_host_dsn, agent)
                                          if agent in ("projector", "gateway", "embedder") else "")
        return env


async def _up(args: argparse.Namespace, settings: UpSettings) -> None:
    from ragbus.servers import EmbeddedPostgres, LlamaServer, ManagedServer, NatsServer

    data = Path(args.data_dir).expanduser().resolve()
    data.mkdir(parents=True, exist_ok=True)
    servers: list[ManagedServer] = []
    env: dict[str, str] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # generated on the first start, 0600: every embedded server lets in only these users
    credentials = Credentials.ensure(data / "secrets")
    admin = BusSettings()  # an external server: the login the environment gives
    try:
        nats_url = settings.nats_url
        if not nats_url:
            server = NatsServer(data / "nats", port=settings.nats_port, users=credentials.nats_users())
            await asyncio.to_thread(server.start)
            servers.append(server)
            nats_url = server.url
            admin = BusSettings(nats_user="admin", nats_password=credentials.nats["admin"])
        env["RAGBUS_NATS_URL"] = nats_url
        admin = admin.model_copy(update={"nats_url": nats_url})
        log.info("NATS JetStream: %s (user %s)", nats_url, admin.nats_user or "from the environment")

        db_url, pg_host_dsn = settings.database_url, None
        if not db_url:
            pg = EmbeddedPostgres(data / "postgres", port=settings.pg_port, password=credentials.postgres["postgres"])
            await asyncio.to_thread(pg.start)
            servers.append(pg)
            await ensure_roles(pg.dsn, credentials)
            pg_host_dsn = pg.host_dsn
            db_url = credentials.dsn(pg_host_dsn, "projector")
        env["RAGBUS_DATABASE_URL"] = db_url
        log.info("PostgreSQL + pgvector: %s", pg_host_dsn or "RAGBUS_DATABASE_URL")
        logins = Logins(credentials, nats=not settings.nats_url, pg_host_dsn=pg_host_dsn)

        llm_url = settings.llm_url
        if not llm_url:
            llama = LlamaServer(port=settings.llm_port, log_path=data / "llm.log")
            await asyncio.to_thread(llama.start)
            servers.append(llama)
            llm_url = llama.url
            env["RAGBUS_LLM_MODEL"] = llama.model
            env["RAGBUS_LLM_TOKENIZER"] = str(llama.model_path)  # exact prompt token counts
        env["RAGBUS_LLM_URL"] = llm_url
        log.info("LLM (OpenAI-compatible): %s", llm_url)

        nc = await connect(admin, "ragbus-up")
        await declare_streams(nc.jetstream(), *initial_index())  # logs one line per stream, consumer, bucket
        await nc.close()
        pool = await create_pool(db_url)
        async with pool.acquire() as conn:
            await migrate(conn)
        await pool.close()

        env["RAGBUS_HOST"], env["RAGBUS_PORT"] = args.host, str(args.port)
        env["RAGBUS_MODELS_DIR"] = str((settings.models_dir or data / "models").expanduser())
        children = [_agent("projector", {**env, **logins.env("projector")})]
        children += _replicas("parser", args.parsers, {**env, **logins.env("parser")})
        children += _replicas("embedder", args.embedders, {**env, **logins.env("embedder")})
        children += [
            _agent(f"generator-{i + 1}",
                   {**env, **logins.env("generator"), "RAGBUS_GENERATOR_ID": f"generator-{i + 1}"})
            for i in range(args.generators)
        ]
        children.append(_agent("gateway", {**env, **logins.env("gateway")}))
        for nats_server in (s for s in servers if isinstance(s, NatsServer)):  # JetStream's storage limit
            children[0].env["RAGBUS_NATS_MONITOR_URL"] = nats_server.monitor_url  # (children[0]: the projector)
        log.info("Prometheus scrape targets: %s", ", ".join(metrics_ports(children, args.metrics_port, args.port)))
        if not stop.is_set():
            log.info("ragbus is starting: open http://%s:%d (Ctrl-C stops everything)", args.host, args.port)
            await Supervisor(children, servers).run(stop)
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(server.stop)
        log.info("ragbus stopped; data kept in %s", data)


def run_up(args: argparse.Namespace) -> int:
    settings = UpSettings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_up(args, settings))
    return 0
