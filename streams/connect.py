"""Connecting to NATS as a user: every process authenticates (there is no anonymous access), and its replies
come to an inbox prefix of its own user (see streams.access). With RAGBUS_NATS_TLS_CA the server's certificate
is verified against that CA (a tls:// URL: nats-server requires TLS, e.g. k3s/components/nats-tls)."""

from __future__ import annotations

import ssl
from typing import Any

import nats
from nats.aio.client import Client as NATS

from streams.access import inbox_prefix
from streams.settings import BusSettings


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
        return {} if tls is None else {"security": BaseSecurity(ssl_context=tls)}
    return {"security": SASLPlaintext(username=settings.nats_user, password=settings.nats_password, ssl_context=tls),
            "inbox_prefix": inbox_prefix(settings.nats_user)}


async def connect(settings: BusSettings, name: str, **options: Any) -> NATS:
    return await nats.connect(servers=settings.servers, name=name, **connect_options(settings), **options)
