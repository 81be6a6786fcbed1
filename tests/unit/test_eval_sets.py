"""The retrieval evaluation sets under bench/eval stay consistent with their corpora (bench/eval/check.py):
every answer phrase is found exactly once, inside one block, in the document it names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Loaded under its own name: k3s/check.py is imported as `check` by another test.
_spec = importlib.util.spec_from_file_location(
    "eval_check", Path(__file__).resolve().parents[2] / "bench" / "eval" / "check.py"
)
assert _spec is not None and _spec.loader is not None
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


@pytest.mark.parametrize("name", sorted(check.SETS))
def test_evaluation_set_is_consistent(name: str) -> None:
    corpus, questions = check.SETS[name]
    assert check.load_questions(questions), f"{name}: no questions"
    assert check.check(questions, corpus) == []


def test_check_reports_a_phrase_missing_from_its_document(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.md").write_text("# Title\n\nThe answer is forty two and nothing else.\n")
    questions = tmp_path / "q.json"
    questions.write_text('[{"id": "a-01", "question": "what is it", "kind": "literal", "doc": "a.md", '
                         '"answer_contains": "the answer is forty three", "heading": "Title"}]')
    assert check.check(questions, tmp_path / "corpus") == ["item 0 (a-01): answer_contains occurs 0 times in a.md"]
