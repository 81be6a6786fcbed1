"""Parser agent: document.uploaded -> chunks.ready (+ document.parsed | document.failed).

Run one or many replicas: `ragbus agent parser`. They share the durable pull consumer `parser`.
"""

from __future__ import annotations

from agents.parser.settings import ParserSettings
from streams.agent import make_app, make_broker

settings = ParserSettings()
broker = make_broker(settings, "ragbus-parser")
app = make_app(broker, "ragbus parser", "Turns uploaded documents into text chunks")

from agents.parser import handlers  # noqa: F401 - registers the subscribers on the broker
