"""Sentence attribution and answer modes through the real system: every agent, NATS, PostgreSQL, SmolLM2 behind
llama.cpp, and the generator's attribution model (the packaged MiniLM as ONNX int8)."""

from __future__ import annotations

import asyncio
import json
import re

import websockets

from streams.events import AnswerCompleted, ContextBuilt
from streams.topology import ANSWERS, QUERIES
from tests.conftest import upload, wait_for_status

HARBOUR = b"""# Port Ardal harbour

The Port Ardal harbour wall was finished in 1903 and is 410 metres long.
Fishing boats pay a mooring fee of nine crowns a night, collected by the harbourmaster, Ilse Farrow.
The harbour light at the end of the wall shows a steady green light that can be seen for 9 nautical miles.
"""
QUESTION = "Who collects the mooring fee at Port Ardal harbour, and how much is it?"


async def _indexed(client) -> str:
    body = await upload(client, "port-ardal-harbour.md", HARBOUR)
    assert (await wait_for_status(client, body["doc_id"]))["status"] == "indexed"
    return body["doc_id"]


def _check_attribution(answer: dict) -> None:
    """Sentences tile the answer; citations exist for supported sentences only, one per (sentence, passage)."""
    sentences, text = answer["sentences"], answer["answer"]
    assert sentences, answer
    for s in sentences:
        assert text[s["start"]:s["end"]] == s["text"]
        assert isinstance(s["supported"], bool) and 0.0 <= s["score"] <= 1.0
        assert bool(s["citations"]) == s["supported"]
    cited = {(c["sentence"], c["n"]) for c in answer["citations"]}
    assert cited == {(s["i"], n) for s in sentences for n in s["citations"]}
    assert answer["supported"] == any(s["supported"] for s in sentences)


async def _ws(url: str, frame: dict) -> dict:
    async with websockets.connect(url.replace("http", "ws", 1) + "/ws/chat") as ws:
        await ws.send(json.dumps(frame))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 180))
            if msg["type"] in ("done", "error"):
                return msg


async def test_done_frame_post_ask_and_answer_done_carry_per_sentence_citations_and_replay_the_same(
        client, stack, js):
    doc_id = await _indexed(client)
    done = await _ws(stack.url, {"type": "ask", "question": QUESTION, "answer_mode": "generative"})
    assert done["type"] == "done", done
    _check_attribution(done)
    assert done["answer_mode"] == "generative" and done["model"] != "none"
    assert done["timings"]["attribution_ms"] > 0
    assert any(c["doc_id"] == doc_id for c in done["citations"]) or not done["supported"]

    asked = await client.post("/ask", json={"question": QUESTION}, timeout=200)
    assert asked.status_code == 200, asked.text
    _check_attribution(asked.json())

    # the log has it all, and attribution depends only on context.built and the text: recomputing it from
    # the log with the generator's own model and settings gives the same sentences and citations
    query_id = done["query_id"]
    event = AnswerCompleted.model_validate_json((await js.get_last_msg(ANSWERS, f"answer.done.{query_id}")).data)
    assert [s.model_dump() for s in event.sentences] == done["sentences"]
    context = ContextBuilt.model_validate_json((await js.get_last_msg(QUERIES, f"context.built.{query_id}")).data)
    from agents.generator.app import load_attributor
    from agents.generator.settings import GeneratorSettings

    attributor = await asyncio.to_thread(load_attributor, GeneratorSettings())
    shown = {s.n: s.text for s in event.sources}  # the passages as the prompt showed them (maybe cut)
    passages = [p.model_copy(update={"text": shown[p.n]}) for p in context.passages if p.n in shown]
    replayed = await attributor.attribute(event.answer, await attributor.evidence(passages))
    assert replayed.sentences == event.sentences and replayed.citations == event.citations


async def test_extractive_mode_answers_from_the_passages_without_the_llm(client, stack):
    await _indexed(client)
    response = await client.post("/ask", json={"question": QUESTION, "answer_mode": "extractive"}, timeout=200)
    assert response.status_code == 200, response.text
    answer = response.json()
    _check_attribution(answer)
    assert answer["answer_mode"] == "extractive" and answer["model"] == "none"
    assert all(s["supported"] for s in answer["sentences"]) and answer["notices"] == []
    assert "Ilse Farrow" in answer["answer"] or "nine crowns" in answer["answer"], answer["answer"]
    assert re.search(r"\[\d+\]", answer["answer"])  # each quoted sentence says where it is from
    assert answer["timings"]["ttft_ms"] < 5000  # no LLM call: one embedding pass


async def test_auto_mode_keeps_a_supported_generated_answer_or_says_why_it_quoted_the_sources(client, stack):
    await _indexed(client)
    frame = await _ws(stack.url, {"type": "ask", "question": QUESTION, "answer_mode": "auto"})
    assert frame["type"] == "done", frame
    _check_attribution(frame)
    assert frame["requested_mode"] == "auto" and frame["answer_mode"] in ("generative", "extractive")
    if frame["answer_mode"] == "generative":
        assert sum(s["supported"] for s in frame["sentences"]) * 2 > len(frame["sentences"])
        assert frame["generated_answer"] is None
    else:
        assert frame["generated_answer"] and any("sources' own sentences" in n for n in frame["notices"])
        assert all(s["supported"] for s in frame["sentences"])


async def test_unknown_answer_mode_is_refused(client, stack):
    response = await client.post("/ask", json={"question": QUESTION, "answer_mode": "creative"})
    assert response.status_code == 422
    frame = await _ws(stack.url, {"type": "ask", "question": QUESTION, "answer_mode": "creative"})
    assert frame["type"] == "error" and "answer_mode" in frame["message"]
