"""Consistency check of the paraphrase evaluation set (questions.json against corpus/).

Standalone: `python bench/eval/check.py` prints the problems and exits 1 if there are any.
From a test: `check()` returns the list of problems (empty when the set is consistent).

Checked: every item has the expected fields and kind; ids and questions are unique; every document exists and is
asked about; every `answer_contains` phrase is 5-15 words, occurs exactly once in its document's text, and lies
inside one block (an HTML block element, or a paragraph of a text/Markdown file), so chunking cannot split it at a
paragraph break. Matching ignores case and runs of whitespace, as the scorer does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
QUESTIONS = HERE / "questions.json"
# Named evaluation sets: (corpus folder, questions file). "debian" is the first one (Debian FAQ, Git, APT);
# "sphinx" is Sphinx-built HTML (the Requests and Sphinx manuals), the page format of the held-out set.
SETS = {"debian": (CORPUS, QUESTIONS), "sphinx": (HERE / "sphinx" / "corpus", HERE / "sphinx" / "questions.json")}
KINDS = ("literal", "paraphrased")
FIELDS = ("id", "question", "kind", "doc", "answer_contains", "heading")
PHRASE_WORDS = (5, 15)
# Elements after which an HTML-to-text extractor starts a new block (the set ragbus's parser uses, plus headings,
# preformatted text and table cells).
HTML_BLOCKS = frozenset(
    "address article blockquote body dd details div dl dt fieldset figcaption figure footer header hr li main ol p "
    "section summary ul caption h1 h2 h3 h4 h5 h6 pre table tr td th".split()
)
HTML_DROPPED = ("script", "style", "noscript", "template")
SEPARATOR = "\x00"


def normalise(text: str) -> str:
    """Lower case, runs of whitespace collapsed to one space (the same rule as score.normalise)."""
    return re.sub(r"\s+", " ", text).strip().lower()


def _soup(raw: str) -> Any:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(list(HTML_DROPPED)):
        tag.decompose()
    return soup


def doc_text(path: Path) -> str:
    """The document as plain text: HTML through BeautifulSoup's get_text(), everything else as it is."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".html", ".htm"):
        return str(_soup(raw).get_text())
    return raw


def doc_blocks(path: Path) -> list[str]:
    """The document cut at block boundaries: HTML block elements, or blank lines in text and Markdown."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() not in (".html", ".htm"):
        return re.split(r"\n[ \t]*\n", raw)
    soup = _soup(raw)
    for tag in soup.find_all(list(HTML_BLOCKS)):
        tag.insert_before(SEPARATOR)
        tag.insert_after(SEPARATOR)
    for tag in soup.find_all("br"):
        tag.replace_with(SEPARATOR)
    return str(soup.get_text()).split(SEPARATOR)


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path.name}: expected a JSON list")
    return data


def check(questions_path: Path = QUESTIONS, corpus: Path = CORPUS) -> list[str]:
    """Every inconsistency found, one sentence each; an empty list means the set is consistent."""
    try:
        questions = load_questions(questions_path)
    except (OSError, ValueError) as exc:
        return [f"cannot read {questions_path}: {exc}"]
    docs = sorted(p.name for p in corpus.iterdir() if p.is_file() and not p.name.startswith("."))
    texts: dict[str, str] = {}
    blocks: dict[str, list[str]] = {}
    problems: list[str] = []
    ids: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    seen: dict[str, str] = {}
    for index, item in enumerate(questions):
        label = f"item {index} ({item.get('id', '?')})" if isinstance(item, dict) else f"item {index}"
        if not isinstance(item, dict):
            problems.append(f"{label}: not an object")
            continue
        missing = [f for f in FIELDS if not isinstance(item.get(f), str) or not item[f].strip()]
        if missing:
            problems.append(f"{label}: missing or empty {', '.join(missing)}")
            continue
        ids[item["id"]] += 1
        if item["kind"] not in KINDS:
            problems.append(f"{label}: kind {item['kind']!r} is not one of {KINDS}")
        question = normalise(item["question"])
        if question in seen:
            problems.append(f"{label}: same question as {seen[question]}")
        seen.setdefault(question, item["id"])
        doc = item["doc"]
        if doc not in docs:
            problems.append(f"{label}: document {doc!r} is not in {corpus.name}/")
            continue
        asked[doc] += 1
        if doc not in texts:
            texts[doc] = normalise(doc_text(corpus / doc))
            blocks[doc] = [normalise(block) for block in doc_blocks(corpus / doc)]
        phrase = normalise(item["answer_contains"])
        words = len(phrase.split())
        if not PHRASE_WORDS[0] <= words <= PHRASE_WORDS[1]:
            problems.append(f"{label}: answer_contains has {words} words, not {PHRASE_WORDS[0]}-{PHRASE_WORDS[1]}")
        count = texts[doc].count(phrase)
        if count != 1:
            problems.append(f"{label}: answer_contains occurs {count} times in {doc}")
        elif not any(phrase in block for block in blocks[doc]):
            problems.append(f"{label}: answer_contains spans a block/paragraph boundary in {doc}")
    problems += [f"id {name!r} is used {n} times" for name, n in sorted(ids.items()) if n > 1]
    problems += [f"document {doc} has no question" for doc in docs if not asked[doc]]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, default=QUESTIONS, help="questions file (default: %(default)s)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="corpus folder (default: %(default)s)")
    args = parser.parse_args()
    problems = check(args.questions, args.corpus)
    for problem in problems:
        print(problem)
    questions = load_questions(args.questions) if not problems else []
    kinds = Counter(q["kind"] for q in questions)
    docs = len({q["doc"] for q in questions})
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(questions)} questions ({', '.join(f'{k} {kinds[k]}' for k in KINDS)}) over {docs} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
