"""A hostile document costs one document, never the parser: time and memory limits in a child process."""

from __future__ import annotations

import time

import pytest

import agents.parser.isolation as isolation
from agents.parser.service import ParseError


def parse_isolated(data: bytes, filename: str, *, timeout: float, memory_limit: int):
    """One document in a child of its own (a fresh ParseWorker): the limits on their own."""
    with isolation.ParseWorker(memory_limit) as worker:
        return worker.parse(data, filename, timeout=timeout)


def test_a_good_document_parses_in_the_child_like_in_process():
    parsed = parse_isolated(b"# Title\nSome text about parsing.", "a.md", timeout=30, memory_limit=2**30)
    assert parsed.doc_type == "markdown" and parsed.chunks and parsed.chunks[0].section == ("Title",)


def test_a_parse_error_keeps_its_reason():
    with pytest.raises(ParseError, match="empty"):
        parse_isolated(b"   \n ", "blank.txt", timeout=30, memory_limit=2**30)


def test_a_document_that_takes_too_long_is_stopped(monkeypatch):
    monkeypatch.setattr(isolation, "parse_document", lambda *a, **k: time.sleep(60))
    started = time.monotonic()
    with pytest.raises(ParseError, match="longer than 1 s"):
        parse_isolated(b"x", "slow.txt", timeout=1, memory_limit=2**30)
    assert time.monotonic() - started < 10


def test_a_document_that_needs_too_much_memory_fails_with_a_reason(monkeypatch):
    monkeypatch.setattr(isolation, "parse_document", lambda *a, **k: bytearray(2**31))
    with pytest.raises(ParseError, match="more than 64 MB"):
        parse_isolated(b"x", "huge.txt", timeout=30, memory_limit=64 * 2**20)


def test_a_child_that_dies_is_a_parse_error_not_a_crash(monkeypatch):
    import os
    import signal

    monkeypatch.setattr(isolation, "parse_document", lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(ParseError, match="died"):
        parse_isolated(b"x", "boom.txt", timeout=30, memory_limit=2**30)


def test_one_child_parses_document_after_document_at_the_niceness_asked():
    import os

    with isolation.ParseWorker(2**30, nice=7) as worker:
        first = worker.parse(b"# One\nThe first document.", "one.md", timeout=30)
        pid = worker.pid
        second = worker.parse(b"# Two\nThe second document.", "two.md", timeout=30)
        assert first.chunks[0].section == ("One",) and second.chunks[0].section == ("Two",)
        assert pid is not None and worker.pid == pid  # the same child, warm
        assert os.getpriority(os.PRIO_PROCESS, pid) - os.getpriority(os.PRIO_PROCESS, 0) == 7
    assert worker.pid is None


def test_after_a_document_that_hung_died_or_ran_out_of_memory_the_next_one_parses_in_a_fresh_child(monkeypatch):
    import os
    import signal

    real = isolation.parse_document

    def hostile(data, filename, **options):
        if filename == "slow.txt":
            time.sleep(60)
        if filename == "boom.txt":
            os.kill(os.getpid(), signal.SIGKILL)
        if filename == "huge.txt":
            return bytearray(2**31)
        return real(data, filename, **options)

    monkeypatch.setattr(isolation, "parse_document", hostile)
    with isolation.ParseWorker(64 * 2**20) as worker:
        pids = []
        for name, reason in (("slow.txt", "longer than 1 s"), ("boom.txt", "died"), ("huge.txt", "more than 64 MB")):
            worker.parse(b"# Before\nA good one.", "good.md", timeout=30)
            pids.append(worker.pid)
            with pytest.raises(ParseError, match=reason):
                worker.parse(b"x", name, timeout=1)
            assert worker.parse(b"# After\nStill parsing.", "after.md", timeout=30).chunks[0].section == ("After",)
            assert worker.pid not in pids  # the child that failed is gone
        pid = worker.pid
        with pytest.raises(ParseError, match="empty"):  # an ordinary parse error keeps the child
            worker.parse(b"   \n ", "blank.txt", timeout=30)
        assert worker.pid == pid is not None


def test_a_document_that_ran_out_of_memory_in_a_used_child_gets_a_fresh_one(monkeypatch):
    real, seen = isolation.parse_document, []

    def holds_memory(data, filename, **options):  # a child that parsed before has less of its limit left
        if seen and filename == "big.md":
            raise MemoryError
        seen.append(filename)
        return real(data, filename, **options)

    monkeypatch.setattr(isolation, "parse_document", holds_memory)
    with isolation.ParseWorker(2**30) as worker:
        worker.parse(b"# First\nA document.", "first.md", timeout=30)
        used = worker.pid
        assert worker.parse(b"# Big\nA large one.", "big.md", timeout=30).chunks[0].section == ("Big",)
        assert worker.pid != used


def test_the_child_keeps_none_of_the_parsers_sockets():
    import os
    import socket

    listener = socket.socket()  # stands for the parser's NATS connection
    listener.bind(("127.0.0.1", 0))
    try:
        with isolation.ParseWorker(2**30) as worker:
            worker.parse(b"# One\nA document.", "one.md", timeout=30)
            inherited = [os.readlink(f"/proc/{worker.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{worker.pid}/fd")]
            assert f"socket:[{os.fstat(listener.fileno()).st_ino}]" not in inherited, inherited
            assert worker.parse(b"# Two\nStill parsing.", "two.md", timeout=30).chunks
    finally:
        listener.close()
