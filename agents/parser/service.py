"""The parser's pure logic: document bytes in, extracted text and sized chunks out. No broker, no I/O.

Extraction per type lives in `formats`, chunking in `chunking`; this module is the public face the
handlers call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.parser.chunking import ChunkDraft, chunk_document, tokenizer_name, validate_chunking
from agents.parser.formats import (
    Extraction,
    ParseError,
    extract_docx,
    extract_html,
    extract_markdown,
    extract_pdf,
    extract_text,
)
from streams.doctypes import CHUNK_STRATEGIES, sniff_document_type

__all__ = ["CHUNK_STRATEGIES", "ChunkDraft", "ParseError", "ParsedDocument", "parse_document"]

_EXTRACTORS: dict[str, Callable[[bytes], Extraction]] = {
    "pdf": extract_pdf,
    "docx": extract_docx,
    "html": extract_html,
    "markdown": extract_markdown,
    "text": extract_text,
}


@dataclass(frozen=True)
class ParsedDocument:
    doc_type: str  # pdf | docx | html | markdown | text
    title: str | None
    author: str | None
    pages: int | None
    text: str  # the full extracted text that every chunk's offsets refer to
    chunks: tuple[ChunkDraft, ...]
    metadata: dict[str, Any]


def parse_document(
    data: bytes, filename: str, *, strategy: str = "structure", chunk_tokens: int = 200, overlap_tokens: int = 40
) -> ParsedDocument:
    """Extract the text of a document and cut it into chunks.

    Raises ParseError (with a reason fit for the user) for any document that cannot be parsed, and
    ValueError for a bad chunking configuration (a programming error, not a property of the document).
    """
    validate_chunking(strategy, chunk_tokens, overlap_tokens)
    doc_type = sniff_document_type(data, filename)
    if doc_type is None:
        raise ParseError(f"unsupported file type for {filename!r}: expected PDF, DOCX, HTML, Markdown or plain text")
    extraction = _EXTRACTORS[doc_type](data)
    chunks = chunk_document(
        extraction.text,
        extraction.segments,
        strategy=strategy,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
    )
    if not chunks:  # nothing but whitespace, or only non-content such as Markdown front matter
        raise ParseError("document is empty")
    metadata = {**extraction.metadata, "tokenizer": tokenizer_name()}
    return ParsedDocument(
        doc_type=doc_type,
        title=extraction.title,
        author=extraction.author,
        pages=extraction.pages,
        text=extraction.text,
        chunks=chunks,
        metadata=metadata,
    )
