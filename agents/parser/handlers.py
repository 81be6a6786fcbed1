"""Thin handlers: take the event, call the service, publish the next events."""

from __future__ import annotations

import asyncio
import logging

import nats
from faststream import AckPolicy
from faststream.nats import NatsMessage

from agents.parser.app import app, broker, settings
from agents.parser.isolation import parse_isolated, warm_up
from agents.parser.service import ParsedDocument, ParseError
from streams.agent import (
    EventPublisher,
    dead_letter_publisher,
    durable_subscription,
    report_gave_up,
    require_durables,
)
from streams.delivery import PoisonMessage, keep_alive, settle
from streams.events import Chunk, ChunksReady, DocumentFailed, DocumentParsed, DocumentUploaded
from streams.topology import DOCUMENTS_BUCKET, PARSER

log = logging.getLogger("ragbus.parser")

publish_chunks = EventPublisher(broker, ChunksReady, "CHUNKS",
                                "Text chunks of a document in batches, with page, section path and offsets.")
publish_parsed = EventPublisher(broker, DocumentParsed, "DOCUMENTS",
                                "The document was parsed; all its chunks.ready batches are on the bus.")
publish_failed = EventPublisher(broker, DocumentFailed, "DOCUMENTS",
                                "The document cannot be parsed; `reason` says why, for the user.")
publish_dead_letter = dead_letter_publisher(broker)


@app.on_startup
async def require_topology() -> None:
    await require_durables(settings.nats_url, PARSER)
    await asyncio.to_thread(warm_up)


@broker.subscriber(
    **durable_subscription(PARSER, batch_size=settings.concurrency),
    ack_policy=AckPolicy.MANUAL,
    title="parse uploaded documents",
    description="Fetches the bytes from the Object Store, extracts text and publishes chunks.ready batches, "
    "then document.parsed; a document that cannot be parsed becomes document.failed.",
)
async def on_document_uploaded(event: DocumentUploaded, msg: NatsMessage) -> None:
    async def work() -> None:
        store = await broker.connection.jetstream().object_store(DOCUMENTS_BUCKET)
        try:
            # bounded: a read that stalls is retried (nak) rather than holding this parser forever
            data = (await asyncio.wait_for(store.get(event.object_name), 60.0)).data or b""
        except nats.js.errors.ObjectNotFoundError as exc:
            raise PoisonMessage(f"document bytes missing from the object store ({event.object_name})") from exc
        async with keep_alive(msg.raw_message):
            try:
                parsed = await asyncio.to_thread(
                    parse_isolated, data, event.name,
                    timeout=settings.parse_timeout, memory_limit=settings.parse_memory_mb * 2**20,
                    strategy=event.metadata.get("chunk_strategy", settings.chunk_strategy),
                    chunk_tokens=settings.chunk_tokens, overlap_tokens=settings.chunk_overlap_tokens,
                )
            except ParseError as exc:
                log.info("%s (%s) failed to parse: %s", event.name, event.doc_id, exc.reason)
                await publish_failed(failed(event, exc.reason))
                return
        batches = chunk_batches(event, parsed)
        for batch in batches:
            await publish_chunks(batch)
        await publish_parsed(parsed_event(event, parsed, len(batches)))
        log.info("%s (%s): %d chunks", event.name, event.doc_id, len(parsed.chunks))

    async def on_dead(reason: str) -> None:
        await publish_failed(failed(event, reason))

    await settle(msg.raw_message, PARSER, publish_dead_letter, work, on_dead)


async def report_parser_gave_up(payload: bytes, advisory: dict) -> None:
    event = DocumentUploaded.model_validate_json(payload)
    await publish_failed(failed(event, f"the parser stopped on this document {advisory.get('deliveries')} times "
                                       "(crashed or was killed); `ragbus deadletters retry` after a fix"))


report_gave_up(broker, PARSER, report_parser_gave_up, publish_dead_letter)


def failed(event: DocumentUploaded, reason: str) -> DocumentFailed:
    return DocumentFailed(
        event_id=f"document.failed:{event.upload_id}",
        correlation_id=event.doc_id,
        causation_id=event.event_id,
        doc_id=event.doc_id,
        upload_id=event.upload_id,
        name=event.name,
        stage="parse",
        reason=reason,
    )


def chunk_batches(event: DocumentUploaded, parsed: ParsedDocument) -> list[ChunksReady]:
    chunks = [
        Chunk(
            chunk_id=f"{event.upload_id}-{c.ordinal:05d}",
            ordinal=c.ordinal,
            text=c.text,
            page=c.page,
            section=list(c.section),
            char_start=c.char_start,
            char_end=c.char_end,
        )
        for c in parsed.chunks
    ]
    batches = batch_by_text(chunks, settings.chunks_per_event)
    return [
        ChunksReady(
            event_id=f"chunks.ready:{event.upload_id}:{n}",
            correlation_id=event.doc_id,
            causation_id=event.event_id,
            doc_id=event.doc_id,
            upload_id=event.upload_id,
            name=event.name,
            doc_type=parsed.doc_type,
            batch=n,
            batch_count=len(batches),
            chunk_count=len(chunks),
            chunks=batch,
        )
        for n, batch in enumerate(batches)
    ]


def batch_by_text(chunks: list[Chunk], size: int) -> list[list[Chunk]]:
    """Batches of at most `size` distinct texts, with every repeat of a text in the batch of its first
    occurrence: the embedder then runs each distinct text of a document through the model once."""
    groups: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        groups.setdefault(chunk.text, []).append(chunk)
    batches: list[list[Chunk]] = []
    texts_in_batch = size
    for group in groups.values():
        if texts_in_batch == size:
            batches.append([])
            texts_in_batch = 0
        batches[-1].extend(group)
        texts_in_batch += 1
    return [sorted(batch, key=lambda c: c.ordinal) for batch in batches]


def parsed_event(event: DocumentUploaded, parsed: ParsedDocument, batch_count: int) -> DocumentParsed:
    return DocumentParsed(
        event_id=f"document.parsed:{event.upload_id}",
        correlation_id=event.doc_id,
        causation_id=event.event_id,
        doc_id=event.doc_id,
        upload_id=event.upload_id,
        name=event.name,
        doc_type=parsed.doc_type,
        title=parsed.title,
        author=parsed.author,
        pages=parsed.pages,
        chunk_count=len(parsed.chunks),
        batch_count=batch_count,
        chars=len(parsed.text),
    )
