"""Chunks that are mostly the document's own headings (a table of contents) are flagged at parse time."""

from __future__ import annotations

from agents.parser.chunking import ChunkDraft, mark_contents


def draft(n: int, text: str, *section: str) -> ChunkDraft:
    return ChunkDraft(n, text, None, tuple(section), 0, len(text))


def test_a_list_of_the_documents_headings_is_flagged_and_its_sections_are_not() -> None:
    drafts = [
        draft(0, "Contents\nInstalling packages\nRemoving packages\nHeld back packages", "Debian FAQ"),
        draft(1, "Installing packages\nUse apt install NAME to install a package and its dependencies.",
              "Debian FAQ", "Installing packages"),
        draft(2, "Removing packages\napt remove keeps the configuration files; apt purge removes them too.",
              "Debian FAQ", "Removing packages"),
        draft(3, "Held back packages\nPhased updates hold some upgrades back for a while.",
              "Debian FAQ", "Held back packages"),
    ]
    marked = mark_contents(drafts)
    assert [d.toc for d in marked] == [True, False, False, False]
    assert [d.text for d in marked] == [d.text for d in drafts]  # nothing else changes


def test_a_section_quoting_one_other_heading_is_not_a_table_of_contents() -> None:
    drafts = [
        draft(0, "Removing packages\nSee also\nInstalling packages\nfor how packages come in the first place, and "
                 "why apt asks before it removes anything that other packages still depend on.",
              "Removing packages"),
        draft(1, "Installing packages\nUse apt install NAME.", "Installing packages"),
    ]
    assert [d.toc for d in mark_contents(drafts)] == [False, False]


def test_a_document_without_headings_has_no_table_of_contents() -> None:
    assert [d.toc for d in mark_contents([draft(0, "just text"), draft(1, "more text")])] == [False, False]
