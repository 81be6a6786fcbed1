"""Sentence attribution (agents/generator/attribution.py): a pure function of passages, text and an encoder.

Most tests use a bag-of-words encoder written here (a stand-in for the embedding model, no LLM involved), so
they say exactly which passage wins; one test runs the packaged MiniLM to check a replay gives the same result.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from agents.generator.attribution import (
    AttributionConfig,
    attribute,
    content_words,
    extract,
    gather_evidence,
    split_sentences,
)
from streams.events import AnswerCompleted, Passage

DIM = 512


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for the embedding model: hashed content words, L2-normalised."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in content_words(text):
            out[i, zlib.crc32(word.encode()) % DIM] += 1.0
        norm = np.linalg.norm(out[i])
        if norm:
            out[i] /= norm
    return out


PASSAGES = [
    Passage(n=1, chunk_id="faq#1", doc_id="faq", name="basic-defs.html", score=0.8,
            text="Debian is pronounced Deb'-ee-en, with a short e. The word is a contraction of the names of "
                 "Debra and Ian Murdock, who founded the project."),
    Passage(n=2, chunk_id="git#7", doc_id="git", name="git-stash.html", score=0.5,
            text="Git stash saves your local modifications away and reverts the working directory to match "
                 "the HEAD commit."),
]


def test_split_sentences_keeps_markers_offsets_and_abbreviations() -> None:
    text = "Use e.g. apt-get to install it. Stash saves changes! [2] Yes.\n- a list item here"
    spans = split_sentences(text)
    assert [s.text for s in spans] == ["Use e.g. apt-get to install it.", "Stash saves changes! [2] Yes.",
                                       "- a list item here"]
    assert all(text[s.start:s.end] == s.text for s in spans)


def test_each_sentence_cites_the_passage_it_comes_from() -> None:
    answer = "Git stash saves local modifications and reverts the working directory. Debian is a contraction " \
             "of the names of Debra and Ian Murdock."
    result = attribute(answer, gather_evidence(PASSAGES, bag_of_words), bag_of_words)
    assert [(s.best, s.supported, s.citations) for s in result.sentences] == [(2, True, [2]), (1, True, [1])]
    assert [(c.sentence, c.n, c.chunk_id) for c in result.citations] == [(0, 2, "git#7"), (1, 1, "faq#1")]
    assert all(c.score == s.score for c, s in zip(result.citations, result.sentences, strict=True))


def test_a_claim_in_no_passage_is_flagged_unsupported_with_its_best_score() -> None:
    answer = "Debian was founded by Debra and Ian Murdock. The moon is made of green cheese, sold in Paris."
    result = attribute(answer, gather_evidence(PASSAGES, bag_of_words), bag_of_words)
    founded, moon = result.sentences
    assert founded.supported and founded.citations == [1]
    assert not moon.supported and moon.citations == [] and 0.0 <= moon.score < AttributionConfig().threshold
    assert moon.best in (1, 2)
    assert [c.sentence for c in result.citations] == [0]  # no citation for the unsupported sentence


def test_a_models_marker_is_kept_when_right_and_corrected_when_another_passage_fits() -> None:
    evidence = gather_evidence(PASSAGES, bag_of_words)
    kept = attribute("Git stash saves local modifications away [2].", evidence, bag_of_words).sentences[0]
    assert (kept.markers, kept.citations, kept.corrected) == ([2], [2], False)
    wrong = attribute("Git stash saves local modifications away [1].", evidence, bag_of_words).sentences[0]
    assert (wrong.markers, wrong.citations, wrong.corrected) == ([1], [2], True)


def test_extractive_answer_is_the_best_passage_sentences_cited() -> None:
    evidence = gather_evidence(PASSAGES, bag_of_words)
    answer = extract("who founded debian, Debra and Ian Murdock?", evidence, bag_of_words,
                     AttributionConfig(extractive_sentences=1)).answer
    assert answer == ("The word is a contraction of the names of Debra and Ian Murdock, who founded the "
                      "project. [1]")
    # and it is attributed to where it came from
    sentence = attribute(answer, evidence, bag_of_words).sentences[0]
    assert sentence.supported and sentence.citations == [1] and not sentence.corrected


def test_attribution_is_deterministic_and_survives_the_event_round_trip() -> None:
    answer = "Debian is pronounced Deb'-ee-en [1]. Stash reverts the working directory. Nothing else."
    first = attribute(answer, gather_evidence(PASSAGES, bag_of_words), bag_of_words)
    again = attribute(answer, gather_evidence(PASSAGES, bag_of_words), bag_of_words)
    assert first.sentences == again.sentences and first.citations == again.citations
    event = AnswerCompleted(event_id="e", query_id="q", question="?", answer=answer, citations=first.citations,
                            sentences=first.sentences, model="m", generator="g")
    assert AnswerCompleted.model_validate_json(event.model_dump_json()).sentences == first.sentences


def test_old_answer_done_events_without_the_new_fields_still_read() -> None:
    old = ('{"type": "answer.done", "event_id": "answer.done:q", "query_id": "q", "question": "?", "answer": "A.",'
           '"citations": [{"n": 1, "chunk_id": "c", "doc_id": "d", "name": "x", "text": "t", "score": 0.5}],'
           '"model": "m", "generator": "g", "a_field_from_the_future": 1}')
    event = AnswerCompleted.model_validate_json(old)
    assert event.sentences == [] and event.supported is None and event.citations[0].sentence is None
    assert event.answer_mode == "generative" and not event.truncated


def test_empty_answer_or_no_passages_attribute_nothing() -> None:
    assert attribute("", gather_evidence(PASSAGES, bag_of_words), bag_of_words).sentences == []
    assert attribute("Some text.", gather_evidence([], bag_of_words), bag_of_words).sentences == []


def test_the_packaged_model_gives_the_same_attribution_twice(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The real embedding model (MiniLM through sentence-transformers, shipped in its wheel): a replay of the
    same context and text decides the same, to the rounded score."""
    from agents.models import MINILM, load_model

    model = load_model(MINILM, tmp_path_factory.mktemp("models"), threads=1)
    answer = "Debian comes from the names Debra and Ian. Git stash keeps your changes for later."
    runs = [attribute(answer, gather_evidence(PASSAGES, model.encode), model.encode) for _ in range(2)]
    assert runs[0].sentences == runs[1].sentences
    assert [s.best for s in runs[0].sentences] == [1, 2] and all(s.supported for s in runs[0].sentences)
    assert not re.search(r"\[\d\]", answer)  # found without any marker from a model


async def test_auto_mode_quotes_the_sources_when_most_of_the_generated_answer_is_unsupported() -> None:
    """The generator's own decision (agents.generator.handlers.decide) on given texts; no LLM is involved."""
    from agents.generator.attribution import Attributor
    from agents.generator.handlers import decide
    from streams.events import ContextBuilt

    attributor = Attributor(bag_of_words)
    event = ContextBuilt(event_id="c", query_id="q", question="Who founded Debian, Debra and Ian Murdock?",
                         passages=PASSAGES, embedding_model="m")
    invented = "The moon is made of green cheese. Paris sells it on Sundays. Debra and Ian Murdock founded it."
    chosen = await decide(event, invented, PASSAGES, "auto", False, attributor, None)
    assert chosen.mode == "extractive" and "Debra and Ian Murdock" in chosen.text
    assert chosen.notices == ["Showing the sources' own sentences instead of a generated answer: only 1 of its 3 "
                              "sentences were supported by the sources."]
    assert all(s.supported for s in chosen.attribution.sentences)
    grounded = "Debian is a contraction of the names of Debra and Ian Murdock. Git stash saves local modifications."
    kept = await decide(event, grounded, PASSAGES, "auto", False, attributor, None)
    assert kept.mode == "generative" and kept.text == grounded and kept.notices == []
    # a stopped answer is never swapped: the user stopped what they were reading
    assert (await decide(event, invented, PASSAGES, "auto", True, attributor, None)).mode == "generative"
