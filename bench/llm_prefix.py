"""Does prefilling the start of the prompt while retrieval runs bring the first token sooner?

    .venv/bin/python bench/llm_prefix.py [--questions 12] [--retrieval-ms 17]

The user message opens with the question (`question_head`), which the generator could know from `query.asked`
before the passages exist: a one-token request with the system prompt and that head, sent when the question is
asked, would leave it in llama-cpp-python's prompt cache (it reuses the longest common token prefix with the
previous request), and the real prompt would then evaluate only the sources. This measures it on the llama.cpp
server alone (SmolLM2-135M, the generator's system prompt and layout, three ~900-character Apache-2.0 passages),
p50 over the questions, every measured call starting from a cache that holds another question's prompt:

- cold: the full prompt (what the generator does today);
- same again: the full prompt right after itself (shows that the cache is reused at all);
- head first: the head's one-token request, then the full prompt (the time of the full prompt only);
- overlapped: the head's request, the full prompt `--retrieval-ms` later (the time from the head's start), to
  compare with cold + retrieval.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from agents.generator.service import ANSWER_CUE, SYSTEM_PROMPT, question_head
from ragbus.servers import LlamaServer

QUESTIONS = [
    "what does the license say about patents when I sue someone", "can I sell copies of this software",
    "do I have to keep the notice file", "what happens if I contribute code to the project",
    "is there any warranty or liability", "may I use the trademarks of the licensor",
    "what is a derivative work under these terms", "how do I apply the license to my own work",
    "can I add my own copyright statement to changes", "do I need to state that I changed files",
    "what if I redistribute in object form only", "when does the patent license terminate",
]
TEXT = Path("/usr/share/common-licenses/Apache-2.0").read_text()
BLOCKS = [TEXT[i * 900:(i + 1) * 900] for i in range(1, 6)]


def full(question: str, k: int) -> list[dict[str, str]]:
    sources = "\n\n".join(f"[{n + 1}] (Apache-2.0)\n{b}" for n, b in enumerate(BLOCKS[k % 2:k % 2 + 3]))
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question_head(question) + sources + ANSWER_CUE}]


def head(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question_head(question)}]


async def ttft(client: httpx.AsyncClient, messages: list[dict[str, str]], max_tokens: int = 8) -> float:
    started = time.perf_counter()
    body = {"model": "m", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    async with client.stream("POST", "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:") and '"content"' in line:
                return time.perf_counter() - started
    return time.perf_counter() - started


async def measure(client: httpx.AsyncClient, n: int, retrieval_s: float) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {"cold": [], "same again": [], "head first": [], "overlapped": []}
    await ttft(client, full("warm up", 0))
    for i, q in enumerate(QUESTIONS[:n]):
        other = QUESTIONS[(i + 5) % len(QUESTIONS)]

        async def flush(tag: str, other: str = other) -> None:  # the cache: another question's prompt
            await ttft(client, full(f"{other} {tag}", 1))
        await flush("a")
        runs["cold"].append(await ttft(client, full(q, i)))
        runs["same again"].append(await ttft(client, full(q, i)))
        await flush("b")
        await ttft(client, head(q), 1)
        runs["head first"].append(await ttft(client, full(q, i)))
        await flush("c")
        started = time.perf_counter()
        warm = asyncio.create_task(ttft(client, head(q), 1))
        await asyncio.sleep(retrieval_s)
        await ttft(client, full(q, i))
        runs["overlapped"].append(time.perf_counter() - started)
        await warm
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=12, help="questions (at most %(default)s)")
    parser.add_argument("--retrieval-ms", type=float, default=17.0,
                        help="what retrieval takes before the prompt exists (default: %(default)s, bench/chat.py)")
    args = parser.parse_args()
    server = LlamaServer(alias="m").start()
    try:
        async def run() -> dict[str, list[float]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                return await measure(client, args.questions, args.retrieval_ms / 1000)
        runs = asyncio.run(run())
    finally:
        server.stop()
    p50 = {k: statistics.median(v) * 1000 for k, v in runs.items()}
    for name, value in p50.items():
        print(f"{name:>12}: first token p50 {value:7.1f} ms")
    print(f"head first vs cold: {p50['head first'] / p50['cold']:.3f}x; overlapped vs cold + retrieval: "
          f"{p50['overlapped'] / (p50['cold'] + args.retrieval_ms):.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
