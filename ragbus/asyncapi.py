"""`ragbus asyncapi`: one AsyncAPI 3.0 document for the whole bus, generated from the agents' FastStream
subscribers and their declared publishers (each declared with its pydantic event as `schema=`).

The gateway serves the generated file at /asyncapi.json (and a readable page at /asyncapi); a test fails
when the committed file no longer matches the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faststream.nats import JStream, NatsBroker, PullSub
from faststream.specification import AsyncAPI

from streams import __version__
from streams.events import (
    ChunksEmbedded,
    DeadLetterRetried,
    DocumentChunked,
    IndexActivated,
    IndexCompared,
    IndexDropped,
    IndexStarted,
    KeyCreated,
    KeyRevoked,
)
from streams.publish import EventPublisher
from streams.settings import BusSettings
from streams.topology import CHUNKS

OUTPUT = Path(__file__).resolve().parent.parent / "agents" / "gateway" / "static" / "asyncapi.json"
SECTIONS = ("channels", "operations")
COMPONENTS = ("schemas", "messages")


def _specs() -> list[dict[str, Any]]:
    """Built from the agents' own factories, with nothing connected or started."""
    from agents.gateway.bus import gateway_broker
    from ragbus.cli import faststream_agent

    apps = []
    for name in ("parser", "embedder", "generator"):
        create_app, settings = faststream_agent(name)
        apps.append(create_app(settings).schema)
    gateway, _ = gateway_broker(BusSettings())
    apps.append(AsyncAPI(gateway, title="ragbus gateway", version=__version__))
    apps.append(AsyncAPI(_index_workers(), title="ragbus embedder (index workers)", version=__version__))
    apps.append(AsyncAPI(_cli(), title="ragbus CLI", version=__version__))
    return [json.loads(spec.to_specification().to_json()) for spec in apps]


def _index_workers() -> NatsBroker:
    """The embedder's per-index workers pull with nats.py (their durables exist only at run time, one per
    index): described here with the same payload schema, on a broker that is never started."""
    broker = NatsBroker("nats://127.0.0.1:4222")

    @broker.subscriber(
        f"{DocumentChunked.SUBJECT}.>", stream=JStream(CHUNKS, declare=False), durable="embed-<index>",
        pull_sub=PullSub(),
        title="embed chunks for each index",
        description="Every live embedding index has its own durable (embed-<model slug>) over all of "
        "chunks.ready, from the first event on: a new index replays the log through it, then keeps up with "
        f"new uploads. Publishes {ChunksEmbedded.SUBJECT}.<model>.<doc_id>.")
    async def embed_for_each_index(event: DocumentChunked) -> None:
        raise NotImplementedError("documentation only")

    return broker


def _cli() -> NatsBroker:
    """What the `ragbus` commands publish (with nats.py's JetStream publish, same headers and ids)."""
    broker = NatsBroker("nats://127.0.0.1:4222")
    EventPublisher(broker, IndexStarted, "`ragbus reindex --model` (or `ragbus streams declare` for the first index).")
    EventPublisher(broker, IndexActivated, "`ragbus reindex --activate` / `--rollback`: this index answers queries.")
    EventPublisher(broker, IndexCompared, "`ragbus reindex --compare`: an index against the active one on the "
                   "questions in the log (overlap, hit rate on cited or rated-up passages).")
    EventPublisher(broker, IndexDropped, "`ragbus reindex --drop`: the index's vectors are deleted.")
    EventPublisher(broker, DeadLetterRetried, "`ragbus deadletters retry` republished a dead letter's original.")
    EventPublisher(broker, KeyCreated, "`ragbus keys create`: a gateway API key (name, scopes, the secret's SHA-256).")
    EventPublisher(broker, KeyRevoked, "`ragbus keys revoke`: every gateway refuses the key from now on.")
    return broker


def build() -> dict[str, Any]:
    merged: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ragbus events",
            "version": __version__,
            "description": "Every event on the ragbus NATS JetStream bus. Payloads are JSON; headers carry "
            "Nats-Msg-Id (the deterministic event_id), Ragbus-Event-Type, Ragbus-Schema-Version, "
            "Ragbus-Correlation-Id and Ragbus-Causation-Id. Watch them with `nats sub '>'`.",
        },
        "defaultContentType": "application/json",
        "servers": {"development": {"host": "127.0.0.1:4222", "protocol": "nats"}},
        "channels": {},
        "operations": {},
        "components": {"schemas": {}, "messages": {}},
    }
    for spec in _specs():
        for section in SECTIONS:
            for key, value in spec.get(section, {}).items():
                merged[section].setdefault(key, value)
        for part in COMPONENTS:
            for key, value in spec.get("components", {}).get(part, {}).items():
                merged["components"][part].setdefault(key, value)
    for section in (*SECTIONS,):
        merged[section] = dict(sorted(merged[section].items()))
    for part in COMPONENTS:
        merged["components"][part] = dict(sorted(merged["components"][part].items()))
    return merged


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def write(path: Path = OUTPUT) -> Path:
    path.write_text(render())
    return path
