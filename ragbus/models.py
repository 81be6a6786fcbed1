"""`ragbus models`: the embedding model catalogue, and building models ahead of their first use."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

console = Console()


def run_models(action: str, names: list[str]) -> int:
    from agents.embedder.settings import EmbedderSettings
    from agents.models import CATALOG, ensure_built, is_built

    models_dir = EmbedderSettings().models_dir
    if action == "build":
        unknown = [n for n in names if n not in CATALOG]
        if unknown:
            console.print(f"[red]unknown model(s) {', '.join(unknown)}; the catalogue has {', '.join(CATALOG)}[/red]")
            return 2
        for name in names or list(CATALOG):
            started = time.perf_counter()
            with console.status(f"building {name} from the packaged all-MiniLM-L6-v2 (offline)..."):
                folder = ensure_built(name, models_dir)
            console.print(f"{name}: {folder} ({time.perf_counter() - started:.1f} s)")
        return 0
    table = Table(title=f"Embedding models (built in {models_dir})")
    for col in ("name", "backend", "dim", "built", "what"):
        table.add_column(col)
    for spec in CATALOG.values():
        built = "packaged" if spec.build is None else ("yes" if is_built(spec.name, models_dir) else "on first use")
        table.add_row(spec.name, spec.backend, str(spec.dim), built, spec.description)
    console.print(table)
    console.print("Any sentence-transformers folder works too: `ragbus reindex --model NAME --source /path`.")
    return 0
