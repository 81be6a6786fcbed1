"""Traces: one upload or one question is one trace across the agents, its W3C trace context carried in the
NATS headers of every event (`traceparent`, next to `Nats-Msg-Id`; dedup looks at the id alone).

`configure_tracing(service)` at process start exports spans over OTLP/HTTP when the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, and does nothing at all when it is not: no
SDK import, no provider, no broker middleware, and `span` records nothing. FastStream's own
`NatsTelemetryMiddleware` traces what its subscribers and publishers do; the places that read or write NATS
with nats.py directly use `span` and `inject`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace

from streams.events import AnswerTokenGenerated

if TYPE_CHECKING:
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_provider: TracerProvider | None = None


def configure_tracing(service_name: str) -> bool:
    """Install the exporting tracer provider if an OTLP endpoint is configured; True if it did.
    `OTEL_SERVICE_NAME`, if set, names the service instead of `service_name`."""
    global _provider
    if _provider is not None or not any(os.environ.get(v) for v in ENDPOINTS):
        return _provider is not None
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource, sampler=_without_tokens())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint, delay etc. from OTEL_*
    trace.set_tracer_provider(provider)  # flushed and shut down at exit (SIGTERM ends every agent normally)
    _provider = provider
    return True


def enabled() -> bool:
    return _provider is not None


def tracing_middlewares(name: str) -> tuple[NatsTelemetryMiddleware, ...]:
    """FastStream's NATS tracing middleware for broker `name`, or nothing when tracing is off (the service
    name is the process's, set by `configure_tracing`)."""
    if _provider is None:
        return ()
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware

    return (NatsTelemetryMiddleware(tracer_provider=_provider, include_messages_counters=False),)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to headers being published with nats.py (a no-op without a span)."""
    if _provider is not None:
        propagate.inject(headers)
    return headers


@contextmanager
def span(name: str, headers: Mapping[str, str] | None = None, kind: trace.SpanKind = trace.SpanKind.CONSUMER,
         attributes: Mapping[str, str | int] | None = None) -> Iterator[trace.Span]:
    """A span for one message read with nats.py (or one request the gateway serves: SERVER), the child of
    the trace context in its headers; current inside, so what is published meanwhile continues the trace.
    Off, it is the API's invalid span, which records nothing."""
    if _provider is None:
        yield trace.INVALID_SPAN
        return
    with _provider.get_tracer("ragbus").start_as_current_span(
            name, context=propagate.extract(dict(headers or {})), kind=kind, attributes=attributes) as current:
        yield current


def _without_tokens() -> Any:
    """Parent-based sampling that records no span of answer.token publishes: two per token would be most of
    a question's trace and tell nothing answer.done does not (its timings hold TTFT and tokens/s)."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult

    token_subject = f"{AnswerTokenGenerated.SUBJECT}."

    class WithoutTokens(Sampler):
        def __init__(self) -> None:
            self.rest = ParentBased(ALWAYS_ON)

        def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                          attributes: Any = None, links: Sequence[Any] | None = None,
                          trace_state: Any = None) -> SamplingResult:
            if name.startswith(token_subject):
                return SamplingResult(Decision.DROP)
            return self.rest.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return "ParentBased(ALWAYS_ON) without answer.token spans"

    return WithoutTokens()
