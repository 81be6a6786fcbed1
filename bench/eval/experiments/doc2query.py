"""doc2query experiment: SmolLM2-135M (the packaged LLM, through the real llama.cpp server) writes, for every
chunk of the bench/eval corpus, a few questions a user could ask that the chunk answers. It sees only the
chunk (never an evaluation question); harness.py --doc2query then scores each chunk also by its best generated
question (`wq`) or embeds the questions with the chunk (`alt=d2q`). Cached in $RAGBUS_EVAL_CACHE/doc2query.json,
keyed by the chunk text's hash, so a rerun continues where it stopped (about 2-4 s per chunk on 2 cores).

    .venv/bin/python bench/eval/experiments/doc2query.py [--threads 1] [--limit N]
    .venv/bin/python bench/eval/experiments/harness.py --variants "system;recommended,wq=0.5" \\
        --doc2query $RAGBUS_EVAL_CACHE/doc2query.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import load_corpus, text_key  # noqa: E402

from agents.generator.llm import ChatClient  # noqa: E402
from ragbus.servers import LlamaServer  # noqa: E402

OUT = Path(os.environ.get("RAGBUS_EVAL_CACHE", "~/.cache/ragbus-eval")).expanduser() / "doc2query.json"
SYSTEM = ("You read a passage from a software manual or FAQ. Write three short questions that a user who has "
          "not read it could ask, which the passage answers. Say them in everyday words, as a person types "
          "them into a search box. One question per line, nothing else.")
# one worked example (a passage of no document in the corpus): the 135M model follows a shown format far better
# than a described one
EXAMPLE = (
    "Archives > Compression\n\nWhen creating an archive, tar can pass its output through a compressor. The "
    "-z option selects gzip, -j bzip2 and -J xz; with -a the compressor is chosen from the archive's suffix. When "
    "extracting, GNU tar recognises the compression by itself, so no option is needed.",
    "How do I make a compressed tar file?\nDo I need to say which compression it is when unpacking?\n"
    "Which flag gives me an xz archive?",
)
MAX_PASSAGE_CHARS = 1200  # ~250 tokens: the chunk's own size (200 tokens) with its heading path


def questions_of(reply: str) -> list[str]:
    """The reply's lines that look like questions, without numbering or bullets."""
    out = []
    for line in reply.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line).strip().strip('"')
        if len(line) >= 8 and line not in out and line not in EXAMPLE[1]:  # the example copied is no answer
            out.append(line)
    return out[:5]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: the server's)")
    parser.add_argument("--limit", type=int, default=0, help="stop after this many new chunks (0: all)")
    args = parser.parse_args(argv)
    corpus = load_corpus(ROOT / "bench/eval/corpus")
    chunks = [c for c in corpus.chunks if not c.toc]
    cache: dict[str, list[str]] = json.loads(OUT.read_text()) if OUT.exists() else {}
    todo = [c for c in chunks if text_key(c.text) not in cache]
    print(f"{len(chunks)} chunks, {len(chunks) - len(todo)} cached", file=sys.stderr)
    if args.limit:
        todo = todo[: args.limit]
    server = LlamaServer(n_ctx=2048, n_threads=args.threads)
    await asyncio.to_thread(server.start)
    llm = ChatClient(server.url, server.model, timeout=300.0)
    started = time.perf_counter()
    try:
        for i, c in enumerate(todo):
            head = " > ".join(c.path())
            passage = (f"{head}\n\n" if head else "") + c.text[:MAX_PASSAGE_CHARS]
            reply = await llm.complete([{"role": "system", "content": SYSTEM},
                                        {"role": "user", "content": EXAMPLE[0]},
                                        {"role": "assistant", "content": EXAMPLE[1]},
                                        {"role": "user", "content": passage}], 80, 0.0)
            cache[text_key(c.text)] = questions_of(reply)
            if (i + 1) % 20 == 0 or i + 1 == len(todo):
                OUT.parent.mkdir(parents=True, exist_ok=True)
                OUT.write_text(json.dumps(cache, indent=1))
                print(f"{i + 1}/{len(todo)} {time.perf_counter() - started:.0f} s", file=sys.stderr)
    finally:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(cache, indent=1))
        await asyncio.to_thread(server.stop)


if __name__ == "__main__":
    asyncio.run(main())
