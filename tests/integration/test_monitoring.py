"""The dashboard and the alert rules (ops/) against Debian's real Prometheus scraping the running stack: after
uploads and questions, every dashboard expression runs without error and returns series, every metric an
expression names exists, every alert rule loads and evaluates, and AgentDown fires for a generator that is
stopped (then started again, so the session's stack stays whole). `promtool` checks the rule file and the
example scrape configuration.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ragbus.servers import free_port
from ragbus.stack import AgentStack
from streams.topology import GENERATOR
from tests.conftest import ROOT, upload, wait_for_status

pytestmark = pytest.mark.timeout(600)

OPS = ROOT / "ops"
DASHBOARD = OPS / "grafana" / "ragbus.json"
ALERTS = OPS / "prometheus" / "alerts.yml"
RATE_INTERVAL = "1m"  # what Grafana's $__rate_interval becomes here
# PromQL words that are not metric names (functions are recognised by their parenthesis)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) for every target, with the template variables expanded as Grafana would."""
    board = json.loads(DASHBOARD.read_text())
    variables = {"__rate_interval": RATE_INTERVAL, "__interval": "1s", "__range": "1h"}
    variables |= {v["name"]: v["current"]["value"] for v in board["templating"]["list"]}
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
            assert "$" not in expr, f"{panel['title']}: a variable the dashboard does not define in {expr}"
            found.append((panel["title"], expr))
    return found


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: what is left without strings, label matchers, ranges, label
    lists and function calls."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    return {n for n in re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b(?!\s*\()", e) if n not in KEYWORDS}


class Prometheus:
    """Debian's prometheus on a free port, scraping every process of the stack each second."""

    def __init__(self, folder: Path, stack: AgentStack) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = {name: (stack.roles[name], f"127.0.0.1:{stack.metrics_ports[name]}")
                        for name in stack.procs if name in stack.metrics_ports}
        self.targets["gateway"] = ("gateway", f"127.0.0.1:{stack.port}")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        rules = alert_rules()
        for rule in rules:
            if rule["alert"] == "AgentDown":
                rule["for"] = "2s"  # the rule as written waits a minute
        (self.folder / "alerts.yml").write_text(yaml.safe_dump({"groups": [{"name": "ragbus", "rules": rules}]}))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "ragbus", "static_configs": [
                {"targets": [address], "labels": {"agent": agent}} for agent, address in self.targets.values()]}],
        }
        (self.folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            stdout=(self.folder / "prometheus.log").open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.folder / "prometheus.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def query(self, http: httpx.AsyncClient, expr: str) -> dict[str, Any]:
        """The answer of /api/v1/query; an expression Prometheus refuses fails the test with its error."""
        response = await http.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body.get('error', body)}"
        return body["data"]


@pytest.fixture
async def prometheus(stack: AgentStack, tmp_path: Path) -> AsyncIterator[Prometheus]:
    if shutil.which("prometheus") is None:
        pytest.fail("Debian's prometheus is not installed (scripts/test.sh installs it)")
    server = Prometheus(tmp_path, stack)
    server.start()
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            deadline = time.monotonic() + 60
            while True:
                assert server.proc is not None and server.proc.poll() is None, server.log()
                try:
                    if (await http.get(f"{server.url}/-/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"prometheus did not start\n{server.log()}"
                await asyncio.sleep(0.3)
        yield server
    finally:
        server.stop()


def test_promtool_accepts_the_rules_and_the_example_config() -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool (Debian's prometheus package) is not installed")
    for args in (["check", "rules", str(ALERTS)], ["check", "config", str(OPS / "prometheus" / "prometheus.yml")]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    assert len(alert_rules()) >= 6


async def test_every_panel_and_alert_works_against_the_running_stack(stack: AgentStack, client: httpx.AsyncClient,
                                                                    prometheus: Prometheus) -> None:
    # a flow that touches every agent: two uploads indexed, questions answered, a search
    marker = uuid.uuid4().hex[:8]
    docs = [await upload(client, f"monitoring-{marker}-{i}.md",
                         f"# Monitoring {marker}\n\nThe heat pump {marker} model {i} defrosts every "
                         f"{40 + i} minutes when the outdoor coil ices up.\n".encode()) for i in range(2)]
    for doc in docs:
        assert (await wait_for_status(client, doc["doc_id"]))["status"] == "indexed"
    for question in (f"How often does the heat pump {marker} defrost?", f"What ices up on model {marker}?"):
        response = await client.post("/ask", json={"question": question})
        assert response.status_code == 200, response.text
        assert response.json()["answer"]
    assert (await client.post("/search", json={"query": f"heat pump {marker}"})).status_code == 200

    panels = dashboard_expressions()
    rules = alert_rules()
    async with httpx.AsyncClient(timeout=10.0) as http:
        # every target scraped, and every panel with data: polled, as the scrapes and the projector's poll land
        deadline = time.monotonic() + 90
        while True:
            up = (await prometheus.query(http, 'up{job="ragbus"} == 1'))["result"]
            empty = [(title, expr) for title, expr in panels
                     if not (await prometheus.query(http, expr))["result"]]
            if len(up) == len(prometheus.targets) and not empty:
                break
            assert time.monotonic() < deadline, (
                f"targets up: {len(up)} of {len(prometheus.targets)} {prometheus.targets}; "
                f"panels without series: {empty}\n{prometheus.log()}")
            await asyncio.sleep(1.0)

        names = set((await http.get(f"{prometheus.url}/api/v1/label/__name__/values")).json()["data"])
        for where, expr in [*panels, *((r["alert"], r["expr"]) for r in rules)]:
            used = metric_names(expr)
            assert used, f"{where}: no metric found in {expr}"
            assert used <= names, f"{where}: {sorted(used - names)} exported by no process ({expr})"
        for rule in rules:
            await prometheus.query(http, rule["expr"])  # evaluates (not firing is an empty result)

        loaded = [r for g in (await http.get(f"{prometheus.url}/api/v1/rules")).json()["data"]["groups"]
                  for r in g["rules"]]
        assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
        assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]

        # an agent that stops: AgentDown fires for it, and clears once it is back
        port = stack.metrics_ports["generator-2"]
        instance = f"127.0.0.1:{port}"
        stack.kill("generator-2", signal.SIGTERM)
        try:
            deadline = time.monotonic() + 60
            while not await _firing(prometheus, http, "AgentDown", instance):
                assert time.monotonic() < deadline, f"AgentDown never fired for {instance}\n{prometheus.log()}"
                await asyncio.sleep(0.5)
            alerts = (await http.get(f"{prometheus.url}/api/v1/alerts")).json()["data"]["alerts"]
            down = [a for a in alerts if a["labels"]["alertname"] == "AgentDown" and a["state"] == "firing"]
            assert [a["labels"]["instance"] for a in down] == [instance], down  # no other agent
            assert down[0]["labels"]["agent"] == "generator" and down[0]["labels"]["severity"] == "critical"
        finally:
            stack.start("generator-2", "generator", RAGBUS_GENERATOR_ID="generator-2")
        assert stack.metrics_ports["generator-2"] == port  # the same target again
        await stack.wait_ready({GENERATOR: 2}, timeout=120)
        deadline = time.monotonic() + 60
        while await _firing(prometheus, http, "AgentDown", instance):
            assert time.monotonic() < deadline, "AgentDown still firing after the generator came back"
            await asyncio.sleep(0.5)


async def _firing(prometheus: Prometheus, http: httpx.AsyncClient, alert: str, instance: str) -> bool:
    alerts = (await http.get(f"{prometheus.url}/api/v1/alerts")).json()["data"]["alerts"]
    return any(a["labels"].get("alertname") == alert and a["labels"].get("instance") == instance
               and a["state"] == "firing" for a in alerts)


def test_metric_names_are_found_in_expressions() -> None:
    """The extractor the test above relies on: it must find names, and only names."""
    assert metric_names('histogram_quantile(0.95, sum by (le, stage) (rate(x_bucket{job=~"a|b"}[1m])))') == {
        "x_bucket"}
    assert metric_names("a / b > 0.8 and on (job) c offset 5m") == {"a", "b", "c"}
    assert metric_names('absent(up{agent="parser"}) or absent(up{agent="gateway"})') == {"up"}
    assert metric_names("time() - ragbus_monitor_last_poll_timestamp_seconds > 60") == {
        "ragbus_monitor_last_poll_timestamp_seconds"}
