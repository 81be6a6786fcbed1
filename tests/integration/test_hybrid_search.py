"""Hybrid retrieval on the real chunk table (PostgreSQL + pgvector), with vectors we control."""

from __future__ import annotations

import asyncio
import base64

import asyncpg
import numpy as np
import pytest

from projections.chunks import add_terms, remove_terms
from projections.retrieval import HybridSearch, RetrievalConfig, question_lexemes, search_statements
from projections.schema import vectors_ddl, vectors_table
from streams.sentences import pack_vectors

DIM = 384
MODEL = "hs-test-model"  # an index of its own: the stack's documents have no vectors in it


def unit(seed: int, near: np.ndarray | None = None, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=DIM) if near is None else near + noise * rng.normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


async def forget(pool) -> None:
    async with pool.acquire() as conn:
        for upload in await conn.fetch("SELECT DISTINCT upload_id FROM chunks WHERE doc_id LIKE 'hs-%'"):
            await remove_terms(conn, upload["upload_id"])
    await pool.execute("DELETE FROM chunks WHERE doc_id LIKE 'hs-%'")


@pytest.fixture
async def corpus(pool):
    await forget(pool)
    await pool.execute("DELETE FROM documents WHERE doc_id LIKE 'hs-%'")
    await pool.execute(f"DROP TABLE IF EXISTS {vectors_table(MODEL)}")
    await pool.execute(vectors_ddl(vectors_table(MODEL), DIM))
    query = unit(1)
    primed = unit(2, query, 0.02)
    rows = [
        # chunk_id, doc, name, type, text, vector
        ("hs-a-0", "hs-a", "alpha.md", "markdown", "The pump must be primed before first use.", primed),
        ("hs-a-1", "hs-a", "alpha.md", "markdown", "The pump must be primed before the first use.",
         unit(3, primed, 0.005)),
        ("hs-b-0", "hs-b", "beta.pdf", "pdf", "Filters are replaced every six months.", unit(4, query, 0.06)),
        ("hs-c-0", "hs-c", "gamma.txt", "text", "Warranty claims need the serial number XK-42.", unit(5, query, 0.07)),
        ("hs-d-0", "hs-d", "delta.txt", "text", "Completely unrelated cooking recipe for soup.", unit(6)),
        # a table of contents: the question's words and the closest vector of all, and never a candidate
        ("hs-e-0", "hs-e", "epsilon.md", "markdown", "Priming the pump\nSerial number and warranty\nFilters",
         unit(7, query, 0.001)),
    ]
    for chunk_id, doc, name, doc_type, text, vector in rows:
        toc = doc == "hs-e"
        await pool.execute(
            """INSERT INTO chunks (chunk_id, doc_id, upload_id, ordinal, name, doc_type, char_start, char_end, text,
                                   toc)
               VALUES ($1, $2, $2 || '-0', 0, $3, $4, 0, 1, $5, $6)""",
            chunk_id, doc, name, doc_type, text, toc,
        )
        if not toc:
            async with pool.acquire() as conn:
                await add_terms(conn, [chunk_id])
        await pool.execute(f"INSERT INTO {vectors_table(MODEL)} (chunk_id, upload_id, embedding, toc) "
                           "VALUES ($1, $2, $3, $4)", chunk_id, f"{doc}-0", vector, toc)
        await pool.execute(
            """INSERT INTO documents (doc_id, upload_id, name, sha256, size, doc_type, metadata, status, uploaded_at,
                                      updated_at)
               VALUES ($1, $1 || '-0', $2, $1, 1, $3, $4, 'parsed', now(), now()) ON CONFLICT DO NOTHING""",
            doc, name, doc_type, {"tags": ["manual"] if doc in ("hs-a", "hs-b") else ["misc"]},
        )
    yield query
    await forget(pool)
    await pool.execute("DELETE FROM documents WHERE doc_id LIKE 'hs-%'")
    await pool.execute(f"DROP TABLE {vectors_table(MODEL)}")


async def test_dense_and_keyword_rankings_are_fused_with_scores(pool, corpus):
    hits = await HybridSearch(pool).search(corpus, "serial number for warranty", top_k=5, model=MODEL,
                                           filters={"doc_ids": ["hs-a", "hs-b", "hs-c", "hs-d"]})
    assert [h["n"] for h in hits] == list(range(1, len(hits) + 1))
    by_doc = {h["doc_id"]: h for h in hits}
    # gamma is less similar than beta, but it is the one keyword match: the fusion lifts it past beta (a
    # keyword match is worth 0.2 of cosine at most: it does not beat the far closer alpha)
    assert by_doc["hs-c"]["scores"]["dense"] < by_doc["hs-b"]["scores"]["dense"]
    assert [h["doc_id"] for h in hits][:3] == ["hs-a", "hs-c", "hs-b"]
    assert by_doc["hs-c"]["scores"]["keyword"] > 0 and by_doc["hs-b"]["scores"]["keyword"] == 0
    # no sentence vectors here: each chunk counts as one sentence, its own cosine (weight 0.5); BM25 enters as a
    # share of the question's IDF mass
    share = by_doc["hs-c"]["scores"]["keyword"] / await idf_mass(pool, "serial number for warranty")
    assert by_doc["hs-c"]["scores"]["fused"] == pytest.approx(1.5 * by_doc["hs-c"]["scores"]["dense"] + 0.2 * share,
                                                              abs=1e-3)
    assert all(set(h["scores"]) == {"dense", "sentence", "keyword", "fused"} for h in hits)


async def test_keyword_half_runs_while_the_question_is_still_being_embedded(pool, corpus):
    """Given the vector as an awaitable, the search reads the keyword half before it awaits the vector (the
    embedder's model computes it meanwhile), and ranks exactly as with the vector in hand."""
    activity = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%chunk_terms%'"
    seen: list[int] = []
    searches: list[asyncpg.Connection] = []

    class Pool:  # the pool, noting the connection the search holds
        def acquire(self):
            acquired = pool.acquire()

            class Held:
                async def __aenter__(self):
                    conn = await acquired.__aenter__()
                    searches.append(conn)
                    return conn

                async def __aexit__(self, *exc):
                    return await acquired.__aexit__(*exc)

            return Held()

    async def vector_later() -> np.ndarray:
        # the search's connection last ran the keyword statement (the BM25 postings) before the vector exists
        seen.append(await pool.fetchval(activity, searches[-1].get_server_pid()))
        await asyncio.sleep(0.05)
        return corpus

    ask = {"top_k": 5, "model": MODEL, "threshold": -1.0, "filters": {"doc_ids": ["hs-a", "hs-b", "hs-c", "hs-d"]}}
    later = await HybridSearch(Pool()).search(vector_later(), "serial number for warranty", **ask)  # type: ignore[arg-type]
    now = await HybridSearch(pool).search(corpus, "serial number for warranty", **ask)
    assert seen == [1]
    assert [(h["chunk_id"], h["scores"]) for h in later] == [(h["chunk_id"], h["scores"]) for h in now]
    assert later[1]["doc_id"] == "hs-c" and later[1]["scores"]["keyword"] > 0


async def test_sentence_vectors_score_every_sentence_and_can_lift_a_chunk(pool, corpus):
    """With sentence vectors a passage comes with each sentence's similarity to the question; weighed in, a chunk
    whose sentence answers passes one that is closer as a whole. A chunk without them counts as one sentence."""
    table = vectors_table(MODEL)
    rows = {"hs-b-0": (len("Filters are replaced every six months."), unit(8, corpus, 0.0)),  # the question
            "hs-a-0": (len("The pump must be primed before first use."), unit(9)),  # nowhere near it
            "hs-a-1": (len("The pump must be primed before the first use."), unit(10))}
    for chunk_id, (length, vector) in rows.items():
        await pool.execute(f"UPDATE {table} SET sentence_spans = $2, sentence_vectors = $3 WHERE chunk_id = $1",
                           chunk_id, [0, length], base64.b64decode(pack_vectors(vector[None])))
    ask = {"top_k": 5, "model": MODEL, "threshold": -1.0, "filters": {"doc_ids": ["hs-a", "hs-b", "hs-c"]}}
    plain = await HybridSearch(pool, RetrievalConfig(sentence_weight=0.0)).search(corpus, "no keyword here", **ask)
    by_doc = {h["doc_id"]: h for h in plain}
    assert by_doc["hs-b"]["sentences"] == [{"start": 0, "end": rows["hs-b-0"][0], "score": pytest.approx(1, abs=0.01)}]
    assert by_doc["hs-b"]["scores"]["sentence"] == by_doc["hs-b"]["sentences"][0]["score"]
    assert abs(by_doc["hs-a"]["scores"]["sentence"]) < 0.3
    assert by_doc["hs-c"]["sentences"] == [] and by_doc["hs-c"]["scores"]["sentence"] == by_doc["hs-c"]["score"]
    assert plain[0]["doc_id"] == "hs-a"  # weight 0: sentences do not rank
    lifted = await HybridSearch(pool, RetrievalConfig(sentence_weight=1.0)).search(corpus, "no keyword here", **ask)
    assert lifted[0]["doc_id"] == "hs-b"
    assert lifted[0]["scores"]["fused"] == pytest.approx(lifted[0]["score"] + lifted[0]["scores"]["sentence"],
                                                         abs=1e-3)


async def idf_mass(pool, question: str) -> float:
    """The sum of the IDFs of the question's lexemes the keyword statement uses, as it reports it."""
    (keyword_sql, _), _ = search_statements(vectors_table(MODEL), {})
    rows = await pool.fetch(keyword_sql, await question_lexemes(pool, question), 40)
    return float(rows[0]["idf_mass"])


async def test_a_keyword_match_weighs_by_the_share_of_the_question_it_matches(pool, corpus):
    """The best keyword match of a question is not worth the full keyword weight when it shares only one of the
    question's words (the way a question asked in other words matches): it weighs its share of the IDF mass."""
    ask = {"top_k": 5, "model": MODEL, "threshold": -1.0, "filters": {"doc_ids": ["hs-a", "hs-b", "hs-c", "hs-d"]}}
    one_word = {h["doc_id"]: h for h in await HybridSearch(pool).search(corpus, "pump serial", **ask)}["hs-c"]
    all_words = {h["doc_id"]: h for h in await HybridSearch(pool).search(corpus, "serial number", **ask)}["hs-c"]
    weighed = [(h["scores"]["fused"] - 1.5 * h["scores"]["dense"]) / 0.2 for h in (one_word, all_words)]
    # "pump serial": gamma is the best keyword match (serial is the rarer word) but holds one of two words
    assert weighed[0] == pytest.approx(one_word["scores"]["keyword"] / await idf_mass(pool, "pump serial"), abs=1e-3)
    # "serial number": gamma holds both. Its length norm is the same in both (the corpus is the suite's, so the
    # absolute shares vary); weighed by the best match instead, both would be 1
    assert weighed[0] < 0.75 * weighed[1], weighed


async def test_bm25_weighs_the_rare_words_of_a_question(pool, corpus):
    """"pump" is in two chunks, "serial" in one: a question with both ranks gamma's single rare match first."""
    trace: list[dict] = []
    await HybridSearch(pool).search(corpus, "pump serial", top_k=5, model=MODEL, threshold=-1.0, trace=trace,
                                    filters={"doc_ids": ["hs-a", "hs-b", "hs-c", "hs-d"]})
    keyword = {t["chunk_id"]: t["keyword"] for t in trace if t["keyword_rank"]}
    assert set(keyword) == {"hs-a-0", "hs-a-1", "hs-c-0"}
    assert keyword["hs-c-0"] > keyword["hs-a-0"] > 0


async def test_a_table_of_contents_is_never_a_candidate(pool, corpus):
    trace: list[dict] = []
    hits = await HybridSearch(pool).search(corpus, "priming the pump serial number warranty filters", top_k=5,
                                           model=MODEL, threshold=-1.0, trace=trace)
    assert "hs-e" not in {h["doc_id"] for h in hits} and "hs-e-0" not in {t["chunk_id"] for t in trace}
    assert hits  # the other chunks are found all the same


async def test_threshold_drops_passages_that_are_not_similar(pool, corpus):
    hits = await HybridSearch(pool).search(corpus, "pump", top_k=5, model=MODEL, threshold=0.5)
    assert "hs-d" not in {h["doc_id"] for h in hits}
    assert await HybridSearch(pool).search(-corpus, "nothing matches", top_k=5, model=MODEL, threshold=0.5) == []


async def test_near_duplicate_passages_are_removed(pool, corpus):
    hits = await HybridSearch(pool).search(corpus, "prime the pump", top_k=5, model=MODEL, threshold=0.0)
    alpha = [h for h in hits if h["doc_id"] == "hs-a"]
    assert len(alpha) == 1  # the two nearly identical passages count once
    loose = HybridSearch(pool, RetrievalConfig(duplicate_similarity=1.01))
    both = await loose.search(corpus, "prime the pump", top_k=5, model=MODEL, threshold=0.0)
    assert len([h for h in both if h["doc_id"] == "hs-a"]) == 2


async def test_the_debug_trace_says_where_every_candidate_ranked_and_what_became_of_it(pool, corpus):
    trace: list[dict] = []
    hits = await HybridSearch(pool).search(corpus, "prime the pump serial number", top_k=3, model=MODEL,
                                           threshold=0.5, trace=trace)
    by_chunk = {t["chunk_id"]: t for t in trace}
    assert set(by_chunk) == {"hs-a-0", "hs-a-1", "hs-b-0", "hs-c-0", "hs-d-0"}  # every candidate of both halves
    # (no table of contents among them)
    assert [by_chunk[h["chunk_id"]]["outcome"] for h in hits] == [f"passage {n}" for n in range(1, len(hits) + 1)]
    assert by_chunk["hs-d-0"]["outcome"] == "below the similarity threshold 0.5"  # the unrelated soup
    twins = [by_chunk[c]["outcome"] for c in ("hs-a-0", "hs-a-1")]
    assert any(o.startswith("near-duplicate of passage") for o in twins)
    assert [t["fused_rank"] for t in trace] == list(range(1, len(trace) + 1))
    assert all(t["dense_rank"] or t["keyword_rank"] for t in trace)
    assert by_chunk["hs-d-0"]["keyword_rank"] is None  # the soup has none of the question's words
    assert by_chunk["hs-c-0"]["keyword_rank"] and by_chunk["hs-a-0"]["keyword_rank"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"doc_ids": ["hs-b"]}, {"hs-b"}),
        ({"names": ["gamma.txt", "alpha.md"]}, {"hs-a", "hs-c"}),
        ({"doc_types": ["text"]}, {"hs-c", "hs-d"}),
        ({"tags": ["manual"]}, {"hs-a", "hs-b"}),
    ],
)
async def test_metadata_filters(pool, corpus, filters, expected):
    hits = await HybridSearch(pool).search(corpus, "pump filters warranty soup", top_k=10, model=MODEL,
                                           threshold=-1.0, filters=filters)
    assert {h["doc_id"] for h in hits} == expected


async def test_the_hnsw_search_breadth_grows_with_the_index_unless_it_is_set(pool):
    from projections.retrieval import EF_BASE, EF_MAX, search_breadth

    table = "hs_breadth_probe"  # the breadth reads PostgreSQL's row estimate of whichever table it is given

    async def breadth(rows: int | None, cfg: RetrievalConfig) -> tuple[int, str]:
        async with pool.acquire() as conn:
            if rows is not None:
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
                await conn.execute(f"CREATE TABLE {table} AS SELECT g AS x FROM generate_series(1, $1) g", rows)
                await conn.execute(f"ANALYZE {table}")
            async with conn.transaction():
                return await search_breadth(conn, table, cfg), await conn.fetchval("SHOW hnsw.ef_search")

    try:
        await pool.execute(f"DROP TABLE IF EXISTS {table}")
        await pool.execute(f"CREATE TABLE {table} (x int)")
        assert await breadth(None, RetrievalConfig()) == (EF_BASE, str(EF_BASE))  # never analysed
        assert await breadth(5_000, RetrievalConfig()) == (EF_BASE, str(EF_BASE))
        assert await breadth(100_000, RetrievalConfig()) == (225, "225")  # 80 * 10 ** 0.45
        assert await breadth(100_000, RetrievalConfig(ef_search=64)) == (64, "64")
        assert await breadth(1_000_000, RetrievalConfig()) == (EF_MAX, str(EF_MAX))  # 635, at most 400
        # SET LOCAL semantics: outside those transactions the setting is unset (or pgvector's default) again
        assert await pool.fetchval("SHOW hnsw.ef_search") in ("", "40")
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}")


async def test_one_round_trip_sets_the_search_up_as_the_three_did(pool):
    """prepare_search: the breadth, the iterative scan and the question's lexemes in one statement, the same as
    search_breadth, SET LOCAL and question_lexemes one after the other; local to the transaction."""
    from projections.retrieval import prepare_search, question_lexemes, search_breadth

    table = "hs_prepare_probe"
    question = "Which pumps' filters are covered by the warranty, and the pump's?"
    try:
        await pool.execute(f"CREATE TABLE {table} AS SELECT g AS x FROM generate_series(1, 100000) g")
        await pool.execute(f"ANALYZE {table}")
        async with pool.acquire() as conn:
            async with conn.transaction():
                lexemes = await prepare_search(conn, table, RetrievalConfig(), question)
                together = (await conn.fetchval("SHOW hnsw.ef_search"), await conn.fetchval("SHOW hnsw.iterative_scan"))
            async with conn.transaction():
                apart = (str(await search_breadth(conn, table, RetrievalConfig())), "relaxed_order")
            assert together == apart == ("225", "relaxed_order")
            assert lexemes == await question_lexemes(conn, question) and "pump" in lexemes
            assert len(lexemes) == len(set(lexemes))
            assert await conn.fetchval("SHOW hnsw.iterative_scan") != "relaxed_order"  # SET LOCAL semantics
            with pytest.raises(asyncpg.UndefinedTableError):  # no index table yet: search() returns no passages
                async with conn.transaction():
                    await prepare_search(conn, "hs_no_such_table", RetrievalConfig(), question)
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}")
