#!/usr/bin/env bash
# Installs ragbus with its test extras into .venv and runs the whole test suite: unit tests, and
# integration tests against a real nats-server, PostgreSQL + pgvector and llama.cpp server that the
# fixtures start on free ports. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k projector`).
set -euo pipefail
cd "$(dirname "$0")/.."
# the venv with the test extras; llama-cpp-python's build is checked on the packaged model (scripts/install.sh)
bash scripts/install.sh test
# the web page's browser test drives Debian's Chromium (Playwright only talks to it, it downloads nothing)
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
# the dashboard and alert rules (ops/) are checked by Debian's Prometheus scraping the test stack, and promtool
command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }
# lint and types first: cheap, and a failure here fails the run
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
