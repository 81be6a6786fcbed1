"""`ragbus streams declare`: create or update every stream, durable consumer and the Object Store bucket,
and the first embedding index of a fresh system.

Idempotent: running it twice changes nothing; running it after a config change in `topology` updates the
stream in place (JetStream keeps the messages). The durable of every live embedding index is declared
here too (`declare_index`, also what `ragbus reindex` calls when it starts an index).
"""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError

from streams.events import IndexActivated, IndexStarted
from streams.indexes import read_index_state
from streams.publish import publish
from streams.topology import (
    CHUNKS,
    DEADLETTER,
    DEFAULT_EMBEDDING_MODEL,
    DOCUMENTS_BUCKET,
    DURABLES,
    LEGACY_EMBEDDER_CHUNKS,
    OBJECTS,
    STREAMS,
    index_durable,
)

log = logging.getLogger(__name__)


async def declare_streams(js: JetStreamContext, initial_model: str = DEFAULT_EMBEDDING_MODEL,
                          initial_source: str = "", replicas: int | None = None) -> list[str]:
    """Returns one human-readable line per object: created, updated or unchanged. `initial_model` (loaded
    from `initial_source`, a folder, if given) is the first index of a fresh system. `replicas` (a JetStream
    cluster: 3) moves every stream and the bucket to that many copies, up or down, keeping the messages;
    without it new streams get one and existing ones keep theirs."""
    report: list[str] = []
    raised: list[str] = []  # streams given more copies: their consumers may follow only once the cluster agrees
    for name, config in STREAMS.items():
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config.evolve(num_replicas=replicas or 1))
            report.append(f"stream {name}: created" + (f" (R{replicas})" if replicas else ""))
            continue
        current = info.config.num_replicas or 1
        wanted = config.evolve(num_replicas=replicas or current)
        if _differs(info.config, config) or wanted.num_replicas != current:
            await js.update_stream(wanted)
            if (wanted.num_replicas or 1) > current:
                raised.append(name)
            report.append(f"stream {name}: updated" + (f" (R{current} -> R{replicas})"
                                                       if wanted.num_replicas != current else ""))
        else:
            report.append(f"stream {name}: unchanged")

    if replicas:
        await _until_copies(js, raised, replicas)
    for durable in DURABLES:
        consumer = durable.config()
        try:
            current = (await js.consumer_info(durable.stream, durable.name)).config
            existed = True
            # where it starts is fixed at creation (a restored durable starts after its backed-up position)
            consumer.deliver_policy, consumer.opt_start_seq = current.deliver_policy, current.opt_start_seq
            consumer.opt_start_time = current.opt_start_time
            consumer.num_replicas = current.num_replicas
        except NotFoundError:
            existed = False
        if replicas:  # a consumer keeps the copies it was made with when its stream gets more: say it
            consumer.num_replicas = replicas
        # add_consumer with the same name is create-or-update on nats-server >= 2.10
        await js.add_consumer(durable.stream, consumer)
        report.append(f"consumer {durable.stream}/{durable.name}: {'ensured' if existed else 'created'}")

    try:
        await js.object_store(DOCUMENTS_BUCKET)
        bucket = (await js.stream_info(OBJECTS)).config
        if replicas and (bucket.num_replicas or 1) != replicas:
            await js.update_stream(bucket.evolve(num_replicas=replicas))
            report.append(f"object store {DOCUMENTS_BUCKET}: updated (R{bucket.num_replicas or 1} -> R{replicas})")
        else:
            report.append(f"object store {DOCUMENTS_BUCKET}: unchanged")
    except (BucketNotFoundError, NotFoundError):
        await js.create_object_store(
            DOCUMENTS_BUCKET,
            ObjectStoreConfig(
                description="Uploaded document bytes, keyed by sha256", storage=StorageType.FILE,
                replicas=replicas or 1,
            ),
        )
        report.append(f"object store {DOCUMENTS_BUCKET}: created")
    report += await declare_indexes(js, initial_model, initial_source, replicas)
    for line in report:
        log.info(line)
    return report


async def declare_indexes(js: JetStreamContext, initial_model: str, initial_source: str = "",
                          replicas: int | None = None) -> list[str]:
    """The durable of every live index; on a fresh system, the first index (started and activated in the
    log, so a replay from zero ends on it too)."""
    report: list[str] = []
    state = await read_index_state(js)
    if state.active is None and not state.indexes:
        start_seq = await _retire_legacy_durable(js, report)
        report.append(await declare_index(js, initial_model, start_seq, replicas))
        started = await publish(js, IndexStarted(event_id=f"index.started:{initial_model}:initial",
                                                 model=initial_model, source=initial_source))
        await publish(js, IndexActivated(event_id=f"index.activated:{initial_model}:initial", model=initial_model,
                                         reason="initial", causation_id=f"index.started:{initial_model}:initial"))
        report.append(f"index {initial_model}: {'active' if not started.duplicate else 'already active'}")
        return report
    for index in state.live():
        report.append(await declare_index(js, index.model, replicas=replicas))
    return report


async def declare_index(js: JetStreamContext, model: str, start_seq: int = 0, replicas: int | None = None) -> str:
    """Create the index's durable if it is missing: from the first chunks.ready (a full replay), or from
    `start_seq` when another durable already embedded everything before it. An existing one is kept as it
    is (its position is the re-index's progress)."""
    durable = index_durable(model)
    try:
        existing = (await js.consumer_info(durable.stream, durable.name)).config
        copies = replicas or existing.num_replicas
        if (existing.ack_wait, existing.max_deliver, existing.num_replicas) != (durable.ack_wait,
                                                                               durable.max_deliver, copies):
            # settings JetStream lets change; where it starts from (its deliver policy) stays as created
            existing.ack_wait, existing.max_deliver = durable.ack_wait, durable.max_deliver
            existing.num_replicas = copies
            await js.add_consumer(durable.stream, existing)
            line = f"consumer {durable.stream}/{durable.name}: updated"
        else:
            line = f"consumer {durable.stream}/{durable.name}: ensured"
    except NotFoundError:
        config = durable.config()
        config.num_replicas = replicas
        if start_seq > 1:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start_seq
        await js.add_consumer(durable.stream, config)
        line = f"consumer {durable.stream}/{durable.name}: created"
    return line


async def delete_index_durable(js: JetStreamContext, model: str) -> None:
    durable = index_durable(model)
    try:
        await js.delete_consumer(durable.stream, durable.name)
    except NotFoundError:
        pass


async def _retire_legacy_durable(js: JetStreamContext, report: list[str]) -> int:
    """A system from before per-index durables embedded with one durable: the first index takes over after
    its acknowledged position instead of embedding the whole log again. Returns that start (0: none)."""
    try:
        legacy = await js.consumer_info(CHUNKS, LEGACY_EMBEDDER_CHUNKS)
    except NotFoundError:
        return 0
    start = (legacy.ack_floor.stream_seq if legacy.ack_floor else 0) + 1
    await js.delete_consumer(CHUNKS, LEGACY_EMBEDDER_CHUNKS)
    try:
        await js.delete_consumer(DEADLETTER, f"{LEGACY_EMBEDDER_CHUNKS}-advisories")
    except NotFoundError:
        pass
    report.append(f"consumer {CHUNKS}/{LEGACY_EMBEDDER_CHUNKS}: retired (the first index goes on from #{start})")
    return start


async def _until_copies(js: JetStreamContext, names: list[str], replicas: int, timeout: float = 60.0) -> None:
    """Until the cluster has placed every copy of these streams: before that it refuses a consumer with as
    many copies ("exceeds parent stream"), the change being asynchronous."""
    deadline = asyncio.get_running_loop().time() + timeout
    for name in names:
        while True:
            info = await js.stream_info(name)
            peers = (info.cluster.replicas if info.cluster else None) or []
            if info.config.num_replicas == replicas and len(peers) >= replicas - 1:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"stream {name}: {replicas} copies not placed after {timeout:.0f} s")
            await asyncio.sleep(0.2)


def _differs(current: object, wanted: object) -> bool:
    fields = ("subjects", "max_age", "duplicate_window", "storage", "retention", "description")
    # the server reports "no limit" as 0 where the config says None
    return any((getattr(current, f) or 0) != (getattr(wanted, f) or 0) for f in fields)
