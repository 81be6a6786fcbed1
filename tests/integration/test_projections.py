"""Projections are exactly-once and rebuildable from the log."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.conftest import ROOT, active_vectors, upload, wait_for_status


def _corpus(n: int) -> list[tuple[str, bytes]]:
    docs = []
    for i in range(n):
        paragraphs = "\n\n".join(
            f"Report {i}, section {s}: the survey team measured {i * 7 + s} trees of species {s % 5} along "
            f"transect {s}, noting soil moisture, canopy cover and the number of seedlings in each plot. "
            f"Observations were repeated at dawn and at dusk to control for temperature effects."
            for s in range(12)
        )
        docs.append((f"survey-{i:03d}.txt", paragraphs.encode()))
    return docs


async def _wait_all_indexed(client, ids: list[str], timeout: float = 600.0) -> list[dict]:
    return [await wait_for_status(client, doc_id, ("indexed", "failed"), timeout=timeout) for doc_id in ids]


async def test_projector_sigkill_mid_ingest_restart_row_counts_exact(client, pool, js, stack):
    stack.kill("projector", 15)  # start from a quiet projector so the kill lands mid-ingest below
    stack.start("projector")
    ids = [(await upload(client, name, data))["doc_id"] for name, data in _corpus(40)]
    vectors = await active_vectors(pool)
    count_vectors = f"SELECT count(*) FROM {vectors} v JOIN chunks c USING (chunk_id) WHERE c.doc_id = ANY($1)"
    # Let some batches land, then kill without warning while chunks.embedded events keep arriving.
    for _ in range(600):
        if await pool.fetchval(count_vectors, ids) > 20:
            break
        await asyncio.sleep(0.1)
    stack.kill("projector")
    landed = await pool.fetchval(count_vectors, ids)
    await asyncio.sleep(2)  # embedder keeps publishing while the projector is dead
    stack.start("projector")
    docs = await _wait_all_indexed(client, ids)
    assert all(d["status"] == "indexed" for d in docs)
    expected = sum(d["chunks"] for d in docs)
    assert await pool.fetchval("SELECT count(*) FROM chunks WHERE doc_id = ANY($1)", ids) == expected
    assert await pool.fetchval(count_vectors, ids) == expected
    assert landed < expected  # the kill really happened mid-ingest
    assert await pool.fetchval("SELECT count(*) FROM documents WHERE doc_id = ANY($1)", ids) == len(ids)
    # Every chunk.embedded event's chunk is in the table once, and the position reached the stream tail.
    for _ in range(100):
        tail = (await js.stream_info("CHUNKS")).state.last_seq
        pos = await pool.fetchval(
            "SELECT last_seq FROM projection_positions WHERE projection = 'chunks' AND stream = 'CHUNKS'")
        if pos == tail:
            break
        await asyncio.sleep(0.1)
    assert pos == tail


async def test_drop_chunk_table_then_replay_gives_the_same_rows(client, pool, stack):
    body = await upload(client, "replay.md", b"# Replay\nRows come back from the log, identical.\n" * 30)
    await wait_for_status(client, body["doc_id"])
    vectors = await active_vectors(pool)
    rows = (f"SELECT chunk_id, c.doc_id, c.upload_id, ordinal, name, page, section, char_start, char_end, text, "
            f"v.embedding FROM chunks c JOIN {vectors} v USING (chunk_id) ORDER BY chunk_id")
    before = [dict(r) for r in await pool.fetch(rows)]
    assert before
    await pool.execute(f"DROP TABLE chunks, {vectors}")
    result = subprocess.run(
        [sys.executable, "-m", "ragbus.cli", "replay", "--projection", "chunks"],
        env={**os.environ, **stack.env}, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    after = [dict(r) for r in await pool.fetch(rows)]
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        assert a == b  # every column, the vector included (pgvector's Vector compares by value)
        assert a["embedding"] is not None
    deleted = await pool.fetchval("SELECT count(*) FROM chunks c JOIN documents d USING (upload_id) "
                                  "WHERE d.status = 'deleted'")
    assert deleted == 0  # deletions replay too


async def test_replay_of_everything_keeps_deleted_documents_deleted(client, pool, stack):
    body = await upload(client, "gone.md", b"# Gone\nThis document is deleted before the replay.")
    await wait_for_status(client, body["doc_id"])
    assert (await client.delete(f"/documents/{body['doc_id']}")).status_code == 202
    await wait_for_status(client, body["doc_id"], ("deleted",), timeout=30)
    before = {r["doc_id"]: r["status"] for r in await pool.fetch("SELECT doc_id, status FROM documents")}
    result = subprocess.run(
        [sys.executable, "-m", "ragbus.cli", "replay"],
        env={**os.environ, **stack.env}, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    after = {r["doc_id"]: r["status"] for r in await pool.fetch("SELECT doc_id, status FROM documents")}
    assert after == before and after[body["doc_id"]] == "deleted"
    assert await pool.fetchval("SELECT count(*) FROM chunks WHERE doc_id = $1", body["doc_id"]) == 0
    doc = (await client.get(f"/documents/{body['doc_id']}")).json()
    assert doc["status"] == "deleted"
