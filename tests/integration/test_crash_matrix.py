"""`ragbus up` under fire: 60 chats at once on one generator, then every part SIGKILLed in turn (the parser
mid-parse, the embedder, the projector, the gateway, the generator mid-answer, nats-server, PostgreSQL and
the llama.cpp server) while 40 documents are ingested and 10 questions asked. Every document ends indexed with
exact chunk counts and no duplicate rows, every question ends answered or with a clean error frame, every part
is back by itself, and nothing is left running once `ragbus up` stops. Prints, per part, how long it took to
come back and the longest stall of the ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from websockets.asyncio.client import connect as ws_connect

from ragbus.servers import free_port
from tests.conftest import ROOT

ROLES = ("parser", "embedder", "projector", "gateway", "generator")


def role_of(proc: psutil.Process) -> str | None:
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return None
    text = " ".join(cmd)
    if "ragbus.cli agent" in text:
        return cmd[-1]
    if proc.name() == "nats-server":
        return "nats-server"
    if "llama_cpp.server" in text:
        return "llama-server"
    with contextlib.suppress(psutil.Error):
        if proc.name() == "postgres" and psutil.Process(proc.ppid()).name() != "postgres":
            return "postgres"
    return None


@dataclass
class Up:
    proc: subprocess.Popen
    url: str
    dsn: str
    log: Path
    restarted: dict[str, float] = field(default_factory=dict)

    def parts(self) -> dict[str, psutil.Process]:
        found: dict[str, psutil.Process] = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            role = role_of(child)
            if role and role not in found:
                found[role] = child
        return found

    async def kill(self, role: str, ready: float = 120) -> float:
        """SIGKILL the part, wait until the supervisor has it running again; seconds until it is back."""
        victim = self.parts()[role]
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < ready:
            part = self.parts().get(role)
            if part is not None and part.pid != victim.pid and await self.serving(role):
                self.restarted[role] = time.monotonic() - killed
                return self.restarted[role]
            await asyncio.sleep(0.2)
        raise AssertionError(f"{role} not back {ready:.0f} s after SIGKILL\n{self.log.read_text()[-4000:]}")

    async def serving(self, role: str) -> bool:
        if role in ("gateway", "nats-server", "postgres", "llama-server"):
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    body = (await c.get(f"{self.url}/readyz")).json()
                return bool(body.get({"gateway": "ready", "nats-server": "nats", "postgres": "postgres",
                                      "llama-server": "llm"}[role]))
            except (httpx.HTTPError, ValueError):
                return False
        return True


def start_up(tmp_path: Path, models_dir: Path) -> Up:
    ports = {p: str(free_port()) for p in ("RAGBUS_PORT", "RAGBUS_NATS_PORT", "RAGBUS_PG_PORT", "RAGBUS_LLM_PORT")}
    env = {**os.environ, **ports, "RAGBUS_LOG_LEVEL": "INFO", "RAGBUS_MAX_ANSWER_TOKENS": "32",
           "RAGBUS_MODELS_DIR": str(models_dir), "RAGBUS_QUESTIONS_PER_MINUTE": "0", "RAGBUS_UPLOADS_PER_MINUTE": "0",
           "RAGBUS_NATS_URL": "", "RAGBUS_DATABASE_URL": "", "RAGBUS_LLM_URL": ""}
    log = tmp_path / "up.log"
    proc = subprocess.Popen([sys.executable, "-m", "ragbus.cli", "up", "--data-dir", str(tmp_path / "data"),
                             "--port", ports["RAGBUS_PORT"]], env=env, cwd=ROOT, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)
    dsn = f"postgresql://postgres@127.0.0.1:{ports['RAGBUS_PG_PORT']}/ragbus"
    return Up(proc, f"http://127.0.0.1:{ports['RAGBUS_PORT']}", dsn, log)


async def wait_ready(up: Up, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as c:
        while time.monotonic() < deadline:
            assert up.proc.poll() is None, up.log.read_text()[-4000:]
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(f"{up.url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise AssertionError("ragbus up never became ready:\n" + up.log.read_text()[-4000:])


async def ask_to_the_end(url: str, question: str, deadline: float = 400) -> dict:
    """Asks like the web page: on a dropped socket it reconnects and resumes after the last token it has."""
    ws_url = url.replace("http", "ws", 1) + "/ws/chat"
    query_id, last_seq, tokens, give_up = None, -1, 0, time.monotonic() + deadline
    while time.monotonic() < give_up:
        try:
            async with ws_connect(ws_url, open_timeout=5) as ws:
                first = ({"type": "ask", "question": question} if query_id is None else
                         {"type": "resume", "query_id": query_id, "after_seq": last_seq})
                await ws.send(json.dumps(first))
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame["type"] == "accepted":
                        query_id = frame["query_id"]
                    elif frame["type"] == "token":
                        assert frame["seq"] == last_seq + 1, (frame, last_seq)  # nothing missing or repeated
                        last_seq, tokens = frame["seq"], tokens + 1
                    elif frame["type"] == "busy":
                        await asyncio.sleep(frame["retry_after"])
                        break
                    elif frame["type"] in ("done", "error"):
                        return {**frame, "tokens_seen": tokens}
        except Exception:  # noqa: BLE001 - the gateway is down (refused, reset, closed): try again
            await asyncio.sleep(1.0)
    return {"type": "timeout", "query_id": query_id}


def survey(i: int) -> bytes:
    return "\n\n".join(f"Survey {i}, section {s}: the lighthouse at cape {i} logged {s * 13 + i} ships and a storm "
                       f"that lasted {s % 5 + 1} days, with waves of {s % 7 + 2} metres." for s in range(30)).encode()


@pytest.mark.timeout(1500)
async def test_sixty_chats_then_every_part_killed_mid_work_and_nothing_is_lost_doubled_or_stuck(tmp_path, models_dir):
    up = start_up(tmp_path, models_dir)
    report: dict[str, object] = {}
    try:
        await wait_ready(up)
        async with httpx.AsyncClient(base_url=up.url, timeout=60) as client:
            seed = (await client.post("/documents", files={"file": ("lighthouses.md", b"# Lighthouses\n\nThe keeper "
                    b"of the cape light logs every ship that passes and every storm.")})).json()
            while (await client.get(f"/documents/{seed['doc_id']}")).json().get("status") != "indexed":
                await asyncio.sleep(0.5)

            # 60 at once on one generator: an answer, or "busy" at once; nobody waits into a timeout
            started = time.monotonic()

            async def one_chat(i: int) -> tuple[str, float]:
                async with ws_connect(up.url.replace("http", "ws", 1) + "/ws/chat") as ws:
                    await ws.send(json.dumps({"type": "ask", "question": f"What does the keeper log? ({i})"}))
                    async for raw in ws:
                        frame = json.loads(raw)
                        if frame["type"] in ("done", "error", "busy"):
                            return (frame["type"] if frame["type"] != "error" else frame["message"],
                                    time.monotonic() - started)
                return "closed", time.monotonic() - started

            outcomes = await asyncio.gather(*(one_chat(i) for i in range(60)))
            kinds = [k for k, _ in outcomes]
            assert set(kinds) <= {"done", "busy"}, kinds
            assert kinds.count("done") >= 1 and max(t for k, t in outcomes if k == "busy") < 5.0
            report["60 chats"] = {"answered": kinds.count("done"), "busy": kinds.count("busy"),
                                  "longest answer wait s": round(max(t for k, t in outcomes if k == "done"), 1)}

            # the crash matrix
            big = await client.post("/documents", files={"file": ("big.txt", survey(999) * 60)})
            docs = [big.json()] + [(await client.post("/documents", files={"file": (f"survey-{i:02d}.txt", survey(i))}))
                                   .json() for i in range(40)]
            questions = asyncio.ensure_future(asyncio.gather(*(
                ask_to_the_end(up.url, f"How many ships did the lighthouse at cape {i} log?") for i in range(10))))
            progress: list[tuple[float, int]] = []

            async def watch() -> None:
                pool = await asyncpg.create_pool(up.dsn, min_size=1, max_size=2)
                try:
                    while True:
                        with contextlib.suppress(Exception):  # PostgreSQL is killed on purpose
                            table = await pool.fetchval(
                                "SELECT vectors_table FROM embedding_indexes WHERE state = 'active'")
                            progress.append((time.monotonic(), await pool.fetchval(f"SELECT count(*) FROM {table}")))
                        await asyncio.sleep(0.5)
                finally:
                    await pool.close()

            watcher = asyncio.create_task(watch())
            parser = up.parts()["parser"]
            for _ in range(200):  # the parser mid-parse: its parse child exists
                if parser.children():
                    break
                await asyncio.sleep(0.05)
            orphans = parser.children()
            await up.kill("parser")
            assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans), "parse child lives"
            for role in ("embedder", "projector", "gateway"):
                await up.kill(role)
            await asyncio.sleep(3)  # questions are being answered by now
            await up.kill("generator")
            status: list[tuple[float, dict]] = []  # what an idle chat socket hears meanwhile

            async def listen() -> None:
                async with ws_connect(up.url.replace("http", "ws", 1) + "/ws/chat") as ws:
                    async for raw in ws:
                        status.append((time.monotonic(), json.loads(raw)))

            listener = asyncio.create_task(listen())
            await asyncio.sleep(1)
            killed_at: dict[str, float] = {}
            for role in ("nats-server", "postgres", "llama-server"):
                killed_at[role] = time.monotonic()
                await up.kill(role)
                await asyncio.sleep(3)
            listener.cancel()
            told = {}
            for role, down in (("nats-server", "nats"), ("postgres", "postgres"), ("llama-server", "llm")):
                frames = [t for t, f in status if f.get("state") == "reconnecting" and down in f.get("down", [])
                          and t >= killed_at[role]]
                assert frames, (role, status)
                told[role] = round(frames[0] - killed_at[role], 1)
                assert told[role] < 6.0, told  # within a few seconds
            assert status and status[-1][1]["state"] == "ok", status[-3:]
            report["chat sockets told of the outage after s"] = told

            answers = await asyncio.wait_for(questions, 900)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    states = [(await client.get(f"/documents/{d['doc_id']}")).json() for d in docs]
                    if all(s.get("status") in ("indexed", "failed") for s in states):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(1)
            watcher.cancel()
        assert [s["status"] for s in states] == ["indexed"] * len(docs), [(s["name"], s.get("error")) for s in states]
        assert all(a["type"] in ("done", "error") for a in answers), answers
        done = [a for a in answers if a["type"] == "done"]
        assert len(done) >= 5, answers  # most answered; the rest failed cleanly (the LLM was killed too)

        conn = await asyncpg.connect(up.dsn)
        try:
            table = await conn.fetchval("SELECT vectors_table FROM embedding_indexes WHERE state = 'active'")
            for s in states:
                chunks = await conn.fetchval("SELECT count(*) FROM chunks WHERE doc_id = $1", s["doc_id"])
                vectors = await conn.fetchval(f"SELECT count(*) FROM {table} v JOIN chunks c USING (chunk_id) "
                                              "WHERE c.doc_id = $1", s["doc_id"])
                assert chunks == vectors == s["chunks"], (s["name"], chunks, vectors, s["chunks"])
            assert await conn.fetchval("SELECT count(*) - count(DISTINCT query_id) FROM answers") == 0
        finally:
            await conn.close()
        longest, run = 0.0, 0.0  # the longest time the index did not grow while documents waited
        for (t0, n0), (t1, n1) in itertools.pairwise(progress):
            run = run + (t1 - t0) if n1 == n0 else 0.0
            longest = max(longest, run)
        report["restarted after s"] = {k: round(v, 1) for k, v in up.restarted.items()}
        report["longest ingest stall s"] = round(longest, 1)
        report["questions"] = {"done": len(done), "error": [a["message"] for a in answers if a["type"] == "error"]}
    finally:
        tree = psutil.Process(up.proc.pid).children(recursive=True) if up.proc.poll() is None else []
        up.proc.send_signal(signal.SIGTERM)
        up.proc.wait(120)
        _, alive = psutil.wait_procs(tree, timeout=20)
        print("\ncrash matrix:", json.dumps(report, indent=1))
        (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    assert alive == [], f"left running after ragbus up stopped: {alive}"
