"""`ragbus nats-context`: a context for the standard `nats` CLI with the admin login, so that `nats stream ls`,
`nats sub 'answer.token.>'` and the rest work on a system where nobody gets in anonymously. The file holds a
password: it is written 0600, like the credentials it comes from."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ragbus.private_files import write_private
from streams.settings import BusSettings

HELP = "write a `nats` CLI context with the admin login (the bus has no anonymous access)"


def context_dir() -> Path:
    """Where the nats CLI keeps its contexts (it follows XDG_CONFIG_HOME)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "nats" / "context"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="ragbus", help="the context's name (default: ragbus)")
    parser.add_argument("--select", action="store_true", help="also make it the nats CLI's current context")


def write(name: str, settings: BusSettings) -> Path:
    context = {"description": "ragbus (admin)", "url": settings.nats_url, "user": settings.nats_user,
               "password": settings.nats_password}
    if settings.nats_tls_ca:
        context["ca"] = settings.nats_tls_ca
    folder = context_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{name}.json"
    write_private(path, json.dumps(context, indent=2))
    return path


def run(args: argparse.Namespace) -> int:
    from ragbus.settings import admin_login

    settings = admin_login(BusSettings())
    if not settings.nats_user:
        print("no admin login found: run this next to `ragbus up` (its data directory), or set RAGBUS_NATS_USER "
              "and RAGBUS_NATS_PASSWORD")
        return 2
    path = write(args.name, settings)
    if args.select:
        (context_dir().parent / "context.txt").write_text(args.name)
    print(f"wrote {path} (0600)")
    print(f"use it: nats --context {args.name} stream ls" if not args.select else "selected: nats stream ls")
    return 0
