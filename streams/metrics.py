"""Prometheus metrics of every FastStream broker: FastStream's own NATS middleware (messages received,
processed by status, in process, handler and publish durations, exceptions), labelled with the agent and the
event type. What only ragbus knows is measured where it happens (the embedder, the generator, retrieval) and,
for the whole system, by the projector (`projections.monitor`).

FastStream labels a message with its full subject, and ours end in the doc_id or query_id: one series per
document and question. The provider below labels by the event type instead (`chunks.ready`, not
`chunks.ready.<doc_id>`), so the number of series stays that of the event contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from faststream.nats.prometheus.provider import settings_provider_factory
from faststream.prometheus import ConsumeAttrs, MetricsSettingsProvider
from faststream.prometheus.middleware import PrometheusMiddleware
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from streams import events
from streams.topology import MAX_DELIVERIES_ADVISORY, PROJECTION_UPDATED

OTHER = "other"  # a subject outside the event contract


@cache
def _bases() -> tuple[str, ...]:
    """Every event's subject base, longest first (so `deadletter.retried` wins over `deadletter`)."""
    found: set[str] = {MAX_DELIVERIES_ADVISORY, PROJECTION_UPDATED}
    pending: list[type[events.Event]] = [events.Event]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if isinstance(getattr(cls, "SUBJECT", None), str):
            found.add(cls.SUBJECT)
    return tuple(sorted(found, key=len, reverse=True))


def event_type(subject: str) -> str:
    """The event type a subject carries: its base without the ids (`answer.token.<query_id>` -> `answer.token`)."""
    for base in _bases():
        if subject == base or subject.startswith(f"{base}."):
            return base
    return OTHER


class _ByEventType:
    """FastStream's NATS settings provider, with the subject narrowed to its event type."""

    def __init__(self, inner: MetricsSettingsProvider[Any, Any]) -> None:
        self.inner = inner
        self.messaging_system = inner.messaging_system

    def get_consume_attrs_from_message(self, msg: Any) -> ConsumeAttrs:
        attrs = self.inner.get_consume_attrs_from_message(msg)
        return {**attrs, "destination_name": event_type(attrs["destination_name"])}

    def get_publish_destination_name_from_cmd(self, cmd: Any) -> str:
        return event_type(self.inner.get_publish_destination_name_from_cmd(cmd))


def _provider(msg: Msg | Sequence[Msg] | None) -> _ByEventType | None:
    inner = settings_provider_factory(msg)
    return None if inner is None else _ByEventType(inner)


def agent_of(broker_name: str) -> str:
    """The agent a broker belongs to (`ragbus-generator-<id>` -> `generator`): one label value per role, the
    replica is Prometheus' `instance`."""
    return broker_name.removeprefix("ragbus-").split("-")[0]


def metrics_middlewares(broker_name: str) -> tuple[PrometheusMiddleware[Any, Any], ...]:
    """FastStream's Prometheus middleware for a broker, on the process's default registry (what
    RAGBUS_METRICS_PORT and the gateway's /metrics serve). Metrics are named faststream_*, with
    app_name = the agent and handler / destination = the event type. `streams.agent.make_broker` installs it
    only in a process with a metrics port (nothing could scrape the others); the gateway always does."""
    return (PrometheusMiddleware(settings_provider_factory=_provider, registry=REGISTRY,
                                 app_name=agent_of(broker_name)),)
