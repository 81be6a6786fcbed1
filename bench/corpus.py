"""A deterministic benchmark corpus built from text that ships with Python itself (no network).

Two sources, both part of every CPython installation:
- the Python Language Reference topics in `pydoc_data.topics` (the text behind `help("topic")`);
- the documentation strings of the standard library's modules, read with `ast` (nothing is imported),
  one "module reference" per module: the module docstring, then each public class, function and method.

Long sources are split into parts of at most ~30 KB; each part is rendered as Markdown, HTML, plain text,
PDF (reportlab) or DOCX (python-docx), in a seeded order, so the mix of formats is even and stable.
"""

from __future__ import annotations

import ast
import copy
import html
import io
import random
import re
import sysconfig
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ORIGINS = {
    "reference": "Language Reference topics (pydoc_data.topics)",
    "docstrings": "stdlib module docstrings (read with ast)",
    "package README": "installed packages' READMEs (METADATA)",
}
FORMATS = ("markdown", "html", "text", "pdf", "docx")
EXTENSIONS = {"markdown": "md", "html": "html", "text": "txt", "pdf": "pdf", "docx": "docx"}
MAX_CHARS = 30_000
MIN_CHARS = 2_000
# Parts of the stdlib that are tests, demos, tools or vendored copies rather than library documentation.
_SKIP_PARTS = {"test", "tests", "idle_test", "idlelib", "turtledemo", "site-packages", "lib2to3", "ensurepip",
               "__pycache__", "pydoc_data"}
_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")
_MD_HEADING = re.compile(r"^#{1,6} +\S")


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)

    def chars(self) -> int:
        return len(self.heading) + sum(len(p) + 2 for p in self.paragraphs)


@dataclass
class Source:
    title: str
    origin: str  # a key of ORIGINS
    sections: list[Section]

    def chars(self) -> int:
        return len(self.title) + sum(s.chars() for s in self.sections)


@dataclass(frozen=True)
class CorpusDoc:
    name: str
    doc_type: str
    data: bytes
    text_chars: int
    origin: str


# ---- sources -------------------------------------------------------------------------------------------
def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def is_code(paragraph: str) -> bool:
    """Indented blocks and doctest examples: rendered verbatim, never reflowed."""
    lines = paragraph.splitlines()
    return all(line.startswith((" ", "\t", ">>>", "...")) for line in lines)


def sections_from_text(title: str, text: str) -> list[Section]:
    """Cut reST-style underlined or Markdown `#` headings into sections; text before the first goes under title."""
    lines = text.splitlines()
    sections, body, current = [], [], Section(title)
    for i, line in enumerate(lines):
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        underlined = bool(line.strip()) and bool(_UNDERLINE.match(following)) and len(following) >= len(line.strip())
        if underlined or _MD_HEADING.match(line):
            current.paragraphs += paragraphs("\n".join(body))
            sections.append(current)
            current, body = Section(line.strip().lstrip("#").strip()), []
        elif not _UNDERLINE.match(line.strip()):
            body.append(line)
    current.paragraphs += paragraphs("\n".join(body))
    sections.append(current)
    return [s for s in sections if s.paragraphs]


def reference_topics() -> list[Source]:
    """Each topic of the Language Reference (the text of `help("topic")`)."""
    from pydoc_data.topics import topics

    sources = []
    for key in sorted(topics):
        lines = topics[key].splitlines()
        title = lines[0].strip() if len(lines) > 1 and _UNDERLINE.match(lines[1].strip()) else key
        if sections := sections_from_text(title, topics[key]):
            sources.append(Source(title, "reference", sections))
    return sources


def package_readmes() -> list[Source]:
    """The long descriptions (READMEs) in the METADATA of the installed distributions: only used when more
    documents are asked for than the standard library provides, as they depend on what is installed."""
    sources = []
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        body = dist.metadata.get_payload() or ""  # type: ignore[attr-defined]
        name = dist.metadata["Name"] or "?"
        if sections := sections_from_text(f"{name} {dist.version}", body):
            sources.append(Source(f"{name} {dist.version} — README", "package README", sections))
    return sources


def stdlib_modules() -> Iterator[tuple[str, Path]]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib)
        if _SKIP_PARTS.isdisjoint(rel.parts) and not rel.name.startswith("test_"):
            parts = rel.with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, owner: str = "") -> str:
    return f"{owner}{node.name}({ast.unparse(node.args)})"


def _public_with_doc(body: list[ast.stmt]) -> Iterator[tuple[ast.stmt, str]]:
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            doc = ast.get_docstring(node)
            if doc:
                yield node, doc


def module_reference(module: str, path: Path) -> Source | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    sections = [Section(f"Module {module}", paragraphs(ast.get_docstring(tree) or ""))]
    for node, doc in _public_with_doc(tree.body):
        if isinstance(node, ast.ClassDef):
            sections.append(Section(f"class {module}.{node.name}", paragraphs(doc)))
            for method, method_doc in _public_with_doc(node.body):
                if not isinstance(method, ast.ClassDef):
                    sections.append(Section(_signature(method, f"{node.name}."), paragraphs(method_doc)))
        else:
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            sections.append(Section(_signature(node, f"{module}."), paragraphs(doc)))
    sections = [s for s in sections if s.paragraphs]
    return Source(f"{module} — module reference", "docstrings", sections) if sections else None


def split(source: Source, max_chars: int = MAX_CHARS, min_chars: int = MIN_CHARS) -> list[Source]:
    """Greedy packing of sections (a section too large for one part is cut between paragraphs); a short tail
    joins the part before it."""
    parts: list[list[Section]] = [[]]
    size = 0
    for section in source.sections:
        pieces = [Section(section.heading)]
        for p in section.paragraphs:
            if pieces[-1].paragraphs and pieces[-1].chars() + len(p) > max_chars:
                pieces.append(Section(f"{section.heading} (continued)"))
            pieces[-1].paragraphs.append(p)
        for piece in pieces:
            if parts[-1] and size + piece.chars() > max_chars:
                parts.append([])
                size = 0
            parts[-1].append(piece)
            size += piece.chars()
    if len(parts) > 1 and sum(s.chars() for s in parts[-1]) < min_chars:
        tail = parts.pop()
        parts[-1] += tail
    if len(parts) == 1:
        return [source]
    return [Source(f"{source.title} (part {i})", source.origin, secs) for i, secs in enumerate(parts, start=1)]


def candidates(sources: list[Source]) -> list[Source]:
    """Every part of the sources that is at least MIN_CHARS long, in a stable order."""
    return [part for s in sources for part in split(s) if part.chars() >= MIN_CHARS]


def stdlib_sources() -> list[Source]:
    return reference_topics() + [s for m, p in stdlib_modules() if (s := module_reference(m, p))]


# ---- renderers -----------------------------------------------------------------------------------------
def reflow(paragraph: str) -> str:
    return " ".join(line.strip() for line in paragraph.splitlines())


def render_text(src: Source) -> bytes:
    out = [src.title, "=" * len(src.title), ""]
    for s in src.sections:
        out += [s.heading, "-" * len(s.heading), ""]
        for p in s.paragraphs:
            out += [p, ""]
    return "\n".join(out).encode()


def render_markdown(src: Source) -> bytes:
    out = [f"# {src.title}", ""]
    for s in src.sections:
        out += [f"## {s.heading}", ""]
        for p in s.paragraphs:
            out += ["```", p, "```", ""] if is_code(p) else [reflow(p), ""]
    return "\n".join(out).encode()


def render_html(src: Source) -> bytes:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(src.title)}</title>",
           "</head><body>", f"<h1>{esc(src.title)}</h1>"]
    for s in src.sections:
        out.append(f"<h2>{esc(s.heading)}</h2>")
        out += [f"<pre>{esc(p)}</pre>" if is_code(p) else f"<p>{esc(reflow(p))}</p>" for p in s.paragraphs]
    out.append("</body></html>")
    return "\n".join(out).encode()


def render_pdf(src: Source) -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, Preformatted, SimpleDocTemplate

    styles = getSampleStyleSheet()
    story = [Paragraph(html.escape(src.title), styles["Title"])]
    for s in src.sections:
        story.append(Paragraph(html.escape(s.heading), styles["Heading2"]))
        for p in s.paragraphs:
            if is_code(p):
                story.append(Preformatted(p, styles["Code"], maxLineLength=95))
            else:
                story.append(Paragraph(html.escape(reflow(p)), styles["BodyText"]))
    buf = io.BytesIO()
    # invariant=1: no timestamps or random ids in the file, so the same text gives the same bytes
    SimpleDocTemplate(buf, pagesize=A4, title=src.title, author="ragbus bench", invariant=1).build(story)
    return buf.getvalue()


def render_docx(src: Source) -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = src.title
    document.add_heading(src.title, level=1)
    for s in src.sections:
        document.add_heading(s.heading, level=2)
        for p in s.paragraphs:
            document.add_paragraph(p if is_code(p) else reflow(p))
    buf = io.BytesIO()
    document.save(buf)
    return _fixed_zip_times(buf.getvalue())


def _fixed_zip_times(data: bytes) -> bytes:
    """python-docx stamps each ZIP member with the current time; pin it so the bytes are reproducible."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), src.read(info),
                         compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


RENDERERS: dict[str, Callable[[Source], bytes]] = {
    "markdown": render_markdown, "html": render_html, "text": render_text, "pdf": render_pdf, "docx": render_docx,
}


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]


def select(n_docs: int, seed: int) -> list[Source]:
    """A seeded shuffle of the standard library's parts; package READMEs only beyond those."""
    pool: list[Source] = []
    for load in (stdlib_sources, package_readmes):
        more = candidates(load())
        random.Random(seed).shuffle(more)
        pool += more
        if len(pool) >= n_docs:
            return pool[:n_docs]
    raise ValueError(f"the corpus has {len(pool)} documents on this installation; asked for {n_docs}")


def build_corpus(n_docs: int, seed: int = 42) -> list[CorpusDoc]:
    """n_docs documents; formats cycle over the seeded order, so each is about a fifth of the corpus."""
    docs = []
    for i, src in enumerate(select(n_docs, seed)):
        doc_type = FORMATS[i % len(FORMATS)]
        name = f"{i:03d}-{slug(src.title)}.{EXTENSIONS[doc_type]}"
        docs.append(CorpusDoc(name, doc_type, RENDERERS[doc_type](src), src.chars(), src.origin))
    return docs


def build_versions(n_docs: int, seed: int = 42) -> tuple[list[CorpusDoc], list[CorpusDoc]]:
    """`build_corpus`, and a second version of every document (same name, same format) in which one paragraph of
    its middle section has a sentence more: what an edited manual uploaded again looks like."""
    first, second = [], []
    for i, src in enumerate(select(n_docs, seed)):
        doc_type = FORMATS[i % len(FORMATS)]
        name = f"{i:03d}-{slug(src.title)}.{EXTENSIONS[doc_type]}"
        first.append(CorpusDoc(name, doc_type, RENDERERS[doc_type](src), src.chars(), src.origin))
        edited = copy.deepcopy(src)
        section = edited.sections[len(edited.sections) // 2]
        if section.paragraphs:
            k = len(section.paragraphs) // 2
            section.paragraphs[k] += " This paragraph was revised in the second edition of the page."
        else:
            section.paragraphs.append("This section was added in the second edition of the page.")
        second.append(CorpusDoc(name, doc_type, RENDERERS[doc_type](edited), edited.chars(), edited.origin))
    return first, second


def describe(docs: list[CorpusDoc]) -> str:
    counts = Counter(d.origin for d in docs)
    origins = ", ".join(f"{n} {ORIGINS[o]}" for o, n in sorted(counts.items()))
    return f"CPython {sysconfig.get_python_version()}: {origins}"
