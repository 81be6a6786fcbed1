"""The 413 comes before the body is read: tested on the ASGI middleware alone with a fake app (no servers)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, File, UploadFile

from agents.gateway.limits import UploadSizeLimit


def _app(limit: int, reads: list[int]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(UploadSizeLimit, max_bytes=limit)

    @app.post("/documents")
    async def upload(file: UploadFile = File(...)) -> dict:
        data = await file.read()
        reads.append(len(data))
        return {"size": len(data)}

    return app


async def test_declared_length_over_the_limit_is_refused_before_the_endpoint_runs():
    reads: list[int] = []
    transport = httpx.ASGITransport(app=_app(1000, reads))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/documents", files={"file": ("a.txt", b"x" * 200_000)})
    assert response.status_code == 413 and "too large" in response.json()["detail"]
    assert reads == []  # the endpoint never saw the upload


async def test_streamed_body_without_length_is_cut_off_once_past_the_limit():
    reads: list[int] = []

    async def body():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        for _ in range(100):
            yield b"y" * 10_000
        yield b"\r\n--b--\r\n"

    transport = httpx.ASGITransport(app=_app(1000, reads))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/documents", content=body(),
                                     headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert reads == []


async def test_upload_within_the_limit_passes_through():
    reads: list[int] = []
    transport = httpx.ASGITransport(app=_app(1000, reads))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/documents", files={"file": ("a.txt", b"x" * 500)})
    assert response.status_code == 200 and reads == [500]
