"""The words of the keyword index: PostgreSQL's english lexemes, and the parts of dotted names.

PostgreSQL's parser reads `os.path.join`, `list.sort` or `requests.get` as one "host" token, so a chunk about
`str.split` had the lexeme 'str.split' only and a question about splitting a string never matched it (a
hyphenated word, `apt-get`, already gets its parts as well). Each dotted name now also yields its parts; the
whole name stays, so a question that writes it matches it best. Parts start with a letter or an underscore and
are at least two characters long: version numbers (2.28.1) and "e.g." give none.
"""

from __future__ import annotations

_DOTTED_NAME = r"([A-Za-z_][A-Za-z0-9_]+(?:\.[A-Za-z_][A-Za-z0-9_]+)+)"


def tsvector_sql(text: str) -> str:
    """SQL for the tsvector of the SQL text expression `text` (used twice: keep it cheap)."""
    parts = (f"array_to_string(ARRAY(SELECT replace(m[1], '.', ' ') FROM regexp_matches({text}, "
             f"'{_DOTTED_NAME}', 'g') m), ' ')")
    return f"(to_tsvector('english', {text}) || to_tsvector('english', {parts}))"
