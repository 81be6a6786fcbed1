"""Log lines carry the correlation id of the event being handled; RAGBUS_LOG_FORMAT=json gives one JSON
object per line."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from streams.logs import configure_logging, correlated


def test_json_lines_carry_the_correlation_id_also_in_tasks_started_inside(restore_logging, capsys) -> None:
    configure_logging("INFO", "json")
    log = logging.getLogger("ragbus.test")

    async def handle() -> None:
        with correlated("q-123"):
            log.info("embedding the question")
            await asyncio.create_task(_child(log))
        log.warning("after the event")

    asyncio.run(handle())
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["message"], line.get("correlation_id")) for line in lines] == [
        ("embedding the question", "q-123"), ("in a task of the handler", "q-123"), ("after the event", None)]
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "ragbus.test" and lines[0]["time"].endswith("+00:00")


async def _child(log: logging.Logger) -> None:
    log.info("in a task of the handler")


def test_text_lines_show_the_correlation_id_in_brackets(restore_logging, capsys) -> None:
    configure_logging("INFO", "text")
    with correlated("doc-9"):
        logging.getLogger("ragbus.test").info("parsed")
    assert "ragbus.test [doc-9]: parsed" in capsys.readouterr().err


def test_an_unknown_format_is_refused_with_its_name(restore_logging) -> None:
    with pytest.raises(ValueError, match="RAGBUS_LOG_FORMAT must be one of text, json"):
        configure_logging("INFO", "xml")


def test_faststream_per_message_lines_are_off_unless_debugging(restore_logging) -> None:
    configure_logging("INFO")
    assert logging.getLogger("faststream").level == logging.WARNING
    configure_logging("DEBUG")
    assert logging.getLogger("faststream").level == logging.DEBUG
