"""Runs the agents of `ragbus up` as child processes: prefixed logs, restart on crash, clean stop.

Each agent is the same `ragbus agent NAME` process that k3s runs in its own pod, so the embedded default
exercises exactly the production code paths.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("ragbus.up")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    relay: asyncio.Task[None] | None = None  # copies the child's output to ours, prefixed


class Supervisor:
    def __init__(self, children: list[Child], stop_timeout: float = 20.0) -> None:
        self.children = children
        self.stop_timeout = stop_timeout
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        watchers = [asyncio.create_task(self._keep_running(c)) for c in self.children]
        await stop.wait()
        self._stopping = True
        # Stop in reverse start order: the gateway first (no new work), the projector last (folds the rest).
        for child in reversed(self.children):
            await self._terminate(child)
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    async def _keep_running(self, child: Child) -> None:
        while not self._stopping:
            await self._start(child)
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping:
                return
            uptime = time.monotonic() - child.started_at
            child.restarts = 0 if uptime > 60 else child.restarts + 1
            delay = min(2.0 ** child.restarts, 30.0)
            log.error("%s exited with code %s after %.0fs; restarting in %.0fs", child.name, code, uptime, delay)
            await asyncio.sleep(delay)

    async def _start(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env={**os.environ, **child.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
        )
        child.started_at = time.monotonic()
        child.relay = asyncio.create_task(self._relay(child, child.proc))
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    async def _relay(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        width = max(len(c.name) for c in self.children)
        async for line in proc.stdout:
            sys.stdout.write(f"{child.name:<{width}} | {line.decode(errors='replace')}")
            sys.stdout.flush()

    async def _terminate(self, child: Child) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("%s did not stop in %.0fs; killing it", child.name, self.stop_timeout)
            proc.kill()
            await proc.wait()
        log.info("stopped %s", child.name)
