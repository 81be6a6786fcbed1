"""`ragbus ask QUESTION`: stream an answer over the gateway's websocket, then list its sources."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import websockets
from rich.console import Console

from ragbus.ingest import gateway_url
from ragbus.settings import ClientSettings

console = Console(stderr=True)


async def ask(question: str, top_k: int | None, session: str | None) -> int:
    url = gateway_url().replace("http", "ws", 1) + "/ws/chat"
    async with websockets.connect(url, max_size=None, additional_headers=ClientSettings().headers()) as ws:
        await ws.send(json.dumps({"type": "ask", "question": question, "top_k": top_k, "session_id": session}))
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "token":
                sys.stdout.write(frame["text"])
                sys.stdout.flush()
            elif frame["type"] == "done":
                sys.stdout.write("\n")
                for c in frame["citations"]:
                    page = f", page {c['page']}" if c.get("page") else ""
                    console.print(f"[dim][{c['n']}] {c['name']}{page} (score {c['score']:.2f})[/dim]")
                t = frame["timings"]
                console.print(f"[dim]first token {t.get('ttft_ms', 0) / 1000:.2f}s, "
                              f"total {t.get('total_ms', 0) / 1000:.2f}s, model {frame.get('model')}[/dim]")
                return 0
            elif frame["type"] == "error":
                console.print(f"[red]error: {frame['message']}[/red]")
                return 1
    return 1


def run_ask(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(ask(args.question, args.top_k, args.session))
    except OSError as exc:
        console.print(f"[red]cannot reach the gateway at {gateway_url()}: {exc}[/red]")
        return 2
