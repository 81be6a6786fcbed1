"""Ingestion a user can trust: a mixed folder of good and hostile files, versions, dedup, dead letters."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import docx
from nats.js.api import ConsumerConfig
from pypdf import PdfWriter

from tests.conftest import ROOT, upload, wait_for_status
from tests.integration.test_ingest_flow import FIXTURES, HTML, make_docx, make_pdf


def _image_only_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _zip_bomb_docx() -> bytes:
    real = io.BytesIO()
    docx.Document().save(real)
    out = io.BytesIO()
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("word/media/bomb.bin", b"\0" * (300 * 1024 * 1024))
    return out.getvalue()


# name -> (bytes, expected final status, a word the reason must contain)
def _mixed_folder() -> dict[str, tuple[bytes, str, str]]:
    return {
        "good/notes.md": (b"# Notes\n\n## Soil\nLoam holds water well and drains freely.", "indexed", ""),
        "good/latin1.txt": ("Crème brûlée, façade, naïve café: Latin-1 text.".encode("latin-1"), "indexed", ""),
        "good/page.html": (HTML.replace(b"<h1>Glaciers", b"<h1>Alpine glaciers"), "indexed", ""),  # unique bytes
        "good/sub/deeper/bread.docx": (make_docx(["Fold the dough gently."]), "indexed", ""),
        "good/report.pdf": (make_pdf(["Quarterly report: sales rose by nine percent."]), "indexed", ""),
        "good/pdf-named-as.txt": (make_pdf(["A PDF with the wrong extension still parses."]), "indexed", ""),
        "good/one-long-line.txt": (("word " * 60_000).encode(), "indexed", ""),
        "bad/corrupt.pdf": (b"%PDF-1.4\n%\xe2\xe3\n1 0 obj <</Type /Catalog>> endobj\ntrailer <<>>\n%%EOF",
                            "failed", "pdf"),
        "bad/truncated.pdf": (make_pdf(["Cut short."])[:400], "failed", "pdf"),
        "bad/encrypted.pdf": ((FIXTURES / "libreoffice-writer-password.pdf").read_bytes(), "failed", "encrypted"),
        "bad/scanned.pdf": (_image_only_pdf(), "failed", "OCR"),
        "bad/bomb.docx": (_zip_bomb_docx(), "failed", "zip bomb"),
        "bad/whitespace.txt": (b"   \n\n\t  \n", "failed", "empty"),
        "bad/empty.txt": (b"", "refused", "empty"),
        "bad/program.pdf": (b"\x7fELF\x02\x01\x01" + bytes(4000), "refused", "unsupported"),
        "bad/too-big.txt": (b"x" * (6 * 1024 * 1024), "refused", "too large"),
    }


async def test_mixed_folder_of_good_and_hostile_files_every_outcome(client, stack, tmp_path):
    files = _mixed_folder()
    for name, (data, _, _) in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ragbus.cli", "ingest", str(tmp_path), "--timeout", "300"],
        env={**os.environ, "RAGBUS_GATEWAY_URL": stack.url, "COLUMNS": "200"}, cwd=ROOT,
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 1, result.stderr  # failures make the exit non-zero
    out = result.stderr
    assert "16 files: 7 indexed" in out, out[-3000:]
    assert "3 refused" in out and "6 failed" in out

    for name, (data, expected, reason) in files.items():
        # identical bytes are one document, whatever the name: look each file up by its content address
        response = await client.get(f"/documents/{hashlib.sha256(data).hexdigest()[:24]}")
        if expected == "refused":
            assert response.status_code == 404, name
            assert reason in out, (name, reason)
            continue
        doc = response.json()
        assert doc["status"] == expected, (name, doc)
        if expected == "failed":
            assert reason.lower() in doc["error"].lower(), (name, doc["error"])
        else:
            assert doc["chunks"] >= 1 and doc["chunks_indexed"] == doc["chunks"]
    wrong_extension = hashlib.sha256(files["good/pdf-named-as.txt"][0]).hexdigest()[:24]
    assert (await client.get(f"/documents/{wrong_extension}")).json()["doc_type"] == "pdf"


async def test_changed_file_with_the_same_name_supersedes_the_old_version(client, pool):
    v1 = await upload(client, "policy.md", b"# Leave policy\nEmployees get 20 days of leave per year.")
    await wait_for_status(client, v1["doc_id"])
    v2 = await upload(client, "policy.md", b"# Leave policy\nEmployees get 25 days of leave per year.")
    assert v2["doc_id"] != v1["doc_id"] and v2["version"] == 2 and v2["supersedes"] == v1["doc_id"]
    assert (await wait_for_status(client, v2["doc_id"]))["status"] == "indexed"
    old = await wait_for_status(client, v1["doc_id"], ("superseded",), timeout=30)
    assert old["superseded_by"] == v2["doc_id"]
    assert await pool.fetchval("SELECT count(*) FROM chunks WHERE doc_id = $1", v1["doc_id"]) == 0
    names = [d["name"] for d in (await client.get("/documents")).json()["documents"]]
    assert names.count("policy.md") == 1


async def test_identical_chunk_texts_in_a_document_are_embedded_once(client, js, pool):
    text = "".join(f"## Safety note {i % 3}\nAlways wear gloves when handling the reagent.\n\n" for i in range(45))
    body = await upload(client, "notes-repeated.md", f"# Lab manual\n\n{text}".encode())
    doc = await wait_for_status(client, body["doc_id"])
    rows = await pool.fetch("SELECT text FROM chunks WHERE doc_id = $1", body["doc_id"])
    assert len(rows) == doc["chunks"] >= 30
    distinct = len({r["text"] for r in rows})
    sub = await js.pull_subscribe(f"chunks.embedded.*.{body['doc_id']}", stream="CHUNKS",
                                  config=ConsumerConfig(inactive_threshold=30))
    events = [json.loads(m.data) for m in await sub.fetch(100, timeout=5)]
    assert sum(e["embedded_texts"] for e in events) == distinct < len(rows)
    await sub.unsubscribe()


async def test_message_a_worker_dies_on_every_time_is_reported_then_retried(client, js, stack):
    """Simulate a parser that crashes on a document every time: with the parser stopped, take the message
    from its durable 4 times without settling it. JetStream's advisory lands in DEADLETTER; the restarted
    parser reports document.failed; `ragbus deadletters retry` republishes it and it indexes."""
    stack.kill("parser", 15)
    try:
        body = await upload(client, "crashy.md", b"# Crashy\nThis document made the parser crash every time.")
        sub = await js.pull_subscribe_bind("parser", stream="DOCUMENTS")
        for _ in range(4):
            msgs = await sub.fetch(1, timeout=10)
            assert json.loads(msgs[0].data)["doc_id"] == body["doc_id"]
            await msgs[0].nak()  # like a worker that died: delivered, never acked
        await sub.unsubscribe()
    finally:
        stack.start("parser")
    failed = await wait_for_status(client, body["doc_id"], ("failed",), timeout=60)
    assert "stopped on this document 4 times" in failed["error"]

    env = {**os.environ, **stack.env}
    listing = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ragbus.cli", "deadletters"],
                                      env={**env, "COLUMNS": "200"}, cwd=ROOT, capture_output=True, text=True)
    assert "DOCUMENTS" in listing.stdout and "parser" in listing.stdout, listing.stdout
    retried = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ragbus.cli", "deadletters", "retry"],
                                      env=env, cwd=ROOT, capture_output=True, text=True)
    assert retried.returncode == 0 and "republished DOCUMENTS" in retried.stdout, retried.stdout + retried.stderr
    assert (await wait_for_status(client, body["doc_id"], ("indexed",), timeout=120))["status"] == "indexed"
    again = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ragbus.cli", "deadletters", "retry"],
                                    env=env, cwd=ROOT, capture_output=True, text=True)
    assert "nothing to retry" in again.stdout


async def test_progress_stream_shows_a_document_move_to_indexed(client):
    seen: list[dict] = []

    async def listen() -> None:
        async with client.stream("GET", "/documents/events", timeout=None) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "document":
                    doc = json.loads(line[6:])
                    if doc["name"] == "progress.md":
                        seen.append(doc)
                        if doc["status"] == "indexed":
                            return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.5)  # the subscription is in place before the upload
    # enough chunks that embedding them outlasts the stream's 0.2 s coalescing even with the fast ONNX default:
    # with 80 the whole document could be indexed inside one frame on a loaded machine
    text = "".join(f"## Part {i}\nPart {i} describes step {i} of the long procedure in detail.\n" for i in range(800))
    await upload(client, "progress.md", text.encode())
    await asyncio.wait_for(listener, 120)
    assert seen[-1]["status"] == "indexed" and seen[-1]["chunks_indexed"] == seen[-1]["chunks"] > 1
    assert {"uploaded", "parsed"} & {d["status"] for d in seen[:-1]}  # it was seen on its way, not just at the end


async def test_a_new_version_runs_only_its_changed_chunks_through_the_model(client, js, pool):
    sections = [f"## Step {i}\n\nTurn valve {i} a quarter turn clockwise and wait {i + 2} minutes for the "
                f"pressure in chamber {i} to settle before the next step.\n\n" for i in range(12)]
    v1 = await upload(client, "pump-procedure.md", ("# Pump start-up\n\n" + "".join(sections)).encode())
    assert (await wait_for_status(client, v1["doc_id"]))["status"] == "indexed"
    sections[7] = sections[7].replace("a quarter turn clockwise", "half a turn anticlockwise")
    v2 = await upload(client, "pump-procedure.md", ("# Pump start-up\n\n" + "".join(sections)).encode())
    assert v2["version"] == 2
    doc = await wait_for_status(client, v2["doc_id"])
    assert doc["status"] == "indexed" and doc["chunks"] >= 12

    async def embedded(doc_id: str) -> list[dict]:
        sub = await js.pull_subscribe(f"chunks.embedded.*.{doc_id}", stream="CHUNKS",
                                      config=ConsumerConfig(inactive_threshold=30))
        try:
            return [json.loads(m.data) for m in await sub.fetch(100, timeout=5)]
        finally:
            await sub.unsubscribe()
    first, second = await embedded(v1["doc_id"]), await embedded(v2["doc_id"])
    assert sum(e["embedded_texts"] for e in first) == doc["chunks"]
    assert sum(e["embedded_texts"] for e in second) == 1  # Step 7 only: the rest came from the embedder's cache
    rows = await pool.fetch("SELECT text FROM chunks WHERE doc_id = $1", v2["doc_id"])
    assert len(rows) == doc["chunks"] and any("half a turn anticlockwise" in r["text"] for r in rows)
    found = (await client.post("/search", json={"query": "which way do I turn valve 7", "top_k": 3})).json()
    assert any("half a turn anticlockwise" in p["text"] for p in found["passages"]), found
    assert v1["doc_id"] not in {p["doc_id"] for p in found["passages"]}  # the old version left the index
