#!/usr/bin/env bash
# Domain adaptation runs of README.md ("Fine-tuning MiniLM on the corpus"): train on the documents of half A
# (never on questions), evaluate on the questions of half A (trained documents) and half B (untrained ones),
# next to the zero-shot torch MiniLM. ~5-10 min per training run on 2 shared cores.
#   bash bench/eval/experiments/finetune.sh [OUT.jsonl]
set -euo pipefail
cd "$(dirname "$0")/../../.."
export RAGBUS_EVAL_CACHE=${RAGBUS_EVAL_CACHE:-$HOME/.cache/ragbus-eval}
OUT=${1:-$RAGBUS_EVAL_CACHE/finetune.jsonl}
PY=${PYTHON:-.venv/bin/python}
FT=$RAGBUS_EVAL_CACHE/ft
T="$PY bench/eval/experiments/train.py"
H="$PY bench/eval/experiments/harness.py --json $OUT"
R="fuse=lin,ws=0.5,toc=1,kw=bm25sql,wk=0.2"
V="system;dense;dense,toc=1;fuse=lin,toc=1,kw=bm25sql,wk=0.2"

# chunk text embedded (today): lr 3e-5, 1 epoch, in-batch negatives only; then with same-document hard negatives
$T --docs-split A --out $FT/A-e1 --epochs 1 --minutes 9
$T --docs-split A --out $FT/A-hn --hard-neg --max-len 160 --lr 5e-5 --epochs 1 --minutes 8
$T --out $FT/all-e1 --epochs 1 --minutes 9                      # all documents (stopped by the time limit)
for m in all-MiniLM-L6-v2 $FT/A-e1 $FT/A-hn; do for s in A B; do $H --model $m --docs-split $s --variants "$V"; done; done
$H --model $FT/all-e1 --variants "$V"
# the recommended composition (ctx + plain-text headings): mild (lr 5e-5, 1 epoch) and strong (1e-4, 2 epochs)
$T --docs-split A --out $FT/A-hn-ctx --hard-neg --max-len 160 --lr 5e-5 --epochs 1 --minutes 9 --compose ctx --text-headings
$T --docs-split A --out $FT/A-hn2-ctx --hard-neg --max-len 160 --lr 1e-4 --epochs 2 --minutes 9 --compose ctx --text-headings
for m in all-MiniLM-L6-v2 $FT/A-hn-ctx $FT/A-hn2-ctx; do for s in A B; do
  $H --model $m --compose ctx --text-headings --docs-split $s --variants "$V;$R"
done; done
