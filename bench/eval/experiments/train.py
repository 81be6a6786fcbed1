"""Domain adaptation of all-MiniLM-L6-v2 on a corpus alone (no questions): MultipleNegativesRankingLoss on pairs
built from the documents, CPU, bounded time. Writes a sentence-transformers folder that harness.py --model takes.

Pairs (anchor -> positive), built from ragbus's own chunks (parser defaults, or --chunking):
  heading  the chunk's heading path (title > ... > heading) -> the chunk, its own heading line removed
  ict      inverse cloze task: one sentence of a chunk (>= 6 words) -> the rest of the chunk (the sentence removed)
  title    (optional) the document title -> a chunk of it
  d2q      (optional, --doc2query) a question SmolLM2 wrote for the chunk (doc2query.py) -> the chunk

Batches never hold the same chunk or the same anchor twice (in-batch negatives must be negatives).

    .venv/bin/python bench/eval/experiments/train.py --out /work/rank-cache/ft/all --minutes 8
    .venv/bin/python bench/eval/experiments/train.py --docs-split A --out /work/rank-cache/ft/A   # half the docs
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402


def add_hard_negatives(pairs: list[tuple[str, str, int]], chunks: list[harness.Chunk], compose: str,
                       rng: random.Random) -> list[tuple[str, str, int, str]]:
    """A hard negative per pair: a chunk of the same document from another section (the 'right document, wrong
    chunk' confusion), as the index embeds it."""
    by_doc: dict[str, list[harness.Chunk]] = {}
    for c in chunks:
        if not c.toc:
            by_doc.setdefault(c.doc, []).append(c)
    index = {c.idx: c for c in chunks}
    out = []
    for a, p, i in pairs:
        own = index[i]
        others = [c for c in by_doc[own.doc] if c.section != own.section] or \
            [c for c in by_doc[own.doc] if c.idx != i] or [c for c in chunks if c.doc != own.doc]
        out.append((a, p, i, harness.compose(rng.choice(others), compose)))
    return out


def build_pairs(chunks: list[harness.Chunk], compose: str, ict_per_chunk: int, rng: random.Random,
                use_title: bool = False) -> list[tuple[str, str, int]]:
    pairs: list[tuple[str, str, int]] = []  # (anchor, positive, chunk idx)
    for c in chunks:
        if c.toc:
            continue
        positive_full = harness.compose(c, compose)
        heading = c.section[-1] if c.section else ""
        body = c.text
        if heading and body.startswith(heading):
            body = body[len(heading):].lstrip()
        if len(body.split()) < 8:
            continue
        if heading:
            anchor = " > ".join(c.path())
            pos = harness.compose(harness.Chunk(**{**c.__dict__, "text": body}), compose)
            pairs.append((anchor, pos, c.idx))
        if use_title and c.title:
            pairs.append((c.title, positive_full, c.idx))
        sents = [s for s in harness.sentences(harness.Chunk(**{**c.__dict__, "text": body})) if len(s.split()) >= 6]
        for s in rng.sample(sents, min(ict_per_chunk, len(sents))):
            rest = body.replace(s, " ", 1)
            if len(rest.split()) < 8:
                continue
            pos = harness.compose(harness.Chunk(**{**c.__dict__, "text": rest}), compose)
            pairs.append((s, pos, c.idx))
    return pairs


def batches(pairs: list[tuple[str, str, int]], size: int, rng: random.Random) -> list[list[tuple[str, str, int]]]:
    rng.shuffle(pairs)
    out: list[list[tuple[str, str, int]]] = []
    pending = list(pairs)
    while pending:
        batch, seen_c, seen_a, rest = [], set(), set(), []
        for p in pending:
            if len(batch) < size and p[2] not in seen_c and p[0] not in seen_a:
                batch.append(p)
                seen_c.add(p[2])
                seen_a.add(p[0])
            else:
                rest.append(p)
        if len(batch) < 4:
            break
        out.append(batch)
        pending = rest
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--qset", default="eval", choices=list(harness.QSETS), help="whose corpus (never its questions)")
    ap.add_argument("--docs-split", choices=["A", "B"], help="train on the documents of this half only")
    ap.add_argument("--chunking", default="structure/200/40")
    ap.add_argument("--compose", default="text")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--minutes", type=float, default=9.0, help="stop training after this long")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--ict", type=int, default=3, help="ICT pairs per chunk")
    ap.add_argument("--title", action="store_true")
    ap.add_argument("--doc2query", type=Path, help="also train question -> chunk on doc2query.py's questions")
    ap.add_argument("--only-doc2query", action="store_true", help="no heading or ICT pairs, only --doc2query's")
    ap.add_argument("--hard-neg", action="store_true", help="add a same-document chunk as a hard negative")
    ap.add_argument("--text-headings", action="store_true", help="harness.load_corpus(headings=True)")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from agents.models import packaged_model_path

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    corpus_dir = harness.QSETS[args.qset][0]
    strategy, tokens, overlap = args.chunking.split("/")
    corpus = harness.load_corpus(corpus_dir, strategy, int(tokens), int(overlap), args.text_headings)
    chunks = corpus.chunks
    if args.docs_split:
        halves = harness.doc_split(sorted({c.doc for c in chunks}))
        chunks = [c for c in chunks if halves[c.doc] == args.docs_split]
    pairs = [] if args.only_doc2query else build_pairs(chunks, args.compose, args.ict, rng, args.title)
    if args.doc2query:  # written from the chunk alone (never from an evaluation question); only real questions
        written = json.loads(args.doc2query.read_text())
        pairs += [(q, harness.compose(c, args.compose), c.idx) for c in chunks if not c.toc
                  for q in written.get(harness.text_key(c.text), []) if q.endswith("?")]
    negatives = {}
    if args.hard_neg:
        negatives = {(a, i): n for a, _, i, n in add_hard_negatives(pairs, chunks, args.compose, rng)}
    kinds = {"heading": sum(1 for a, _, i in pairs if a.startswith(corpus.chunks[i].title) and " > " in a)}
    model = SentenceTransformer(str(packaged_model_path()), device="cpu", local_files_only=True)
    model.max_seq_length = args.max_len
    loss_fn = MultipleNegativesRankingLoss(model, scale=args.scale)
    plan = []
    epochs_full = int(args.epochs) + (1 if args.epochs % 1 else 0)
    for e in range(epochs_full):
        bs = batches(list(pairs), args.batch, rng)
        if e == epochs_full - 1 and args.epochs % 1:
            bs = bs[: int(len(bs) * (args.epochs % 1))]
        plan += bs
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = max(1, len(plan) // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (len(plan) - s) / max(1, len(plan) - warm))))
    print(f"{len(pairs)} pairs ({kinds['heading']} heading, {len(pairs) - kinds['heading']} ict/title) over "
          f"{len(chunks)} chunks of {len({c.doc for c in chunks})} docs; {len(plan)} steps of {args.batch}",
          file=sys.stderr)
    model.train()
    started = time.perf_counter()
    done = 0
    losses = []
    for step, batch in enumerate(plan):
        anchors = model.tokenize([a for a, _, _ in batch])
        positives = model.tokenize([p for _, p, _ in batch])
        features = [anchors, positives]
        if negatives:
            features.append(model.tokenize([negatives[(a, i)] for a, _, i in batch]))
        loss = loss_fn(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(loss))
        done = step + 1
        if step % 20 == 0:
            print(f"step {step}/{len(plan)} loss {sum(losses[-20:]) / len(losses[-20:]):.3f} "
                  f"{time.perf_counter() - started:.0f}s", file=sys.stderr)
        if time.perf_counter() - started > args.minutes * 60:
            print(f"time limit after {done} steps", file=sys.stderr)
            break
    train_s = time.perf_counter() - started
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(str(args.out))
    info = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "pairs": len(pairs),
            "steps": done, "planned_steps": len(plan), "train_s": round(train_s, 1),
            "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
            "docs": sorted({c.doc for c in chunks})}
    (args.out / "ragbus-train.json").write_text(json.dumps(info, indent=1))
    print(json.dumps({k: info[k] for k in ("pairs", "steps", "train_s", "final_loss")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
