"""HTTP upload bridge and document REST: bytes go to the Object Store, facts go to the DOCUMENTS stream."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import zlib
from datetime import datetime
from typing import Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile, status
from prometheus_client import Counter
from pydantic import BaseModel

from agents.gateway.admission import Busy
from agents.gateway.auth import READ, UNAUTHORIZED, WRITE, Writer, client_id
from agents.gateway.bus import Bus
from agents.gateway.deps import BusDep, DocumentsDep, SettingsDep
from agents.gateway.requests import has_nul
from projections.views import DocumentView
from streams.doctypes import CHUNK_STRATEGIES, ChunkStrategy, sniff_document_type
from streams.events import DocumentDeleted, DocumentUploaded

log = logging.getLogger("ragbus.gateway")
router = APIRouter(tags=["documents"], dependencies=[READ], responses=UNAUTHORIZED)
UPLOADS = Counter("ragbus_uploads_total", "Uploads by outcome", ["outcome"])

GONE = ("deleted", "superseded")


class UploadAccepted(BaseModel):
    doc_id: str
    upload_id: str
    name: str
    doc_type: str
    status: str
    duplicate: bool
    version: int = 1
    supersedes: str | None = None


class DocumentOut(BaseModel):
    doc_id: str
    name: str
    status: str
    chunks: int
    chunks_indexed: int
    error: str | None = None
    doc_type: str
    size: int
    title: str | None = None
    author: str | None = None
    pages: int | None = None
    version: int = 1
    supersedes: str | None = None
    superseded_by: str | None = None
    metadata: dict[str, Any] = {}
    uploaded_at: datetime
    updated_at: datetime


class DocumentList(BaseModel):
    documents: list[DocumentOut]


def document_name(filename: str | None, limit: int = 255) -> str:
    """The document's name: the client's file name, which may be a path relative to a folder it uploads
    (`ragbus ingest DIR` sends `faq/index.html`, so two index.html files stay two documents). Backslashes
    count as separators, and absolute parts, `.` and `..` are dropped."""
    parts = [p for p in re.split(r"[\\/]+", (filename or "").replace("\x00", "")) if p not in ("", ".", "..")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):  # a Windows drive
        parts = parts[1:]
    name = "/".join(parts)[-limit:].lstrip("/")
    return name or "upload"


def _parse_metadata(raw: str | None, limit: int) -> dict[str, Any]:
    if not raw or raw.strip() == "null":
        return {}
    if len(raw.encode()) > limit:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"metadata is too large: at most {limit} bytes of JSON")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "metadata must be a JSON object")
    if has_nul(value):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "metadata may not contain NUL (\\u0000) characters")
    return value


@router.post(
    "/documents",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    responses={400: {"description": "empty file, bad or too large metadata"}, 413: {"description": "too large"},
               415: {"description": "unsupported file type"},
               429: {"description": "too many uploads from this client (Retry-After)"}},
    summary="Upload a document (PDF, DOCX, HTML, Markdown, text)",
)
async def upload_document(
    request: Request,
    caller: Writer,
    bus: BusDep,
    documents: DocumentsDep,
    settings: SettingsDep,
    file: UploadFile = File(..., description="the document; its file name may be a relative path (docs/faq.html), "
                            "which is the document's name", json_schema_extra={"minLength": 1}),
    metadata: str | None = Form(None, description="JSON object stored with the document (e.g. tags), at most "
                                "RAGBUS_MAX_METADATA_BYTES", json_schema_extra={
                                    "contentMediaType": "application/json", "contentSchema": {"type": "object"}}),
    chunk_strategy: ChunkStrategy | None = Query(None, description="how to cut it (default: the parser's setting)"),
) -> UploadAccepted:
    try:
        request.app.state.admission.uploads.take(client_id(request, caller))
    except Busy as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, exc.message,
                            headers={"Retry-After": str(exc.retry_after)}) from None
    data = await file.read()
    name = document_name(file.filename)
    if len(data) > settings.max_upload_bytes:
        UPLOADS.labels("too_large").inc()
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            f"upload too large: the limit is {settings.max_upload_bytes} bytes")
    if not data:
        UPLOADS.labels("empty").inc()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{name} is empty (0 bytes)")
    meta = _parse_metadata(metadata, settings.max_metadata_bytes)
    if chunk_strategy:
        meta["chunk_strategy"] = chunk_strategy
    if meta.get("chunk_strategy") not in (None, *CHUNK_STRATEGIES):
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            f"chunk_strategy must be one of {', '.join(CHUNK_STRATEGIES)}")
    doc_type = sniff_document_type(data, name)
    if doc_type is None:
        UPLOADS.labels("unsupported").inc()
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            f"{name}: unsupported file type (PDF, DOCX, HTML, Markdown or plain text)")

    async with _one_at_a_time(name):
        return await _record(bus, documents, name, data, doc_type, meta)


_NAME_LOCKS = [asyncio.Lock() for _ in range(64)]  # striped: bounded, and two names rarely share one


def _one_at_a_time(name: str) -> asyncio.Lock:
    """Uploads of one name in turn: each decides duplicate / new version from the read model, which the
    previous one has just changed."""
    return _NAME_LOCKS[zlib.crc32(name.encode()) % len(_NAME_LOCKS)]


async def _record(bus: Bus, documents: DocumentView, name: str, data: bytes, doc_type: str,
                  meta: dict[str, Any]) -> UploadAccepted:
    sha256 = hashlib.sha256(data).hexdigest()
    doc_id = sha256[:24]
    existing = await documents.get(doc_id)
    if existing and existing["status"] in GONE:
        pass
    elif existing and await bus.was_deleted(doc_id, existing["upload_id"]):
        existing = {**existing, "status": "superseded"}  # deleted in the log; the read model has not caught up
    elif existing:
        UPLOADS.labels("duplicate").inc()
        return UploadAccepted(doc_id=doc_id, upload_id=existing["upload_id"], name=existing["name"],
                              doc_type=existing["doc_type"], status=existing["status"], duplicate=True,
                              version=existing["version"])
    generation = existing["generation"] + 1 if existing else 0
    upload_id = f"{doc_id}-{generation}"
    # Other bytes under the name of a live document: a new version that supersedes it in the index.
    previous = await documents.current_by_name(name)

    # Bytes first, event second: a parser that sees the event always finds the bytes.
    await bus.store_bytes(sha256, data)
    ack = await bus.publish(DocumentUploaded(
        event_id=DocumentUploaded.id_for(upload_id),
        doc_id=doc_id,
        upload_id=upload_id,
        generation=generation,
        name=name,
        sha256=sha256,
        size=len(data),
        doc_type=doc_type,
        object_name=sha256,
        metadata=meta,
        version=previous["version"] + 1 if previous else 1,
        supersedes=previous["doc_id"] if previous else None,
    ))
    if previous and not ack.duplicate:
        await bus.publish(DocumentDeleted(
            event_id=f"document.deleted:{previous['upload_id']}",
            causation_id=DocumentUploaded.id_for(upload_id),
            doc_id=previous["doc_id"],
            upload_id=previous["upload_id"],
            superseded_by=doc_id,
        ))
    if not ack.duplicate:  # bounded: the upload stands either way, the next one of this name just sees it
        await bus.until_projected("documents", doc_id, lambda: _projected(documents, doc_id, upload_id, previous),
                                  timeout=5.0)
    UPLOADS.labels("duplicate" if ack.duplicate else "accepted").inc()
    log.info("upload %s (%s, %d bytes) -> %s%s", name, doc_type, len(data), doc_id,
             " (duplicate)" if ack.duplicate else "")
    return UploadAccepted(doc_id=doc_id, upload_id=upload_id, name=name, doc_type=doc_type,
                          status="uploaded", duplicate=bool(ack.duplicate),
                          version=previous["version"] + 1 if previous else 1,
                          supersedes=previous["doc_id"] if previous else None)



async def _projected(documents: DocumentView, doc_id: str, upload_id: str, previous: dict[str, Any] | None) -> bool:
    row = await documents.get(doc_id)
    if row is None or row["upload_id"] != upload_id:
        return False
    if previous is None or previous["doc_id"] == doc_id:
        return True
    before = await documents.get(previous["doc_id"])
    return before is None or before["status"] in GONE


@router.get("/documents", response_model=DocumentList, summary="List documents with their status")
async def list_documents(documents: DocumentsDep) -> DocumentList:
    return DocumentList(documents=[DocumentOut(**d) for d in await documents.list()])


@router.get("/documents/{doc_id}", response_model=DocumentOut, responses={404: {"description": "unknown"}},
            summary="One document: status uploaded -> parsed -> indexed, or failed with an error")
async def get_document(doc_id: str, documents: DocumentsDep) -> DocumentOut:
    doc = await documents.get(doc_id)
    if doc is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {doc_id}")
    return DocumentOut(**doc)


@router.delete("/documents/{doc_id}", status_code=status.HTTP_202_ACCEPTED, dependencies=[WRITE],
               responses={404: {"description": "unknown"}}, summary="Delete a document from the index")
async def delete_document(doc_id: str, bus: BusDep, documents: DocumentsDep) -> dict[str, str]:
    doc = await documents.get(doc_id)
    if doc is None or doc["status"] in GONE:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {doc_id}")
    await bus.publish(DocumentDeleted(
        event_id=f"document.deleted:{doc['upload_id']}",
        doc_id=doc_id,
        upload_id=doc["upload_id"],
    ))
    return {"doc_id": doc_id, "status": "deleting"}
