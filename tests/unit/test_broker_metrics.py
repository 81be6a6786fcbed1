"""Every agent's broker (streams.agent.make_broker) counts its messages with FastStream's Prometheus middleware
when the process serves metrics (RAGBUS_METRICS_PORT), labelled by agent and event type, never by the doc_id or
query_id a subject ends in (FastStream's in-memory test broker runs the middlewares; the broker's log lines need a
real server: tests/integration/test_broker_logs.py)."""

from __future__ import annotations

from faststream.nats import TestNatsBroker
from faststream.prometheus.middleware import PrometheusMiddleware
from prometheus_client import REGISTRY

from streams.agent import make_broker
from streams.metrics import agent_of, event_type
from streams.settings import BusSettings


async def _handle_one(broker_name: str, subject: str) -> list[str]:
    broker = make_broker(BusSettings(metrics_port=9464), broker_name)  # (make_broker starts no server)
    seen: list[str] = []

    @broker.subscriber("chunks.ready.*")
    async def on_chunks(body: dict) -> None:
        seen.append(body["doc"])

    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish({"doc": subject.rsplit(".", 1)[1]}, subject)
    return seen


def _received(agent: str, handler: str) -> float:
    return REGISTRY.get_sample_value("faststream_received_messages_total",
                                     {"app_name": agent, "broker": "nats", "handler": handler}) or 0.0


async def test_messages_are_counted_by_agent_and_event_type() -> None:
    before = _received("embedder", "chunks.ready")
    assert await _handle_one("ragbus-embedder", "chunks.ready.doc-a") == ["doc-a"]
    assert await _handle_one("ragbus-embedder", "chunks.ready.doc-b") == ["doc-b"]
    assert _received("embedder", "chunks.ready") == before + 2
    processed = REGISTRY.get_sample_value("faststream_received_processed_messages_total",
                                          {"app_name": "embedder", "broker": "nats", "handler": "chunks.ready",
                                           "status": "acked"})
    assert processed is not None and processed >= 2
    handlers = {s.labels.get("handler") for m in REGISTRY.collect() if m.name.startswith("faststream_")
                for s in m.samples}
    assert not {h for h in handlers if h and "doc-" in h}, handlers


def test_no_middleware_without_a_metrics_port() -> None:
    """Nothing can scrape a process without RAGBUS_METRICS_PORT, so its broker does not count."""
    assert not [m for m in make_broker(BusSettings(), "ragbus-parser").middlewares
                if isinstance(m, PrometheusMiddleware)]
    assert [m for m in make_broker(BusSettings(metrics_port=9464), "ragbus-parser").middlewares
            if isinstance(m, PrometheusMiddleware)]


def test_event_types_and_agents() -> None:
    assert event_type("answer.token.q-1") == "answer.token"
    assert event_type("chunks.embedded.all-MiniLM-L6-v2.doc-1") == "chunks.embedded"
    assert event_type("deadletter.retried.12") == "deadletter.retried"
    assert event_type("deadletter.QUERIES.generator") == "deadletter"
    assert event_type("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.QUERIES.generator") == (
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES")
    assert event_type("somewhere.else") == "other"
    assert agent_of("ragbus-generator-host-123") == "generator"
    assert agent_of("ragbus-gateway") == "gateway"
