"""Subject helpers: the routing half of the event contract.

The last token of every subject is the id the event is about, so a person can `nats sub 'answer.token.<id>'`
and see one answer stream by. Event subjects come from the events' `SUBJECT` (their `type`); the stream
names and the few subjects that are not events live in `streams.topology`.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def token(value: str) -> str:
    """Make a value safe as one subject token: NATS tokens cannot hold '.', '*', '>' or whitespace."""
    if _TOKEN.match(value):
        return value
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)


def subject(base: str, *ids: str) -> str:
    return ".".join([base, *(token(i) for i in ids)])


def wildcard(base: str) -> str:
    return f"{base}.>"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or (part != "*" and part != have[i]):
            return False
    return len(want) == len(have)
