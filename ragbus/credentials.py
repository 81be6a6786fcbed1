"""The passwords of the embedded default: generated on the first `ragbus up` (or test run) into the data
directory, readable by its owner only (0600 in a 0700 folder), and used from then on.

- NATS: one user per agent plus `admin` for the CLI, with the permissions of `streams.access`; the server
  keeps only bcrypt hashes in its configuration.
- PostgreSQL: the superuser (`ragbus up` and admin commands only), `ragbus_projector` (owns and writes the
  read models) and `ragbus_reader` (what the gateway and the embedders use: SELECT only).
The CLI on the same machine finds the admin credentials here, so `ragbus status` needs no setup.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragbus.private_files import write_private
from streams.access import ROLES

PG_ROLES = ("postgres", "ragbus_projector", "ragbus_reader")
PG_ROLE_OF = {"projector": "ragbus_projector", "gateway": "ragbus_reader", "embedder": "ragbus_reader",
              "admin": "ragbus_projector"}  # the CLI writes read models too (replay, migrations)
FILE = "credentials.json"


@dataclass
class Credentials:
    nats: dict[str, str]  # user -> password
    postgres: dict[str, str]  # role -> password
    path: Path

    @classmethod
    def ensure(cls, folder: Path) -> Credentials:
        """Load the credentials kept in `folder`, generating what is missing (a role added since)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
        path = folder / FILE
        stored: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        nats = {user: stored.get("nats", {}).get(user) or secrets.token_urlsafe(24) for user in ROLES}
        postgres = {role: stored.get("postgres", {}).get(role) or secrets.token_urlsafe(24) for role in PG_ROLES}
        if {"nats": nats, "postgres": postgres} != stored:
            write_private(path, json.dumps({"nats": nats, "postgres": postgres}, indent=1))
        os.chmod(path, 0o600)  # unchanged, but perhaps loosened by hand
        return cls(nats, postgres, path)

    @classmethod
    def find(cls, folder: Path) -> Credentials | None:
        return cls.ensure(folder) if (folder / FILE).exists() else None

    def nats_users(self) -> list[dict[str, Any]]:
        """The `authorization.users` of nats-server: bcrypt hashes, never the passwords themselves."""
        import bcrypt

        return [{"user": role.user,
                 "password": bcrypt.hashpw(self.nats[role.user].encode(), bcrypt.gensalt(rounds=10)).decode(),
                 "permissions": role.permissions()} for role in ROLES.values()]

    def agent_env(self, agent: str) -> dict[str, str]:
        """What agent `agent` (or "admin") needs to authenticate: its NATS user, and its PostgreSQL role
        (given to `dsn`)."""
        user = agent if agent in ROLES else "admin"
        return {"RAGBUS_NATS_USER": user, "RAGBUS_NATS_PASSWORD": self.nats[user]}

    def dsn(self, host_dsn: str, agent: str) -> str:
        """`host_dsn` (postgresql://host:port/db, no user) for the agent's PostgreSQL role."""
        role = "postgres" if agent == "superuser" else PG_ROLE_OF.get(agent, "ragbus_reader")
        scheme, rest = host_dsn.split("://", 1)
        rest = rest.split("@", 1)[-1]
        return f"{scheme}://{role}:{self.postgres[role]}@{rest}"
