"""Text extraction, one function per document type: bytes in, text plus its page/heading structure out.

Every extractor turns whatever its library raises into a ParseError with a sentence a user can read: a
document that cannot be parsed is reported, never retried and never allowed to crash the agent.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from agents.parser.chunking import Segment
from streams.doctypes import bomless_utf16_codec

logger = logging.getLogger(__name__)
T = TypeVar("T")

BLOCK_SEPARATOR = "\n\n"
DOCX_MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
DOCX_MAX_COMPRESSION_RATIO = 100
DOCX_MAX_ENTRIES = 10_000
# Only archives that unpack to more than this are judged by their compression ratio: small XML parts
# legitimately compress very well.
_RATIO_CHECK_FLOOR = 10 * 1024 * 1024

_BOM_CODECS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# The HTML standard reads these labels as windows-1252, and so do the pages that declare them.
_WINDOWS_1252_ALIASES = frozenset({"iso-8859-1", "iso8859-1", "latin-1", "latin1", "ascii", "us-ascii"})


class ParseError(Exception):
    """A document that cannot be parsed; .reason is a short readable sentence for the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Extraction:
    text: str
    segments: list[Segment]
    title: str | None = None
    author: str | None = None
    pages: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class TextAssembler:
    """Joins blocks with blank lines and records which page and heading path each stretch belongs to."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._segments: list[Segment] = []

    def add(self, block: str, *, section: tuple[str, ...] = (), page: int | None = None, heading: bool = False) -> None:
        block = clean_text(block).strip()
        if not block:
            return
        if self._parts:
            self._parts.append(BLOCK_SEPARATOR)
            self._length += len(BLOCK_SEPARATOR)
        start = self._length
        self._parts.append(block)
        self._length += len(block)
        last = self._segments[-1] if self._segments else None
        if not heading and last is not None and (last.page, last.section) == (page, section):
            self._segments[-1] = replace(last, end=self._length, has_body=True)
        else:
            self._segments.append(Segment(start, self._length, page, section, has_body=not heading))

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def segments(self) -> list[Segment]:
        return list(self._segments)


class HeadingPath:
    """The chain of open headings: a heading closes every open heading of its level or deeper."""

    def __init__(self) -> None:
        self._open: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> tuple[str, ...]:
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        self._open.append((level, title))
        return self.current

    @property
    def current(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._open)


def clean_text(text: str) -> str:
    """One newline convention, and no NULs (PostgreSQL text cannot store them)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def short_error(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message[:160]


def decode_text(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """Decode text of unknown encoding: BOM, then a declared charset, then UTF-8, then detection.
    Never raises: undecodable bytes become U+FFFD."""
    for bom, codec in _BOM_CODECS:
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="replace"), codec
    utf16 = bomless_utf16_codec(data[:8192])
    if utf16:
        return data.decode(utf16, errors="replace"), utf16
    declared_codec = _known_codec(declared) if declared else None
    if declared_codec:
        return data.decode(declared_codec, errors="replace"), declared_codec
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    detected = _detect_encoding(data)
    if detected:
        return data.decode(detected, errors="replace"), detected
    return data.decode("utf-8", errors="replace"), "utf-8 (invalid bytes replaced)"


def _known_codec(label: str) -> str | None:
    label = label.strip().lower()
    if label in _WINDOWS_1252_ALIASES:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _detect_encoding(data: bytes) -> str | None:
    """charset_normalizer, nudged towards windows-1252: on short Western text it often ranks cp1250 or a Mac
    code page first with the same score, which turns "crème" into "crčme"."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    for match in matches:
        if (
            match.encoding in ("cp1252", "latin_1")
            and match.chaos <= best.chaos + 0.01
            and match.coherence >= best.coherence - 0.1
        ):
            return "cp1252"
    try:
        if data.decode("cp1252") == str(best):
            return "cp1252"
    except UnicodeDecodeError:
        pass
    return _known_codec(best.encoding)


# --- PDF ---------------------------------------------------------------------------------------------------


def extract_pdf(data: bytes) -> Extraction:
    try:
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        _unlock_pdf(reader)
        assembler = TextAssembler()
        failed_pages = 0
        for number, page in enumerate(reader.pages, start=1):
            try:
                assembler.add(page.extract_text() or "", page=number)
            except Exception:  # one bad content stream should not cost the other pages
                logger.error("PDF page %d: text extraction failed", number, exc_info=True)
                failed_pages += 1
        page_count = len(reader.pages)
        title, author, metadata = _pdf_properties(reader)
    except ParseError:
        raise
    except Exception as exc:  # pypdf raises many unrelated types on malformed input
        raise ParseError(f"corrupt PDF: {short_error(exc)}") from exc
    if not assembler.text.strip():
        if failed_pages:
            raise ParseError(f"corrupt PDF: text could not be read from {failed_pages} page(s)")
        raise ParseError("no extractable text (OCR not supported)")
    if failed_pages:
        metadata["unreadable_pages"] = failed_pages
    return Extraction(assembler.text, assembler.segments, title, author, page_count, metadata)


def _unlock_pdf(reader: Any) -> None:
    """Open PDFs that are encrypted with an empty user password (common for "no copy" flags); refuse others."""
    if not reader.is_encrypted:
        return
    from pypdf import PasswordType

    try:
        unlocked = reader.decrypt("") != PasswordType.NOT_DECRYPTED
    except Exception as exc:
        raise ParseError("encrypted PDF (password required)") from exc
    if not unlocked:
        raise ParseError("encrypted PDF (password required)")


def _pdf_properties(reader: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    info = _best_effort(lambda: reader.metadata)
    if info is None:
        return None, None, {}
    metadata: dict[str, Any] = {}
    for key in ("subject", "creator", "producer"):
        value = _pdf_field(info, key)
        if value:
            metadata[key] = value
    created = _best_effort(lambda: info.creation_date)
    if created is not None:
        metadata["created"] = created.isoformat()
    return _pdf_field(info, "title"), _pdf_field(info, "author"), metadata


def _pdf_field(info: Any, attribute: str) -> str | None:
    value = _best_effort(lambda: getattr(info, attribute))
    return (collapse_whitespace(clean_text(str(value))) or None) if value is not None else None


def _best_effort(read: Callable[[], T]) -> T | None:
    """Metadata is a bonus: a malformed info dictionary, core properties part or date must not fail the
    document."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - the libraries raise many unrelated types on malformed metadata
        return None


# --- DOCX --------------------------------------------------------------------------------------------------


def extract_docx(data: bytes) -> Extraction:
    refuse_zip_bomb(data)
    try:
        import docx
        from docx.table import Table

        document = docx.Document(io.BytesIO(data))
        assembler, headings = TextAssembler(), HeadingPath()
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                assembler.add(docx_table_text(block), section=headings.current)
                continue
            level = _docx_heading_level(block)
            text = collapse_whitespace(block.text) if level is not None else block.text
            if level is None or not text:
                assembler.add(text, section=headings.current)
            else:
                assembler.add(text, section=headings.enter(level, text), heading=True)
        title, author, metadata = _best_effort(lambda: _docx_properties(document)) or (None, None, {})
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"corrupt DOCX: {short_error(exc)}") from exc
    return Extraction(assembler.text, assembler.segments, title or _first_heading(assembler), author, None, metadata)


def refuse_zip_bomb(data: bytes) -> None:
    """Judge the archive by its central directory before anything inflates it. The declared sizes are
    trustworthy enough: zipfile stops reading a member at its declared size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except Exception as exc:
        raise ParseError(f"corrupt DOCX: {short_error(exc)}") from exc
    unpacked = sum(member.file_size for member in members)
    packed = max(sum(member.compress_size for member in members), 1)
    if (
        len(members) > DOCX_MAX_ENTRIES
        or unpacked > DOCX_MAX_UNCOMPRESSED_BYTES
        or (unpacked > _RATIO_CHECK_FLOOR and unpacked > DOCX_MAX_COMPRESSION_RATIO * packed)
    ):
        raise ParseError("DOCX too large when decompressed (possible zip bomb)")


def docx_table_text(table: Any) -> str:
    """One line per row, `cell | cell | cell`; a merged cell is written once."""
    rows = []
    for row in table.rows:
        cells: list[Any] = []
        for cell in row.cells:
            if not cells or cell._tc is not cells[-1]._tc:  # a merged cell repeats for each column it spans
                cells.append(cell)
        texts = [collapse_whitespace(cell.text) for cell in cells]
        if any(texts):
            rows.append(" | ".join(texts))
    return "\n".join(rows)


def _docx_heading_level(paragraph: Any) -> int | None:
    style = paragraph.style
    name = (style.name or "") if style is not None else ""
    if name.lower() == "title":
        return 0
    match = re.fullmatch(r"heading\s*([1-9])", name.strip(), re.IGNORECASE)
    return int(match.group(1)) if match else None


def _docx_properties(document: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    properties = document.core_properties
    metadata: dict[str, Any] = {}
    for key in ("created", "modified"):
        moment = getattr(properties, key)
        if moment is not None:
            metadata[key] = moment.isoformat()
    for key in ("language", "subject", "keywords", "last_modified_by"):
        value = collapse_whitespace(getattr(properties, key) or "")
        if value:
            metadata[key] = value
    title = collapse_whitespace(properties.title or "") or None
    author = collapse_whitespace(properties.author or "") or None
    return title, author, metadata


def _first_heading(assembler: TextAssembler) -> str | None:
    for segment in assembler.segments:
        if segment.section:
            return segment.section[0]
    return None


# --- plain text and Markdown -------------------------------------------------------------------------------


def extract_text(data: bytes) -> Extraction:
    text, encoding = decode_text(data)
    text = clean_text(text)
    segments = plain_text_segments(text) or [Segment(0, len(text), None, ())]
    return Extraction(text, segments, metadata={"encoding": encoding})


def plain_text_headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, indent, title) of the lines of a plain-text document that read as headings: after a blank line
    or right under a less indented heading, short (<= 8 words and 60 characters: wrapped lines are longer), not
    ending like a sentence ("search regex..." does not), and directly followed by a line indented deeper. Man
    pages and manuals formatted for the terminal ("COMMANDS" / "       search regex..." / its indented body)
    have them; prose paragraphs do not."""
    out: list[tuple[int, int, str]] = []
    lines = text.split("\n")
    offset, previous = 0, -1  # the indent of the line above when it was a heading, else -1
    for i, line in enumerate(lines):
        start, offset = offset, offset + len(line) + 1
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" \t"))
        above_ok = i == 0 or not lines[i - 1].strip() or 0 <= previous < indent
        previous = -1
        if i + 1 == len(lines) or not stripped or not lines[i + 1].strip() or not above_ok:
            continue
        if len(stripped) > 60 or len(stripped.split()) > 8 or stripped[-1] in ",;:!?" or (
                stripped[-1] == "." and not stripped.endswith("...")):
            continue
        following = lines[i + 1]
        if len(following) - len(following.lstrip(" \t")) > indent:
            out.append((start + indent, indent, stripped))
            previous = indent
    return out


def plain_text_segments(text: str) -> list[Segment] | None:
    """Segments under the headings `plain_text_headings` finds, two levels by indentation (the least indented
    are the top), so the structure strategy keeps each entry of a man page with its heading; None for a text with
    fewer than three: then it is prose, chunked as one stretch."""
    found = plain_text_headings(text)
    if len(found) < 3:
        return None
    levels = {indent: n for n, indent in enumerate(sorted({indent for _, indent, _ in found}))}
    # Two levels: a man page's sections and their entries. Deeper ones ("P >= 1000" under "How APT Interprets
    # Priorities") stay in their entry's text: as chunks of their own they were a line or two without the
    # context that says what they are about (measured: bench/eval/experiments/README.md).
    found = [heading for heading in found if levels[heading[1]] < 2]
    segments = [Segment(0, found[0][0], None, ())] if text[: found[0][0]].strip() else []
    path = HeadingPath()
    for k, (start, indent, title) in enumerate(found):
        end = found[k + 1][0] if k + 1 < len(found) else len(text)
        line_end = text.find("\n", start, end)
        has_body = line_end >= 0 and bool(text[line_end:end].strip())
        segments.append(Segment(start, end, None, path.enter(levels[indent], title), has_body))
    return segments


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_OPENING = re.compile(r" {0,3}(#{1,6})(?=[ \t]|$)")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_LIST_ITEM = re.compile(r"^ {0,3}(?:[-*+]|\d{1,9}[.)])[ \t]")
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*[\"']?(.*?)[\"']?[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class _Heading:
    start: int  # where the heading's text begins
    body_start: int  # just after the heading's last line
    level: int
    title: str


def extract_markdown(data: bytes) -> Extraction:
    """The Markdown source is kept as the text (code blocks and all); headings only give it structure."""
    text, encoding = decode_text(data)
    text = clean_text(text)
    body_start, front_title = _front_matter(text)
    headings = markdown_headings(text, body_start)
    segments = _markdown_segments(text, headings, body_start)
    first_h1 = next((heading.title for heading in headings if heading.level == 1), None)
    return Extraction(text, segments, front_title or first_h1, metadata={"encoding": encoding})


def _front_matter(text: str) -> tuple[int, str | None]:
    """YAML front matter is metadata, not content: its closing `---` must not read as a setext heading."""
    if not text.startswith("---\n"):
        return 0, None
    match = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE).search(text, 4)
    if match is None:
        return 0, None
    title = _FRONT_MATTER_TITLE.search(text, 4, match.start())
    return match.end(), (title.group(1).strip() or None) if title else None


def markdown_headings(text: str, start: int = 0) -> list[_Heading]:
    headings: list[_Heading] = []
    fence: str | None = None
    paragraph_start: int | None = None
    paragraph_lines: list[str] = []
    position = start
    for line in text[start:].split("\n"):
        line_start, position = position, position + len(line) + 1
        fence_match = _FENCE.match(line)
        marker = fence_match.group(1) if fence_match else None
        if fence is not None or marker:
            if fence is None:
                fence = marker
            elif marker and marker[0] == fence[0] and len(marker) >= len(fence):  # the fence closes
                fence = None
            paragraph_start, paragraph_lines = None, []
            continue
        atx = _atx_heading(line)
        underline = _SETEXT_UNDERLINE.match(line)
        if atx:
            headings.append(_Heading(line_start, position, *atx))
        elif underline and paragraph_start is not None and not _LIST_ITEM.match(paragraph_lines[0]):
            title = collapse_whitespace(" ".join(paragraph_lines))
            headings.append(_Heading(paragraph_start, position, 1 if "=" in underline.group(1) else 2, title))
        elif line.strip() and not underline:
            paragraph_start = line_start if paragraph_start is None else paragraph_start
            paragraph_lines.append(line)
            continue
        # Anything else (blank line, heading, thematic break) ends the paragraph a setext underline needs.
        paragraph_start, paragraph_lines = None, []
    return headings


def _atx_heading(line: str) -> tuple[int, str] | None:
    """`## Title ##` -> (2, "Title"); string operations rather than one regex, which would backtrack
    quadratically on a long line full of spaces."""
    opening = _ATX_OPENING.match(line)
    if opening is None:
        return None
    title = line[opening.end() :].strip()
    without_closing = title.rstrip("#")
    if not without_closing or without_closing[-1] in " \t":  # `# C#` keeps its hash, `# Title ##` does not
        title = without_closing.strip()
    return (len(opening.group(1)), title) if title else None


def _markdown_segments(text: str, headings: list[_Heading], body_start: int) -> list[Segment]:
    first = headings[0].start if headings else len(text)
    segments = [Segment(body_start, first, None, ())] if text[body_start:first].strip() else []
    path = HeadingPath()
    for index, heading in enumerate(headings):
        end = headings[index + 1].start if index + 1 < len(headings) else len(text)
        has_body = bool(text[heading.body_start : end].strip())
        segments.append(Segment(heading.start, end, None, path.enter(heading.level, heading.title), has_body))
    return segments


# --- HTML --------------------------------------------------------------------------------------------------

_HTML_ALWAYS_DROPPED = [
    "script",
    "style",
    "noscript",
    "nav",
    "aside",
    "footer",
    "svg",
    "template",
    "iframe",
    "button",
    "select",
    "dialog",
]
_HTML_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "body",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "header",
        "hr",
        "li",
        "main",
        "ol",
        "p",
        "section",
        "summary",
        "ul",
        "caption",
    }
)
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_HTML_LINK_MARKS = ["headerlink", "viewcode-link", "viewcode-back"]
_PERMALINK_SYMBOLS = frozenset({"", "¶", "#", "§", "🔗", "\u200b"})
_HTML_DECLARED_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)|<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""",
    re.IGNORECASE,
)


def extract_html(data: bytes) -> Extraction:
    from bs4 import BeautifulSoup

    markup, encoding = decode_text(data, declared=_declared_charset(data[:4096]))
    try:
        soup = BeautifulSoup(clean_text(markup), "lxml")
    except Exception as exc:
        raise ParseError(f"corrupt HTML: {short_error(exc)}") from exc
    title = collapse_whitespace(soup.title.get_text(" ")) if soup.title else ""
    language = soup.html.get("lang") if soup.html else None
    _drop_boilerplate(soup)
    assembler, headings = TextAssembler(), HeadingPath()
    _collect_html_blocks(_main_content(soup), assembler, headings)
    metadata: dict[str, Any] = {"encoding": encoding}
    if isinstance(language, str) and language.strip():
        metadata["language"] = language.strip()
    return Extraction(assembler.text, assembler.segments, title or _first_heading(assembler), metadata=metadata)


def _declared_charset(head: bytes) -> str | None:
    match = _HTML_DECLARED_CHARSET.search(head)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).decode("ascii", errors="replace")


def _drop_boilerplate(soup: Any) -> None:
    for tag in soup.find_all(_HTML_ALWAYS_DROPPED):
        if not tag.decomposed:
            tag.decompose()
    # Permalink marks ("¶" after every Sphinx or MkDocs heading, "#" or "§" elsewhere) and Sphinx's "[source]"
    # / "[docs]" links would otherwise end every heading, section path and citation.
    for tag in soup.find_all(["a", "span"], class_=_HTML_LINK_MARKS):
        if not tag.decomposed:
            tag.decompose()
    for anchor in soup.select(":is(h1, h2, h3, h4, h5, h6, dt) a[href^='#']"):
        if not anchor.decomposed and anchor.get_text().strip() in _PERMALINK_SYMBOLS:
            anchor.decompose()
    for tag in soup.find_all(attrs={"role": ["navigation", "search", "complementary"]}):
        if not tag.decomposed:
            tag.decompose()
    # A page header is boilerplate, but an article's header holds the article's own title.
    for tag in soup.find_all(["header"]) + soup.find_all(attrs={"role": ["banner", "contentinfo"]}):
        if not tag.decomposed and tag.find_parent(["main", "article"]) is None:
            tag.decompose()
    # Search boxes and newsletter forms go; a form wrapping the whole page (ASP.NET WebForms) stays.
    page_length = len(soup.get_text())
    for form in soup.find_all("form"):
        if not form.decomposed and not form.find(["main", "article"]) and len(form.get_text()) < page_length / 2:
            form.decompose()


def _main_content(soup: Any) -> Any:
    main = soup.find("main") or soup.find(attrs={"role": "main"})
    if main is not None and main.get_text().strip():
        return main
    articles = [article for article in soup.find_all("article") if article.get_text().strip()]
    if articles:
        return max(articles, key=lambda article: len(article.get_text()))
    return soup.body or soup


def _collect_html_blocks(root: Any, assembler: TextAssembler, headings: HeadingPath) -> None:
    """Walk the tree in document order (iteratively: pages nest deeper than Python's recursion limit) and
    emit one block per paragraph-like element, table or heading."""
    from bs4.element import CData, NavigableString, PreformattedString, Tag

    inline: list[str] = []
    block_end = object()

    def flush() -> None:
        lines = (collapse_whitespace(line) for line in "".join(inline).split("\n"))
        assembler.add("\n".join(line for line in lines if line), section=headings.current)
        inline.clear()

    pending: list[Any] = [root]
    while pending:
        node = pending.pop()
        if node is block_end:
            flush()
        elif isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString) or isinstance(node, CData):  # skip comments, doctype
                inline.append(str(node))
        elif isinstance(node, Tag):
            if node.name in _HTML_HEADINGS:
                flush()
                title = collapse_whitespace(node.get_text(" "))
                if title:
                    assembler.add(title, section=headings.enter(int(node.name[1]), title), heading=True)
            elif node.name == "br":
                inline.append("\n")
            elif node.name in ("pre", "table"):
                flush()
                block = node.get_text() if node.name == "pre" else _html_table_text(node)
                assembler.add(block, section=headings.current)
            else:
                if node.name in _HTML_BLOCK_TAGS:
                    flush()
                    pending.append(block_end)
                pending.extend(reversed(node.contents))
    flush()


def _html_table_text(table: Any) -> str:
    rows = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue  # a nested table's rows are read as part of its cell
        cells = [collapse_whitespace(cell.get_text(" ")) for cell in row.find_all(["td", "th"], recursive=False)]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows) if rows else collapse_whitespace(table.get_text(" "))
