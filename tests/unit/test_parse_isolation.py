"""A hostile document costs one document, never the parser: time and memory limits in a child process."""

from __future__ import annotations

import time

import pytest

import agents.parser.isolation as isolation
from agents.parser.isolation import parse_isolated
from agents.parser.service import ParseError


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
