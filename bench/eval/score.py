"""Scoring for the paraphrase evaluation set: hit@1, hit@3, hit@5 and MRR@5, per kind and overall.

A retrieved passage is a hit for a question when it comes from the question's `doc` and its text, normalised
(lower case, runs of whitespace collapsed), contains the question's normalised `answer_contains` phrase. The rank of
a question is the 1-based position of its first hit among the top k passages (k = 5), or none.

As a library: `rank_of`, `score`, `trace`, `format_table`. As a script it scores a rankings file, a JSON object
mapping each question id to its ranked list of passages, each an object with "doc" and "text":

    python bench/eval/score.py rankings.json --trace trace.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "questions.json"
KINDS = ("literal", "paraphrased")
TOP_K = 5
CUTOFFS = (1, 3, 5)


class Passage(TypedDict):
    doc: str
    text: str


Rankings = Mapping[str, Sequence[Mapping[str, Any]]]


def normalise(text: str) -> str:
    """Lower case, runs of whitespace collapsed to one space."""
    return re.sub(r"\s+", " ", text).strip().lower()


def is_hit(question: Mapping[str, Any], passage: Mapping[str, Any]) -> bool:
    return passage.get("doc") == question["doc"] and normalise(question["answer_contains"]) in normalise(
        str(passage.get("text", ""))
    )


def rank_of(question: Mapping[str, Any], passages: Sequence[Mapping[str, Any]], k: int = TOP_K) -> int | None:
    """1-based rank of the first hit among the top k passages, or None."""
    return next((rank for rank, p in enumerate(passages[:k], start=1) if is_hit(question, p)), None)


def _summary(ranks: Sequence[int | None], k: int) -> dict[str, float]:
    n = len(ranks)
    result: dict[str, float] = {"n": n}
    for cutoff in CUTOFFS:
        result[f"hit@{cutoff}"] = sum(1 for r in ranks if r is not None and r <= cutoff) / n if n else 0.0
    result[f"mrr@{k}"] = sum(1 / r for r in ranks if r is not None and r <= k) / n if n else 0.0
    return result


def score(questions: Sequence[Mapping[str, Any]], rankings: Rankings, k: int = TOP_K) -> dict[str, dict[str, float]]:
    """Metrics per kind and "overall"; a question absent from rankings counts as a miss."""
    ranks = {q["id"]: rank_of(q, rankings.get(q["id"], ()), k) for q in questions}
    groups: dict[str, list[int | None]] = {kind: [] for kind in KINDS}
    for q in questions:
        groups.setdefault(q["kind"], []).append(ranks[q["id"]])
    result = {kind: _summary(values, k) for kind, values in groups.items()}
    result["overall"] = _summary(list(ranks.values()), k)
    return result


def trace(questions: Sequence[Mapping[str, Any]], rankings: Rankings, k: int = TOP_K) -> list[dict[str, Any]]:
    """Per question: the rank found (or None) and the documents of the top 3 passages."""
    rows = []
    for q in questions:
        passages = rankings.get(q["id"], ())
        rows.append(
            {
                "id": q["id"],
                "kind": q["kind"],
                "question": q["question"],
                "doc": q["doc"],
                "rank": rank_of(q, passages, k),
                "top3": [p.get("doc") for p in passages[:3]],
            }
        )
    return rows


def format_table(result: Mapping[str, Mapping[str, float]], title: str = "", k: int = TOP_K) -> str:
    metrics = [f"hit@{c}" for c in CUTOFFS] + [f"mrr@{k}"]
    lines = [title] if title else []
    lines.append(f"{'kind':<12}{'n':>5}" + "".join(f"{m:>9}" for m in metrics))
    for kind, values in result.items():
        lines.append(f"{kind:<12}{int(values['n']):>5}" + "".join(f"{values[m]:>9.3f}" for m in metrics))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rankings", type=Path, help="JSON object: question id -> ranked list of {doc, text}")
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="questions file (default: %(default)s)")
    parser.add_argument("--trace", type=Path, help="write the per-question trace (JSON) to this file")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    args = parser.parse_args()
    questions = json.loads(args.questions.read_text(encoding="utf-8"))
    rankings = json.loads(args.rankings.read_text(encoding="utf-8"))
    absent = [q["id"] for q in questions if q["id"] not in rankings]
    if absent:
        print(f"warning: {len(absent)} question(s) have no ranking and count as misses", file=sys.stderr)
    result = score(questions, rankings)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    if args.trace:
        args.trace.write_text(json.dumps(trace(questions, rankings), indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
