"""Tracing is all or nothing: an OTLP endpoint in the environment installs the SDK's exporting provider and
FastStream's middleware; without one nothing is installed at all. Each case runs in a fresh interpreter,
since a process can set its global tracer provider only once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import json, sys
from opentelemetry import trace
from streams import tracing
from streams.agent import make_broker
from streams.settings import BusSettings

on = tracing.configure_tracing("ragbus-probe")
broker = make_broker(BusSettings(), "ragbus-probe")
headers = tracing.inject({"Nats-Msg-Id": "query.asked:q1"})
with tracing.span("probe") as span:
    recording = span.is_recording()
    inside = tracing.inject({})
provider = trace.get_tracer_provider()
result = {
    "on": on,
    "provider": type(provider).__module__ + "." + type(provider).__name__,
    "sdk_imported": "opentelemetry.sdk" in sys.modules,
    "exporter_imported": any(m.startswith("opentelemetry.exporter") for m in sys.modules),
    "broker_middlewares": [type(m).__name__ for m in broker.middlewares],
    "headers": headers,
    "recording": recording,
    "inside": inside,
}
if on:
    tracer = provider.get_tracer("probe")
    result["service"] = provider.resource.attributes["service.name"]
    result["token_span_recorded"] = tracer.start_span("answer.token.q1 create").is_recording()
    result["event_span_recorded"] = tracer.start_span("answer.done.q1 create").is_recording()
print(json.dumps(result))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_without_an_otlp_endpoint_no_provider_exporter_or_middleware_is_installed():
    result = _probe()
    assert result["on"] is False
    assert result["provider"] == "opentelemetry.trace.ProxyTracerProvider"  # the API's default: records nothing
    assert not result["sdk_imported"] and not result["exporter_imported"]
    assert "NatsTelemetryMiddleware" not in result["broker_middlewares"]
    assert result["headers"] == {"Nats-Msg-Id": "query.asked:q1"}  # no traceparent added
    assert result["recording"] is False and result["inside"] == {}


def test_with_an_otlp_endpoint_agents_export_and_carry_the_context_in_headers():
    # nothing listens there; no span is ended, so nothing is sent
    result = _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SERVICE_NAME="ragbus-named")
    assert result["on"] is True
    assert result["provider"] == "opentelemetry.sdk.trace.TracerProvider"
    assert result["service"] == "ragbus-named"  # OTEL_SERVICE_NAME wins over the agent's own name
    assert "NatsTelemetryMiddleware" in result["broker_middlewares"]
    assert result["headers"] == {"Nats-Msg-Id": "query.asked:q1"}  # outside a span there is nothing to carry
    assert result["recording"] is True
    version, _trace_id, _span_id, flags = result["inside"]["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # W3C, sampled
    assert result["token_span_recorded"] is False and result["event_span_recorded"] is True
