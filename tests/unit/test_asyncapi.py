"""The AsyncAPI document the gateway serves is generated from the code; it must not drift from it."""

from __future__ import annotations

import json

from ragbus.asyncapi import OUTPUT, render

USER_SUBJECTS = ("document.uploaded", "chunks.ready", "query.asked", "context.built", "answer.token")


def test_served_asyncapi_document_matches_the_code():
    assert OUTPUT.read_text() == render(), "run `ragbus asyncapi` and commit the result"


def test_every_subject_the_user_named_is_documented_with_a_payload_schema():
    spec = json.loads(render())
    addresses = {c["address"] for c in spec["channels"].values()}
    for subject in USER_SUBJECTS:
        assert any(a.startswith(subject + ".") for a in addresses), subject
    schema = spec["components"]["schemas"]["AnswerTokenGenerated"]
    assert {"query_id", "seq", "text", "event_id", "correlation_id"} <= set(schema["properties"])
