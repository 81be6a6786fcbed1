"""`ragbus keys`: the gateway's API keys, as events in the KEYS stream (run where the admin login is: next to
`ragbus up`, or with RAGBUS_NATS_USER=admin and its password).

    ragbus keys create --name laptop --scope write   prints the key once; only its hash is kept
    ragbus keys list                                 every key, its scope, and whether it is revoked
    ragbus keys revoke KEY_ID                        refused by every gateway within a moment
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console
from rich.table import Table

from ragbus.settings import admin_login
from streams.connect import connect
from streams.events import KeyCreated, KeyRevoked
from streams.keys import SCOPES, KeyRing, new_key, read_key_ring
from streams.publish import publish
from streams.settings import BusSettings

console = Console(stderr=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="make a key and print it (once: only its hash is stored)")
    create.add_argument("--name", required=True, help="who or what holds the key (shown by `keys list`)")
    create.add_argument("--scope", choices=SCOPES, default="read",
                        help="read: ask, search, sessions; write: + upload, delete, rate; admin: + re-index "
                        "(default: %(default)s)")
    sub.add_parser("list", help="every key with its scopes; revoked ones are marked")
    revoke = sub.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key_id", help="the id shown by `keys list` (or the whole key)")
    revoke.add_argument("--reason", default="", help="kept in the log with the revocation")


def run_keys(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    nc = await connect(admin_login(BusSettings()), "ragbus-keys")
    js = nc.jetstream()
    try:
        if args.keys_command == "create":
            key_id, token, digest = new_key()
            await publish(js, KeyCreated(event_id=f"key.created:{key_id}", key_id=key_id, name=args.name,
                                         scopes=[args.scope], secret_sha256=digest))
            console.print(f"key {key_id} ({args.name}, {args.scope}) created; give it as the header "
                          "'Authorization: Bearer KEY' (or X-API-Key), or enter it on the web page. "
                          "It is shown only now:")
            print(token)  # stdout, alone: `KEY=$(ragbus keys create ...)` works
            return 0
        ring = await read_key_ring(js)
        if args.keys_command == "list":
            show(ring)
            return 0
        key_id = args.key_id.removeprefix("rbk_").split("_", 1)[0]
        if key_id not in ring.keys:
            console.print(f"[red]no key {key_id}[/red] (see `ragbus keys list`)")
            return 1
        if ring.keys[key_id].revoked_at is not None:
            console.print(f"key {key_id} was already revoked")
            return 0
        await publish(js, KeyRevoked(event_id=f"key.revoked:{key_id}", key_id=key_id, reason=args.reason))
        console.print(f"[green]key {key_id} ({ring.keys[key_id].name}) revoked[/green]")
        return 0
    finally:
        await nc.close()


def show(ring: KeyRing) -> None:
    if not ring.keys:
        console.print("no keys yet: `ragbus keys create --name NAME --scope read|write|admin`")
        return
    table = Table("key_id", "name", "scopes", "created", "revoked")
    for key in sorted(ring.keys.values(), key=lambda k: k.created_at):
        table.add_row(key.key_id, key.name, ", ".join(s for s in SCOPES if s in key.scopes),
                      f"{key.created_at:%Y-%m-%d %H:%M}", f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "")
    Console(file=sys.stdout).print(table)
