"""Generator agent: context.built -> answer.token* -> answer.done.

Every replica binds the same durable pull consumer `generator`: start more replicas (on more nodes) and
they share the questions by capacity.
"""

from __future__ import annotations

from agents.generator.settings import GeneratorSettings
from streams.agent import make_app, make_broker

settings = GeneratorSettings()
broker = make_broker(settings, f"ragbus-generator-{settings.generator_id}")
app = make_app(
    broker, "ragbus generator",
    "Streams grounded answers from an OpenAI-compatible LLM server",
)

from agents.generator import handlers  # noqa: F401 - registers the subscribers on the broker
