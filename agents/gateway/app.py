"""Gateway: HTTP upload bridge, websocket chat, the web page, document REST, health and metrics.

`ragbus agent gateway` serves it with uvicorn; OpenAPI docs at /docs.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.gateway import auth, chat, conversations, documents, indexes, progress, websocket
from agents.gateway.admission import Admission
from agents.gateway.auth import GatewayKeys, keys_required
from agents.gateway.bus import Bus
from agents.gateway.health import Health
from agents.gateway.limits import UploadSizeLimit
from agents.gateway.methods import AllowedMethods
from agents.gateway.origins import HostAndOrigin
from agents.gateway.settings import GatewaySettings
from agents.gateway.tracing import RequestSpans
from projections.views import AnswerView, DocumentView, IndexView, create_pool
from streams import tracing

log = logging.getLogger("ragbus.gateway")
STATIC = Path(__file__).parent / "static"


async def _connect_with_retry(settings: GatewaySettings, attempts: int = 30) -> tuple[Bus, object]:
    """Start-up waits for NATS and PostgreSQL with a bounded retry, then fails with the reason."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            bus = await Bus.connect(settings)
            pool = await create_pool(settings.database_url, max_size=10)
            return bus, pool
        except Exception as exc:  # noqa: BLE001 - reported below after the last attempt
            last = exc
            log.warning("waiting for NATS/PostgreSQL: %s", exc)
            await asyncio.sleep(2.0)
    raise RuntimeError(f"gateway cannot reach NATS or PostgreSQL: {last}")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    required = keys_required(settings.require_api_keys, settings.host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus, pool = await _connect_with_retry(settings)
        app.state.settings = settings
        app.state.bus = bus
        app.state.pool = pool
        app.state.documents = DocumentView(pool)
        app.state.answers = AnswerView(pool)
        app.state.indexes = IndexView(pool)
        app.state.admission = Admission(settings.questions_per_minute, settings.uploads_per_minute,
                                        settings.max_questions_in_flight, settings.ask_timeout,
                                        settings.abandon_grace, settings.assumed_answer_seconds)
        app.state.health = Health(lambda: bus.nc.is_connected, pool, settings.llm_url)
        app.state.health.start()
        app.state.keys = GatewayKeys()
        await app.state.keys.start(bus.nc.jetstream())
        log.info("gateway ready on http://%s:%d (%s)", settings.host, settings.port,
                 f"API keys required, {len(app.state.keys.ring.keys)} known" if required
                 else "open to this machine: no API key needed")
        try:
            yield
        finally:
            await app.state.health.stop()
            await app.state.keys.stop()
            await bus.close()
            await pool.close()

    app = FastAPI(
        title="ragbus",
        version="0.1.0",
        summary="Event-sourced RAG chatbot: upload documents, ask questions, get cited answers",
        description="Every step is an event on NATS JetStream; see /asyncapi for the event contract.",
        lifespan=lifespan,
    )
    app.add_middleware(UploadSizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(AllowedMethods)
    app.add_middleware(HostAndOrigin, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins,
                       keys_required=required, bind_host=settings.host)  # outermost: before anything reads
    if tracing.enabled():  # around even that, so refused requests are traced too
        app.add_middleware(RequestSpans)
    app.state.keys_required = required
    if not required:
        _keys_optional_in_schema(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, with values JSON cannot carry (NaN, Infinity) echoed as text instead of a 500."""
        return JSONResponse({"detail": jsonable_encoder(_finite(exc.errors()))}, status_code=422)
    app.include_router(auth.router)
    app.include_router(progress.router)  # before documents: /documents/events is not a doc_id
    app.include_router(documents.router)
    app.include_router(chat.router)
    app.include_router(websocket.router)
    app.include_router(conversations.router)
    app.include_router(indexes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi_page() -> FileResponse:
        return FileResponse(STATIC / "asyncapi.html")

    @app.get("/asyncapi.json", tags=["ops"], summary="AsyncAPI 3.0 document of every event on the bus")
    async def asyncapi_json() -> FileResponse:
        return FileResponse(STATIC / "asyncapi.json", media_type="application/json")

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: NATS connected, PostgreSQL answering, the LLM server up",
             responses={503: {"description": "a dependency is down (which one is in the body)"}})
    async def readyz(request: Request) -> JSONResponse:
        checks = await request.app.state.health.check()
        ready = all(v is not False for k, v in checks.items() if k in ("nats", "postgres", "llm"))
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                              "description": "the Prometheus text exposition format"}})
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _keys_optional_in_schema(app: FastAPI) -> None:
    """Where keys are not required (a loopback gateway), the OpenAPI document says so: each operation's key is
    optional (an empty requirement, `{}`), though one that is sent is still checked."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if isinstance(operation, dict) and operation.get("security") and {} not in operation["security"]:
                        operation["security"].append({})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

