"""A JetStream cluster of nats-server processes on this machine (three by default: the smallest that keeps a
quorum when one is lost), each with its own ports, store and log, joined by authenticated routes. What the
tests and benchmarks of the scale-out story run against; `url` lists every member, as agents take it."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .nats import Cluster, NatsServer
from .ports import ServerStartError, free_port


class NatsCluster:
    def __init__(self, workdir: Path, size: int = 3, users: list[dict[str, Any]] | None = None,
                 name: str = "ragbus", sync_interval: str | None = None) -> None:
        names = [f"n{i}" for i in range(1, size + 1)]
        cluster = Cluster(name, {n: free_port() for n in names}, "route", secrets.token_urlsafe(24))
        self.members = {n: NatsServer(Path(workdir) / n, port=free_port(), http_port=free_port(), server_name=n,
                                      users=users, cluster=cluster, sync_interval=sync_interval) for n in names}

    @property
    def url(self) -> str:
        """Every member's client URL, comma-separated (RAGBUS_NATS_URL takes this form)."""
        return ",".join(m.url for m in self.members.values())

    @property
    def monitor_url(self) -> str:
        """One member's HTTP monitoring endpoint (a running one): what reads server-wide figures."""
        running = [m for m in self.members.values() if m.running] or list(self.members.values())
        return running[0].monitor_url

    def member(self, name: str) -> NatsServer:
        return self.members[name]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for member in self.members.values():
            member.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 60.0, members: list[str] | None = None) -> None:
        """Until every (running) member says JetStream is current: a meta leader elected, streams caught up."""
        deadline = time.monotonic() + timeout
        for name in members or [n for n, m in self.members.items() if m.running]:
            while not _healthy(self.members[name]):
                if time.monotonic() > deadline:
                    raise ServerStartError(f"cluster member {name} not healthy after {timeout:.0f} s\n"
                                           f"{self.members[name].log_tail()}")
                time.sleep(0.2)

    def stop(self) -> None:
        for member in self.members.values():
            member.stop()

    def jsz(self, name: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.members[name].monitor_url}/jsz", timeout=2.0) as resp:
            return dict(json.load(resp))


def _healthy(member: NatsServer) -> bool:
    try:
        with urllib.request.urlopen(f"{member.monitor_url}/healthz", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
