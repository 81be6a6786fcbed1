"""FastStream's context parameters, resolved on the event loop.

fast_depends resolves a custom field whose `use` is a plain function in a worker thread (`anyio.to_thread`):
FastStream's `Context` costs one thread hop per parameter per message, on every handler's path (the embedder's
question handler has five, the generator's six). The same lookup as a coroutine costs none. Handlers take their
objects from here, never from `faststream.Context` or `faststream.nats.annotations`.
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream._internal.context.context_type import Context as _Context  # the class `faststream.Context` builds
from faststream.nats.broker import NatsBroker as _Broker
from faststream.nats.message import NatsMessage as _Message


class _OnTheLoop(_Context):
    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]  # awaited by fast_depends
        return super().use(**kwargs)


def Context(name: str) -> Any:
    return _OnTheLoop(name)


NatsBroker = Annotated[_Broker, Context("broker")]
NatsMessage = Annotated[_Message, Context("message")]
