"""HyDE experiment: SmolLM2-135M (the packaged LLM, through the real llama.cpp server) writes a short
hypothetical manual passage for each question of bench/eval; harness.py --hyde then moves the question's vector
towards it. Answers are cached in $RAGBUS_EVAL_CACHE/hyde.json (about 2-5 s per question on 2 cores).

    .venv/bin/python bench/eval/experiments/hyde.py
    .venv/bin/python bench/eval/experiments/harness.py --variants "system;dense" --hyde $RAGBUS_EVAL_CACHE/hyde.json
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from agents.generator.llm import ChatClient  # noqa: E402
from ragbus.servers import LlamaServer  # noqa: E402

OUT = Path(os.environ.get("RAGBUS_EVAL_CACHE", "~/.cache/ragbus-eval")).expanduser() / "hyde.json"
# no word about the corpus: a system would not know what the user uploaded
SYSTEM = ("You write the passage of a software manual or FAQ that answers the user's question. "
          "Use the technical terms a manual would use. Two or three sentences.")


async def main() -> None:
    questions = json.loads((ROOT / "bench/eval/questions.json").read_text())
    cache = json.loads(OUT.read_text()) if OUT.exists() else {}
    server = LlamaServer(n_ctx=2048)
    await asyncio.to_thread(server.start)
    llm = ChatClient(server.url, server.model, timeout=300.0)
    started = time.perf_counter()
    try:
        for i, q in enumerate(questions):
            if q["question"] in cache:
                continue
            reply = await llm.complete([{"role": "system", "content": SYSTEM},
                                        {"role": "user", "content": q["question"]}], 80, 0.0)
            cache[q["question"]] = reply.strip()
            print(f"{i + 1}/{len(questions)} {time.perf_counter() - started:.0f} s", file=sys.stderr)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(cache, indent=1))
    finally:
        await asyncio.to_thread(server.stop)


if __name__ == "__main__":
    asyncio.run(main())
