"""Connecting to NATS as a user: every process authenticates (there is no anonymous access), and its replies
come to an inbox prefix of its own user (see streams.access). With RAGBUS_NATS_TLS_CA the server's certificate
is verified against that CA (a tls:// URL: nats-server requires TLS, e.g. k3s/components/nats-tls)."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS

from streams.access import inbox_prefix
from streams.settings import BusSettings

log = logging.getLogger(__name__)

# Subjects the server refused a publish to on this process's connections. It says so asynchronously (-ERR),
# while the publish itself only sees its ack time out, which looks like a leader election: streams.publish
# retries those, but not a refused subject. An agent process holds one login, so one set serves it.
_REFUSED: set[str] = set()
_VIOLATION = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


def refused(subject: str) -> bool:
    return subject in _REFUSED


def _noted(error: Exception) -> bool:
    """Whether the error is a refused publish; if so, its subject is remembered and said in the log."""
    found = _VIOLATION.search(str(error))
    if found:
        _REFUSED.add(found.group(1))
        log.error("NATS refused publishing to %s: this login lacks the permission", found.group(1))
    return found is not None


async def note_refusal(error: Exception) -> None:
    """A FastStream broker's error callback (it logs the other errors itself)."""
    _noted(error)


def _error_callback(given: Callable[[Exception], Awaitable[None]] | None) -> Callable[[Exception], Awaitable[None]]:
    """A plain connection's error callback: the refusals noted, then the caller's callback or, like nats-py's
    default, a log line."""

    async def callback(error: Exception) -> None:
        refusal = _noted(error)
        if given is not None:
            await given(error)
        elif not refusal:
            log.error("NATS: %s", error, exc_info=error)

    return callback


def tls_context(settings: BusSettings) -> ssl.SSLContext | None:
    """A client TLS context trusting the CA file `nats_tls_ca` (hostname checked), or None when it is unset."""
    if not settings.nats_tls_ca:
        return None
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca)


def connect_options(settings: BusSettings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.nats_user:
        options |= {"user": settings.nats_user, "password": settings.nats_password,
                    "inbox_prefix": inbox_prefix(settings.nats_user).encode()}
    tls = tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    return options


def broker_options(settings: BusSettings) -> dict[str, Any]:
    """The same login for a FastStream NatsBroker (it takes the user and password, and the TLS context, as its
    `security`)."""
    from faststream.security import BaseSecurity, SASLPlaintext

    tls = tls_context(settings)
    if not settings.nats_user:
        return {"error_cb": note_refusal} | ({} if tls is None else {"security": BaseSecurity(ssl_context=tls)})
    return {"security": SASLPlaintext(username=settings.nats_user, password=settings.nats_password, ssl_context=tls),
            "inbox_prefix": inbox_prefix(settings.nats_user), "error_cb": note_refusal}


async def connect(settings: BusSettings, name: str, **options: Any) -> NATS:
    options["error_cb"] = _error_callback(options.get("error_cb"))
    return await nats.connect(servers=settings.servers, name=name, **connect_options(settings), **options)
