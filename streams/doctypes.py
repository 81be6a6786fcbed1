"""Which kind of document a blob of bytes is, decided from its content (and its name), never from a MIME type.

Both the gateway (to answer 415 early) and the parser (to pick an extractor) call this, so it lives in
`streams/` and depends on nothing but the standard library.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from typing import Literal, get_args

SUPPORTED_TYPES: tuple[str, ...] = ("pdf", "docx", "html", "markdown", "text")

# How the parser may cut a document (an upload can ask for one; the gateway and the CLI check the name)
ChunkStrategy = Literal["fixed", "sentence", "structure"]
CHUNK_STRATEGIES: tuple[str, ...] = get_args(ChunkStrategy)

_PDF_MAGIC = re.compile(rb"%PDF-\d\.\d")
# Acrobat accepts the header anywhere in the first 1024 bytes (e.g. after a mail or HTTP preamble).
_PDF_HEADER_WINDOW = 1024
_SNIFF_WINDOW = 8192
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_BINARY_MAGICS = (
    b"\x89PNG",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF
    b"MM\x00*",
    b"\x1f\x8b",  # gzip
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"\xfd7zXZ\x00",
    b"\x28\xb5\x2f\xfd",  # zstd
    b"\x7fELF",
    b"MZ\x90\x00",  # Windows executable
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",  # OLE2: legacy .doc/.xls
    b"SQLite format 3\x00",
    b"\x00asm",
    b"OggS",
    b"fLaC",
    b"ID3",  # MP3
)
_TEXT_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

_HTML_EXTENSIONS = (".html", ".htm", ".xhtml")
_MARKDOWN_EXTENSIONS = (".md", ".markdown", ".mdx", ".mkd", ".mdown")
_HTML_SIGNATURE = re.compile(r"<!doctype\s+html|<html[\s>]|<body[\s>]", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>")
_MARKDOWN_SIGNALS = {
    "heading": re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.MULTILINE),
    "fence": re.compile(r"^ {0,3}(```|~~~)", re.MULTILINE),
    "link": re.compile(r"\[[^\]\n]+\]\([^)\s]+\)"),
    "list": re.compile(r"^ {0,3}(?:[-*+]|\d{1,3}[.)])[ \t]+\S", re.MULTILINE),
    "emphasis": re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__"),
    "table": re.compile(r"^ {0,3}\|?[ \t]*:?-{3,}:?[ \t]*\|", re.MULTILINE),
}


class UnsupportedDocumentType(ValueError):
    """The bytes are not a document type the parser can read."""


def sniff_document_type(head: bytes, filename: str) -> str | None:
    """Return one of SUPPORTED_TYPES, or None when the content is not a supported document.

    Pass the whole upload: telling a DOCX from any other ZIP needs the ZIP's central directory at the end.
    """
    if _is_pdf(head):
        return "pdf"
    if head.startswith(_ZIP_MAGICS):
        return _zip_document_type(head, _extension(filename))
    if head.startswith(_BINARY_MAGICS) or _looks_binary(head[:_SNIFF_WINDOW]):
        return None
    sample = decode_sample(head[:_SNIFF_WINDOW])
    return _text_document_type(sample, _extension(filename))


def require_document_type(data: bytes, filename: str) -> str:
    """Like sniff_document_type, but raise UnsupportedDocumentType instead of returning None."""
    doc_type = sniff_document_type(data, filename)
    if doc_type is None:
        raise UnsupportedDocumentType(
            f"unsupported file type for {filename!r}: expected PDF, DOCX, HTML, Markdown or plain text"
        )
    return doc_type


def decode_sample(sample: bytes) -> str:
    """Best-effort decoding of a few KB, good enough to look for HTML or Markdown signals."""
    for bom, codec in zip(_TEXT_BOMS, ("utf-32-le", "utf-32-be", "utf-8", "utf-16-le", "utf-16-be"), strict=True):
        if sample.startswith(bom):
            return sample[len(bom) :].decode(codec, errors="replace")
    utf16 = bomless_utf16_codec(sample)
    if utf16:
        return sample.decode(utf16, errors="replace")
    return sample.decode("utf-8", errors="replace")


def bomless_utf16_codec(sample: bytes) -> str | None:
    """Spot UTF-16 without a BOM: Latin-script text then has a NUL in (nearly) every other byte, and
    decodes to printable characters."""
    if len(sample) < 4 or b"\x00" not in sample:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) >= 0.5 * len(odd) and even.count(0) <= 0.02 * len(even):
        codec = "utf-16-le"
    elif even.count(0) >= 0.5 * len(even) and odd.count(0) <= 0.02 * len(odd):
        codec = "utf-16-be"
    else:
        return None
    text = sample[: len(sample) // 2 * 2].decode(codec, errors="replace")
    printable = sum(char.isprintable() or char.isspace() for char in text)
    return codec if printable >= 0.95 * len(text) else None


def _is_pdf(head: bytes) -> bool:
    match = _PDF_MAGIC.search(head, 0, _PDF_HEADER_WINDOW + 8)
    if match is None:
        return False
    if match.start() == 0:
        return True
    # A header after leading junk: also require PDF body syntax, so a text *about* PDFs stays text.
    return any(marker in head for marker in (b"endobj", b"%%EOF", b"startxref"))


def _zip_document_type(data: bytes, extension: str) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "docx" if "word/document.xml" in archive.namelist() else None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        # A damaged archive named .docx is still meant as a DOCX: let the parser report it as corrupt
        # rather than tell the user the type is unsupported.
        return "docx" if extension == ".docx" else None


def _looks_binary(sample: bytes) -> bool:
    if sample.startswith(_TEXT_BOMS) or bomless_utf16_codec(sample):
        return False
    if b"\x00" in sample:
        return True
    # Control bytes other than tab/newline/formfeed/escape are rare in any 8-bit text encoding.
    controls = sum(sample.count(bytes([c])) for c in range(32) if c not in (8, 9, 10, 12, 13, 27))
    return bool(sample) and controls > 0.05 * len(sample)


def _text_document_type(sample: str, extension: str) -> str:
    has_tags = _ANY_TAG.search(sample) is not None
    if _HTML_SIGNATURE.search(sample) or (extension in _HTML_EXTENSIONS and has_tags):
        return "html"
    if extension in _MARKDOWN_EXTENSIONS or _has_strong_markdown_signals(sample):
        return "markdown"
    return "text"


def _has_strong_markdown_signals(sample: str) -> bool:
    """A heading or fence plus at least one other Markdown construct: plain prose rarely has both."""
    found = {name for name, pattern in _MARKDOWN_SIGNALS.items() if pattern.search(sample)}
    return bool(found & {"heading", "fence"}) and len(found) >= 2


def _extension(filename: str) -> str:
    name = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].lower()
    return name[name.rfind(".") :] if "." in name else ""
