"""Documents through the real bus: gateway -> parser -> embedder -> projector -> pgvector."""

from __future__ import annotations

import io
import json
from pathlib import Path

import docx
import pytest
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from tests.conftest import active_vectors, upload, wait_for_status

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def make_pdf(pages: list[str]) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    for text in pages:
        y = 800
        for line in text.split("\n"):
            c.drawString(50, y, line)
            y -= 16
        c.showPage()
    c.save()
    return buf.getvalue()


def make_docx(paragraphs: list[str]) -> bytes:
    d = docx.Document()
    d.add_heading("Bread handbook", level=1)
    for p in paragraphs:
        d.add_paragraph(p)
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "flour", "500 g"
    table.cell(1, 0).text, table.cell(1, 1).text = "water", "350 g"
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


HTML = b"""<!doctype html><html><head><title>Glacier notes</title><script>var tracking = 1;</script></head>
<body><nav>Home | About | Contact</nav><main><h1>Glaciers</h1><p>The Aletsch glacier is the largest glacier in
the Alps, about 23 kilometres long.</p><h2>Retreat</h2><p>It has retreated more than three kilometres since
1870.</p></main><footer>copyright boilerplate</footer></body></html>"""

MARKDOWN = b"""# Orchard guide

## Apples
Apple trees need a winter chill of several hundred hours to fruit well.

## Pears
Pear blossoms open earlier than apple blossoms and are more exposed to late frost.
"""


async def test_each_format_reaches_indexed_with_chunks_in_pgvector(client, pool):
    files = {
        "pages.pdf": make_pdf(["Page one talks about lighthouses.", "Page two talks about harbours and tides."]),
        "crazyones.pdf": (FIXTURES / "crazyones.pdf").read_bytes(),
        "bread.docx": make_docx(["Knead the dough for ten minutes.", "Let it rise for an hour."]),
        "sample.docx": (FIXTURES / "python-docx-test.docx").read_bytes(),
        "glacier.html": HTML,
        "orchard.md": MARKDOWN,
    }
    accepted = {name: await upload(client, name, data) for name, data in files.items()}
    for name, body in accepted.items():
        doc = await wait_for_status(client, body["doc_id"])
        assert doc["status"] == "indexed", (name, doc)
        assert doc["chunks"] >= 1
        rows = await pool.fetch(
            f"SELECT c.page, c.section, c.text, vector_dims(v.embedding) AS dims, v.sentence_spans, "
            f"length(v.sentence_vectors) AS sentence_bytes FROM chunks c "
            f"JOIN {await active_vectors(pool)} v USING (chunk_id) WHERE c.doc_id = $1 ORDER BY c.ordinal",
            body["doc_id"],
        )
        assert len(rows) == doc["chunks"], name
        assert all(r["dims"] == 384 for r in rows)
        # every chunk's sentences, in order inside its text, with one int8 vector each
        for r in rows:
            spans = list(zip(r["sentence_spans"][::2], r["sentence_spans"][1::2], strict=True))
            assert spans and all(0 <= a < b <= len(r["text"]) for a, b in spans), (name, spans)
            assert [a for a, _ in spans] == sorted(a for a, _ in spans)
            assert r["sentence_bytes"] == 384 * len(spans)
    pdf_pages = await pool.fetch("SELECT DISTINCT page FROM chunks WHERE doc_id = $1", accepted["pages.pdf"]["doc_id"])
    assert sorted(r["page"] for r in pdf_pages) == [1, 2]
    html_text = " ".join(r["text"] for r in await pool.fetch(
        "SELECT text FROM chunks WHERE doc_id = $1", accepted["glacier.html"]["doc_id"]))
    assert "Aletsch" in html_text and "tracking" not in html_text and "boilerplate" not in html_text
    md_sections = await pool.fetch("SELECT section FROM chunks WHERE doc_id = $1", accepted["orchard.md"]["doc_id"])
    assert ["Orchard guide", "Pears"] in [list(r["section"]) for r in md_sections]
    docx_text = " ".join(r["text"] for r in await pool.fetch(
        "SELECT text FROM chunks WHERE doc_id = $1", accepted["bread.docx"]["doc_id"]))
    assert "flour | 500 g" in docx_text


async def test_same_bytes_twice_is_one_document_without_doubled_chunks(client, pool):
    data = b"Tea plants are pruned to waist height so that pickers can reach the young leaves.\n" * 20
    first = await upload(client, "tea.txt", data)
    assert first["duplicate"] is False
    second = await upload(client, "tea-copy.txt", data)
    assert second["doc_id"] == first["doc_id"] and second["duplicate"] is True
    doc = await wait_for_status(client, first["doc_id"])
    assert doc["status"] == "indexed"
    third = await upload(client, "tea.txt", data)
    assert third["duplicate"] is True
    count = await pool.fetchval("SELECT count(*) FROM chunks WHERE doc_id = $1", first["doc_id"])
    assert count == doc["chunks"]
    listed = [d for d in (await client.get("/documents")).json()["documents"] if d["doc_id"] == first["doc_id"]]
    assert len(listed) == 1


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("locked.pdf", (FIXTURES / "libreoffice-writer-password.pdf").read_bytes(), "encrypted"),
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ngarbage\n", "PDF"),
        ("truncated.pdf", make_pdf(["This file is cut in half."])[:300], "PDF"),
    ],
)
async def test_bad_pdf_fails_with_reason_and_next_document_still_indexes(client, name, data, reason):
    bad = await upload(client, name, data)
    failed = await wait_for_status(client, bad["doc_id"], ("failed", "indexed"), timeout=60)
    assert failed["status"] == "failed"
    assert reason.lower() in failed["error"].lower()
    good = await upload(client, f"after-{name}.md", f"# After {name}\nThe next document indexes fine.".encode())
    assert (await wait_for_status(client, good["doc_id"]))["status"] == "indexed"


async def test_upload_errors_are_4xx_with_a_message(client, stack):
    empty = await client.post("/documents", files={"file": ("empty.txt", b"")})
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    binary = await client.post("/documents", files={"file": ("x.bin", bytes(range(256)) * 10)})
    assert binary.status_code == 415 and "unsupported" in binary.json()["detail"]
    big = await client.post("/documents", files={"file": ("big.txt", b"a" * (6 * 1024 * 1024))})
    assert big.status_code == 413 and "too large" in big.json()["detail"]
    bad_meta = await client.post("/documents", files={"file": ("a.txt", b"hello")}, data={"metadata": "[1,2]"})
    assert bad_meta.status_code == 400
    assert (await client.get("/documents/doesnotexist")).status_code == 404


async def test_delete_removes_chunks_from_the_index(client, pool):
    body = await upload(client, "delete-me.md", b"# Temporary\nThis document will be deleted shortly after upload.")
    await wait_for_status(client, body["doc_id"])
    response = await client.delete(f"/documents/{body['doc_id']}")
    assert response.status_code == 202
    for _ in range(100):
        if await pool.fetchval("SELECT count(*) FROM chunks WHERE doc_id = $1", body["doc_id"]) == 0:
            break
        import asyncio

        await asyncio.sleep(0.1)
    assert await pool.fetchval("SELECT count(*) FROM chunks WHERE doc_id = $1", body["doc_id"]) == 0
    assert (await client.get(f"/documents/{body['doc_id']}")).json()["status"] == "deleted"
    again = await upload(client, "delete-me.md", b"# Temporary\nThis document will be deleted shortly after upload.")
    assert again["duplicate"] is False and again["upload_id"].endswith("-1")
    assert (await wait_for_status(client, again["doc_id"]))["status"] == "indexed"


async def test_every_event_is_plain_json_with_envelope_and_msg_id(client, js):
    """What `nats stream view` shows a person: JSON with the envelope fields, and the id as Nats-Msg-Id."""
    doc = await upload(client, "plain.txt", b"Plain subscribers can read every event on the bus.")
    await wait_for_status(client, doc["doc_id"])  # its parse and embedding are in the log too
    seen_types = set()
    for stream in ("DOCUMENTS", "CHUNKS", "QUERIES", "ANSWERS", "TOKENS"):
        info = await js.stream_info(stream)
        if not info.state.messages:
            continue
        for seq in range(info.state.first_seq, info.state.last_seq + 1)[:400]:
            msg = await js.get_msg(stream, seq)
            payload = json.loads(msg.data)
            for key in ("type", "event_id", "occurred_at", "correlation_id", "schema_version"):
                assert key in payload, (stream, seq, key)
            assert msg.headers, (stream, seq, msg.subject, payload)
            assert msg.headers["Nats-Msg-Id"] == payload["event_id"]
            assert msg.headers["Ragbus-Event-Type"] == payload["type"]
            assert msg.subject.endswith(payload["correlation_id"])
            seen_types.add(payload["type"])
    assert {"document.uploaded", "document.parsed", "chunks.ready", "chunks.embedded"} <= seen_types
