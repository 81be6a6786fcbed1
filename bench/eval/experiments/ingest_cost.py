"""Ingest-time embedding cost of the recommended variant: the chunks as today (text) vs composed (ctx, with
plain-text headings), plus one vector per sentence, timed with the ONNX int8 and the torch MiniLM (no cache).

    .venv/bin/python bench/eval/experiments/ingest_cost.py [--models all-MiniLM-L6-v2-onnx-int8 all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2-onnx-int8", "all-MiniLM-L6-v2"])
    ap.add_argument("--models-dir", type=Path, default=harness.CACHE / "models")
    args = ap.parse_args()
    from agents.models import load_model

    t0 = time.perf_counter()
    today = harness.load_corpus(harness.QSETS["eval"][0])
    t1 = time.perf_counter()
    new = harness.load_corpus(harness.QSETS["eval"][0], headings=True)
    t2 = time.perf_counter()
    texts = {"today: chunk text": [c.text for c in today.chunks],
             "proposed: ctx chunks": [harness.compose(c, "ctx") for c in new.chunks],
             "proposed: sentences": [s for c in new.chunks for s in harness.sentences(c)]}
    out = {"parse_s": {"today": round(t1 - t0, 2), "with text headings + TOC flag": round(t2 - t1, 2)},
           "counts": {k: len(v) for k, v in texts.items()}}
    for name in args.models:
        model = load_model(name, args.models_dir, 2)
        model.encode(["warm up"])
        for label, batch in texts.items():
            started = time.perf_counter()
            model.encode(batch)
            out.setdefault(name, {})[label + " s"] = round(time.perf_counter() - started, 1)
        del model
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
