"""Embedder agent: chunks.ready -> chunks.embedded, and query.asked -> context.built (retrieval).

The model and the database pool are created in the lifespan, not at import.
"""

from __future__ import annotations

from agents.embedder.settings import EmbedderSettings
from streams.agent import make_app, make_broker

settings = EmbedderSettings()
broker = make_broker(settings, "ragbus-embedder")
app = make_app(
    broker, "ragbus embedder",
    "Embeds chunks with all-MiniLM-L6-v2 and retrieves passages for questions",
)

from agents.embedder import handlers  # noqa: F401 - registers the subscribers on the broker
