"""Who is calling: API keys (from the KEYS stream) and their scopes, checked on every request and socket.

A key comes as `Authorization: Bearer KEY`, `X-API-Key: KEY`, or the `ragbus_key` cookie that the web page
gets from POST /auth/login (HttpOnly, SameSite=Strict: no other site's page can send it). Keys are required
when the gateway listens beyond this machine (RAGBUS_REQUIRE_API_KEYS overrides); on 127.0.0.1 the gateway
stays open, and a caller without a key is the machine's own user (every scope, owner None).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from agents.gateway.requests import BAD_BODY, RequestModel
from streams import subjects
from streams.events import decode_event
from streams.keys import SCOPES, KeyRing
from streams.topology import KEY, KEYS

log = logging.getLogger("ragbus.gateway")
COOKIE = "ragbus_key"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Caller:
    owner: str | None  # the key_id; None: the open gateway's local user
    name: str
    scopes: frozenset[str]


LOCAL = Caller(None, "local", frozenset(SCOPES))


def keys_required(require: bool | None, host: str) -> bool:
    return require if require is not None else host not in LOOPBACK


class GatewayKeys:
    """The key ring, kept current by an ordered consumer on KEYS from its first event (a revocation takes
    effect within milliseconds on every gateway)."""

    def __init__(self) -> None:
        self.ring = KeyRing()
        self._sub = None

    async def start(self, js: JetStreamContext, timeout: float = 10.0) -> None:
        info = await js.stream_info(KEYS)

        async def on_msg(msg: Msg) -> None:
            seq = msg.metadata.sequence.stream
            try:
                self.ring.apply(decode_event(msg.data, msg.subject), seq)
            except ValueError:  # not a key event (see decode_event): read past it
                self.ring.last_seq = max(self.ring.last_seq, seq)

        self._sub = await js.subscribe(subjects.wildcard(KEY), stream=KEYS, ordered_consumer=True, cb=on_msg,
                                       deliver_policy=DeliverPolicy.ALL)
        deadline = asyncio.get_running_loop().time() + timeout
        while self.ring.last_seq < info.state.last_seq and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)  # caught up with the keys that existed at start

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


def token_of(conn: HTTPConnection) -> str | None:
    """The key the caller presents, None if none. One that is there but empty counts as presented (and fails),
    never as no key. An Authorization header of another scheme (a proxy's Basic login) is not ours."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if "x-api-key" in conn.headers:
        return conn.headers["x-api-key"].strip()
    return conn.cookies.get(COOKIE)


def authenticate(conn: HTTPConnection) -> Caller:
    """The caller of this request or socket; raises 401 for a bad key, or for none where keys are required."""
    state = conn.app.state
    token = token_of(conn)
    if token is not None:
        key = state.keys.ring.authenticate(token)
        if key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key",
                                headers={"WWW-Authenticate": "Bearer"})
        return Caller(key.key_id, key.name, key.scopes)
    if state.keys_required:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an API key is required: send 'Authorization: Bearer "
                            "KEY' (make one with `ragbus keys create`)", headers={"WWW-Authenticate": "Bearer"})
    return LOCAL


# Declared for the OpenAPI document (its security schemes); `authenticate` reads the same places itself.
_bearer = HTTPBearer(auto_error=False, description="an API key from `ragbus keys create`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, in a header of its own")
_cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="set by POST /auth/login (the web page)")


def needs(scope: str) -> Callable[..., Awaitable[Caller]]:
    async def dependency(request: Request,
                         _b: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                         _h: Annotated[str | None, Depends(_header)],
                         _c: Annotated[str | None, Depends(_cookie)]) -> Caller:
        caller = authenticate(request)
        if scope not in caller.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key ({caller.name}) lacks the '{scope}' scope")
        request.state.caller = caller
        return caller
    return dependency


READ, WRITE, ADMIN = Depends(needs("read")), Depends(needs("write")), Depends(needs("admin"))
Reader = Annotated[Caller, READ]  # the same dependency objects: FastAPI then checks once per request
Writer = Annotated[Caller, WRITE]
UNAUTHORIZED = {401: {"description": "no API key where one is required, or an invalid or revoked one"},
                403: {"description": "the key lacks the scope"}}


def client_id(conn: HTTPConnection, caller: Caller) -> str:
    """Whom rate limits count: the key, else the address."""
    return f"key:{caller.owner}" if caller.owner else (conn.client.host if conn.client else "unknown")


# ---------------------------------------------------------------- the web page's login

router = APIRouter(prefix="/auth", tags=["auth"])


class Login(RequestModel):
    key: str = Field(..., min_length=1, max_length=200, description="an API key from `ragbus keys create`")


class Whoami(BaseModel):
    keys_required: bool = Field(description="whether this gateway refuses callers without a key")
    authenticated: bool = Field(description="whether this request carried a valid key")
    name: str | None = Field(None, description="the key's name")
    key_id: str | None = None
    scopes: list[str] = Field(default_factory=list, description="what this caller may do")


def _whoami(request: Request, caller: Caller | None) -> Whoami:
    required = request.app.state.keys_required
    if caller is None:
        return Whoami(keys_required=required, authenticated=False)
    return Whoami(keys_required=required, authenticated=caller.owner is not None, name=caller.name,
                  key_id=caller.owner, scopes=[s for s in SCOPES if s in caller.scopes])


@router.get("", response_model=Whoami, summary="Whether a key is required, and who this caller is")
async def whoami(request: Request) -> Whoami:
    try:
        return _whoami(request, authenticate(request))
    except HTTPException:
        return _whoami(request, None)


@router.post("/login", response_model=Whoami, summary="Check a key and keep it in an HttpOnly cookie for this "
             "browser session (the web page's sign-in)",
             responses={**BAD_BODY, 401: {"description": "invalid or revoked API key"}})
async def login(body: Login, request: Request, response: Response) -> Whoami:
    key = request.app.state.keys.ring.authenticate(body.key)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked API key")
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    # no max_age: a session cookie, gone when the browser closes
    response.set_cookie(COOKIE, body.key.strip(), httponly=True, samesite="strict", secure=secure, path="/")
    return _whoami(request, Caller(key.key_id, key.name, key.scopes))


@router.post("/logout", response_model=Whoami, summary="Forget this browser's key")
async def logout(request: Request, response: Response) -> Whoami:
    response.delete_cookie(COOKIE, path="/")
    return Whoami(keys_required=request.app.state.keys_required, authenticated=False)
