"""Counting prompt tokens the way the model will, so a prompt never overflows the server's context window.

With the model's GGUF at hand (`RAGBUS_LLM_TOKENIZER`; `ragbus up` sets it to SmolLM2's), its own vocabulary
is loaded (vocab only: a few MB, no weights) and counts are exact. Without it, a conservative estimate.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

CHARS_PER_TOKEN_ESTIMATE = 3.0  # English averages ~4 chars per token; 3 leaves a margin
COUNTS_KEPT = 8192  # texts whose counts are remembered (a sentence is ~100 bytes: ~1 MB)


class TokenCounter:
    def __init__(self, gguf: str = "") -> None:
        self._vocab = None
        self._counted: dict[str, int] = {}
        if gguf and Path(gguf).is_file():
            import llama_cpp

            self._llama = llama_cpp
            self._vocab = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
            self._vocab_handle = llama_cpp.llama_model_get_vocab(self._vocab.model)
            log.info("counting prompt tokens with the vocabulary of %s", Path(gguf).name)
        else:
            log.info("no tokenizer configured (RAGBUS_LLM_TOKENIZER): estimating tokens from characters")

    @property
    def exact(self) -> bool:
        return self._vocab is not None

    def count(self, text: str) -> int:
        if self._vocab is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)
        # the system prompt, the prompt's frame and the sentences of passages that come up again: counted once
        known = self._counted.get(text)
        if known is None:
            known = self._counted[text] = self._count(text)
            if len(self._counted) > COUNTS_KEPT:
                del self._counted[next(iter(self._counted))]  # the oldest first
        return known

    def _count(self, text: str) -> int:
        # straight into llama.cpp: Llama.tokenize sizes its buffer by the training context, which a vocab-only
        # load reports as 0, so every call tokenized twice (110 µs a sentence, half of it wasted; the prompt
        # cut counts ~40 sentences before the first token)
        data = text.encode()
        room = len(data) + 2  # a token covers at least one byte
        buffer = (self._llama.llama_token * room)()
        n = self._llama.llama_tokenize(self._vocab_handle, data, len(data), buffer, room, False, False)
        return n if n >= 0 else len(self._vocab.tokenize(data, add_bos=False, special=False))

    def truncate(self, text: str, tokens: int) -> str:
        """The longest prefix of `text` (cut at a word boundary) that fits in `tokens`."""
        if tokens <= 0:
            return ""
        if self.count(text) <= tokens:
            return text
        low, high = 0, len(text)
        while low < high:  # binary search on characters: ~log2(len) counts, each a few microseconds
            mid = (low + high + 1) // 2
            if self.count(text[:mid]) <= tokens:
                low = mid
            else:
                high = mid - 1
        cut = text[:low]
        space = cut.rfind(" ")
        return (cut[:space] if space > len(cut) * 0.8 else cut).rstrip() + " …"
