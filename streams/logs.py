"""Logging for every ragbus process: readable lines by default, or one JSON object per line
(RAGBUS_LOG_FORMAT=json) for a log collector. Either way each line carries the correlation id (the doc_id or
query_id) of the event being handled, so one upload or one question can be followed across the agents:
`grep <query_id>` on text logs, a field filter on JSON ones."""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

CORRELATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("ragbus_correlation", default=None)
FORMATS = ("text", "json")


@contextmanager
def correlated(correlation_id: str | None) -> Iterator[None]:
    """Log lines written inside (by this task and the tasks it starts) carry `correlation_id`."""
    token = CORRELATION.set(correlation_id)
    try:
        yield
    finally:
        CORRELATION.reset(token)


class _Correlation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        correlation_id = CORRELATION.get()
        record.correlation_id = correlation_id  # type: ignore[attr-defined]
        record.correlation = f" [{correlation_id}]" if correlation_id else ""  # type: ignore[attr-defined]
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if getattr(record, "correlation_id", None):
            line["correlation_id"] = record.correlation_id  # type: ignore[attr-defined]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


# FastStream's broker logs "Received" and "Processed" for every message (two lines per event handled). Its
# brokers log through this ragbus logger instead of their own stdout handler, those two at DEBUG: they show
# with RAGBUS_LOG_LEVEL=DEBUG only, and in the process's format (json too) with the correlation id.
BROKER_LOGGER = "ragbus.broker"


def broker_logging() -> dict[str, Any]:
    """The `logger` and `log_level` (the level of the per-message lines) of every NatsBroker."""
    return {"logger": logging.getLogger(BROKER_LOGGER), "log_level": logging.DEBUG}


def configure_logging(level: str, fmt: str = "text") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"RAGBUS_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler()
    handler.addFilter(_Correlation())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s%(correlation)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # FastStream logs every message received and processed at INFO: one agent's whole traffic, twice
    logging.getLogger("faststream").setLevel(logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG)
