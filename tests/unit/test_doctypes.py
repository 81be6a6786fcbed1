"""Content sniffing: the type comes from the bytes (and the name as a hint), never from a claimed MIME type."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from streams.doctypes import (
    SUPPORTED_TYPES,
    UnsupportedDocumentType,
    require_document_type,
    sniff_document_type,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_supported_types_are_the_five_the_parser_reads() -> None:
    assert set(SUPPORTED_TYPES) == {"pdf", "docx", "html", "markdown", "text"}


def test_real_pdf_is_pdf_whatever_its_name() -> None:
    data = (FIXTURES / "crazyones.pdf").read_bytes()
    assert sniff_document_type(data, "crazyones.pdf") == "pdf"
    assert sniff_document_type(data, "notes.txt") == "pdf"
    assert sniff_document_type(data, "no-extension") == "pdf"


def test_pdf_header_after_leading_junk_within_1024_bytes_is_pdf() -> None:
    data = b"From: scanner@example.com\r\n\r\n" + (FIXTURES / "crazyones.pdf").read_bytes()
    assert sniff_document_type(data, "scan.bin") == "pdf"


def test_pdf_header_beyond_1024_bytes_is_not_pdf() -> None:
    data = b"x" * 2000 + (FIXTURES / "crazyones.pdf").read_bytes()
    assert sniff_document_type(data, "scan.pdf") != "pdf"


def test_prose_mentioning_the_pdf_magic_stays_text() -> None:
    data = b"Every PDF file starts with the bytes %PDF-1.7 followed by a newline.\n"
    assert sniff_document_type(data, "notes.txt") == "text"


def test_real_docx_is_docx_whatever_its_name() -> None:
    data = (FIXTURES / "python-docx-test.docx").read_bytes()
    assert sniff_document_type(data, "report.docx") == "docx"
    assert sniff_document_type(data, "report.pdf") == "docx"


def test_zip_without_word_document_is_unsupported() -> None:
    data = zip_bytes({"xl/workbook.xml": b"<workbook/>", "[Content_Types].xml": b"<Types/>"})
    assert sniff_document_type(data, "book.docx") is None
    assert sniff_document_type(data, "archive.zip") is None


def test_damaged_zip_is_docx_only_when_named_docx() -> None:
    head = (FIXTURES / "python-docx-test.docx").read_bytes()[:2000]  # no central directory
    assert sniff_document_type(head, "report.docx") == "docx"
    assert sniff_document_type(head, "archive.zip") is None


@pytest.mark.parametrize(
    "magic",
    [
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"GIF89a",
        b"\x1f\x8b\x08\x00",
        b"7z\xbc\xaf\x27\x1c",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
    ],
    ids=["png", "jpeg", "gif", "gzip", "7z", "legacy-doc"],
)
def test_images_and_archives_are_unsupported_even_when_named_txt(magic: bytes) -> None:
    assert sniff_document_type(magic + b"rest of the file is plain ascii", "photo.txt") is None


def test_nul_bytes_mean_binary() -> None:
    data = b"ELF-ish header" + bytes(range(0, 256)) * 4
    assert sniff_document_type(data, "data.txt") is None


def test_utf16_text_with_nul_bytes_is_still_text() -> None:
    content = "Plain notes about the cluster.\n"
    assert sniff_document_type(content.encode("utf-16"), "notes.txt") == "text"
    assert sniff_document_type(content.encode("utf-16-le"), "notes.txt") == "text"
    assert sniff_document_type(content.encode("utf-16-be"), "notes.txt") == "text"


def test_utf16_html_is_html() -> None:
    assert sniff_document_type("<!DOCTYPE html><p>hi</p>".encode("utf-16"), "page") == "html"


def test_latin1_text_is_text() -> None:
    assert sniff_document_type("Crème brûlée à la française.".encode("latin-1"), "menu.txt") == "text"


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (b"<!DOCTYPE html><html><body><p>hello</p></body></html>", "page.txt"),
        (b"<html lang='en'><p>hello</p></html>", "download"),
        (b"\n\n  <body>\n<p>fragment</p></body>", "fragment"),
        (b"<div><p>hello</p></div>", "page.html"),
        (b"<p>hello</p>", "page.HTM"),
    ],
)
def test_html_is_recognised_by_signature_or_by_extension_with_tags(content: bytes, filename: str) -> None:
    assert sniff_document_type(content, filename) == "html"


def test_html_extension_without_tags_is_text() -> None:
    assert sniff_document_type(b"just words, no markup", "page.html") == "text"


@pytest.mark.parametrize("filename", ["README.md", "guide.markdown", "page.mdx"])
def test_markdown_extension_means_markdown(filename: str) -> None:
    assert sniff_document_type(b"Just a sentence.", filename) == "markdown"


def test_strong_markdown_signals_make_markdown_without_extension() -> None:
    content = b"# Setup\n\nInstall it:\n\n```bash\npip install ragbus\n```\n\n- fast\n- small\n"
    assert sniff_document_type(content, "README") == "markdown"


def test_a_lone_hash_line_is_not_enough_for_markdown() -> None:
    content = b"# comment in a config-like note\nkey = value\nother = 2\n"
    assert sniff_document_type(content, "notes.txt") == "text"


def test_empty_bytes_are_text_so_the_parser_can_say_empty() -> None:
    assert sniff_document_type(b"", "empty.txt") == "text"


def test_require_document_type_raises_a_value_error_for_unsupported() -> None:
    with pytest.raises(UnsupportedDocumentType, match="unsupported file type") as caught:
        require_document_type(b"\x89PNG\r\n\x1a\n....", "photo.png")
    assert isinstance(caught.value, ValueError)
    assert require_document_type(b"hello", "a.txt") == "text"
