"""The HTTP API against its own OpenAPI document, by an outside fuzzer: schemathesis generates requests from
the schema (examples, the coverage of every constraint, random fuzzing) and checks every response: no server
error, only documented status codes and content types, responses that match their schemas, invalid input
refused and valid input accepted, `Allow` on 405/OPTIONS. Bounded, so it runs with the suite; 0 failures."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CONFIG = Path(__file__).resolve().parent.parent / "schemathesis" / "schemathesis.toml"


@pytest.mark.timeout(900)
async def test_schemathesis_finds_nothing_wrong_with_the_http_api(stack, client):
    st = Path(sys.executable).with_name("st")
    run = await asyncio.to_thread(
        subprocess.run,
        [str(st), "--config-file", str(CONFIG), "run", f"{stack.url}/openapi.json", "--max-examples", "5",
         "--workers", "1", "--phases", "examples,coverage,fuzzing", "--seed", "20261201", "--no-color"],
        cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert tested and int(tested[1]) >= 15, run.stdout[-3000:]  # every operation of the API, not a few
