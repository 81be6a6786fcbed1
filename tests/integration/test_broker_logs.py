"""FastStream's per-message "Received" / "Processed" lines (two per event an agent handles) are off by default
and on with RAGBUS_LOG_LEVEL=DEBUG, in the process's own log format, on an agent's broker connected to the
real nats-server (FastStream's in-memory test broker writes no such lines at all)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ragbus.credentials import Credentials
from ragbus.servers import NatsServer
from streams.agent import make_broker
from streams.logs import configure_logging
from streams.settings import BusSettings

pytestmark = pytest.mark.timeout(60)


async def _handle_one(nats_server: NatsServer, credentials: Credentials) -> None:
    settings = BusSettings(nats_url=nats_server.url, nats_user="admin", nats_password=credentials.nats["admin"])
    broker = make_broker(settings, "ragbus-parser")
    subject = f"test.logs.{uuid.uuid4().hex}"
    handled = asyncio.Event()

    @broker.subscriber(subject)
    async def on_message(body: dict) -> None:
        handled.set()

    await broker.start()
    try:
        await broker.publish({"n": 1}, subject)
        await asyncio.wait_for(handled.wait(), 10)
        await asyncio.sleep(0.2)  # "Processed" is written after the handler returns
    finally:
        await broker.stop()


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
async def test_no_line_per_message_by_default(level: str, nats_server: NatsServer, credentials: Credentials,
                                              restore_logging, capsys) -> None:
    configure_logging(level)
    await _handle_one(nats_server, credentials)
    out = capsys.readouterr()
    assert "Received" not in out.out + out.err and "Processed" not in out.out + out.err, out


async def test_a_line_per_message_at_debug_in_our_format(nats_server: NatsServer, credentials: Credentials,
                                                         restore_logging, capsys) -> None:
    configure_logging("DEBUG", "json")
    await _handle_one(nats_server, credentials)
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if '"logger": "ragbus.broker"' in line]
    assert any('"message": "Received"' in line for line in lines), out.err[-2000:]
    assert any('"message": "Processed"' in line for line in lines), out.err[-2000:]
    assert "Received" not in out.out  # not FastStream's own stdout handler
