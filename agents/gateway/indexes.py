"""Embedding indexes over HTTP: what the web page shows (GET /indexes) and the admin side of
`ragbus reindex` (start, switch, roll back, drop). Each command is an event in the INDEXES stream."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from agents.gateway.auth import ADMIN, READ, UNAUTHORIZED
from agents.gateway.deps import BusDep
from agents.gateway.requests import BAD_BODY, RequestModel, Text
from projections.views import IndexView
from streams.indexes import read_index_state
from streams.indexing import (
    IndexCommandError,
    activate_index,
    drop_index,
    judge,
    rebuild_target,
    rollback_target,
    start_index,
)
from streams.topology import EMBEDDING_MODELS

router = APIRouter(tags=["indexes"], dependencies=[READ], responses=UNAUTHORIZED)


def _indexes(request: Request) -> IndexView:
    return request.app.state.indexes


IndexesDep = Annotated[IndexView, Depends(_indexes)]


class IndexOut(BaseModel):
    model: str
    state: str = Field(description="building | active | standby (kept for rollback) | dropped")
    dim: int | None = None
    fingerprint: str | None = None
    fingerprint_mismatches: int = Field(0, description="batches whose model fingerprint differs from the index's "
                                        "(vectors made before an upgrade changed how chunks are embedded, or by "
                                        "other model files): `ragbus reindex --rebuild` embeds them all again")
    vectors: int = Field(description="vectors in this index")
    live_chunks: int = Field(description="chunks with a vector in the active index")
    missing: int = Field(description="of those, chunks without a vector in this index yet")
    progress: float = Field(description="share of the active index's chunks this index has, 0..1")
    compared: dict[str, Any] | None = Field(None, description="the latest comparison with the active index")
    started_at: datetime | None = None
    activated_at: datetime | None = None


class IndexList(BaseModel):
    active: str | None
    indexes: list[IndexOut]


class StartIndex(RequestModel):
    model: Text = Field(..., min_length=1, max_length=200,
                       description=f"a catalogue model: {', '.join(EMBEDDING_MODELS)}, or any name with `source`")
    source: Text = Field("", max_length=1000, description="a sentence-transformers folder the embedders can read")


class GateOut(BaseModel):
    model: str
    passed: bool
    reasons: list[str]
    notes: list[str]
    forced: bool = False
    previous: str | None = None


def _out(row: dict[str, Any]) -> IndexOut:
    live, missing = row["live_chunks"], row["missing"]
    progress = 0.0 if row["dim"] is None else (1.0 if not live else (live - missing) / live)
    return IndexOut(**{k: v for k, v in row.items() if k in IndexOut.model_fields and k != "progress"},
                    progress=round(progress, 4))


@router.get("/indexes", response_model=IndexList, summary="Embedding indexes: the active one, and re-index progress")
async def list_indexes(indexes: IndexesDep) -> IndexList:
    rows = await indexes.list()
    return IndexList(active=next((r["model"] for r in rows if r["state"] == "active"), None),
                     indexes=[_out(r) for r in rows])


@router.post("/admin/indexes", status_code=status.HTTP_202_ACCEPTED, response_model=IndexOut | dict,
             dependencies=[ADMIN],
             summary="Start re-indexing into another embedding model (index.started); queries go on meanwhile",
             responses={**BAD_BODY, 404: {"description": "no such model (not in the catalogue, and no source)"},
                        409: {"description": "that index exists"}})
async def start(body: StartIndex, bus: BusDep) -> dict[str, Any]:
    if body.model not in EMBEDDING_MODELS and not body.source:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{body.model!r} is not a catalogue model "
                            f"({', '.join(EMBEDDING_MODELS)}); give `source`, a model folder")
    try:
        event = await start_index(bus.nc.jetstream(), body.model, body.source, EMBEDDING_MODELS.get(body.model),
                                  emit=bus.publish)
    except IndexCommandError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return {"model": event.model, "state": "building", "previous": event.previous}


@router.post("/admin/indexes/rebuild", status_code=status.HTTP_202_ACCEPTED, response_model=dict, dependencies=[ADMIN],
             summary="Embed every chunk again with the active index's model into a fresh index beside it (NAME@2, "
                     "...): for an index holding vectors of two fingerprints; activate it when complete",
             responses={409: {"description": "no active index, or it holds no chunk yet"}})
async def rebuild(bus: BusDep, indexes: IndexesDep) -> dict[str, Any]:
    js = bus.nc.jetstream()
    try:
        name, source, under_way = rebuild_target(await read_index_state(js))
        active = await indexes.active()
        if not under_way:
            if not active or not active["live_chunks"]:
                raise IndexCommandError("the active index holds no chunk yet: nothing to rebuild")
            await start_index(js, name, source, active["dim"], emit=bus.publish)
    except IndexCommandError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return {"model": name, "state": "building", "source": source, "previous": active["model"] if active else None,
            "already_under_way": under_way}


@router.post("/admin/indexes/{model}/activate", dependencies=[ADMIN], response_model=GateOut,
             summary="Switch queries to this index (index.activated), after the gate: complete, not clearly worse",
             responses={404: {"description": "no such index"}, 409: {"description": "the gate refuses"}})
async def activate(model: str, bus: BusDep, indexes: IndexesDep, force: bool = False) -> GateOut:
    row = await indexes.get(model)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no index {model}")
    gate = judge(row, await indexes.active())
    try:
        event = await activate_index(bus.nc.jetstream(), gate, force=force, emit=bus.publish)
    except IndexCommandError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return GateOut(model=model, passed=gate.passed, reasons=gate.reasons, notes=gate.notes, forced=event.forced,
                   previous=event.previous)


@router.post("/admin/indexes/rollback", dependencies=[ADMIN], response_model=GateOut,
             summary="Switch back to the index that was active before, at once",
             responses={409: {"description": "nothing to return to"}})
async def rollback(bus: BusDep, indexes: IndexesDep) -> GateOut:
    js = bus.nc.jetstream()
    try:
        target = await rollback_target(js)
        row = await indexes.get(target)
        if row is None:
            raise IndexCommandError(f"no index {target}")
        gate = judge(row, await indexes.active())
        event = await activate_index(js, gate, force=True, reason="rollback", emit=bus.publish)
    except IndexCommandError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return GateOut(model=target, passed=gate.passed, reasons=gate.reasons, notes=gate.notes, forced=event.forced,
                   previous=event.previous)


@router.delete("/admin/indexes/{model}", status_code=status.HTTP_202_ACCEPTED, dependencies=[ADMIN],
               summary="Drop an index that is not active (index.dropped): its vectors are deleted",
               responses={409: {"description": "the active index, or no such index"}})
async def drop(model: str, bus: BusDep) -> dict[str, str]:
    try:
        await drop_index(bus.nc.jetstream(), model, emit=bus.publish)
    except IndexCommandError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return {"model": model, "state": "dropped"}
