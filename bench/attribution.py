"""Sentence attribution and answer modes on our own evaluation set (bench/eval: Debian and Git docs).

For each question: the real retrieval (HybridSearch over the eval corpus, as POST /search, via the eval
harness), the generator's own prompt (build_prompt) streamed from SmolLM2 through the real llama.cpp server
(ragbus.servers.LlamaServer), once plain and once with constrained citing (the GBNF grammar), then the
generator's own `decide` (attribution, extractive, auto) with the generator's attribution model. Like the
generator, generation stops when the model loops (RepetitionGuard); "unguarded" shows the same without.
"generative" shows the passages whole, "focused" cut to their sentences that answer the question, as the
generator does by default (RAGBUS_PROMPT_SOURCE_TOKENS). Reports:

- sentences attributed to the right passage: a sentence that copies a run of >= COPY_RUN words from exactly
  one passage has that passage as its known source (the copy is the ground truth, independent of the scores);
- answers whose top citation is the gold passage (the eval's answer passage), against today's fallback
  (the [n] markers, else every passage: its first);
- sentences flagged unsupported; attribution ms per answer (the model loaded, timed in this process);
- per answer mode (generative, generative + constrained citing, extractive, auto) the share of answers that
  contain the gold passage's key facts (the eval's `answer_contains`: verbatim, and >= 70 % of its words);
- the threshold: swept on the dev half (copied sentences as positives, sentences of answers about another
  document as negatives), reported on the test half.

Generated answers are cached (--cache) by prompt, so a rerun for the attribution figures needs no LLM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "eval" / "experiments")]

import harness  # noqa: E402  (bench/eval/experiments/harness.py: corpus, embeddings, real HybridSearch)
import score  # noqa: E402  (bench/eval/score.py)

from agents.generator.attribution import (  # noqa: E402
    Attribution,
    AttributionConfig,
    Attributor,
    attribute,
    content_words,
    gather_evidence,
)
from agents.generator.handlers import decide  # noqa: E402
from agents.generator.repetition import RepetitionGuard  # noqa: E402
from agents.generator.service import build_prompt, citations_for, citing_grammar  # noqa: E402
from streams.events import ContextBuilt, Passage  # noqa: E402

COPY_RUN = 6  # consecutive words copied from one passage: that passage is the sentence's known source
CACHE = harness.CACHE / "attribution-answers.json"
err = Console(stderr=True)


def pick(questions: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """n questions spread evenly over the set (it is ordered by document), the same every run."""
    if n >= len(questions):
        return questions
    step = len(questions) / n
    return [questions[int(i * step)] for i in range(n)]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def longest_run(a: list[str], b: list[str]) -> int:
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def copied_from(sentence: str, passages: list[Passage]) -> int | None:
    """The one passage this sentence copies >= COPY_RUN consecutive words from (None: none, or a tie)."""
    runs = sorted(((longest_run(words(sentence), words(p.text)), p.n) for p in passages), reverse=True)
    if not runs or runs[0][0] < COPY_RUN or (len(runs) > 1 and runs[1][0] == runs[0][0]):
        return None
    return runs[0][1]


def top_citation(attribution: Attribution) -> int | None:
    """The passage most sentences cite (ties: the higher summed support, then the lower n)."""
    counts: dict[int, list[float]] = {}
    for c in attribution.citations:
        counts.setdefault(c.n, []).append(c.score)
    if not counts:
        return None
    return min(counts, key=lambda n: (-len(counts[n]), -sum(counts[n]), n))


def key_facts(answer: str, question: dict[str, Any]) -> tuple[bool, bool]:
    """(the answer contains the gold phrase verbatim, it contains >= 70 % of the phrase's content words)."""
    exact = score.normalise(question["answer_contains"]) in score.normalise(answer)
    wanted = set(content_words(question["answer_contains"]))
    have = set(content_words(answer))
    return exact, bool(wanted) and len(wanted & have) / len(wanted) >= 0.7


class CachedEncode:
    """The attribution model with a cache by text: sweeps re-score the same sentences without re-embedding."""

    def __init__(self, encode: Any) -> None:
        self.encode, self.memo = encode, {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if missing:
            self.memo.update(zip(missing, self.encode(missing), strict=True))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


async def retrieve(questions: list[dict[str, Any]], models_dir: Path) -> tuple[list[list[Passage]], Any]:
    db = harness.Database()
    await db.start()
    state = await harness.prepare(harness.QSETS["eval"][0], questions, "all-MiniLM-L6-v2",
                                  models_dir, "structure", 200, 40, "text", db)
    out = []
    for i, q in enumerate(questions):
        found = await db.system_search(state.Q[i], q["question"], state.model_table, top_k=score.TOP_K)
        out.append([Passage(**p) for p in found])
    return out, db


# The "penalized" variant's llama.cpp repeat_penalty (1.0: off): does it stop runaway answers? Measured on 40
# questions: no, 1.3 cut 23/40 answers at 384 tokens against 9/40 without it, so the generator does not use it.
PENALIZED = 1.3
FOCUS_TOKENS = 320  # the generator's default RAGBUS_PROMPT_SOURCE_TOKENS (a test keeps the two equal)
UNGUARDED = {"unguarded", "penalized"}  # generated without the generator's RepetitionGuard
CACHE_NAMES = {"unguarded": "generative"}


def late_scored(question: str, passages: list[Passage], model_name: str, models_dir: Path) -> list[Passage]:
    """The passages with each sentence's cosine to the question as retrieval sends them from an index of
    `model_name`: sentence vectors pooled from the passage's own forward pass (the embedder's
    `embed_with_sentences`, as at ingest)."""
    from agents.embedder.service import Embedder

    if model_name not in _EMBEDDERS:
        _EMBEDDERS[model_name] = Embedder.load(model_name, "", models_dir)
    embedder = _EMBEDDERS[model_name]
    q = embedder.embed([question])[0]
    _, sentences = embedder.embed_with_sentences([p.text for p in passages])
    return [p.model_copy(update={"sentences": s.scored(q)}) for p, s in zip(passages, sentences, strict=True)]


_EMBEDDERS: dict[str, Any] = {}  # one model load for every question


async def generate(questions: list[dict[str, Any]], passages: list[list[Passage]], variants: list[str],
                   max_tokens: int, cache: dict[str, Any], attributor: Attributor,
                   source_tokens: int, models_dir: Path) -> dict[str, list[dict[str, Any]]]:
    from agents.generator.llm import ChatClient
    from agents.generator.tokens import TokenCounter
    from ragbus.servers import LlamaServer
    from ragbus.servers.llm import find_smollm2_gguf

    tokens = TokenCounter(str(find_smollm2_gguf()))
    prompts: dict[str, list[Any]] = {}
    for v in variants:
        prompts[v] = []
        for q, ps in zip(questions, passages, strict=True):
            if v == "focused" and ps:  # as the generator did with RAGBUS_PROMPT_SOURCE_TOKENS before sentence scores
                ps, _ = await attributor.focus(q["question"], ps, tokens.count, source_tokens)
            elif v in ("focused-late", "focused-late-qlast") and ps:  # as it does now: cut by retrieval's scores
                ps, _ = await attributor.focus(q["question"], late_scored(q["question"], ps, attributor.model,
                                                                          models_dir),
                                               tokens.count, source_tokens, attributor.model)
            prompts[v].append(build_prompt(q["question"], ps, [], tokens, 2048, max_tokens,
                                           question_first=v != "focused-late-qlast"))
    # "unguarded" is the plain prompt without the generator's loop stop: its answers are cached under the name
    # "generative" had before the guard (RepetitionGuard) existed, so they are not generated again
    names = {v: CACHE_NAMES.get(v) or (v if v in UNGUARDED else f"{v}+guard") for v in variants}
    names["focused"] = f"focused:{source_tokens}+guard"
    names["focused-late"] = f"focused-late:{source_tokens}+guard"
    names["focused-late-qlast"] = f"focused-late-qlast:{source_tokens}+guard"
    keys = {v: [hashlib.sha1(json.dumps([names[v], max_tokens, p.messages]).encode()).hexdigest()
                for p in prompts[v]] for v in variants}
    # answers cached before time to first token was recorded are generated again where it is compared
    todo = [(v, i) for v in variants for i in range(len(questions)) if passages[i] and (
        keys[v][i] not in cache or (v not in UNGUARDED and "ttft" not in cache[keys[v][i]]))]
    if todo:
        server = LlamaServer(n_ctx=2048)
        with err.status("starting llama.cpp (SmolLM2-135M)..."):
            await asyncio.to_thread(server.start)
        llm = ChatClient(server.url, server.model, timeout=300.0)
        try:
            for k, (v, i) in enumerate(todo):
                prompt = prompts[v][i]
                grammar = citing_grammar([p.n for p in prompt.passages]) if v == "constrained" else None
                penalty = PENALIZED if v == "penalized" else 1.0
                finish: list[str] = []
                guard = RepetitionGuard()
                started = time.perf_counter()
                pieces: list[str] = []
                # as the generator streams: a loop stops the LLM, the answer keeps what came before it
                stream = llm.stream(prompt.messages, max_tokens, 0.0, grammar, finish, repeat_penalty=penalty)
                ttft = None
                async with contextlib.aclosing(stream):
                    async for piece in stream:
                        ttft = ttft or time.perf_counter() - started
                        pieces.append(piece)
                        if v not in UNGUARDED and guard.feed(piece):
                            finish.append("repetition")
                            break
                cache[keys[v][i]] = {"text": guard.kept() if guard.looping else "".join(pieces).strip(),
                                     "streamed": "".join(pieces).strip(), "tokens": len(pieces),
                                     "finish": finish[-1] if finish else "", "s": time.perf_counter() - started,
                                     "ttft": ttft, "prompt_tokens": prompt.tokens}
                err.print(f"[dim]{k + 1}/{len(todo)} {v} {questions[i]['id']}: {len(pieces)} tokens, "
                          f"{cache[keys[v][i]]['finish']}[/]")
        finally:
            await llm.close()
            await asyncio.to_thread(server.stop)
    return {v: [cache.get(keys[v][i]) or {"text": "", "tokens": 0, "finish": "", "s": 0.0}
                for i in range(len(questions))] for v in variants}


def sweep(rows: list[dict[str, Any]], encode: CachedEncode, half: str) -> dict[str, Any]:
    """Threshold x dense weight on one half: copied sentences (positives) and sentences of an answer about
    another document (negatives), scored against this question's passages."""
    results = []
    for dense in (0.4, 0.5, 0.6, 0.7, 0.8):
        for threshold in np.round(np.arange(0.30, 0.81, 0.025), 3):
            config = AttributionConfig(threshold=float(threshold), dense_weight=dense, lexical_weight=1 - dense)
            tp = fn = tn = fp = right = 0
            for r in rows:
                if r["half"] != half:
                    continue
                a = attribute(r["text"], r["evidence"], encode, config)
                for s in a.sentences:
                    label = copied_from(s.text, r["passages"])
                    if label is not None:
                        tp += s.supported
                        fn += not s.supported
                        right += s.supported and s.best == label
                for s in attribute(r["foreign"], r["evidence"], encode, config).sentences if r["foreign"] else []:
                    fp += s.supported
                    tn += not s.supported
            tpr, tnr = tp / max(tp + fn, 1), tn / max(tn + fp, 1)
            results.append({"dense": dense, "threshold": float(threshold), "tpr": tpr, "tnr": tnr,
                            "balanced": (tpr + tnr) / 2, "positives": tp + fn, "negatives": tn + fp,
                            "right": right / max(tp + fn, 1)})
    return {"best": max(results, key=lambda x: (round(x["balanced"], 3), x["right"])), "all": results}


async def evaluate(questions: list[dict[str, Any]], passages: list[list[Passage]],
                   answers: dict[str, list[dict[str, Any]]], attributor: Attributor, encode: CachedEncode,
                   max_tokens: int) -> dict[str, Any]:
    n = len(questions)
    gold = [next((p.n for p in ps if score.is_hit(q, {"doc": p.name, "text": p.text})), None)
            for q, ps in zip(questions, passages, strict=True)]
    result: dict[str, Any] = {"questions": n, "gold_retrieved": sum(g is not None for g in gold), "variants": {}}
    rows: list[dict[str, Any]] = []
    for variant, generated in answers.items():
        stats: dict[str, Any] = {"sentences": 0, "labelled": 0, "labelled_right": 0, "labelled_cited": 0,
                                 "unsupported": 0, "top_gold": 0, "fallback_gold": 0, "with_markers": 0,
                                 "marker_gold": 0, "corrected": 0, "markers": 0, "cut": 0, "over_256": 0,
                                 "no_support": 0, "ms": [], "facts": {}, "auto_extractive": 0,
                                 "repeating": 0, "tokens": [], "seconds": [], "ttft": [], "prompt_tokens": []}
        facts: dict[str, list[tuple[bool, bool]]] = {"generative": [], "extractive": [], "auto": []}
        for i, q in enumerate(questions):
            ps, gen = passages[i], generated[i]
            text = gen["text"]
            stats["cut"] += gen["finish"] == "length"
            stats["repeating"] += gen["finish"] == "repetition"
            stats["tokens"].append(gen["tokens"])
            stats["seconds"].append(gen["s"])
            if gen.get("ttft") is not None:
                stats["ttft"].append(gen["ttft"])
                stats["prompt_tokens"].append(gen["prompt_tokens"])
            stats["over_256"] += gen["tokens"] >= 256
            event = ContextBuilt(event_id=f"bench:{i}", query_id=f"bench-{i}", question=q["question"], passages=ps,
                                 embedding_model="bench")
            # timed as the generator runs it: embedding (uncached model) included
            decided = await decide(event, text, ps, "generative", False, attributor, None)
            stats["ms"].append(decided.ms)
            a = decided.attribution
            stats["sentences"] += len(a.sentences)
            stats["unsupported"] += sum(not s.supported for s in a.sentences)
            stats["no_support"] += bool(a.sentences) and not a.supported
            for s in a.sentences:
                label = copied_from(s.text, ps)
                if label is not None:
                    stats["labelled"] += 1
                    stats["labelled_right"] += s.supported and s.best == label
                    stats["labelled_cited"] += label in s.citations
                stats["markers"] += bool(s.markers)
                stats["corrected"] += s.corrected
            fallback = citations_for(text, ps) if ps and text else []
            stats["with_markers"] += bool(re.search(r"\[\d+\]", text))
            if gold[i] is not None:
                stats["top_gold"] += top_citation(a) == gold[i]
                stats["fallback_gold"] += bool(fallback) and fallback[0].n == gold[i]
            facts["generative"].append(key_facts(text, q))
            evidence = gather_evidence(ps, encode)
            ex = (await attributor.extract(q["question"], evidence)).answer if ps else ""
            facts["extractive"].append(key_facts(ex, q))
            auto = await decide(event, text, ps, "auto", False, attributor, evidence)
            stats["auto_extractive"] += auto.mode == "extractive"
            facts["auto"].append(key_facts(auto.text, q))
            if variant == "generative":
                foreign = generated[(i + n // 2) % n]["text"] if questions[(i + n // 2) % n]["doc"] != q["doc"] else ""
                rows.append({"half": "dev" if i % 2 == 0 else "test", "text": text, "foreign": foreign,
                             "passages": ps, "evidence": evidence})
        stats["facts"] = {m: {"exact": sum(e for e, _ in f) / n, "words70": sum(w for _, w in f) / n}
                          for m, f in facts.items()}
        stats["tokens"] = statistics.mean(stats["tokens"])
        stats["seconds"] = statistics.mean(stats["seconds"])
        ttft, prompt = stats.pop("ttft"), stats.pop("prompt_tokens")
        stats["ttft_s"] = {"p50": statistics.median(ttft), "mean": statistics.mean(ttft)} if ttft else None
        stats["prompt_tokens"] = statistics.mean(prompt) if prompt else None
        ms = stats.pop("ms")
        stats["attribution_ms"] = {"mean": statistics.mean(ms), "p50": statistics.median(ms),
                                   "p95": sorted(ms)[int(0.95 * (len(ms) - 1))]}
        result["variants"][variant] = stats
    if rows:
        best = sweep(rows, encode, "dev")["best"]
        on_test = sweep(rows, encode, "test")["all"]
        test = next(r for r in on_test if r["dense"] == best["dense"] and r["threshold"] == best["threshold"])
        configured = [r for r in on_test if r["dense"] == attributor.config.dense_weight
                      and abs(r["threshold"] - attributor.config.threshold) < 1e-9]
        result["tuning"] = {"dev_best": best, "test_at_dev_best": test,
                            "test_at_configured": configured[0] if configured else None}
    result["max_tokens"] = max_tokens
    return result


def report(result: dict[str, Any], console: Console) -> None:
    n, g = result["questions"], result["gold_retrieved"]
    console.print(f"[bold]ragbus attribution benchmark[/] {result['date']}: {n} questions of bench/eval "
                  f"(gold passage retrieved in the top 5 for {g}), SmolLM2-135M via llama.cpp, max_tokens "
                  f"{result['max_tokens']}, attribution model {result['attribution_model']} "
                  f"(threshold {result['threshold']}, dense weight {result['dense_weight']})")
    table = Table(title="attribution of generated answers")
    table.add_column("")
    for v in result["variants"]:
        table.add_column(v, justify="right")

    def row(label: str, fn: Any) -> None:
        table.add_row(label, *[fn(s) for s in result["variants"].values()])

    def share(a: int, b: int) -> str:
        return f"{a / b:.3f} ({a}/{b})" if b else "n/a"

    row("sentences", lambda s: str(s["sentences"]))
    row("copied sentences attributed to their source", lambda s: share(s["labelled_right"], s["labelled"]))
    row("answers: top citation = gold passage", lambda s: share(s["top_gold"], g))
    row("answers: today's fallback first citation = gold", lambda s: share(s["fallback_gold"], g))
    row("sentences flagged unsupported", lambda s: share(s["unsupported"], s["sentences"]))
    row("answers with no supported sentence", lambda s: share(s["no_support"], n))
    row("answers with \\[n] markers", lambda s: share(s["with_markers"], n))
    row("sentences with a marker corrected", lambda s: share(s["corrected"], s["markers"]))
    row("answers stopped: the model repeating itself", lambda s: share(s["repeating"], n))
    row("answers cut at max_tokens", lambda s: share(s["cut"], n))
    row("tokens generated per answer, mean", lambda s: f"{s['tokens']:.0f}")
    row("generation s per answer, mean", lambda s: f"{s['seconds']:.2f}")
    row("prompt tokens, mean", lambda s: f"{s['prompt_tokens']:.0f}" if s["prompt_tokens"] else "n/a")
    row("first token s (llama.cpp direct), p50 | mean",
        lambda s: f"{s['ttft_s']['p50']:.2f} | {s['ttft_s']['mean']:.2f}" if s["ttft_s"] else "n/a")
    row("answers of >= 256 tokens", lambda s: share(s["over_256"], n))
    row("attribution ms/answer mean | p50 | p95",
        lambda s: " | ".join(f"{s['attribution_ms'][k]:.0f}" for k in ("mean", "p50", "p95")))
    row("auto chose extractive", lambda s: share(s["auto_extractive"], n))
    console.print(table)
    facts = Table(title="answers containing the gold passage's key facts (verbatim | >= 70 % of its words)")
    facts.add_column("answer mode")
    facts.add_column("", justify="right")
    for v, s in result["variants"].items():
        f = s["facts"]
        label = {"generative": "generative", "constrained": "generative, constrained citing",
                 "unguarded": "generative, no loop stop",
                 "focused": f"generative, sources cut to {result['source_tokens']} tokens",
                 "focused-late": f"generative, cut to {result['source_tokens']} tokens by retrieval's sentence "
                                 "scores",
                 "focused-late-qlast": "the same, the question after the sources (the layout before)"}.get(
            v, f"generative, repeat penalty {PENALIZED}")
        facts.add_row(label, f"{f['generative']['exact']:.3f} | {f['generative']['words70']:.3f}")
        facts.add_row(f"auto (on {label})", f"{f['auto']['exact']:.3f} | {f['auto']['words70']:.3f}")
    f = next(iter(result["variants"].values()))["facts"]["extractive"]
    facts.add_row("extractive (no LLM)", f"{f['exact']:.3f} | {f['words70']:.3f}")
    console.print(facts)
    t = result.get("tuning")
    if t:
        b, x, c = t["dev_best"], t["test_at_dev_best"], t["test_at_configured"]
        console.print(f"threshold sweep (dev half): best dense weight {b['dense']}, threshold {b['threshold']}: "
                      f"supported copied sentences {b['tpr']:.3f}, unsupported foreign sentences {b['tnr']:.3f} "
                      f"({b['positives']} / {b['negatives']}); on the test half {x['tpr']:.3f} / {x['tnr']:.3f}"
                      + (f"; configured ({c['dense']}, {c['threshold']}) on test {c['tpr']:.3f} / {c['tnr']:.3f}"
                         if c else ""))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/attribution.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--questions", type=int, default=60, help="questions of bench/eval, spread over the set")
    parser.add_argument("--max-tokens", type=int, default=384, help="max answer tokens (RAGBUS_MAX_ANSWER_TOKENS)")
    parser.add_argument("--variants", default="generative,unguarded,constrained",
                        help="generation variants: generative (plain prompt, stopped when it loops, as the "
                        "generator does), unguarded (the same without the loop stop), constrained (citing "
                        "grammar, loop stop), penalized (plain prompt, llama.cpp repeat_penalty, no loop stop), "
                        "focused (generative with the passages cut to --source-tokens, sentences embedded alone), "
                        "focused-late (the same cut by sentence scores as retrieval sends them: what the generator "
                        "does now), focused-late-qlast (the same with the question after the sources, the "
                        "layout before)")
    parser.add_argument("--source-tokens", type=int, default=FOCUS_TOKENS,
                        help="the focused variant's RAGBUS_PROMPT_SOURCE_TOKENS: passages cut to their sentences "
                        "that answer the question, to this many tokens")
    parser.add_argument("--threshold", type=float, default=None, help="attribution threshold (default: the setting)")
    parser.add_argument("--dense-weight", type=float, default=None, help="weight of the embedding similarity")
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("RAGBUS_MODELS_DIR",
                                                                               "~/.ragbus/models")).expanduser())
    parser.add_argument("--cache", type=Path, default=CACHE, help="generated answers, by prompt")
    parser.add_argument("--json", action="store_true", help="results as JSON on stdout (report on stderr)")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from agents.generator.app import load_attributor
    from agents.generator.settings import GeneratorSettings

    questions = pick(harness.load_questions("eval", None), args.questions)
    with err.status("parsing, embedding and loading the eval corpus (real HybridSearch)..."):
        passages, db = await retrieve(questions, args.models_dir)
    await db.stop()
    settings = GeneratorSettings(models_dir=args.models_dir)
    attributor = load_attributor(settings)
    config = attributor.config
    if args.threshold is not None:
        config = replace(config, threshold=args.threshold)
    if args.dense_weight is not None:
        config = replace(config, dense_weight=args.dense_weight, lexical_weight=1 - args.dense_weight)
    attributor.config = config
    attributor.encode([q["question"] for q in questions[:4]])  # warm up
    cache = json.loads(args.cache.read_text()) if args.cache.exists() else {}
    try:
        answers = await generate(questions, passages, args.variants.split(","), args.max_tokens, cache, attributor,
                                 args.source_tokens, args.models_dir)
    finally:
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        args.cache.write_text(json.dumps(cache))
    encode = CachedEncode(attributor.encode)
    result = await evaluate(questions, passages, answers, attributor, encode, args.max_tokens)
    result.update(date=time.strftime("%Y-%m-%d %H:%M"), attribution_model=settings.attribution_model,
                  threshold=config.threshold, dense_weight=config.dense_weight, source_tokens=args.source_tokens)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    report(result, Console(width=150, stderr=args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
