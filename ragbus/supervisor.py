"""Runs `ragbus up`: the servers and the agents as child processes, prefixed logs, restart on death, clean stop.

Each agent is the same `ragbus agent NAME` process that k3s runs in its own pod, so the embedded default
exercises exactly the production code paths. Whatever dies is started again with a growing delay (reset
after a minute of uptime): an agent, nats-server, PostgreSQL or the llama.cpp server. Each agent runs in a
process group of its own, and the whole group goes when the agent goes: a parse child that outlived its
parser is killed, never left to hold the log pipe or a CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("ragbus.up")
STABLE = 60.0  # seconds of uptime after which a crash counts as the first again
MAX_DELAY = 30.0


def restart_delay(restarts: int) -> float:
    return min(2.0 ** restarts, MAX_DELAY) if restarts else 1.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    relay: asyncio.Task[None] | None = None  # copies the child's output to ours, prefixed


class Server(Protocol):
    """What `ragbus.servers.ManagedServer` offers the supervisor."""

    name: str

    @property
    def running(self) -> bool: ...
    def start(self, timeout: float | None = None) -> object: ...
    def stop(self, timeout: float | None = None) -> None: ...


@dataclass
class ServerChild:
    server: Server
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, children: list[Child], servers: list[Server] | None = None, stop_timeout: float = 20.0,
                 check_every: float = 1.0) -> None:
        self.children = children
        self.servers = [ServerChild(s) for s in servers or []]
        self.stop_timeout = stop_timeout
        self.check_every = check_every
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        watchers = [asyncio.create_task(self._keep_running(c)) for c in self.children]
        watchers += [asyncio.create_task(self._keep_serving(s)) for s in self.servers]
        await stop.wait()
        self._stopping = True
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        # Stop in reverse start order: the gateway first (no new work), the projector last (folds the rest).
        for child in reversed(self.children):
            await self._terminate(child)

    # ---- agents -----------------------------------------------------------------------------------------
    async def _keep_running(self, child: Child) -> None:
        while not self._stopping:
            await self._start(child)
            assert child.proc is not None
            code = await self._exited(child.proc)
            _kill_group(child.proc.pid)  # what it forked goes with it
            if self._stopping:
                return
            uptime = time.monotonic() - child.started_at
            child.restarts = 0 if uptime > STABLE else child.restarts + 1
            delay = restart_delay(child.restarts)
            log.error("%s exited with code %s after %.0fs; restarting in %.0fs", child.name, code, uptime, delay)
            await asyncio.sleep(delay)

    async def _exited(self, proc: asyncio.subprocess.Process) -> int:
        """The exit code, as soon as the process is gone. Not `proc.wait()`: that also waits for its output
        pipe to close, which a grandchild holding the pipe could delay for ever."""
        while proc.returncode is None:
            await asyncio.sleep(0.2)
        return proc.returncode

    async def _start(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env={**os.environ, **child.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C reaches only us; we stop the children in order
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
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._exited(proc), self.stop_timeout)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", child.name, self.stop_timeout)
                _kill_group(proc.pid)
                await self._exited(proc)
        _kill_group(proc.pid)  # no orphan survives `ragbus up`
        if child.relay is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(child.relay, 2.0)
        log.info("stopped %s", child.name)

    # ---- servers ----------------------------------------------------------------------------------------
    async def _keep_serving(self, watched: ServerChild) -> None:
        server = watched.server
        while not self._stopping:
            await asyncio.sleep(self.check_every)
            if server.running or self._stopping:
                continue
            uptime = time.monotonic() - watched.started_at
            watched.restarts = 0 if uptime > STABLE else watched.restarts + 1
            delay = restart_delay(watched.restarts)
            log.error("%s died after %.0fs; restarting in %.0fs", server.name, uptime, delay)
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(server.start)
                watched.started_at = time.monotonic()
                log.info("%s is back", server.name)
            except Exception as exc:  # noqa: BLE001 - logged, and tried again on the next round
                log.error("%s did not start again: %s", server.name, str(exc).splitlines()[0])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
