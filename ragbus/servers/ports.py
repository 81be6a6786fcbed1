"""Local ports and the child-process plumbing shared by the embedded servers.

``free_port`` picks a port; ``ManagedServer`` is the base of ``NatsServer``, ``EmbeddedPostgres`` and
``LlamaServer``: it runs one server as a child process in its own session (so a Ctrl-C in the terminal
reaches ``ragbus up`` and not the servers directly), sends its output to a log file, waits (bounded) until
the server is ready, and stops it with a polite signal first and SIGKILL after a timeout.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0, then release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail_of(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


class ManagedServer:
    """Base class: one server process, started and stopped by us. Subclasses fill in the hooks."""

    #: human-readable name, used in messages and the log banner
    name: str = "server"
    #: the signal for a graceful stop (SIGKILL to the whole process group follows after ``stop_timeout``)
    stop_signal: int = signal.SIGTERM
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    poll_interval: float = 0.05

    def __init__(self, log_path: Path) -> None:
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_in: float | None = None  # seconds the last successful start() took

    # ---- hooks -----------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Runs before the process starts (config files, directories, initdb...)."""

    def _command(self) -> Sequence[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> Mapping[str, Any]:
        """Extra keyword arguments for ``subprocess.Popen`` (env, user, group, cwd...)."""
        return {}

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Runs once the server answers (e.g. create a database); an exception here fails start()."""

    def _lock_path(self) -> Path | None:
        """A file to ``flock`` for as long as the server process lives (one server per data dir)."""
        return None

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail_of(self.log_path, lines)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> Self:
        """Start the server and block until it is ready (at most ``timeout`` seconds). Idempotent."""
        if self.running:
            return self
        if self._proc is not None:  # it died on its own: clean up before starting again
            self.stop()
        timeout = self.start_timeout if timeout is None else timeout
        t0 = time.monotonic()
        lock_fd = self._acquire_lock()
        log: IO[bytes] | None = None
        try:
            self._prepare()
            cmd = list(self._command())
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = self.log_path.open("ab")
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"\n=== ragbus: starting {self.name} at {stamp}: {shlex.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=() if lock_fd is None else (lock_fd,),
                **self._popen_kwargs(),
            )
        except BaseException:
            if log is not None:
                log.close()
            raise
        finally:
            # the child holds the lock (inherited descriptor) for as long as it lives
            if lock_fd is not None:
                os.close(lock_fd)
        self._proc, self._log = proc, log
        atexit.register(self.stop)
        deadline = t0 + timeout
        try:
            while True:
                code = proc.poll()
                if code is not None:
                    raise ServerStartError(f"{self.name} exited with code {code} while starting")
                if self._is_ready():
                    break
                if time.monotonic() > deadline:
                    raise ServerStartError(f"{self.name} was not ready after {timeout:.0f} s")
                time.sleep(self.poll_interval)
            self._after_ready()
        except ServerStartError as exc:
            self.stop()
            raise ServerStartError(self._with_tail(str(exc))) from None
        except Exception as exc:
            self.stop()
            raise ServerStartError(self._with_tail(f"{self.name} failed to start: {exc!r}")) from exc
        except BaseException:  # KeyboardInterrupt and friends: do not leave the child behind
            self.stop()
            raise
        self.started_in = time.monotonic() - t0
        return self

    def kill(self) -> None:
        """SIGKILL, no warning (a node lost), then the same clean-up as `stop`; `start` brings it back."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        self.stop()

    def _acquire_lock(self) -> int | None:
        path = self._lock_path()
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ServerStartError(
                f"{path} is locked: another {self.name} is already running on this data directory"
            ) from None
        return fd

    def _with_tail(self, message: str) -> str:
        return f"{message}\n--- last lines of {self.log_path} ---\n{self.log_tail()}"

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server: ``stop_signal``, wait, then SIGKILL its process group. Idempotent."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            timeout = self.stop_timeout if timeout is None else timeout
            if proc.poll() is None:
                try:
                    proc.send_signal(self.stop_signal)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {state}>"
