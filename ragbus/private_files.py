"""Files that hold passwords or their hashes: written readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, through a temporary file renamed over it: nobody ever reads half a
    file, and an older file's looser mode does not survive (O_CREAT keeps an existing file's mode)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)  # a leftover from a crash kept whatever mode it had
    tmp.replace(path)
