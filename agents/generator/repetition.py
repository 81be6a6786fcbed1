"""Stopping a small model that has started to loop.

SmolLM2-135M sometimes repeats a paragraph, a sentence or a few characters until any token limit
(bench/attribution.py: most answers cut at the limit were loops, and llama.cpp's repeat_penalty made it worse).
The guard watches the streamed text and says when the answer has begun repeating itself; the generator then
stops the LLM and keeps the answer up to where the repetition began. Both depend only on the text, so a
replay of the same tokens stops at the same place.
"""

from __future__ import annotations

import re

SPAN = 96  # characters written twice verbatim: a loop, not style (bench/attribution.py sweeps it)
LETTERLESS = 32  # characters in a row without a letter: "1.\n2.\n3.\n..." or "#(#(#(" runs
_LETTER = re.compile(r"[^\W\d_]")
_BOUNDARY = re.compile(r"(?<=[.!?:;)\]])\s|\n")
_CLOSING = re.compile(r"(?:[.!?:;)]|\s*\[\d+\])+")


class RepetitionGuard:
    """Feed it the streamed pieces; `looping` turns true once the text repeats itself."""

    def __init__(self, span: int = SPAN, letterless: int = LETTERLESS) -> None:
        self.span, self.letterless = span, letterless
        self.text = ""
        self.looping = False
        self._run = 0  # characters since the last letter

    def feed(self, piece: str) -> bool:
        self.text += piece
        if self.looping:
            return True
        for ch in piece:
            self._run = 0 if _LETTER.match(ch) else self._run + 1
        tail = self.text[-self.span:]
        # an earlier occurrence (overlapping allowed: "#(#(" loops overlap themselves)
        self.looping = self._run >= self.letterless or (len(tail) == self.span and tail in self.text[:-1])
        return self.looping

    def kept(self) -> str:
        """The answer without its loop: up to where the repetition began, at a sentence or line boundary."""
        return trim_repetition(self.text, self.span, self.letterless)


def repetition_start(text: str, span: int = SPAN, letterless: int = LETTERLESS) -> int | None:
    """Where the first loop in `text` begins: the first span written before, or a run without letters."""
    run = 0
    for i, ch in enumerate(text):
        run = 0 if _LETTER.match(ch) else run + 1
        if run >= letterless:  # keep the punctuation and [n] markers that close the last words
            start = i + 1 - run
            closing = _CLOSING.match(text, start)
            return closing.end() if closing else start
        start = i + 1 - span
        if start > 0 and text[start:i + 1] in text[:i]:
            return start
    return None


def trim_repetition(text: str, span: int = SPAN, letterless: int = LETTERLESS) -> str:
    start = repetition_start(text, span, letterless)
    if start is None:
        return text.strip()
    head = text[:start].rstrip()
    if head.endswith((".", "!", "?", ":", ";", ")", "]")):
        return head.strip()
    cuts = [m.end() for m in _BOUNDARY.finditer(head)]
    if cuts and cuts[-1] > len(head) * 0.3:
        return head[:cuts[-1]].strip()
    space = head.rfind(" ")
    return (head[:space] if space > len(head) * 0.5 else head).strip()
