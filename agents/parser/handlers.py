"""Thin handlers: take the event, call the service, publish the next events."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import nats
from faststream.nats import NatsRouter

from agents.parser.isolation import ParseWorker
from agents.parser.service import ParsedDocument, ParseError
from agents.parser.settings import ParserSettings
from streams.context import Context, NatsBroker
from streams.delivery import PoisonMessage, Workers
from streams.events import Chunk, DocumentChunked, DocumentFailed, DocumentParsed, DocumentUploaded
from streams.publish import EventPublisher
from streams.topology import DOCUMENTS_BUCKET, PARSER

log = logging.getLogger("ragbus.parser")
router = NatsRouter()
worker = Workers(router, "parser")
Settings = Annotated[ParserSettings, Context("settings")]
Parsing = Annotated[ParseWorker, Context("parse_worker")]

publish_chunks = EventPublisher(router, DocumentChunked,
                                "Text chunks of a document in batches, with page, section path and offsets.")
publish_parsed = EventPublisher(router, DocumentParsed,
                                "The document was parsed; all its chunks.ready batches are on the bus.")
publish_failed = EventPublisher(router, DocumentFailed,
                                "The document cannot be parsed; `reason` says why, for the user.")


async def document_failed(event: DocumentUploaded, reason: str) -> None:
    await publish_failed(DocumentFailed.caused_by(event, event_id=f"document.failed:{event.upload_id}",
                                                  stage="parse", reason=reason))


@worker(PARSER, on_failure=document_failed,
        gave_up="the parser stopped on this document {deliveries} times (crashed or was killed); "
                "`ragbus deadletters retry` after a fix",
        title="parse uploaded documents",
        description="Fetches the bytes from the Object Store, extracts text and publishes chunks.ready batches, "
        "then document.parsed; a document that cannot be parsed becomes document.failed.")
async def on_document_uploaded(event: DocumentUploaded, broker: NatsBroker, settings: Settings,
                               parsing: Parsing) -> None:
    data = await fetch_bytes(broker, event)
    try:
        parsed = await asyncio.to_thread(
            parsing.parse, data, event.name, timeout=settings.parse_timeout,
            strategy=event.metadata.get("chunk_strategy", settings.chunk_strategy),
            chunk_tokens=settings.chunk_tokens, overlap_tokens=settings.chunk_overlap_tokens,
        )
    except ParseError as exc:
        log.info("%s (%s) failed to parse: %s", event.name, event.doc_id, exc.reason)
        await document_failed(event, exc.reason)
        return
    batches = chunk_batches(event, parsed, settings.chunks_per_event)
    for batch in batches:
        await publish_chunks(batch)
    await publish_parsed(DocumentParsed.caused_by(
        event, event_id=f"document.parsed:{event.upload_id}", doc_type=parsed.doc_type, title=parsed.title,
        author=parsed.author, pages=parsed.pages, chunk_count=len(parsed.chunks), batch_count=len(batches),
        chars=len(parsed.text)))
    log.info("%s (%s): %d chunks", event.name, event.doc_id, len(parsed.chunks))


async def fetch_bytes(broker: NatsBroker, event: DocumentUploaded) -> bytes:
    store = await broker.connection.jetstream().object_store(DOCUMENTS_BUCKET)
    try:
        # bounded: a read that stalls is retried (nak) rather than holding this parser forever
        return (await asyncio.wait_for(store.get(event.object_name), 60.0)).data or b""
    except nats.js.errors.ObjectNotFoundError as exc:
        raise PoisonMessage(f"document bytes missing from the object store ({event.object_name})") from exc


def chunk_batches(event: DocumentUploaded, parsed: ParsedDocument, size: int) -> list[DocumentChunked]:
    chunks = [
        Chunk(chunk_id=f"{event.upload_id}-{c.ordinal:05d}", ordinal=c.ordinal, text=c.text, page=c.page,
              section=list(c.section), char_start=c.char_start, char_end=c.char_end, toc=c.toc)
        for c in parsed.chunks
    ]
    batches = batch_by_text(chunks, size)
    return [
        DocumentChunked.caused_by(
            event, event_id=f"chunks.ready:{event.upload_id}:{n}", doc_type=parsed.doc_type, batch=n,
            batch_count=len(batches), chunk_count=len(chunks), chunks=batch)
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
