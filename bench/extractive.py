"""Time to an extractive answer in the generator: its sentences embedded there (before), or picked by the sentence
scores retrieval sends (now), in the same run, on the same passages.

    .venv/bin/python bench/extractive.py [--passages 5] [--words 150] [--rounds 15]

Passages are windows of the GPL-3 text in /usr/share/common-licenses; their sentence scores are made as the
embedder makes them at ingest (`Embedder.embed_with_sentences`, the generator's attribution model) and as
retrieval computes them (cosine to the question). Both ways run through `Attributor.extract_from`, the call the
generator's extractive mode makes before its first token.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from agents.embedder.service import Embedder
from agents.generator.app import load_attributor
from agents.generator.settings import GeneratorSettings
from streams.events import Passage

QUESTION = "Can I charge money for distributing GPL software?"


async def measure(passages: int, words: int, rounds: int) -> dict[str, float]:
    settings = GeneratorSettings()
    attributor = load_attributor(settings)
    embedder = Embedder.load(attributor.model, "", settings.models_dir)
    text = Path("/usr/share/common-licenses/GPL-3").read_text().split()
    plain = [Passage(n=n, chunk_id=str(n), doc_id="gpl", name="GPL-3", score=0.5,
                     text=" ".join(text[n * 700:n * 700 + words])) for n in range(1, passages + 1)]
    question = embedder.embed([QUESTION])[0]
    _, sentences = embedder.embed_with_sentences([p.text for p in plain])
    scored = [p.model_copy(update={"sentences": s.scored(question)}) for p, s in zip(plain, sentences, strict=True)]
    out = {}
    for label, ps, index in (("embedded", plain, ""), ("retrieval_scores", scored, attributor.model)):
        await attributor.extract_from(QUESTION, ps, index)  # warm-up
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            await attributor.extract_from(QUESTION, ps, index)
            times.append((time.perf_counter() - started) * 1000)
        out[label] = statistics.median(times)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/extractive.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--passages", type=int, default=5, help="passages per question (the default top_k)")
    parser.add_argument("--words", type=int, default=150, help="words per passage (~200 tokens)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per way")
    args = parser.parse_args()
    result = asyncio.run(measure(args.passages, args.words, args.rounds))
    print(f"extractive answer, p50 of {args.rounds}: sentences embedded {result['embedded']:.1f} ms, "
          f"from retrieval's sentence scores {result['retrieval_scores']:.1f} ms "
          f"({result['embedded'] / result['retrieval_scores']:.0f}x sooner)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
