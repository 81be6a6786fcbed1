"""Answer-streaming benchmark: time to first token and token rate at a websocket client, next to the same
prompt streamed straight from the llama.cpp server, measured in the same run.

    .venv/bin/python bench/chat.py [--questions 10] [--max-tokens 256] [--keep] [--json]

It starts, in a temporary directory and on free ports, nats-server, PostgreSQL + pgvector, a llama.cpp server
on SmolLM2-135M-Instruct, then the projector, parser, embedder, one generator and the gateway as separate
`python -m ragbus.cli agent NAME` processes. It uploads a few license texts from /usr/share/common-licenses,
waits until they are indexed, and then, for every question:

- system: asks on the websocket /ws/chat and times, at the client, the first `token` frame (TTFT) and the
  token rate (tokens after the first / time from the first to the last token frame);
- direct: rebuilds the exact prompt the generator used (`build_prompt` on that query's `context.built`
  event read back from the QUERIES stream, with the generator's settings and a TokenCounter on the same
  GGUF) and streams it from the llama.cpp server's /v1/chat/completions with httpx (same max_tokens,
  temperature 0, seed 42): TTFT and the server's own stream rate.

The order is system(q1), system(q2), direct(q1), system(q3), direct(q2), ... so that the two kinds alternate
and drift hits both, and so that no call ever directly follows the same prompt: llama-cpp-python reuses the KV
cache of the longest common prefix with the previous request, and a repeated prompt would skip its whole
prompt evaluation. Both kinds therefore start from a cache holding another question's prompt (they share
only the system prompt, as real traffic does). One warm-up question of each kind runs first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from websockets.asyncio.client import connect as ws_connect

from agents.generator.attribution import Attributor
from agents.generator.service import build_prompt
from agents.generator.settings import GeneratorSettings
from agents.generator.tokens import TokenCounter
from ragbus.servers import LlamaServer, NatsServer
from ragbus.stack import AgentStack, Servers
from streams.connect import connect
from streams.events import ContextBuilt
from streams.topology import (
    DEFAULT_EMBEDDING_MODEL,
    EMBEDDER_QUERIES,
    GENERATOR,
    PARSER,
    QUERIES,
    TOKENS,
    index_durable,
)

ROOT = Path(__file__).resolve().parent.parent
LICENSES = Path("/usr/share/common-licenses")
DEFAULT_DOCS = ("Apache-2.0", "MPL-2.0", "GPL-3", "BSD", "Artistic")
WARMUP_QUESTION = "What is this license about?"
QUESTIONS = (
    "What does the Apache License say about the grant of patent rights by contributors?",
    "Under the GNU GPL version 3, what must I provide when I convey object code?",
    "What warranty does the BSD license give?",
    "Under the Mozilla Public License 2.0, what happens to my rights if I fail to comply?",
    "How does the Mozilla Public License define the Source Code Form?",
    "May I distribute a modified version of the Standard Version under the Artistic License?",
    "What conditions apply to redistribution in binary form under the BSD license?",
    "What does the GPL say about installation information for User Products?",
    "What counts as a Contribution under the Apache License 2.0?",
    "Do I have to include the NOTICE file when I redistribute Apache-licensed software?",
    "What happens to my Apache patent license if I start patent litigation?",
    "What is the Corresponding Source of a work under the GPL version 3?",
)

err = Console(stderr=True)


# ---- the system under test ----------------------------------------------------------------------------------
@dataclass
class ChatStack:
    """nats-server, PostgreSQL, llama.cpp, and the agents as processes (ragbus.stack); `stop()` takes it all
    down in order."""

    workdir: Path
    context_tokens: int
    max_tokens: int
    llm_threads: int | None = None
    source_tokens: int = 0  # RAGBUS_PROMPT_SOURCE_TOKENS of the generator
    servers: Servers | None = None
    agents: AgentStack | None = None

    @property
    def url(self) -> str:
        assert self.agents is not None
        return self.agents.url

    @property
    def nats(self) -> NatsServer:
        assert self.servers is not None
        return self.servers.nats

    @property
    def llama(self) -> LlamaServer:
        assert self.servers is not None and self.servers.llama is not None
        return self.servers.llama

    async def start(self, timeout: float = 300.0) -> None:
        self.servers = await Servers.start(self.workdir, llm=True, n_ctx=self.context_tokens,
                                           n_threads=self.llm_threads)
        self.agents = AgentStack.for_servers(
            self.servers, self.workdir / "logs", RAGBUS_LLM_CONTEXT_TOKENS=str(self.context_tokens),
            RAGBUS_MAX_ANSWER_TOKENS=str(self.max_tokens), RAGBUS_TEMPERATURE="0.0",
            RAGBUS_GENERATOR_ID="generator-1", RAGBUS_LOG_LEVEL="WARNING",
            RAGBUS_PROMPT_SOURCE_TOKENS=str(self.source_tokens))
        for name in ("projector", "parser", "embedder", "generator", "gateway"):
            self.agents.start(name)
        await self.agents.wait_ready({PARSER: 1, index_durable(DEFAULT_EMBEDDING_MODEL): 1, EMBEDDER_QUERIES: 1,
                                      GENERATOR: 1}, timeout)

    def check_alive(self) -> None:
        if self.agents is not None:
            self.agents.check_alive()

    def stop(self) -> None:
        """Agents in reverse start order (gateway first), then the servers. Idempotent."""
        if self.agents is not None:
            self.agents.stop_all()
        if self.servers is not None:
            self.servers.stop()


# ---- ingest --------------------------------------------------------------------------------------------------
async def ingest(client: httpx.AsyncClient, stack: ChatStack, names: list[str], timeout: float = 600.0) -> int:
    """Upload the license texts and wait until every one is indexed; returns the number of chunks."""
    doc_ids = []
    for name in names:
        data = (LICENSES / name).read_bytes()
        response = await client.post("/documents", files={"file": (f"{name}.txt", data, "text/plain")})
        if response.status_code != 202:
            raise RuntimeError(f"upload of {name} refused: {response.status_code} {response.text}")
        doc_ids.append(response.json()["doc_id"])
    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("indexing documents", total=len(doc_ids))
        while True:
            stack.check_alive()
            docs = [(await client.get(f"/documents/{d}")).json() for d in doc_ids]
            failed = [d for d in docs if d.get("status") == "failed"]
            if failed:
                raise RuntimeError(f"document(s) failed: {[(d['name'], d.get('error')) for d in failed]}")
            done = sum(d.get("status") == "indexed" for d in docs)
            progress.update(task, completed=done)
            if done == len(doc_ids):
                return sum(int(d.get("chunks") or 0) for d in docs)
            if time.monotonic() > deadline:
                raise RuntimeError(f"documents not indexed after {timeout:.0f} s: {docs}")
            await asyncio.sleep(0.3)


# ---- the two measurements ------------------------------------------------------------------------------------
@dataclass
class Stream:
    ttft_s: float  # request sent -> first content piece
    tokens: int
    stream_s: float  # first piece -> last piece
    text: str

    @property
    def rate(self) -> float | None:
        """Tokens after the first per second between the first and the last."""
        return (self.tokens - 1) / self.stream_s if self.tokens > 1 and self.stream_s > 0 else None


@dataclass
class SystemRun(Stream):
    query_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # from the done frame (generator + retrieval)
    sent_at: float = 0.0  # wall clock (time.time) of the ask frame, and of the first token frame: the stored
    first_at: float = 0.0  # events' JetStream timestamps (same machine, same clock) split the time between them
    hops: dict[str, float] = field(default_factory=dict)


async def ask_system(ws: Any, question: str, timeout: float) -> SystemRun:
    sent_at, first_at = time.time(), 0.0
    started = time.perf_counter()
    await ws.send(json.dumps({"type": "ask", "question": question}))
    first = last = None
    pieces: list[str] = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        now = time.perf_counter()
        kind = frame.get("type")
        if kind == "token":
            first_at = first_at or time.time()
            first = first if first is not None else now
            last = now
            pieces.append(frame["text"])
        elif kind == "done":
            if first is None or last is None:
                raise RuntimeError(f"answer without token frames: {frame}")
            return SystemRun(first - started, len(pieces), last - first, "".join(pieces).strip(),
                             query_id=frame["query_id"], timings=frame.get("timings") or {}, sent_at=sent_at,
                             first_at=first_at)
        elif kind == "error":
            raise RuntimeError(f"the system answered with an error: {frame.get('message')}")


async def ask_direct(llm: httpx.AsyncClient, model: str, messages: list[dict[str, str]], max_tokens: int) -> Stream:
    """The same request the generator sends (agents/generator/llm.py), read the same way."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "seed": 42,
            "stream": True}
    started = time.perf_counter()
    first = last = None
    pieces: list[str] = []
    async with llm.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code >= 400:
            raise RuntimeError(f"llama.cpp answered {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            choices = json.loads(data).get("choices") or [{}]
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
                pieces.append(piece)
    if first is None or last is None:
        raise RuntimeError("llama.cpp streamed no text")
    return Stream(first - started, len(pieces), last - first, "".join(pieces).strip())


@dataclass
class Prepared:
    messages: list[dict[str, str]]
    tokens: int
    passages: int


async def generator_prompt(js: Any, query_id: str, counter: TokenCounter, context_tokens: int,
                           max_tokens: int, attributor: Attributor | None, source_tokens: int) -> Prepared | None:
    """The prompt the generator built for this query, rebuilt from its context.built event (its passages cut to
    the sentences that answer, as the generator does with --source-tokens: the same model, deterministic)."""
    msg = await js.get_last_msg(QUERIES, f"context.built.{query_id}")
    event = ContextBuilt.model_validate_json(msg.data)
    if not event.passages:  # the generator answers NOT_COVERED without the LLM: nothing to compare
        return None
    passages = event.passages
    if attributor is not None and source_tokens > 0:
        passages, _ = await attributor.focus(event.standalone_question or event.question, passages, counter.count,
                                             source_tokens, event.embedding_model)
    prompt = build_prompt(event.question, passages, event.history, counter, context_tokens, max_tokens)
    return Prepared(prompt.messages, prompt.tokens, len(prompt.passages))


def stored_at(msg: Any) -> float:
    """When JetStream stored a message (wall clock, seconds)."""
    stamp = msg.time
    if isinstance(stamp, str):  # RFC 3339 with nanoseconds: datetime takes microseconds
        head, _, frac = stamp.rstrip("Z").partition(".")
        return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")
    return float(stamp.timestamp())


async def hops(js: Any, run: SystemRun) -> dict[str, float]:
    """Where the first token's time went, in ms, from JetStream's own timestamps of the stored events: the ask
    frame to query.asked stored (gateway), to context.built stored (embedder: delivery, embedding, search,
    publish), to the first answer.token stored (generator: delivery, prompt, LLM), to the token frame (relay)."""
    asked = stored_at(await js.get_last_msg(QUERIES, f"query.asked.{run.query_id}"))
    built = stored_at(await js.get_last_msg(QUERIES, f"context.built.{run.query_id}"))
    first = stored_at(await js.get_msg(TOKENS, seq=1, subject=f"answer.token.{run.query_id}", next=True))
    return {"gateway": (asked - run.sent_at) * 1000, "embedder": (built - asked) * 1000,
            "generator": (first - built) * 1000, "relay": (run.first_at - first) * 1000}


# ---- the run -------------------------------------------------------------------------------------------------
@dataclass
class Pair:
    question: str
    system: SystemRun
    direct: Stream
    prompt_tokens: int
    passages: int
    load1: float  # the machine's 1-minute load average when the pair finished


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def measure(args: argparse.Namespace, stack: ChatStack) -> dict[str, Any]:
    model = stack.llama.model
    counter = TokenCounter(str(stack.llama.model_path))
    attributor = None
    if args.source_tokens > 0:  # the generator's attribution model, to rebuild its focused prompts
        from agents.generator.app import load_attributor

        attributor = load_attributor(GeneratorSettings())
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.questions)]
    pairs: list[Pair] = []
    skipped: list[str] = []
    assert stack.servers is not None
    nc = await connect(stack.servers.settings(), "bench-chat")
    js = nc.jetstream()
    ws_url = stack.url.replace("http://", "ws://") + "/ws/chat"
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=60.0) as client:
            chunks = await ingest(client, stack, args.docs)
        async with (httpx.AsyncClient(base_url=stack.llama.url, timeout=httpx.Timeout(300.0, connect=5.0)) as llm,
                    ws_connect(ws_url, max_size=None) as ws):

            async def system(question: str) -> tuple[SystemRun, Prepared | None]:
                run = await ask_system(ws, question, args.timeout)
                run.hops = await hops(js, run)
                prepared = await generator_prompt(js, run.query_id, counter, args.context_tokens, args.max_tokens,
                                                  attributor, args.source_tokens)
                return run, prepared

            async def direct(prepared: Prepared) -> Stream:
                return await ask_direct(llm, model, prepared.messages, args.max_tokens)

            columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=err, transient=True) as progress:
                task = progress.add_task("warm-up", total=2 * len(questions) + 2)
                run, warm = await system(WARMUP_QUESTION)
                progress.advance(task)
                if warm is not None:
                    await direct(warm)
                progress.advance(task)
                progress.update(task, description="system / direct")
                # system(q1), system(q2), direct(q1), system(q3), direct(q2), ..., direct(qN)
                waiting: tuple[str, SystemRun, Prepared | None] | None = None
                for question in [*questions, None]:
                    current = None
                    if question is not None:
                        run, prepared = await system(question)
                        progress.advance(task)
                        current = (question, run, prepared)
                    if waiting is not None:
                        q, run, prepared = waiting
                        if prepared is None:
                            skipped.append(q)
                        else:
                            if current is None and len(questions) == 1 and warm is not None:
                                await direct(warm)  # (unmeasured) the LLM just saw this very prompt: flush its cache
                            pairs.append(Pair(q, run, await direct(prepared), prepared.tokens, prepared.passages,
                                              os.getloadavg()[0]))
                        progress.advance(task)
                    waiting = current
    finally:
        await nc.close()
    return summarize(args, stack, chunks, pairs, skipped)


def summarize(args: argparse.Namespace, stack: ChatStack, chunks: int, pairs: list[Pair],
              skipped: list[str]) -> dict[str, Any]:
    sys_ttft = [p.system.ttft_s * 1000 for p in pairs]
    dir_ttft = [p.direct.ttft_s * 1000 for p in pairs]
    sys_rate = [r for p in pairs if (r := p.system.rate) is not None]
    dir_rate = [r for p in pairs if (r := p.direct.rate) is not None]
    ttft_ratios = [s / d for s, d in zip(sys_ttft, dir_ttft, strict=True) if d > 0]
    # what the client waits for beyond the generator's own LLM call: gateway, NATS, retrieval, pulls, relay
    outside_llm = [p.system.ttft_s * 1000 - p.system.timings["ttft_ms"] for p in pairs if "ttft_ms" in p.system.timings]
    rate_ratios = [p.system.rate / p.direct.rate for p in pairs if p.system.rate and p.direct.rate]
    # the bound is "direct + 10 ms": the paired difference, at the client and inside the generator
    over_direct = [s - d for s, d in zip(sys_ttft, dir_ttft, strict=True)]
    generator_over_direct = [p.system.timings["ttft_ms"] - p.direct.ttft_s * 1000 for p in pairs
                             if "ttft_ms" in p.system.timings]

    def stat(values: list[float]) -> dict[str, float | None]:
        return {"p50": pct(values, 50), "p90": pct(values, 90)}

    def timing(key: str) -> float | None:
        return pct([p.system.timings[key] for p in pairs if key in p.system.timings], 50)

    p50 = {k: v["p50"] for k, v in {"st": stat(sys_ttft), "dt": stat(dir_ttft), "sr": stat(sys_rate),
                                     "dr": stat(dir_rate)}.items()}
    return {
        "benchmark": "chat",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "settings": {"questions": len(pairs), "skipped_no_passages": skipped, "documents": args.docs,
                     "chunks": chunks, "max_tokens": args.max_tokens, "context_tokens": args.context_tokens,
                     "llm_threads": args.llm_threads or "llama-cpp-python default"},
        "ttft_ms": {"system_ws": stat(sys_ttft), "direct": stat(dir_ttft)},
        "tokens_per_s": {"system_ws": stat(sys_rate), "direct": stat(dir_rate)},
        "ratios": {
            "ttft_system_over_direct_p50": p50["st"] / p50["dt"] if p50["st"] and p50["dt"] else None,
            "ttft_system_over_direct_median_paired": pct(ttft_ratios, 50),
            "rate_system_over_direct_p50": p50["sr"] / p50["dr"] if p50["sr"] and p50["dr"] else None,
            "rate_system_over_direct_median_paired": pct(rate_ratios, 50),
        },
        "system_ttft_outside_llm_ms": stat(outside_llm),
        "ttft_over_direct_ms": {"system_ws": stat(over_direct), "generator": stat(generator_over_direct)},
        "system_breakdown_p50_ms": {
            "retrieval_embed": timing("embed_ms"), "retrieval_search": timing("search_ms"),
            "generator_ttft": timing("ttft_ms"), "generator_prompt": timing("prompt_ms"),
        },
        # per question, then the median of each: the parts need not add up to the median of the whole
        "hops_p50_ms": {
            "gateway": pct([p.system.hops["gateway"] for p in pairs if p.system.hops], 50),
            "embedder": pct([p.system.hops["embedder"] for p in pairs if p.system.hops], 50),
            "embedder_outside_retrieval": pct([p.system.hops["embedder"] - p.system.timings["embed_ms"]
                                               - p.system.timings["search_ms"] for p in pairs
                                               if p.system.hops and "search_ms" in p.system.timings], 50),
            "generator_before_its_ttft": pct([p.system.hops["generator"] - p.system.timings["ttft_ms"] for p in pairs
                                              if p.system.hops and "ttft_ms" in p.system.timings], 50),
            "relay": pct([p.system.hops["relay"] for p in pairs if p.system.hops], 50),
        },
        # the generator's sentence attribution after the last token (timings.attribution_ms of answer.done)
        "attribution_ms": {**stat([p.system.timings["attribution_ms"] for p in pairs
                                   if "attribution_ms" in p.system.timings]),
                           "generate_p50": timing("generate_ms")},
        "source_tokens": args.source_tokens,
        "tokens": {"system_mean": float(np.mean([p.system.tokens for p in pairs])) if pairs else None,
                   "direct_mean": float(np.mean([p.direct.tokens for p in pairs])) if pairs else None,
                   "prompt_mean": float(np.mean([p.prompt_tokens for p in pairs])) if pairs else None,
                   "prompt_per_s_p50": pct([p.prompt_tokens / p.direct.ttft_s for p in pairs if p.direct.ttft_s], 50)},
        "load1_during": {"min": min((p.load1 for p in pairs), default=None),
                         "max": max((p.load1 for p in pairs), default=None)},
        "checks": {
            "same_prompt_tokens": sum(p.system.timings.get("prompt_tokens") == p.prompt_tokens for p in pairs),
            "same_answer_text": sum(p.system.text == p.direct.text for p in pairs),
            "pairs": len(pairs),
        },
        "per_question": [
            {"question": p.question, "query_id": p.system.query_id, "passages": p.passages,
             "prompt_tokens": p.prompt_tokens, "system_ttft_ms": p.system.ttft_s * 1000,
             "direct_ttft_ms": p.direct.ttft_s * 1000,
             # the first token waits for the whole prompt: its evaluation rate, as seen from outside
             "prompt_tokens_per_s": p.prompt_tokens / p.direct.ttft_s if p.direct.ttft_s else None,
             "system_tokens": p.system.tokens,
             "direct_tokens": p.direct.tokens, "system_tok_s": p.system.rate, "direct_tok_s": p.direct.rate,
             "system_timings": p.system.timings, "hops_ms": p.system.hops, "load1": p.load1}
            for p in pairs
        ],
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


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "n/a" if value is None else format(value, spec)


def report(result: dict[str, Any], console: Console) -> None:
    s, m = result["settings"], result["machine"]
    console.print(f"[bold]ragbus chat benchmark[/] {result['date']} - {m['nproc']} cores, {m['cpu']}, "
                  f"load average at end {m['loadavg_at_end']}")
    console.print(f"{s['questions']} questions over {len(s['documents'])} documents ({s['chunks']} chunks), "
                  f"max_tokens {s['max_tokens']}, context {s['context_tokens']} tokens, SmolLM2-135M Q4_1 "
                  f"(llama.cpp threads: {s['llm_threads']}); one generator")
    table = Table(title="answer streaming: websocket client vs llama.cpp direct, same prompts, same run")
    for col in ("", "system (ws) p50", "system p90", "direct p50", "direct p90", "ratio p50", "paired median"):
        table.add_column(col, justify="right")
    t, r, x = result["ttft_ms"], result["tokens_per_s"], result["ratios"]
    table.add_row("time to first token (ms)", fmt(t["system_ws"]["p50"]), fmt(t["system_ws"]["p90"]),
                  fmt(t["direct"]["p50"]), fmt(t["direct"]["p90"]),
                  fmt(x["ttft_system_over_direct_p50"], ".2f") + "x",
                  fmt(x["ttft_system_over_direct_median_paired"], ".2f") + "x")
    table.add_row("token rate (tokens/s)", fmt(r["system_ws"]["p50"], ".1f"), fmt(r["system_ws"]["p90"], ".1f"),
                  fmt(r["direct"]["p50"], ".1f"), fmt(r["direct"]["p90"], ".1f"),
                  fmt(x["rate_system_over_direct_p50"], ".2f") + "x",
                  fmt(x["rate_system_over_direct_median_paired"], ".2f") + "x")
    console.print(table)
    d = result["ttft_over_direct_ms"]
    console.print(f"TTFT over direct, paired per question: at the websocket p50 {fmt(d['system_ws']['p50'], '.1f')} ms "
                  f"(p90 {fmt(d['system_ws']['p90'], '.1f')}); inside the generator (its own TTFT - direct) p50 "
                  f"{fmt(d['generator']['p50'], '.1f')} ms (p90 {fmt(d['generator']['p90'], '.1f')}), of which the cut "
                  f"and the prompt p50 {fmt(result['system_breakdown_p50_ms']['generator_prompt'], '.1f')} ms")
    b, tk, c = result["system_breakdown_p50_ms"], result["tokens"], result["checks"]
    o = result["system_ttft_outside_llm_ms"]
    console.print(f"system TTFT outside the generator's LLM call (client TTFT - generator's own TTFT, per question): "
                  f"p50 {fmt(o['p50'])} ms, p90 {fmt(o['p90'])} ms; of which (p50) query embedding "
                  f"{fmt(b['retrieval_embed'])} ms and hybrid search {fmt(b['retrieval_search'])} ms; the rest is "
                  f"gateway, NATS hops, durable pull fetches and the token relay. Generator's own TTFT p50 "
                  f"{fmt(b['generator_ttft'])} ms (build_prompt + LLM).")
    h = result.get("hops_p50_ms") or {}
    if h.get("gateway") is not None:
        console.print(f"where that goes (p50 per hop, from the stored events' JetStream timestamps): gateway to "
                      f"query.asked stored {fmt(h['gateway'], '.1f')} ms; embedder to context.built stored "
                      f"{fmt(h['embedder'], '.1f')} ms ({fmt(h['embedder_outside_retrieval'], '.1f')} of it outside "
                      f"embedding and search: delivery, decoding, publishing); generator before its own TTFT "
                      f"starts {fmt(h['generator_before_its_ttft'], '.1f')} ms (delivery, decoding, cancel "
                      f"subscription) plus the first token's publish; first token stored to the websocket frame "
                      f"{fmt(h['relay'], '.1f')} ms")
    a = result.get("attribution_ms") or {}
    if a.get("p50") is not None:
        console.print(f"sentence attribution after the last token (generator, per answer): p50 {fmt(a['p50'])} ms, "
                      f"p90 {fmt(a['p90'])} ms, against a whole generation of {fmt(a['generate_p50'])} ms (p50)")
    console.print(f"tokens per answer (mean): system {fmt(tk['system_mean'], '.0f')}, direct "
                  f"{fmt(tk['direct_mean'], '.0f')}; prompt tokens (mean) {fmt(tk['prompt_mean'], '.0f')}, "
                  f"evaluated at {fmt(tk['prompt_per_s_p50'], '.0f')} tokens/s (p50, prompt tokens / direct TTFT); "
                  f"sources cut to {result['source_tokens'] or 'whole passages'}"
                  + (" tokens" if result["source_tokens"] else ""))
    console.print(f"checks: rebuilt prompt has the generator's token count in {c['same_prompt_tokens']}/{c['pairs']}, "
                  f"identical answer text in {c['same_answer_text']}/{c['pairs']}")
    ld = result["load1_during"]
    console.print(f"1-minute load average during the measurements: {fmt(ld['min'], '.1f')} to {fmt(ld['max'], '.1f')} "
                  f"on {m['nproc']} cores (the paired median and the overhead outside the LLM call are the figures "
                  "that resist drift)")
    if s["skipped_no_passages"]:
        console.print(f"[yellow]skipped (no passages retrieved, no LLM call): {s['skipped_no_passages']}[/]")


# ---- main ----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/chat.py",
        description="Answer streaming through ragbus (websocket /ws/chat: time to first token and token rate at "
        "the client) against the same prompts streamed directly from the llama.cpp server, in the same run. "
        "Starts nats-server, PostgreSQL, llama.cpp (SmolLM2) and every agent itself, on free ports in a "
        "temporary directory, and stops them on exit, Ctrl-C or error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--questions", type=int, default=10, help="measured questions (each: system + direct)")
    parser.add_argument("--docs", nargs="+", default=list(DEFAULT_DOCS), metavar="NAME",
                        help=f"license texts from {LICENSES} to ingest")
    parser.add_argument("--max-tokens", type=int, default=256,
                        help="max answer tokens (RAGBUS_MAX_ANSWER_TOKENS, and max_tokens of the direct calls)")
    parser.add_argument("--context-tokens", type=int, default=2048,
                        help="the LLM's context window (llama.cpp n_ctx and RAGBUS_LLM_CONTEXT_TOKENS)")
    parser.add_argument("--llm-threads", type=int, default=None,
                        help="llama.cpp n_threads (default: llama-cpp-python's own choice, as `ragbus up`)")
    parser.add_argument("--source-tokens", type=int, default=GeneratorSettings().prompt_source_tokens,
                        help="RAGBUS_PROMPT_SOURCE_TOKENS: the prompt's passages cut to their sentences that answer "
                        "the question, to this many tokens (0: whole passages)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for any websocket frame")
    parser.add_argument("--workdir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, data) afterwards; it is always kept after an error")
    parser.add_argument("--json", action="store_true",
                        help="print the results as JSON on stdout (the report then goes to stderr)")
    args = parser.parse_args(argv)
    for name in args.docs:
        if not (LICENSES / name).is_file():
            parser.error(f"{LICENSES / name} does not exist")
    if args.questions < 1:
        parser.error("--questions must be at least 1")
    return args


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ragbus-bench-chat-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = ChatStack(workdir, args.context_tokens, args.max_tokens, args.llm_threads, args.source_tokens)
    keep = args.keep
    try:
        with err.status("starting nats-server, PostgreSQL, llama.cpp and the agents..."):
            asyncio.run(stack.start())
        result = asyncio.run(measure(args, stack))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: stopping everything[/]")
        return 130
    except Exception as exc:  # noqa: BLE001 - any failure: say what it was, keep the logs, stop everything
        err.print(f"[red]failed:[/] {exc!r}")
        keep = True
        return 1
    finally:
        with err.status("stopping..."):
            stack.stop()
        if keep:
            err.print(f"work directory kept: {workdir}")
        elif args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:  # JSON on stdout, the report on stderr
        print(json.dumps(result, indent=2))
    report(result, Console(width=140, stderr=args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
