"""The keyword half's inverted index (chunk_terms, term_stats, term_corpus) follows the log through the real
projector: an upload adds its postings, a new version replaces them, a delete removes them, a table of contents
adds none, and the statistics always equal what the postings say."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import upload, wait_for_status

WORD = "zorbulator"  # in no other document of the suite


async def lexeme(pool, word: str) -> str:
    return (await pool.fetchval("SELECT tsvector_to_array(to_tsvector('english', $1))", word))[0]


async def postings(pool, lex: str, upload_id: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM chunk_terms t JOIN chunks c USING (chunk_id) "
                               "WHERE t.lexeme = $1 AND c.upload_id = $2", lex, upload_id)


async def until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the projection did not get there"
        await asyncio.sleep(0.1)


async def consistent(pool) -> None:
    """term_stats and term_corpus say exactly what the postings of the live, non-contents chunks say (a term
    no chunk has is not in term_stats at all: a replay would not have it either)."""
    assert await pool.fetchval("""
        SELECT count(*) FROM (SELECT lexeme, count(*) AS n FROM chunk_terms GROUP BY lexeme) p
        FULL JOIN (SELECT lexeme, ndoc AS n FROM term_stats) s USING (lexeme)
        WHERE p.n IS DISTINCT FROM s.n""") == 0
    corpus = await pool.fetchrow("SELECT n, total_len FROM term_corpus")
    assert corpus["n"] == await pool.fetchval("SELECT count(*) FROM chunks WHERE NOT toc")
    assert corpus["n"] == await pool.fetchval("SELECT count(DISTINCT chunk_id) FROM chunk_terms")
    assert corpus["total_len"] == await pool.fetchval(
        "SELECT coalesce(sum(len), 0) FROM (SELECT DISTINCT chunk_id, len FROM chunk_terms) x")


async def test_postings_follow_uploads_versions_and_deletes(client, pool):
    lex = await lexeme(pool, WORD)
    text = f"# Pumps\n\nPrime the {WORD} pump before first use.\n\n## Filters\n\nChange them yearly."
    first = await upload(client, "keyword-index.md", text.encode())
    await wait_for_status(client, first["doc_id"])
    assert await postings(pool, lex, first["upload_id"]) >= 1
    found = (await client.post("/search", json={"query": f"how do I prime the {WORD}", "top_k": 3})).json()
    assert found["passages"][0]["doc_id"] == first["doc_id"] and found["passages"][0]["scores"]["keyword"] > 0
    await consistent(pool)

    second = await upload(client, "keyword-index.md", b"# Pumps\n\nThe pump needs no priming any more.")
    await wait_for_status(client, second["doc_id"])
    await until(lambda: _zero(postings(pool, lex, first["upload_id"])))
    assert await pool.fetchval("SELECT count(*) FROM term_stats WHERE lexeme = $1", lex) == 0
    await consistent(pool)

    assert (await client.delete(f"/documents/{second['doc_id']}")).status_code == 202
    await until(lambda: _zero(pool.fetchval("SELECT count(*) FROM chunks WHERE upload_id = $1",
                                            second["upload_id"])))
    await consistent(pool)


async def test_a_table_of_contents_has_no_postings(client, pool):
    contents = "\n".join(f"- Question {n}" for n in range(1, 6))
    sections = "\n\n".join(f"## Question {n}\n\nThe answer to question {n} is {n * 7}." for n in range(1, 6))
    body = await upload(client, "contents.md", f"# FAQ\n\n{contents}\n\n{sections}".encode())
    await wait_for_status(client, body["doc_id"])
    rows = await pool.fetch("SELECT chunk_id, toc, text FROM chunks WHERE upload_id = $1 ORDER BY ordinal",
                            body["upload_id"])
    flagged = [r["chunk_id"] for r in rows if r["toc"]]
    assert flagged, [r["text"][:80] for r in rows]
    assert await pool.fetchval("SELECT count(*) FROM chunk_terms WHERE chunk_id = ANY($1)", flagged) == 0
    await consistent(pool)


async def test_code_names_are_indexed_with_their_parts(client, pool):
    """PostgreSQL reads `zorbulib.frobnicate` and `QuuxolatorTimeout` as one token each; the postings hold them
    and their parts, so a question that names only the function, or says "quuxolator timeout", finds the chunk
    by keyword (as does one that writes the whole name)."""
    body = await upload(client, "dotted.md", b"# API\n\nCall zorbulib.frobnicate() once at start; it returns "
                        b"nothing. Version 2.28.1 of it, e.g. the first. It raises QuuxolatorTimeout.")
    await wait_for_status(client, body["doc_id"])
    lexemes = {r["lexeme"] for r in await pool.fetch(
        "SELECT lexeme FROM chunk_terms JOIN chunks USING (chunk_id) WHERE upload_id = $1", body["upload_id"])}
    assert {"zorbulib.frobnicate", await lexeme(pool, "zorbulib"), await lexeme(pool, "frobnicate")} <= lexemes
    assert not {"28", "e", "g"} & lexemes  # a version number and "e.g." give no parts
    assert {await lexeme(pool, "quuxolatortimeout"), await lexeme(pool, "quuxolator"), "timeout"} <= lexemes
    for question in ("when do i call frobnicate", "what does zorbulib.frobnicate return",
                     "what happens on a quuxolator timeout"):
        found = (await client.post("/search", json={"query": question, "top_k": 3})).json()
        assert found["passages"][0]["doc_id"] == body["doc_id"], question
        assert found["passages"][0]["scores"]["keyword"] > 0, question
    await consistent(pool)


async def _zero(value) -> bool:
    return await value == 0
