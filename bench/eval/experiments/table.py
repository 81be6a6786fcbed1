"""Markdown table of harness result rows (the JSON lines that harness.py --json / sweep.sh append).

    .venv/bin/python bench/eval/experiments/table.py ~/.cache/ragbus-eval/sweep.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    seen: dict[tuple[str, str], dict] = {}
    for line in Path(sys.argv[1]).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            seen[(row["config"], row["variant"])] = row  # the latest run of a (config, variant) wins
    print("| config | variant | L h1 | L h3 | L MRR | P h1 | P h3 | P MRR | all h1 | all h3 | all MRR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (config, variant), r in seen.items():
        cells = [*r["L"], *r["P"], *r["O"]]
        print(f"| {config} | `{variant}` | " + " | ".join(f"{x:.3f}" for x in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
