"""Parse each document in a forked child with a time and memory limit.

Hostile or pathological files (a decompression bomb, a PDF that makes pypdf loop) must cost one document,
not the parser: the child is killed at the time limit, runs out of address space at the memory limit, and
either way the document fails with a readable reason while the parser goes on with the next one in a fresh
child. A healthy child stays for the next document (`ParseWorker`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import resource
import signal
import stat
import threading
from multiprocessing.connection import Connection
from typing import Any

from agents.parser.service import ParsedDocument, ParseError, parse_document

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forking after the tokenizer's threads started
PR_SET_PDEATHSIG = 1
_PARENT = os.getpid()


def warm_up() -> None:
    """Load the tokenizer and the format libraries once in the parent, before the first fork: every child
    then inherits them instead of loading them again for each document (measured: about 3.7x less overhead
    per document, 10 documents 0.55 s -> 0.15 s)."""
    import bs4  # noqa: F401
    import charset_normalizer  # noqa: F401
    import docx  # noqa: F401
    import pypdf  # noqa: F401

    parse_document(b"# Warm-up\n\nA sentence to load the tokenizer.", "warm-up.md")
    parse_document(b"<html><body><h1>Warm-up</h1><p>Text.</p></body></html>", "warm-up.html")
    # What is loaded now lives as long as the parser: out of the collector's sight, the child's collections do not
    # write to (and so copy) the pages they share with the parent: child 33 -> 23 MB USS after 60 documents
    gc.collect()
    gc.freeze()


def _address_space() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


def _die_with_parent() -> None:
    """The parse child must not outlive its parser: a SIGKILLed parser takes it along (Linux), and it lets go
    of the parser's stdout (a supervisor reading that pipe would otherwise wait on the orphan)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    if os.getppid() != _PARENT:  # the parser died between fork and prctl
        os._exit(1)


class ParseWorker:
    """A long-lived child that parses one document after another, within the same limits as a child per
    document: it is killed at the time limit and cannot grow past the memory limit, and either way the
    document fails with a readable reason and the next one gets a fresh child.

    Why not a child per document: the child re-warms every cache the parent's warm-up filled (the tokenizer's,
    the format libraries', the regex cache) and copies the pages it touches. Measured on bench/ingest.py's 120
    documents: 3.7-4.8 CPU s as a child each, 1.9 s in one child (in-process: 1.9 s).

    One document at a time (a lock): the parser handles one delivery at a time anyway."""

    def __init__(self, memory_limit: int, nice: int = 0, max_documents: int = 500) -> None:
        self.memory_limit = memory_limit
        self.nice = nice
        self.max_documents = max_documents  # then a fresh child, so a slow leak cannot accumulate
        self._lock = threading.Lock()
        self._child: Any = None
        self._conn: Connection | None = None
        self._parsed = 0

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None and self._child.is_alive() else None

    def parse(self, data: bytes, filename: str, *, timeout: float, **options: Any) -> ParsedDocument:
        """Like `parse_document`; every failure is a `ParseError` with a reason."""
        with self._lock:
            kind, value, fresh = self._parse(data, filename, timeout, options)
            if kind == "memory" and not fresh:
                # a child that parsed earlier documents holds some memory of them: the limit is what a fresh
                # child can do, so the document gets one
                kind, value, _ = self._parse(data, filename, timeout, options)
        if kind != "ok":
            raise ParseError(value)
        return value

    def _parse(self, data: bytes, filename: str, timeout: float,
               options: dict[str, Any]) -> tuple[str, Any, bool]:
        """(kind, parsed or reason, whether the child was fresh); a timeout or a death raises."""
        conn = self._spawned()
        fresh = self._parsed == 0
        try:
            conn.send((data, filename, options))
            if not conn.poll(timeout):
                self._stop()
                raise ParseError(f"parsing took longer than {timeout:.0f} s (stopped)")
            kind, value, healthy = conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = self._stop()
            raise ParseError(f"the parser process died while reading this document (exit code {code})") from None
        self._parsed += 1
        if not healthy or self._parsed >= self.max_documents:
            self._stop()
        return kind, value, fresh

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawned(self) -> Connection:
        if self._conn is None or self._child is None or not self._child.is_alive():
            self._stop()
            ctx = multiprocessing.get_context("fork")
            parent, child_end = ctx.Pipe(duplex=True)
            self._child = ctx.Process(target=_serve, args=(child_end, self.memory_limit, self.nice), daemon=True)
            self._child.start()
            child_end.close()
            self._conn, self._parsed = parent, 0
        return self._conn

    def _stop(self) -> int | None:
        """Ends the child (killed if it does not leave at once); its exit code."""
        code = None
        if self._child is not None:
            if self._child.is_alive() and self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(None)
                self._child.join(0.5)
            if self._child.is_alive():
                self._child.kill()
            self._child.join(5)
            code = self._child.exitcode
        if self._conn is not None:
            self._conn.close()
        self._child, self._conn = None, None
        return code


def _close_inherited(keep: int) -> None:
    """Close the parser's sockets the fork copied (its NATS connection, the metrics listener): a long-lived
    child holding a copy would keep a connection the parser closed or lost open on the server's side. Pipes stay:
    multiprocessing watches one to see the child end."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            if fd != keep and stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)


def _serve(conn: Connection, memory_limit: int, nice: int) -> None:
    """The child: documents until told to stop. `healthy` False asks the parent for a fresh child: after a
    MemoryError, or once this one's address space has grown by a quarter of the limit (memory Python keeps
    after a large document would otherwise shrink the next documents' share)."""
    _die_with_parent()
    _close_inherited(keep=conn.fileno())
    if nice > 0:
        os.nice(nice)
    baseline = _address_space()
    limit = baseline + memory_limit
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while (job := conn.recv()) is not None:
        data, filename, options = job
        healthy = True
        try:
            reply: tuple[str, Any] = ("ok", parse_document(data, filename, **options))
        except ParseError as exc:
            reply = ("failed", exc.reason)
        except MemoryError:
            reply, healthy = ("memory", f"the document needs more than {memory_limit // 2**20} MB to parse"), False
        except Exception as exc:  # noqa: BLE001 - reported to the user as the reason, never a crash loop
            reply = ("failed", f"unexpected parser error: {type(exc).__name__}: {str(exc)[:200]}")
        del job, data
        healthy = healthy and _address_space() - baseline < memory_limit // 4
        conn.send((*reply, healthy))
    conn.close()

