"""The k3s manifests, checked by k3s/check.py on every run of the suite (no cluster here: kustomize builds,
every workload's image, probes, ports, ConfigMap keys, and that each one mounts only its own login Secret)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_k3s_manifests_pass_their_checks() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "k3s" / "check.py")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " 0 failed" in run.stdout and "passed" in run.stdout, run.stdout[-2000:]
