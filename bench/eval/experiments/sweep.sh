#!/usr/bin/env bash
# Every figure of bench/eval/experiments/README.md, one harness call per configuration (ONNX int8 MiniLM unless
# said otherwise; vectors cached in $RAGBUS_EVAL_CACHE, so a rerun takes ~10 s per configuration).
#   bash bench/eval/experiments/sweep.sh [OUT.jsonl]
set -euo pipefail
cd "$(dirname "$0")/../../.."
export RAGBUS_EVAL_CACHE=${RAGBUS_EVAL_CACHE:-$HOME/.cache/ragbus-eval}
OUT=${1:-$RAGBUS_EVAL_CACHE/sweep.jsonl}
H="${PYTHON:-.venv/bin/python} bench/eval/experiments/harness.py --json $OUT"
R="fuse=lin,ws=0.5,toc=1,kw=bm25sql,wk=0.2"   # the recommended scoring

# 1. fusion, threshold, duplicates, keyword half (chunk text embedded as today)
$H --variants "system;rrf;rrf,tb=dense;dense;keyword;keyword,kw=bm25;keyword,kw=bm25h;keyword,kw=bm25sql;\
rrf,k=10;rrf,k=200;rrf,wk=0.5;rrf,wk=0.2;rrf,wd=2,k=20;rrf,cand=10;rrf,cand=80;rrf,kq=rare;rrf,kq=or;rrf,kw=head;\
rrf,kw=bm25sql;rrf,kw=bm25sql,wk=0.5;fuse=tie,tie=2;fuse=tie,tie=1;\
fuse=lin,wk=0.05;fuse=lin,wk=0.1;fuse=lin,wk=0.2;fuse=lin,wk=0.3;fuse=lin,wk=0.1,kw=head;fuse=lin,wk=0.1,kq=rare;\
fuse=lin,wk=0.2,kw=bm25sql;dense,thr=0,dup=1;dense,thr=0.3;dense,dup=0.9;dense,toc=1;fuse=lin,wk=0.1,toc=1"
# 2. rerank signals over the candidates (sentences, heading, section, neighbours, document, PRF)
$H --variants "fuse=lin,wk=0,ws=0.5;fuse=lin,wk=0,ws=1;fuse=lin,wk=0,ws=1,wc=0;fuse=lin,wk=0,wh=0.5;\
fuse=lin,wk=0,wdoc=0.5;fuse=lin,wk=0,wsec=0.3;fuse=lin,wk=0,wnb=0.3;fuse=lin,wk=0,prf=0.5;\
fuse=lin,wk=0.1,ws=0.5,toc=1;$R;fuse=lin,toc=1,kw=bm25sql,wk=0.2"
# 3. what is embedded, and plain-text headings
for c in title sec ctx; do
  $H --compose $c --variants "system;dense;dense,toc=1;fuse=lin,wk=0.1,toc=1;fuse=lin,toc=1,kw=bm25sql,wk=0.2;$R"
done
$H --text-headings --variants "system;dense;dense,toc=1;fuse=lin,toc=1,kw=bm25sql,wk=0.2;$R"
$H --compose ctx --text-headings --variants "system;dense;dense,toc=1;rrf,toc=1,kw=bm25sql,tb=dense;\
fuse=lin,toc=1,kw=bm25sql,wk=0.2;$R;$R,wk=0.1;$R,wk=0.3;$R,ws=0.3;$R,ws=0.7;$R,wh=0.2;$R,wsec=0.3;$R,prf=0.3;\
$R,alt=text,wa=1;$R,cand=20;$R,cand=80;$R,thr=0;$R,dup=1"
# 4. chunk sizes and strategies
for ch in structure/100/20 structure/150/30 structure/250/50 structure/300/60 structure/400/80 structure/200/0 \
          sentence/200/40 fixed/200/40; do
  $H --chunking $ch --variants "system;dense,toc=1;fuse=lin,toc=1,kw=bm25sql,wk=0.2;$R"
  $H --chunking $ch --compose ctx --text-headings --variants "dense,toc=1;$R"
done
# 5. the second, never-tuned set (tests/quality: license texts, 61 questions)
for c in text ctx; do
  $H --qset quality --compose $c --text-headings --variants "system;dense;fuse=lin,wk=0.1;\
fuse=lin,toc=1,kw=bm25sql,wk=0.2;$R;$R,wk=0.1;$R,wk=0.3;$R,alt=text,wa=1"
done
# 6. torch MiniLM (what production runs): today vs recommended, both sets; latency on the eval corpus
$H --model all-MiniLM-L6-v2 --variants "system;dense;$R"
$H --model all-MiniLM-L6-v2 --compose ctx --text-headings --variants "system;dense;dense,toc=1;$R" --latency 3
$H --model all-MiniLM-L6-v2 --qset quality --variants "system;dense;$R"
$H --model all-MiniLM-L6-v2 --qset quality --compose ctx --text-headings --variants "system;dense;$R"
