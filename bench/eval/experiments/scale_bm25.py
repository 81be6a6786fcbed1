"""How the proposed BM25 keyword half (harness.BM25_POSTINGS_SQL) scales: the eval corpus's chunks copied
--copies times (e.g. 100 x 900 = 90k chunks), timed against today's keyword half (ts_rank_cd over the
any-two-lexemes tsquery, as projections/retrieval.py) on the same rows, for the 206 evaluation questions.

Copies are a pessimistic case for BM25 over postings: every lexeme, the rare ones too, gets `copies` times the
postings (a real 100k corpus keeps most lexemes rare).

    .venv/bin/python bench/eval/experiments/scale_bm25.py --copies 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

TODAY = """
SELECT c.chunk_id, ts_rank_cd(c.tsv, q.query, 32) AS keyword
FROM chunks c, to_tsquery('simple', $1) AS q(query) WHERE c.tsv @@ q.query
ORDER BY keyword DESC, c.chunk_id LIMIT 40
"""


async def main_async(args: argparse.Namespace) -> dict:
    corpus = harness.load_corpus(harness.QSETS["eval"][0], headings=True)
    questions = harness.load_questions("eval", None)
    db = harness.Database()
    await db.start()
    try:
        started = time.perf_counter()
        async with db.pool.acquire() as conn:
            rows = [(f"{c.chunk_id}~{k}", c.doc, c.ordinal, c.doc_type, list(c.section), c.start, c.end, c.text,
                     " ".join(c.path()) + "\n" + c.text) for k in range(args.copies) for c in corpus.chunks]
            await conn.copy_records_to_table(
                "chunks", records=[(r[0], r[1], r[1], r[2], r[1], r[3], None, r[4], r[5], r[6], r[7]) for r in rows],
                columns=["chunk_id", "doc_id", "upload_id", "ordinal", "name", "doc_type", "page", "section",
                         "char_start", "char_end", "text"])
            await conn.execute(harness.BM25_DDL)
            await conn.execute("CREATE TEMP TABLE src (chunk_id text, body text)")
            await conn.copy_records_to_table("src", records=[(r[0], r[8]) for r in rows])
            await conn.execute("INSERT INTO kw_bm25 (chunk_id, tsv) SELECT chunk_id, to_tsvector('english', body) "
                               "FROM src")
            await conn.execute(harness.BM25_STATS)
            await conn.execute("VACUUM ANALYZE")
            postings = await conn.fetchval("SELECT count(*) FROM bm25_postings")
        load_s = time.perf_counter() - started
        lexemes = await db.lexemes([q["question"] for q in questions])
        times: dict[str, list[float]] = {"today_keyword_ms": [], "bm25_postings_ms": []}
        async with db.pool.acquire() as conn:
            for _ in range(args.rounds):
                for lex in lexemes:
                    if not lex:
                        continue
                    t0 = time.perf_counter()
                    await conn.fetch(TODAY, harness.keyword_query(lex))
                    t1 = time.perf_counter()
                    await conn.fetch(harness.BM25_POSTINGS_SQL, list(dict.fromkeys(lex)), 8, 40)
                    t2 = time.perf_counter()
                    times["today_keyword_ms"].append(1000 * (t1 - t0))
                    times["bm25_postings_ms"].append(1000 * (t2 - t1))
        return {"chunks": len(rows), "postings": postings, "load_s": round(load_s, 1),
                **{k: {"p50": round(statistics.median(x), 2), "p90": round(sorted(x)[int(0.9 * len(x))], 2)}
                   for k, x in times.items()}}
    finally:
        await db.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    print(json.dumps(asyncio.run(main_async(ap.parse_args())), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
