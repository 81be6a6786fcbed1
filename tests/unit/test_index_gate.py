"""The gate before a switch of embedding index, and the fold of the INDEXES stream (no servers: plain data).
That the commands really refuse, switch and roll back on a live system is tests/integration/test_reindex.py."""

from __future__ import annotations

from typing import Any

import pytest

from streams.events import IndexActivated, IndexDropped, IndexStarted
from streams.indexes import IndexState
from streams.indexing import MAX_HIT_RATE_LOSS, MIN_JUDGED_QUESTIONS, IndexCommandError, judge, rebuild_target

ACTIVE = {"model": "old", "state": "active", "dim": 384, "live_chunks": 100, "missing": 0}


def index(**fields: Any) -> dict[str, Any]:
    return {"model": "new", "state": "building", "dim": 256, "live_chunks": 100, "missing": 0,
            "fingerprint_mismatches": 0, "compared": None, **fields}


def compared(new_hit: float, old_hit: float, judged: int, baseline: str = "old") -> dict[str, Any]:
    return {"baseline": baseline, "figures": {"new": {"hit_rate": new_hit, "judged": judged},
                                              "old": {"hit_rate": old_hit, "judged": judged}}}


def test_a_complete_index_passes_and_says_what_it_checked():
    gate = judge(index(), ACTIVE)
    assert gate.passed and any("complete: all 100 chunks" in n for n in gate.notes)
    assert any("no comparison" in n for n in gate.notes)


def test_an_incomplete_index_is_refused_with_the_count():
    gate = judge(index(missing=37), ACTIVE)
    assert not gate.passed and gate.reasons == ["incomplete: 37 of 100 chunks of old have no vector in new yet"]


def test_vectors_from_two_model_fingerprints_are_refused():
    assert not judge(index(fingerprint_mismatches=2), ACTIVE).passed


def test_clearly_worse_on_enough_judged_questions_is_refused_and_a_small_loss_is_not():
    judged = MIN_JUDGED_QUESTIONS
    worse = judge(index(compared=compared(0.5, 0.5 + MAX_HIT_RATE_LOSS + 0.05, judged)), ACTIVE)
    assert not worse.passed and "hit rate" in worse.reasons[0]
    slightly = judge(index(compared=compared(0.5, 0.5 + MAX_HIT_RATE_LOSS - 0.05, judged)), ACTIVE)
    assert slightly.passed and any("hit rate" in n for n in slightly.notes)


def test_too_few_judged_questions_or_a_stale_comparison_judge_nothing():
    few = judge(index(compared=compared(0.0, 1.0, MIN_JUDGED_QUESTIONS - 1)), ACTIVE)
    assert few.passed and any("quality not judged" in n for n in few.notes)
    stale = judge(index(compared=compared(0.0, 1.0, 50, baseline="older")), ACTIVE)  # against another index
    assert stale.passed and any("no comparison with old" in n for n in stale.notes)


def test_a_dropped_index_is_refused():
    assert not judge(index(state="dropped"), ACTIVE).passed


def test_the_fold_ends_on_the_last_activated_index_and_keeps_the_previous_for_rollback():
    state = IndexState()
    events = [
        IndexStarted(event_id="s1", model="old"), IndexActivated(event_id="a1", model="old", reason="initial"),
        IndexStarted(event_id="s2", model="new", previous="old"),
        IndexActivated(event_id="a2", model="new", previous="old"),
    ]
    for seq, event in enumerate(events, start=1):
        state.apply(event, seq)
    assert state.active == "new" and state.indexes["old"].state == "standby"
    assert state.indexes["new"].previous == "old" and state.indexes["new"].generation == 3
    state.apply(IndexActivated(event_id="a3", model="old", previous="new", reason="rollback"), 5)
    assert state.active == "old" and state.indexes["new"].state == "standby"
    state.apply(IndexDropped(event_id="d1", model="new"), 6)
    state.apply(IndexStarted(event_id="s3", model="new", previous="old"), 7)  # built anew: a new generation
    assert state.indexes["new"].state == "building" and state.indexes["new"].generation == 7
    assert [i.model for i in state.live()] == ["old", "new"]


def test_an_index_that_never_produced_a_vector_is_refused_unless_a_catalogue_model_on_an_empty_system():
    refused = judge(index(dim=None, missing=0, live_chunks=0, model="made-up", source="/nowhere"),
                    {**ACTIVE, "live_chunks": 0})
    assert not refused.passed and "no vector yet" in refused.reasons[0]
    trusted = judge(index(dim=None, missing=0, live_chunks=0, model="minilm-distilled-256"),
                    {**ACTIVE, "live_chunks": 0})
    assert trusted.passed


def folded(*events: Any) -> IndexState:
    state = IndexState()
    for seq, event in enumerate(events, start=1):
        state.apply(event, seq)
    return state


def test_a_rebuild_is_a_new_name_for_the_active_model_and_a_started_one_is_followed_not_doubled():
    initial = IndexActivated(event_id="a1", model="minilm", reason="initial")
    assert rebuild_target(folded(initial)) == ("minilm@2", "minilm", False)
    started = IndexStarted(event_id="s2", model="minilm@2", source="minilm", previous="minilm")
    assert rebuild_target(folded(initial, started)) == ("minilm@2", "minilm", True)
    switched = IndexActivated(event_id="a2", model="minilm@2", previous="minilm", reason="rebuild")
    # rebuilt again: the same model under the next free name (not "minilm@2@2"), a dropped name never reused
    assert rebuild_target(folded(initial, started, switched)) == ("minilm@3", "minilm", False)
    dropped = [IndexStarted(event_id="s3", model="minilm@3", source="minilm"), IndexDropped(event_id="d3",
                                                                                              model="minilm@3")]
    assert rebuild_target(folded(initial, started, switched, *dropped)) == ("minilm@4", "minilm", False)
    custom = folded(IndexStarted(event_id="s1", model="mine", source="/models/mine"),
                    IndexActivated(event_id="a1", model="mine"))
    assert rebuild_target(custom) == ("mine@2", "/models/mine", False)  # loaded from the same folder
    with pytest.raises(IndexCommandError, match="no index is active"):
        rebuild_target(IndexState())
