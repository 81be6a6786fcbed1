"""The embedder's side of the embedding indexes: it follows the INDEXES stream from its first event, keeps
one model loaded and one worker pulling chunks.ready for every live index, and knows which model embeds
questions (the active index's). A switch or a rollback is an event in the log: it takes effect here at
once, without a restart, and two models stay loaded side by side while a re-index runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Histogram

from agents.embedder.service import Embedder, embedding_context
from streams import subjects
from streams.delivery import JetStreamDelivery, settle
from streams.events import ChunksEmbedded, DeadLettered, DocumentChunked, EmbeddedChunk, decode_event
from streams.indexes import Index, IndexState
from streams.sentences import pack_vectors
from streams.topology import CHUNKS, INDEX, INDEXES, Durable, index_durable
from streams.tracing import span

log = logging.getLogger("ragbus.embedder")
# chunks/s is the counter's rate; a batch is one chunks.ready (up to 32 chunks)
CHUNKS_EMBEDDED = Counter("ragbus_chunks_embedded_total", "Chunks embedded, per index model", ["model"])
CACHE_HITS = Counter("ragbus_embedding_cache_hits_total", "Distinct chunk texts not run through the model again: "
                     "the index's cache had them (a new version of a document, mostly)", ["model"])
EMBED_SECONDS = Histogram("ragbus_embedding_batch_seconds", "Time to embed one chunks.ready batch", ["model"],
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32))

Load = Callable[[Index], Embedder]  # loads (and builds, if needed) the model of an index; blocking
Publish = Callable[[ChunksEmbedded], Awaitable[object]]
OnFailed = Callable[[DocumentChunked, str], Awaitable[None]]


class IndexRegistry:
    def __init__(self, load: Load, publish: Publish, dead_letter: Callable[[DeadLettered], Awaitable[object]],
                 on_failed: OnFailed, in_flight: int = 3) -> None:
        self.load = load
        self.publish = publish
        self.dead_letter = dead_letter
        self.on_failed = on_failed  # a batch the *active* index failed on for good: the document's failure
        self.in_flight = max(1, in_flight)  # chunks.ready messages held per index: see _pull
        self.state = IndexState()
        self.embedders: dict[str, Embedder] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.loading: dict[str, asyncio.Task[Embedder]] = {}
        self.changed = asyncio.Condition()
        self._nc: NATS | None = None
        self._sub = None
        self._stopping = False

    # ---- following the log ------------------------------------------------------------------------------
    async def start(self, nc: NATS, timeout: float = 120.0) -> None:
        """Replay INDEXES from the start, then follow it live; returns once an index is active."""
        self._nc = nc
        js = nc.jetstream()
        self._sub = await js.subscribe(subjects.wildcard(INDEX), stream=INDEXES, ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.ALL, cb=self._on_event)
        try:
            await asyncio.wait_for(self._until(lambda: self.state.active is not None), timeout)
        except TimeoutError:
            raise RuntimeError("no embedding index is active: run `ragbus streams declare`") from None
        log.info("indexes: %s; active %s", ", ".join(f"{i.model} ({i.state})" for i in self.state.live()),
                 self.state.active)

    async def _on_event(self, msg) -> None:  # type: ignore[no-untyped-def]
        try:
            event = decode_event(msg.data, msg.subject)
        except ValueError as exc:
            log.error("unreadable index event skipped: %s", exc)
            return
        before = self.state.active
        self.state.apply(event, msg.metadata.sequence.stream)
        if self.state.active != before:
            log.info("active index: %s (was %s)", self.state.active, before)
        self._reconcile()
        async with self.changed:
            self.changed.notify_all()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await self.changed.wait_for(predicate)

    def _reconcile(self) -> None:
        """One worker per live index; a dropped index's worker stops and its model is unloaded."""
        if self._stopping:
            return
        live = {i.model: i for i in self.state.live()}
        for model, index in live.items():
            if model not in self.workers:
                self.workers[model] = asyncio.create_task(self._work(index), name=f"index {model}")
        for model in list(self.workers):
            if model not in live:
                self.workers.pop(model).cancel()
                self.loading.pop(model, None)
                self.embedders.pop(model, None)
                log.info("index %s dropped: its embedder stopped", model)

    # ---- the models ---------------------------------------------------------------------------------------
    async def embedder(self, model: str) -> Embedder:
        """The loaded model of an index (loading it once, however many callers wait)."""
        if model in self.embedders:
            return self.embedders[model]
        index = self.state.indexes.get(model)
        if index is None:
            raise LookupError(f"no index {model}")
        if model not in self.loading:
            self.loading[model] = asyncio.create_task(asyncio.to_thread(self.load, index))
        embedder = await asyncio.shield(self.loading[model])
        self.embedders[model] = embedder
        return embedder

    async def active(self) -> Embedder:
        """The model that embeds questions: the active index's, loaded."""
        await self._until(lambda: self.state.active is not None)
        assert self.state.active is not None
        return await self.embedder(self.state.active)

    # ---- one worker per index -----------------------------------------------------------------------------
    async def _work(self, index: Index) -> None:
        durable = index_durable(index.model)
        while not self._stopping:
            try:
                embedder = await self.embedder(index.model)
                await self._pull(durable, embedder, index.generation)
            except asyncio.CancelledError:
                raise
            except NotFoundError:
                log.warning("index %s: durable %s missing; run `ragbus streams declare`", index.model, durable.name)
                await asyncio.sleep(5.0)
            except Exception as exc:  # noqa: BLE001 - a worker never dies: a broken model or link is retried
                log.error("index %s: %r; retrying in 5 s", index.model, exc)
                self.loading.pop(index.model, None)
                await asyncio.sleep(5.0)

    async def _pull(self, durable: Durable, embedder: Embedder, generation: int) -> None:
        """Keep up to `in_flight` batches in hand, each settled on its own: the model (one call at a time, its
        lock) embeds the next batch while the last one is encoded, published and acked and more are fetched,
        so it never waits on the bus. Every batch in hand is kept alive (in_progress) from the moment it
        arrives, so waiting its turn never runs into ack_wait."""
        assert self._nc is not None
        sub = await self._nc.jetstream().pull_subscribe_bind(durable.name, stream=CHUNKS)
        busy: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                if len(busy) >= self.in_flight:
                    await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
                    busy = _unfinished(busy)
                    continue
                try:
                    # with batches in hand, a short fetch: a finished one frees a slot to refill
                    msgs = await sub.fetch(batch=self.in_flight - len(busy), timeout=0.5 if busy else 5.0)
                except TimeoutError:
                    msgs = []
                for msg in msgs:
                    busy.add(asyncio.create_task(self._settle(JetStreamDelivery(msg), durable, embedder,
                                                              generation)))
                busy = _unfinished(busy)
        finally:
            if busy:  # the batches in hand are finished and settled, also when stopping
                await asyncio.gather(*busy, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _settle(self, msg: JetStreamDelivery, durable: Durable, embedder: Embedder, generation: int) -> None:
        event = DocumentChunked.model_validate_json(msg.raw_message.data)

        async def work() -> None:
            started = time.perf_counter()
            contexts = [embedding_context(event.name, c.section, c.text) for c in event.chunks]
            batch = await embedder.embed_chunks_async([c.text for c in event.chunks], contexts)
            EMBED_SECONDS.labels(embedder.name).observe(time.perf_counter() - started)
            CHUNKS_EMBEDDED.labels(embedder.name).inc(len(event.chunks))
            CACHE_HITS.labels(embedder.name).inc(batch.cache_hits)
            await self.publish(ChunksEmbedded.caused_by(
                # the generation: the same batch embedded again for an index built anew is another event
                event, event_id=f"chunks.embedded:{embedder.name}:{generation}:{event.upload_id}:{event.batch}",
                doc_type=event.doc_type, model=embedder.name, dim=embedder.dim, fingerprint=embedder.fingerprint,
                generation=generation,
                batch=event.batch, batch_count=event.batch_count, chunk_count=event.chunk_count,
                embedded_texts=batch.model_texts,
                chunks=[EmbeddedChunk(**c.model_dump(), embedding=v.tolist(), sentences=s.spans,
                                      sentence_vectors=pack_vectors(s.vectors))
                        for c, v, s in zip(event.chunks, batch.vectors, batch.sentences, strict=True)],
            ))

        async def on_dead(reason: str) -> None:
            if embedder.name == self.state.active:
                await self.on_failed(event, reason)
            else:  # the live index has the document; the gate will see the gap in this one
                log.error("index %s could not embed %s batch %d: %s", embedder.name, event.name, event.batch, reason)

        raw = msg.raw_message  # pulled with nats.py, not a FastStream subscriber: its trace is continued here
        with span(f"{raw.subject} process", raw.headers, attributes={"ragbus.index": embedder.name}):
            await settle(msg, durable, self.dead_letter, work, on_dead)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop fetching; the batch in hand is finished (its message settled) before the workers end."""
        self._stopping = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        tasks = list(self.workers.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        self.workers.clear()


def _unfinished(tasks: set[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
    """The tasks still running; a finished one that raised re-raises here, so the worker's retry sees it
    (the other batches in hand are settled by _pull's finally)."""
    for task in tasks:
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            raise error
    return {t for t in tasks if not t.done()}
