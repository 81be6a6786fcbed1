"""Gateway API keys, folded from the KEYS stream: which keys exist, with which scopes, and which are revoked.

A key is `rbk_<key_id>_<secret>`: the key_id finds the key, the secret proves it. The log keeps only the
secret's SHA-256, so reading the log (or a backup of it) gives no usable key. Scopes:
    read   ask, search, read sessions and documents
    write  upload, delete, rate answers (and read)
    admin  re-index and the other admin endpoints (and write, read)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from nats.js import JetStreamContext

from streams import subjects
from streams.events import Event, KeyCreated, KeyRevoked
from streams.reading import read_events
from streams.topology import KEY, KEYS

SCOPES = ("read", "write", "admin")
PREFIX = "rbk_"
_TOKEN = re.compile(r"rbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


def implied(scopes: Iterable[str]) -> frozenset[str]:
    """A scope grants the ones before it: admin ⊃ write ⊃ read."""
    top = max((SCOPES.index(s) for s in scopes if s in SCOPES), default=-1)
    return frozenset(SCOPES[: top + 1])


def new_key() -> tuple[str, str, str]:
    """(key_id, token to hand out once, the secret's hash to store)."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}{key_id}_{secret}", _digest(secret)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed token, else None."""
    match = _TOKEN.fullmatch(token.strip())
    return (match[1], match[2]) if match else None


@dataclass
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    secret_sha256: str
    created_at: datetime
    revoked_at: datetime | None = None

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_sha256, _digest(secret))


@dataclass
class KeyRing:
    keys: dict[str, ApiKey] = field(default_factory=dict)
    last_seq: int = 0

    def apply(self, event: Event, seq: int = 0) -> None:
        match event:
            case KeyCreated():
                self.keys.setdefault(event.key_id, ApiKey(event.key_id, event.name, implied(event.scopes),
                                                          event.secret_sha256, event.occurred_at))
            case KeyRevoked() if event.key_id in self.keys:
                self.keys[event.key_id].revoked_at = self.keys[event.key_id].revoked_at or event.occurred_at
        self.last_seq = max(self.last_seq, seq)

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key this token proves, else None (unknown, revoked, or a wrong secret)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key = self.keys.get(parsed[0])
        if key is None or key.revoked_at is not None or not key.matches(parsed[1]):
            return None
        return key


async def read_key_ring(js: JetStreamContext) -> KeyRing:
    """The whole KEYS stream folded (a handful of events per key)."""
    ring = KeyRing()
    async for seq, event in read_events(js, KEYS, [subjects.wildcard(KEY)]):
        ring.apply(event, seq)
    return ring
