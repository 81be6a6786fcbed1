"""`ragbus reindex`: move to another embedding model with zero downtime, by replaying the log.

    ragbus reindex --model minilm-distilled-256   start its index beside the live one, with a progress bar
    ragbus reindex --compare                      both indexes on the questions users asked (from the log)
    ragbus reindex --activate minilm-distilled-256  the switch (refused while incomplete, unless --force)
    ragbus reindex --rollback                     back to the previous index, at once
    ragbus reindex --drop all-MiniLM-L6-v2        delete an index that is not active
    ragbus reindex --list                         every index, its state and how complete it is
    ragbus reindex --rebuild                      the active model's index built again beside it, then the switch
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from projections.views import IndexView, create_pool
from ragbus.settings import admin_login
from streams import subjects
from streams.connect import connect
from streams.events import AnswerCompleted, AnswerRated, IndexCompared, QueryAsked
from streams.indexes import read_index_state
from streams.indexing import (
    Gate,
    IndexCommandError,
    activate_index,
    drop_index,
    judge,
    rebuild_target,
    rollback_target,
    start_index,
)
from streams.publish import publish
from streams.reading import read_events
from streams.topology import ANSWERS, QUERIES

console = Console(stderr=True)
TOP_K = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", metavar="NAME", help="start an index for NAME (a catalogue name, see "
                      "`ragbus models`, or a sentence-transformers folder) and follow it until complete")
    what.add_argument("--compare", metavar="NAME", nargs="?", const="", help="compare NAME (default: the newest "
                      "index that is not active) with the active index on the questions in the log")
    what.add_argument("--activate", metavar="NAME", help="switch queries to NAME's index (the gate refuses an "
                      "incomplete one, or one clearly worse on logged questions)")
    what.add_argument("--rollback", action="store_true", help="switch back to the index that was active before")
    what.add_argument("--drop", metavar="NAME", help="delete NAME's index (not the active one)")
    what.add_argument("--list", action="store_true", help="every index with its state and completeness")
    what.add_argument("--rebuild", action="store_true", help="embed every chunk again with the active index's own "
                      "model into a fresh index beside it (NAME@2, ...), follow it, and switch to it through the "
                      "gate; for when `--list` shows vectors of another fingerprint in the active index (an upgrade "
                      "changed how chunks are embedded). The old index stays for --rollback")
    parser.add_argument("--source", default="", help="with --model: load it from this folder")
    parser.add_argument("--no-wait", action="store_true", help="with --model or --rebuild: start it and return")
    parser.add_argument("--force", action="store_true", help="with --activate: switch although the gate refuses")
    parser.add_argument("--questions", type=int, default=200, help="with --compare: the last N distinct "
                        "logged questions (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=0, help="with --model or --rebuild: give up waiting after "
                        "this many "
                        "seconds (default: wait until complete)")


def run_reindex(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except IndexCommandError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1


async def _run(args: argparse.Namespace) -> int:
    from agents.embedder.settings import EmbedderSettings

    settings = admin_login(EmbedderSettings())
    nc = await connect(settings, "ragbus-reindex")
    pool = await create_pool(settings.database_url)
    js, view = nc.jetstream(), IndexView(pool)
    try:
        if args.list:
            show_indexes(await view.list())
            return 0
        if args.model:
            return await _start(js, view, args)
        if args.rebuild:
            return await _rebuild(js, view, args)
        if args.compare is not None:
            model = args.compare or await _newest_candidate(view)
            await compare(js, pool, view, model, args.questions, settings)
            return 0
        if args.activate:
            return await _activate(js, view, args.activate, args.force)
        if args.rollback:
            target = await rollback_target(js)
            gate = judge(await _index(view, target), await view.active())
            event = await activate_index(js, gate, force=True, reason="rollback")
            console.print(f"[green]{target} answers queries again[/green] (instead of {event.previous})")
            if not gate.passed:
                console.print(f"[yellow]note: {'; '.join(gate.reasons)}[/yellow]")
            return 0
        await drop_index(js, args.drop)
        console.print(f"dropped {args.drop}: its vectors are deleted, its chunks.embedded events stay in the log")
        return 0
    finally:
        await pool.close()
        await nc.close()


async def _index(view: IndexView, model: str) -> dict[str, Any]:
    index = await view.get(model)
    if index is None:
        raise IndexCommandError(f"no index {model} (yet: the projector may still be catching up)")
    return index


async def _newest_candidate(view: IndexView) -> str:
    candidates = [i for i in await view.list() if i["state"] != "active"]
    if not candidates:
        raise IndexCommandError("no index besides the active one: start one with `ragbus reindex --model NAME`")
    return str(candidates[-1]["model"])


async def _start(js: JetStreamContext, view: IndexView, args: argparse.Namespace) -> int:
    from agents.models import CATALOG

    spec = CATALOG.get(args.model)
    if spec is None and not args.source:
        raise IndexCommandError(f"{args.model!r} is not in the catalogue ({', '.join(CATALOG)}); give a model folder "
                                "with --source")
    existing = await view.get(args.model)
    if existing is None or existing["state"] == "dropped":
        await start_index(js, args.model, args.source, spec.dim if spec else None)
        console.print(f"started an index for {args.model}: every chunk is embedded again from the log "
                      "(nothing is parsed again); queries go on from the active index")
    else:
        console.print(f"{args.model}'s index exists ({existing['state']}): following its progress")
    if args.no_wait:
        return 0
    return await follow(view, args.model, args.timeout)


async def _rebuild(js: JetStreamContext, view: IndexView, args: argparse.Namespace) -> int:
    state = await read_index_state(js)
    name, source, under_way = rebuild_target(state)
    old = state.active
    active = await view.active()
    if under_way:
        console.print(f"a rebuild of {old} is under way as {name}: following its progress")
    elif not active or not active["live_chunks"]:
        raise IndexCommandError(f"{old} holds no chunk yet: nothing to rebuild")
    else:
        await start_index(js, name, source, active["dim"] if active else None)
        console.print(f"started {name}: every chunk is embedded again with {source} from the log (nothing is "
                      f"parsed again); queries go on from {old} meanwhile")
    if args.no_wait:
        return 0
    if await follow(view, name, args.timeout, then=False):
        return 1
    gate = judge(await _index(view, name), await view.active())
    show_gate(gate)
    if not gate.passed:
        console.print(f"[red]not switched[/red]: `ragbus reindex --activate {name}` once that is fixed")
        return 1
    await activate_index(js, gate, reason="rebuild")
    console.print(f"[green]{name} answers queries now[/green]. {old} is kept for `ragbus reindex --rollback`; "
                  f"`ragbus reindex --drop {old}` deletes its vectors")
    return 0


async def follow(view: IndexView, model: str, timeout: float = 0, then: bool = True) -> int:
    """A progress bar until every chunk of the active index has a vector in `model`'s index."""
    started = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"embedding chunks for {model}", total=None, rate="")
        first: tuple[float, int] | None = None
        while True:
            index = await view.get(model)
            if index is not None and index["state"] != "dropped":
                total, done = index["live_chunks"], index["live_chunks"] - index["missing"]
                now = time.monotonic()
                first = first or (now, done)
                rate = (done - first[1]) / (now - first[0]) if now > first[0] else 0.0
                progress.update(task, total=total, completed=done, rate=f"{rate:.1f} chunks/s" if rate else "")
                if index["dim"] is not None and total and not index["missing"]:
                    break
            if timeout and time.monotonic() - started > timeout:
                console.print(f"[yellow]not complete after {timeout:.0f} s; it goes on in the background[/yellow]")
                return 1
            await asyncio.sleep(1.0)
    console.print(f"[green]{model}'s index is complete[/green]." + (
        f" Next: `ragbus reindex --compare {model}`, then `ragbus reindex --activate {model}`" if then else ""))
    return 0


async def _activate(js: JetStreamContext, view: IndexView, model: str, force: bool) -> int:
    gate = judge(await _index(view, model), await view.active())
    show_gate(gate)
    event = await activate_index(js, gate, force=force)
    console.print(f"[green]{model} answers queries now[/green]{' (forced)' if event.forced else ''}; "
                  f"`ragbus reindex --rollback` returns to {event.previous}")
    return 0


def show_gate(gate: Gate) -> None:
    for line in gate.notes:
        console.print(f"  [green]ok[/green]   {line}")
    for line in gate.reasons:
        console.print(f"  [red]no[/red]   {line}")


def show_indexes(indexes: list[dict[str, Any]], out: Console | None = None) -> None:
    table = Table(title="Embedding indexes")
    for col in ("model", "state", "dim", "vectors", "complete", "fingerprint", "compared"):
        table.add_column(col)
    for i in indexes:
        live, missing = i["live_chunks"], i["missing"]
        complete = "-" if i["dim"] is None else (f"{live - missing}/{live}" if live else "empty")
        compared = i.get("compared") or {}
        figures = (compared.get("figures") or {}).get(i["model"], {})
        table.add_row(i["model"], i["state"], str(i["dim"] or "-"), str(i["vectors"]), complete,
                      (i["fingerprint"] or "-") + (f" ({i['fingerprint_mismatches']} other)"
                                                   if i["fingerprint_mismatches"] else ""),
                      f"overlap {figures.get('overlap', 0):.2f} vs {compared.get('baseline')}" if figures else "")
    (out or Console()).print(table)
    mixed = [i["model"] for i in indexes if i["state"] == "active" and i["fingerprint_mismatches"]]
    if mixed:
        (out or Console()).print(f"[yellow]{mixed[0]} holds vectors of more than one fingerprint (made before an "
                                 "upgrade changed how chunks are embedded, or by other model files): "
                                 "`ragbus reindex --rebuild` embeds them all again beside it[/yellow]")


# ---- the comparison on logged questions ----------------------------------------------------------------


@dataclass
class Logged:
    question: str
    top_k: int
    filters: dict[str, Any]
    good: set[str] = field(default_factory=set)  # chunk ids the log says answer it (cited, or rated up)


async def logged_questions(js: JetStreamContext, limit: int) -> list[Logged]:
    """The last `limit` distinct questions users asked or searched, each with the passages the log vouches
    for: cited by an answer with explicit [n] markers, or by an answer rated up (not one rated down)."""
    asked: dict[str, QueryAsked] = {}
    async for _seq, event in read_events(js, QUERIES, [subjects.wildcard(QueryAsked.SUBJECT)]):
        assert isinstance(event, QueryAsked)
        asked[event.query_id] = event
    answers: dict[str, AnswerCompleted] = {}
    ratings: dict[str, str] = {}
    async for _seq, event in read_events(js, ANSWERS, [subjects.wildcard(AnswerCompleted.SUBJECT),
                                                        subjects.wildcard(AnswerRated.SUBJECT)]):
        if isinstance(event, AnswerCompleted):
            answers[event.query_id] = event
        elif isinstance(event, AnswerRated):
            ratings[event.query_id] = event.rating  # the last rating counts
    by_text: dict[str, Logged] = {}
    for query_id, q in asked.items():
        text = q.question.strip()
        entry = by_text.pop(text, None) or Logged(text, q.top_k or TOP_K, q.filters)
        by_text[text] = entry  # re-inserted: the most recent ask decides the order
        answer = answers.get(query_id)
        if answer is None or ratings.get(query_id) == "down" or not answer.citations:
            continue
        explicit = "[" in answer.answer and any(f"[{c.n}]" in answer.answer for c in answer.citations)
        if explicit or ratings.get(query_id) == "up":
            entry.good |= {c.chunk_id for c in answer.citations}
    return list(by_text.values())[-limit:]


async def compare(js: JetStreamContext, pool: asyncpg.Pool, view: IndexView, model: str, limit: int,
                  settings: Any) -> IndexCompared:
    """Both indexes retrieve for every logged question, each with its own model, as queries would; the
    figures are printed side by side and recorded as index.compared (the gate reads them)."""
    from agents.embedder.service import Embedder
    from projections.retrieval import HybridSearch

    active, candidate = await view.active(), await _index(view, model)
    if active is None or active["model"] == model:
        raise IndexCommandError(f"compare {model} with what? it is the active index")
    questions = await logged_questions(js, limit)
    if not questions:
        raise IndexCommandError("no questions in the log yet: ask some first")
    search = HybridSearch(pool, settings.retrieval())
    ranked: dict[str, list[list[str]]] = {}
    figures: dict[str, dict[str, float]] = {}
    for index in (active, candidate):
        name = index["model"]
        with console.status(f"loading {name}..."):
            embedder = await asyncio.to_thread(Embedder.load, name, index["source"], settings.models_dir,
                                               settings.embedding_threads)
        started, lists = time.perf_counter(), []
        for q in questions:
            vector = (await embedder.embed_async([q.question]))[0]
            passages = await search.search(vector, q.question, q.top_k, q.filters, model=name)
            lists.append([p["chunk_id"] for p in passages])
        ranked[name] = lists
        judged = [(q, ids) for q, ids in zip(questions, lists, strict=True) if q.good]
        figures[name] = {
            "judged": float(len(judged)),
            "hit_rate": sum(bool(q.good & set(ids)) for q, ids in judged) / len(judged) if judged else 0.0,
            "answered": sum(bool(ids) for ids in lists) / len(lists),  # questions with any passage over threshold
            "ms_per_question": (time.perf_counter() - started) * 1000 / len(questions),
        }
    pairs = list(zip(ranked[active["model"]], ranked[model], strict=True))
    overlap = sum(len(set(a) & set(b)) / max(len(a), len(b), 1) for a, b in pairs) / len(pairs)
    for name in figures:
        figures[name]["overlap"] = 1.0 if name == active["model"] else overlap
    event = IndexCompared(event_id=f"index.compared:{model}:{active['model']}:{int(time.time())}", model=model,
                          baseline=active["model"], questions=len(questions), figures=figures)
    await publish(js, event)
    table = Table(title=f"{len(questions)} logged questions: {model} vs the active {active['model']}")
    for col in ("", active["model"] + " (active)", model):
        table.add_column(col)
    rows = (("judged questions (cited / rated up)", "judged", "{:.0f}"),
            ("hit rate on judged", "hit_rate", "{:.2f}"),
            ("questions with a passage", "answered", "{:.0%}"),
            ("top-k overlap with the active index", "overlap", "{:.2f}"),
            ("ms per question (embed + search)", "ms_per_question", "{:.1f}"))
    for label, key, fmt in rows:
        table.add_row(label, fmt.format(figures[active["model"]][key]), fmt.format(figures[model][key]))
    Console().print(table)
    show_gate(judge({**candidate, "compared": {"baseline": active["model"], "figures": figures}}, active))
    return event
