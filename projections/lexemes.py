"""The words of the keyword index: PostgreSQL's english lexemes, and the parts of code names.

PostgreSQL's parser reads `os.path.join`, `list.sort` or `requests.get` as one "host" token, and `HTTPAdapter` or
`ConnectTimeout` as one word, so a chunk about `str.split` had the lexeme 'str.split' only and a question about a
"connect timeout" never matched `ConnectTimeout` (a hyphenated word, `apt-get`, already gets its parts as well).
Each dotted or camel-case name now also yields its parts; the whole name stays, so a question that writes it
matches it best. Dotted parts start with a letter or an underscore and are at least two characters long: version
numbers (2.28.1) and "e.g." give none.
"""

from __future__ import annotations

_DOTTED_NAME = r"([A-Za-z_][A-Za-z0-9_]+(?:\.[A-Za-z_][A-Za-z0-9_]+)+)"
# a lower-case letter or digit before a capital (ConnectTimeout, iPhone), or an acronym before a capitalised word
# (HTTPAdapter); all-capital words (SOCKS) and plain words are no camel-case names
_CAMEL_NAME = r"\m([A-Za-z0-9]*(?:[a-z0-9][A-Z]|[A-Z][A-Z][a-z])[A-Za-z0-9]*)\M"
# ConnectTimeout -> Connect Timeout, HTTPAdapter -> HTTP Adapter
_CAMEL_SPLIT = (r"regexp_replace(regexp_replace(m[1], '([a-z0-9])([A-Z])', '\1 \2', 'g'), "
                r"'([A-Z])([A-Z][a-z])', '\1 \2', 'g')")


def tsvector_sql(text: str) -> str:
    """SQL for the tsvector of the SQL text expression `text` (used three times: keep it cheap)."""
    parts = (f"array_to_string(ARRAY(SELECT replace(m[1], '.', ' ') FROM regexp_matches({text}, "
             f"'{_DOTTED_NAME}', 'g') m) || ARRAY(SELECT {_CAMEL_SPLIT} FROM regexp_matches({text}, "
             f"'{_CAMEL_NAME}', 'g') m), ' ')")
    return f"(to_tsvector('english', {text}) || to_tsvector('english', {parts}))"
