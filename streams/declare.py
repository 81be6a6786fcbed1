"""`ragbus streams declare`: create or update every stream, durable consumer and the Object Store bucket.

Idempotent: running it twice changes nothing; running it after a config change in `topology` updates the
stream in place (JetStream keeps the messages).
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError

from streams.topology import DOCUMENTS_BUCKET, DURABLES, STREAMS

log = logging.getLogger(__name__)


async def declare_streams(js: JetStreamContext) -> list[str]:
    """Returns one human-readable line per object: created, updated or unchanged."""
    report: list[str] = []
    for name, config in STREAMS.items():
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
            report.append(f"stream {name}: created")
            continue
        if _differs(info.config, config):
            await js.update_stream(config)
            report.append(f"stream {name}: updated")
        else:
            report.append(f"stream {name}: unchanged")

    for durable in DURABLES:
        try:
            await js.consumer_info(durable.stream, durable.name)
            existed = True
        except NotFoundError:
            existed = False
        # add_consumer with the same name is create-or-update on nats-server >= 2.10
        await js.add_consumer(durable.stream, durable.config())
        report.append(f"consumer {durable.stream}/{durable.name}: {'ensured' if existed else 'created'}")

    try:
        await js.object_store(DOCUMENTS_BUCKET)
        report.append(f"object store {DOCUMENTS_BUCKET}: unchanged")
    except (BucketNotFoundError, NotFoundError):
        await js.create_object_store(
            DOCUMENTS_BUCKET,
            ObjectStoreConfig(
                description="Uploaded document bytes, keyed by sha256", storage=StorageType.FILE
            ),
        )
        report.append(f"object store {DOCUMENTS_BUCKET}: created")
    for line in report:
        log.info(line)
    return report


def _differs(current: object, wanted: object) -> bool:
    fields = ("subjects", "max_age", "duplicate_window", "storage", "retention", "description")
    # the server reports "no limit" as 0 where the config says None
    return any((getattr(current, f) or 0) != (getattr(wanted, f) or 0) for f in fields)
