"""`ragbus up`, the embedded default: everything from its wheels, stopped cleanly, data kept for the next start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ragbus.servers import free_port
from tests.conftest import ROOT


def _start(data: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ragbus.cli", "up", "--data-dir", str(data), "--port", env["P"]],
                            env={**os.environ, **env}, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("ragbus up never became ready:\n" + log.read_text()[-3000:])


def _stop(proc: subprocess.Popen) -> list[psutil.Process]:
    """SIGTERM ragbus up; returns whatever of its process tree is still alive afterwards."""
    tree = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)
    _, alive = psutil.wait_procs(tree, timeout=15)
    return alive


@pytest.mark.timeout(900)
def test_up_serves_stops_cleanly_and_a_second_up_finds_the_data(tmp_path):
    ports = {"P": str(free_port()), "RAGBUS_NATS_PORT": str(free_port()), "RAGBUS_PG_PORT": str(free_port()),
             "RAGBUS_LLM_PORT": str(free_port())}
    env = {**ports, "RAGBUS_LOG_LEVEL": "INFO", "RAGBUS_METRICS_PORT": str(free_port())}
    for var in ("RAGBUS_NATS_URL", "RAGBUS_DATABASE_URL", "RAGBUS_LLM_URL"):
        env[var] = ""  # the embedded servers, not anything from the environment
    url = f"http://127.0.0.1:{ports['P']}"
    data, log = tmp_path / "data", tmp_path / "up.log"

    proc = _start(data, env, log)
    try:
        _wait_ready(url, proc, log)
        doc = httpx.post(f"{url}/documents", files={"file": ("up.md", b"# Up\nThe embedded default keeps data.")},
                         timeout=30).json()
        for _ in range(240):
            status = httpx.get(f"{url}/documents/{doc['doc_id']}", timeout=5).json()["status"]
            if status == "indexed":
                break
            time.sleep(0.5)
        assert status == "indexed"
        _check_scrape_targets(log.read_text())
    finally:
        alive = _stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert alive == [], f"left running after SIGTERM: {alive}"
    text = log.read_text()
    for part in ("stopped gateway", "stopped projector", "ragbus stopped"):
        assert part in text

    proc = _start(data, env, log)
    try:
        _wait_ready(url, proc, log)
        again = httpx.get(f"{url}/documents/{doc['doc_id']}", timeout=5).json()
        assert again["status"] == "indexed" and again["chunks"] >= 1
    finally:
        assert _stop(proc) == []


def _check_scrape_targets(log: str) -> None:
    """Every process `ragbus up` lists as a scrape target serves its metrics there: FastStream's for the
    agents, the system's gauges for the projector, the gateway's own on its HTTP port."""
    listed = re.search(r"Prometheus scrape targets: (.*)", log)
    assert listed, log[-3000:]
    targets = dict(t.split(" :") for t in listed.group(1).split(", "))
    assert set(targets) == {"projector", "parser", "embedder", "generator-1", "gateway"}, targets
    wanted = {"projector": "ragbus_consumer_pending{", "parser": "faststream_received_messages_total{",
              "embedder": "ragbus_chunks_embedded_total{", "generator-1": "ragbus_llm_breaker_open ",
              "gateway": "ragbus_uploads_total{"}
    deadline = time.monotonic() + 30  # the projector's first poll
    for name, target in targets.items():
        url = f"http://127.0.0.1:{target}" if "/" in target else f"http://127.0.0.1:{target}/metrics"
        while wanted[name] not in (text := httpx.get(url, timeout=5).text):
            assert time.monotonic() < deadline, f"{name} at {url} has no {wanted[name]}:\n{text[-2000:]}"
            time.sleep(1)
