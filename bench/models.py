"""Embedding model benchmark: every catalogue model (agents/models.py) against torch MiniLM, same run.

    .venv/bin/python bench/models.py                    # the catalogue, built fresh into a temporary folder
    .venv/bin/python bench/models.py --onnx-variants    # also every ONNX quantisation recipe (fp32, int8, ...)
    .venv/bin/python bench/models.py --help

For each model: build time (export / distillation, from the packaged MiniLM, offline), load time and RSS in a
fresh process (so torch's 300+ MB do not count for the torch-free backends; it also says whether torch got
imported), texts/s on ~200-word-piece passages at batch 32 and single short queries/s, cosine agreement with
the torch vectors (same space only) and "similarity corr", the correlation of all passage-pair cosines with
torch's (any space: the 256-d distilled model too), and retrieval quality on tests/quality (hit@1, hit@3, MRR;
a hit is a passage containing the question's `answer_contains`, case and whitespace ignored; exact cosine
search over the same chunks for every model).

Timing is interleaved by rep: a rep runs every model over all passages (then all queries), one model after the
other, the order rotating from rep to rep, so drift and other load on the machine hit every model alike.
(Alternating models batch by batch was worse: each model's first call paid for the previous one's spinning
thread pool.) Speeds are medians over reps; "x torch" is the median of the per-rep ratios torch / model time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents import models as catalogue

ROOT = Path(__file__).resolve().parent.parent
QUALITY = ROOT / "tests" / "quality"
REFERENCE = catalogue.MINILM
err = Console(stderr=True)


# ---- data ----------------------------------------------------------------------------------------------------
def windows(words_per: int, stride: int) -> list[str]:
    """Word windows over the quality corpus: 160 words are ~200 MiniLM word pieces on these license texts."""
    out = []
    for path in sorted((QUALITY / "corpus").glob("*.txt")):
        words = path.read_text(encoding="utf-8").split()
        out += [" ".join(words[i:i + words_per]) for i in range(0, max(1, len(words) - words_per + stride), stride)]
    return out


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


# ---- measurements ------------------------------------------------------------------------------------------
@dataclass
class Entry:
    label: str  # what the table shows
    source: str  # catalogue name or folder path, as load_model takes it
    backend: str
    build_s: float | None = None
    batch_size: int | None = None  # torch only: sentence-transformers' batch size, if not the agent's 32
    probe: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    passage_s: list[float] = field(default_factory=list)
    query_s: list[float] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    quality: dict[str, float] = field(default_factory=dict)


def probe(source: str, models_dir: Path, threads: int) -> dict[str, Any]:
    """Load time, RSS and imported heavy modules, in a fresh interpreter (this one already holds torch)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", source, "--models-dir", str(models_dir),
           "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe of {source} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_probe(source: str, models_dir: Path, threads: int) -> None:
    import psutil

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    started = time.perf_counter()
    model = catalogue.load_model(source, models_dir, threads)
    load_s = time.perf_counter() - started
    rss_load = proc.memory_info().rss
    model.encode(windows(160, 80)[:32])  # one full batch: onnxruntime's arena and torch's buffers grow here
    print(json.dumps({"load_s": load_s, "rss_start_mb": rss0 / 2**20, "rss_load_mb": rss_load / 2**20,
                      "rss_batch_mb": proc.memory_info().rss / 2**20, "dim": model.dim,
                      "fingerprint": model.fingerprint,
                      "torch_imported": "torch" in sys.modules,
                      "sentence_transformers_imported": "sentence_transformers" in sys.modules}))


def interleaved(entries: list[Entry], items: list[list[str]], reps: int, progress: Progress, what: str) -> list[
        list[float]]:
    """Per entry, per rep: seconds to encode every item (a batch or one query). Each rep runs the models one
    after the other in an order rotated per rep, each model's block led by one untimed item: torch's OpenMP
    threads and onnxruntime's pool spin on after their work, and the next model's first call pays for it (a
    torch query right after an onnxruntime call: 18 ms instead of 8 on a quiet machine, far more under load)."""
    totals = [[0.0] * reps for _ in entries]
    task = progress.add_task(what, total=reps * len(entries))
    for rep in range(reps):
        order = list(range(len(entries)))
        order = order[rep % len(order):] + order[:rep % len(order)]
        for i in order:
            entries[i].model.encode(items[0])
            for item in items:
                started = time.perf_counter()
                entries[i].model.encode(item)
                totals[i][rep] += time.perf_counter() - started
            progress.advance(task)
    return totals


def retrieval(model: Any, chunks: list[str], chunk_vectors: np.ndarray, questions: list[dict[str, str]]
              ) -> dict[str, float]:
    q = model.encode([x["question"] for x in questions])
    scores = q @ chunk_vectors.T
    squashed = [squash(c) for c in chunks]
    ranks = []
    for row, question in zip(scores, questions, strict=True):
        answer = squash(question["answer_contains"])
        order = np.argsort(-row, kind="stable")
        ranks.append(next((r + 1 for r, i in enumerate(order) if answer in squashed[i]), None))
    found = [r for r in ranks if r is not None]
    n = max(len(found), 1)
    return {"hit@1": sum(r == 1 for r in found) / n, "hit@3": sum(r <= 3 for r in found) / n,
            "mrr": sum(1 / r for r in found) / n, "answerable": len(found), "questions": len(questions)}


def measure(args: argparse.Namespace, models_dir: Path) -> dict[str, Any]:
    entries = [Entry(name, name, catalogue.CATALOG[name].backend) if name in catalogue.CATALOG
               else Entry(Path(name).name, name, catalogue.detect_backend(Path(name))) for name in args.models]
    if REFERENCE not in [e.source for e in entries]:
        entries.insert(0, Entry(REFERENCE, REFERENCE, "torch"))
    entries += [Entry(f"{REFERENCE} batch {b}", REFERENCE, "torch", batch_size=b) for b in args.torch_batch]
    passages = windows(160, 80)[:args.passages]
    chunks = windows(160, 120)  # 40 words of overlap: an answer phrase shorter than that lies whole in a chunk
    questions = json.loads((QUALITY / "questions.json").read_text(encoding="utf-8"))
    queries = [q["question"] for q in questions][:args.queries]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("building", total=len(entries) + len(args.onnx_variants))
        for e in entries:
            progress.update(task, description=f"building {e.label}")
            if e.source in catalogue.CATALOG and catalogue.CATALOG[e.source].build is not None:
                started = time.perf_counter()
                existed = catalogue.is_built(e.source, models_dir)
                catalogue.ensure_built(e.source, models_dir)
                e.build_s = None if existed else time.perf_counter() - started
            progress.advance(task)
        for variant in args.onnx_variants:
            progress.update(task, description=f"building ONNX {variant}")
            folder = models_dir / f"variant-onnx-{variant}"
            if not (folder / "model.onnx").exists():
                scratch = Path(tempfile.mkdtemp(dir=models_dir))
                try:
                    started = time.perf_counter()
                    # in this process (torch already imported, unlike a catalogue build's child): time the
                    # export and quantisation only, and keep even the inaccurate recipes
                    catalogue.build_onnx(scratch, variant, min_cosine=0.0)
                    build_s = time.perf_counter() - started
                    scratch.rename(folder)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            else:
                build_s = None
            entries.append(Entry(f"onnx {variant}", str(folder), "onnx", build_s))
            progress.advance(task)

        task = progress.add_task("load + RSS, one fresh process each", total=len(entries))
        probed: dict[str, dict[str, Any]] = {}
        for e in entries:
            e.probe = probed.get(e.source) or probe(e.source, models_dir, args.threads)
            probed[e.source] = e.probe
            progress.advance(task)
        for e in entries:
            e.model = catalogue.load_model(e.source, models_dir, args.threads)
            if e.batch_size:
                e.model.batch_size = e.batch_size
            e.model.encode(passages[:32])  # warm-up: first-run allocations and lazy initialisation
            e.model.encode(queries[:1])

        batches = [passages[i:i + 32] for i in range(0, len(passages), 32)]
        for e, times in zip(entries, interleaved(entries, batches, args.reps, progress, "passages, batch 32"),
                            strict=True):
            e.passage_s = times
        for e, times in zip(entries, interleaved(entries, [[q] for q in queries], args.reps, progress,
                                                 "single queries"), strict=True):
            e.query_s = times

        task = progress.add_task("agreement + retrieval", total=len(entries))
        for e in entries:
            e.vectors = e.model.encode(passages)
            e.quality = retrieval(e.model, chunks, e.model.encode(chunks), questions)
            progress.advance(task)

    ref = next(e for e in entries if e.source == REFERENCE)
    tri = np.triu_indices(len(passages), k=1)
    ref_sims = (ref.vectors @ ref.vectors.T)[tri]
    rows = []
    for e in entries:
        same_space = e.vectors.shape[1] == ref.vectors.shape[1]
        cos = (e.vectors * ref.vectors).sum(axis=1) if same_space else None
        rows.append({
            "model": e.label, "source": e.source, "backend": e.backend, "dim": e.probe["dim"],
            "fingerprint": e.probe["fingerprint"], "build_s": e.build_s, **e.probe,
            "passages_per_s": len(passages) / statistics.median(e.passage_s),
            "passages_x_torch": statistics.median(r / m for r, m in zip(ref.passage_s, e.passage_s, strict=True)),
            "queries_per_s": len(queries) / statistics.median(e.query_s),
            "queries_per_s_best": len(queries) / min(e.query_s),  # the rep least disturbed by other load
            "queries_x_torch": statistics.median(r / m for r, m in zip(ref.query_s, e.query_s, strict=True)),
            "passage_s_per_rep": e.passage_s, "query_s_per_rep": e.query_s,
            "cos_mean": float(cos.mean()) if cos is not None else None,
            "cos_min": float(cos.min()) if cos is not None else None,
            # different spaces (e.g. 256-d distilled) still compare: do they rank passage pairs alike?
            "similarity_corr": float(np.corrcoef(ref_sims, (e.vectors @ e.vectors.T)[tri])[0, 1]),
            **e.quality,
        })
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(catalogue.packaged_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    pieces = [len(x.ids) for x in tokenizer.encode_batch(passages)]
    return {
        "benchmark": "models", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
        "settings": {"passages": len(passages), "chunks": len(chunks), "queries": len(queries), "reps": args.reps,
                     "threads": args.threads or "library default", "models_dir": str(models_dir)},
        "passage_word_pieces": {"mean": float(np.mean(pieces)), "min": min(pieces), "max": max(pieces)},
        "models": rows,
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}


# ---- report ----------------------------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def report(result: dict[str, Any], console: Console) -> None:
    s, m = result["settings"], result["machine"]
    console.print(f"[bold]ragbus embedding models[/] {result['date']} - {m['nproc']} cores, {m['cpu']}, "
                  f"load average at end {m['loadavg_at_end']}; threads: {s['threads']}; {s['reps']} reps")
    wp = result["passage_word_pieces"]
    speed = Table(title=f"speed and memory ({s['passages']} passages of {wp['mean']:.0f} word pieces on average "
                        f"({wp['min']}-{wp['max']}, cut at 256) at batch 32, "
                        f"{s['queries']} single queries; x torch = median of per-rep ratios)")
    for col in ("model", "backend", "dim", "build s", "load s", "RSS load MB", "RSS batch MB", "torch imported",
                "passages/s", "x torch", "queries/s", "best rep", "x torch"):
        speed.add_column(col, justify="left" if col in ("model", "backend") else "right", no_wrap=col == "model")
    quality = Table(title=f"agreement with torch MiniLM ({s['passages']} passages) and retrieval "
                          f"({s['chunks']} chunks, tests/quality questions)")
    for col in ("model", "cos mean", "cos min", "similarity corr", "hit@1", "hit@3", "MRR", "fingerprint"):
        quality.add_column(col, justify="left" if col == "model" else "right")
    for r in result["models"]:
        speed.add_row(r["model"], r["backend"], str(r["dim"]), fmt(r["build_s"]), fmt(r["load_s"], ".2f"),
                      fmt(r["rss_load_mb"], ".0f"), fmt(r["rss_batch_mb"], ".0f"),
                      "yes" if r["torch_imported"] else "no", fmt(r["passages_per_s"]),
                      fmt(r["passages_x_torch"], ".2f", "x"), fmt(r["queries_per_s"], ".0f"),
                      fmt(r["queries_per_s_best"], ".0f"),
                      fmt(r["queries_x_torch"], ".1f", "x"))
        quality.add_row(r["model"], fmt(r["cos_mean"], ".4f"), fmt(r["cos_min"], ".4f"),
                        fmt(r["similarity_corr"], ".3f"), fmt(r["hit@1"], ".2f"), fmt(r["hit@3"], ".2f"),
                        fmt(r["mrr"], ".3f"), r["fingerprint"])
    console.print(speed)
    console.print(quality)
    answerable = {(r["answerable"], r["questions"]) for r in result["models"]}
    console.print(f"questions with an answer inside some chunk: {answerable}; build s n/a = packaged or already "
                  f"built in {s['models_dir']}; RSS: a fresh process per model, at the agent's batch size")
    console.print("single queries are milliseconds of many small parallel ops: other load on the machine swings "
                  "them far more than batches (torch most), so compare the best rep as well as the median")


# ---- main ----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/models.py",
        description="Build, load and compare the embedding models of agents/models.py (and any "
        "sentence-transformers / ONNX / model2vec folder given by path) against torch all-MiniLM-L6-v2 in "
        "the same run: build time, load time, RSS, texts/s, queries/s, cosine agreement, retrieval quality.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=list(catalogue.CATALOG), metavar="NAME_OR_PATH",
                        help="catalogue names or model folders (torch MiniLM is always added as the reference)")
    parser.add_argument("--onnx-variants", nargs="*", default=[], metavar="VARIANT",
                        choices=list(catalogue.ONNX_VARIANTS),
                        help="also build and time these ONNX quantisation recipes; the flag alone: all of "
                        f"{', '.join(catalogue.ONNX_VARIANTS)}")
    parser.add_argument("--torch-batch", nargs="*", type=int, default=[], metavar="N",
                        help="also time torch MiniLM at these sentence-transformers batch sizes (the agent uses 32)")
    parser.add_argument("--passages", type=int, default=300, help="passages for the speed test (at most ~300)")
    parser.add_argument("--queries", type=int, default=61, help="single queries for the latency test")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each speed test, model order rotating")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads per model (0: library default)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where to build (reused if already built; default: a fresh temporary folder, so build "
                        "times are measured, deleted afterwards)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout, report on stderr")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: one model in a fresh process
    args = parser.parse_args(argv)
    if args.onnx_variants == [] and "--onnx-variants" in (argv if argv is not None else sys.argv[1:]):
        args.onnx_variants = list(catalogue.ONNX_VARIANTS)
    if args.reps < 1 or args.passages < 32:
        parser.error("--reps must be at least 1 and --passages at least 32")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        run_probe(args.probe, args.models_dir, args.threads)
        return 0
    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="ragbus-bench-models-"))
    models_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(args, models_dir)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130
    finally:
        if args.models_dir is None:
            shutil.rmtree(models_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    report(result, Console(width=200, stderr=args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
