"""The ingest path of ragbus as real processes, for benchmarks: nats-server, PostgreSQL + pgvector, the
projector, N parsers, M embedders and the gateway (no LLM and no generator: ingest never reaches them), on
`ragbus.stack` like the tests; plus the CPU each part used.

Everything lives in one work directory (server data and one log file per process) on free ports, and
`stop()` takes it all down in order, whatever happened before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ragbus.stack import AgentStack, Servers
from streams.topology import DEFAULT_EMBEDDING_MODEL, PARSER, index_durable


@dataclass
class BenchStack:
    workdir: Path
    parsers: int = 1
    embedders: int = 1
    env: dict[str, str] = field(default_factory=dict)  # RAGBUS_* settings for every agent
    servers: Servers | None = None
    agents: AgentStack | None = None

    @property
    def url(self) -> str:
        assert self.agents is not None
        return self.agents.url

    @property
    def dsn(self) -> str:
        assert self.servers is not None
        return self.servers.dsn()

    async def start(self, timeout: float = 240.0) -> None:
        self.servers = await Servers.start(self.workdir)
        self.agents = AgentStack.for_servers(self.servers, self.workdir / "logs", RAGBUS_LOG_LEVEL="WARNING",
                                              **self.env)
        self.agents.start("projector")
        for i in range(1, self.parsers + 1):
            self.agents.start(f"parser-{i}", "parser")
        for i in range(1, self.embedders + 1):
            self.agents.start(f"embedder-{i}", "embedder")
        self.agents.start("gateway")
        # every replica pulling: otherwise the measured time would include agent start-up
        pulling = {PARSER: self.parsers, index_durable(DEFAULT_EMBEDDING_MODEL): self.embedders}
        await self.agents.wait_ready(pulling, timeout)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far, per role, children included (PostgreSQL's backends too)."""
        totals: dict[str, float] = {}
        if self.agents is not None:
            totals = {role: _cpu(_with_children(pids)) for role, pids in self.agents.pids().items()}
        if self.servers is not None:
            for role, server in (("nats-server", self.servers.nats), ("postgres", self.servers.postgres)):
                if server.pid:
                    totals[role] = _cpu(_with_children([server.pid]))
        totals["benchmark"] = _cpu([os.getpid()])
        return totals

    def stop(self) -> None:
        """Agents in reverse start order (gateway first, projector last), then the servers. Idempotent."""
        if self.agents is not None:
            self.agents.stop_all()
        if self.servers is not None:
            self.servers.stop()


def _with_children(pids: list[int]) -> list[int]:
    """The processes and their live descendants (the parser's parse child, PostgreSQL's backends)."""
    every = list(pids)
    for pid in pids:
        try:
            every += [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            continue
    return every


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:  # a process that ended meanwhile
            continue
        # children_*: reaped children, e.g. a parse child that was replaced, PostgreSQL's ended backends
        total += t.user + t.system + t.children_user + t.children_system
    return total
