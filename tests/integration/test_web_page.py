"""The web page in a real headless Chromium, against the real system (every agent, NATS, PostgreSQL, SmolLM2).

What a person does: upload a file through the page and watch it become `indexed` over Server-Sent Events,
ask a question with Enter and see the answer stream in, open a cited source, give a thumbs up, find the
conversation in the list and open it again on a phone in dark mode. And what the network does: a socket
that drops mid-answer is resumed with nothing missing or repeated, and Stop frees the composer at once.

Chromium is Debian's package (`scripts/test.sh` installs it); Playwright only drives it, it downloads nothing.
Screenshots land in the test's tmp_path: always a few on success, all open pages on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import upload, wait_for_status

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SLOW = 180_000  # ms: SmolLM2 on a shared, slow machine

NAME = "tamsin-reach-glassworks.md"
GLASSWORKS = b"""# The Tamsin Reach glassworks

The Tamsin Reach glassworks fires its furnace with birch charcoal from the Ollen forest.
Its master glassblower, Perpetua Vane, makes cobalt-blue bottles that hold exactly 740 millilitres.
The glassworks closes every year on the ninth of March for the Lantern Festival, when the furnace is relit.
Visitors may watch the glassblowers from a gallery above the furnace floor on weekday mornings.
"""
QUESTION = "Tell me about the Tamsin Reach glassworks: who is its master glassblower and what does she make?"

# Counts the `document` frames the page's EventSource receives, so the test knows the status came over SSE.
SSE_SPY = """
window.__sse = [];
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(...args) {
    super(...args);
    this.addEventListener("document", (e) => window.__sse.push(JSON.parse(e.data)));
  }
};
"""

# Records the last answer bubble's text length on every DOM change while it streams.
STREAM_SAMPLER = """() => {
  window.__samples = [];
  const log = document.querySelector("#log");
  new MutationObserver(() => {
    const li = log.querySelector(".msg.assistant:last-child");
    if (li) window.__samples.push([li.dataset.state, li.querySelector(".answer").textContent.length]);
  }).observe(log, { subtree: true, childList: true, characterData: true, attributes: true });
}"""

LAST_ANSWER = """() => {
  const li = document.querySelector("#log .msg.assistant:last-child");
  return li ? [li.dataset.state, li.querySelector(".answer").textContent] : [null, ""];
}"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser test drives Debian's chromium package. "
                    "`bash scripts/test.sh` installs it (apt-get install chromium).", pytrace=False)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


class Pages:
    """Opens pages that report script errors, and screenshots every one of them if the test fails."""

    def __init__(self, browser: Any, base_url: str, out: Path) -> None:
        self.browser, self.base_url, self.out = browser, base_url, out
        self.pages: list[Any] = []
        self.errors: list[str] = []

    async def open(self, name: str, *, width: int = 1280, height: int = 800, dark: bool = False,
                   phone: bool = False) -> Any:
        context = await self.browser.new_context(
            viewport={"width": width, "height": height}, color_scheme="dark" if dark else "light",
            is_mobile=phone, has_touch=phone, device_scale_factor=2 if phone else 1, base_url=self.base_url)
        await context.add_init_script(SSE_SPY)
        page = await context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: self.errors.append(f"{name}: {exc}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{name}: console: {m.text}"))
        self.pages.append((name, page))
        return page

    async def shot(self, page: Any, name: str) -> Path:
        path = self.out / f"{name}.png"
        await page.screenshot(path=str(path), animations="disabled")
        return path

    async def close(self, failed: bool) -> None:
        for name, page in self.pages:
            if failed:
                with contextlib.suppress(Exception):
                    await page.screenshot(path=str(self.out / f"failure-{name}.png"), full_page=True)
            with contextlib.suppress(Exception):
                await page.context.close()
        if failed:
            print(f"\nscreenshots of the failure: {self.out}")


@contextlib.asynccontextmanager
async def pages_for(browser: Any, stack: Any, tmp_path: Path) -> AsyncIterator[Pages]:
    pages = Pages(browser, stack.url, tmp_path)
    try:
        yield pages
    except BaseException:
        await pages.close(failed=True)
        raise
    await pages.close(failed=False)


async def _open_chat(page: Any) -> None:
    from playwright.async_api import expect

    await page.goto("/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "online")


async def _rating_in_session(client, session_id: str, query_id: str, timeout: float = 60.0) -> str | None:
    deadline = time.monotonic() + timeout
    rating = None
    while time.monotonic() < deadline:
        got = await client.get(f"/sessions/{session_id}")
        if got.status_code == 200:
            rating = next((m["rating"] for m in got.json()["messages"] if m["query_id"] == query_id), None)
            if rating:
                return rating
        await asyncio.sleep(0.25)
    return rating


async def test_upload_ask_stream_cite_rate_and_reopen_the_conversation(stack, client, browser, tmp_path):
    from playwright.async_api import expect

    async with pages_for(browser, stack, tmp_path) as pages:
        page = await pages.open("desktop-light")
        await _open_chat(page)

        # upload through the page's file input; the document panel follows it over SSE to "indexed"
        await page.set_input_files("#file-input", files=[{"name": NAME, "mimeType": "text/markdown",
                                                          "buffer": GLASSWORKS}])
        doc = page.locator("#doc-list .doc", has_text=NAME)
        await expect(doc).to_have_attribute("data-status", "indexed", timeout=SLOW)
        await expect(doc.locator(".badge")).to_have_text("indexed")
        sse = await page.evaluate("window.__sse")
        assert any(d["name"] == NAME and d["status"] == "indexed" for d in sse), sse
        doc_id = await doc.get_attribute("data-doc-id")
        assert (await client.get(f"/documents/{doc_id}")).json()["status"] == "indexed"

        # ask with Enter; the answer grows token by token before it is done
        await page.evaluate(STREAM_SAMPLER)
        await page.fill("#question", QUESTION)
        await page.press("#question", "Enter")
        await expect(page.locator("#stop")).to_be_visible()
        seen: list[str] = []
        deadline = time.monotonic() + SLOW / 1000
        state = None
        while time.monotonic() < deadline:
            state, text = await page.evaluate(LAST_ANSWER)
            if state in ("done", "error", "stopped"):
                break
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            await asyncio.sleep(0.03)
        answer = page.locator("#log .msg.assistant").last
        assert state == "done", await answer.inner_text()
        assert len(seen) >= 2, f"the answer did not stream: samples {seen!r}"
        assert all(b.startswith(a) for a, b in itertools.pairwise(seen)), seen  # it only grows
        streaming = [n for s, n in await page.evaluate("window.__samples") if s == "streaming" and n > 0]
        assert len(set(streaming)) >= 3 and streaming == sorted(streaming), streaming
        final = await answer.locator(".answer").inner_text()
        assert final.strip() and len(final) >= len(seen[-1].strip()) * 0.8
        await expect(page.locator("#question")).to_be_enabled()

        # a cited source names the document; clicking it opens the drawer with the passage
        source = answer.locator(".sources .source", has_text=NAME).first
        await expect(source).to_be_visible()
        await source.click()
        drawer = page.locator("#passage")
        await expect(drawer).to_be_visible()
        await expect(page.locator("#passage-title")).to_have_text(NAME)
        await expect(page.locator("#passage-text")).to_contain_text("glass")
        await pages.shot(page, "desktop-light-drawer")
        await page.locator("#passage-close").click()
        await expect(drawer).to_be_hidden()

        # thumbs up: highlighted, confirmed, and stored on the answer in the conversation
        up = answer.locator(".rate.up")
        await up.click()
        await expect(up).to_have_attribute("aria-pressed", "true")
        await expect(answer.locator(".rate.down")).to_have_attribute("aria-pressed", "false")
        await expect(answer.locator(".act-status")).to_contain_text("Thanks")
        query_id = await answer.get_attribute("data-query-id")
        session_id = await page.evaluate("sessionStorage.getItem('ragbus.session_id')")
        assert query_id and session_id
        assert await _rating_in_session(client, session_id, query_id) == "up"

        # the conversation is listed, marked as the current one
        listed = page.locator(f'#session-list .session[data-session-id="{session_id}"]')
        await expect(listed).to_be_visible(timeout=30_000)
        await expect(listed).to_have_attribute("aria-current", "true")
        await expect(listed.locator(".session-title")).to_contain_text("Tell me about the Tamsin Reach")
        await pages.shot(page, "desktop-light")

        # a phone in dark mode opens the same conversation from the list: messages, sources and rating
        phone = await pages.open("phone-dark", width=390, height=844, dark=True, phone=True)
        await _open_chat(phone)
        await expect(phone.locator("#panel")).not_to_be_in_viewport()
        await phone.locator("#panel-toggle").click()
        await expect(phone.locator("#panel")).to_be_in_viewport()
        await expect(phone.locator(f'#doc-list .doc[data-doc-id="{doc_id}"]')).to_have_attribute(
            "data-status", "indexed")
        await pages.shot(phone, "phone-dark-panel")
        await phone.locator(f'#session-list .session[data-session-id="{session_id}"]').click()
        await expect(phone.locator("#panel")).not_to_be_in_viewport()
        await expect(phone.locator("#log .msg.user")).to_have_text(QUESTION)
        stored = phone.locator(f'#log .msg.assistant[data-query-id="{query_id}"]')
        await expect(stored.locator(".answer")).to_have_text(final)
        await expect(stored.locator(".rate.up")).to_have_attribute("aria-pressed", "true")
        await expect(stored.locator(".sources .source", has_text=NAME).first).to_be_visible()
        assert await phone.evaluate("sessionStorage.getItem('ragbus.session_id')") == session_id
        await pages.shot(phone, "phone-dark")
        await stored.locator(".sources .source").first.click()
        await expect(phone.locator("#passage-title")).to_have_text(NAME)
        await pages.shot(phone, "phone-dark-drawer")

        # "New chat" starts another session and empties the conversation
        await phone.locator("#passage-close").click()
        await phone.locator("#new-chat").click()
        await expect(phone.locator("#log .msg")).to_have_count(0)
        assert await phone.evaluate("sessionStorage.getItem('ragbus.session_id')") != session_id
        assert not pages.errors, pages.errors


class WsTap:
    """Sits between the page and /ws/chat (Playwright's websocket routing): records frames both ways, and can
    swallow server frames, hold back the `done` frame, or cut the connection."""

    def __init__(self) -> None:
        self.connections: list[dict[str, Any]] = []
        self.forward_tokens: int | None = None  # on the first connection only: forward this many tokens
        self.hold_done = False

    def route(self, ws: Any) -> None:
        server = ws.connect_to_server()
        conn: dict[str, Any] = {"page": ws, "server": server, "sent": [], "received": [], "forwarded": [],
                                "held": None}
        first = not self.connections
        self.connections.append(conn)

        def from_page(message: str | bytes) -> None:
            conn["sent"].append(json.loads(message))
            server.send(message)

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            conn["received"].append(frame)
            tokens = [f for f in conn["forwarded"] if f["type"] == "token"]
            if first and self.forward_tokens is not None and frame["type"] != "accepted" \
                    and len(tokens) >= self.forward_tokens:
                return  # lost on the way: the network is about to drop
            if frame["type"] == "done" and self.hold_done and conn["held"] is None:
                conn["held"] = message
                return
            conn["forwarded"].append(frame)
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)


async def _until(predicate, timeout: float = SLOW / 1000, what: str = "condition") -> None:
    """Wait for a predicate, plain or async."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


ANSWER_WITHOUT_CHIPS = """(e) => [...e.childNodes].filter((n) => !(n.classList && n.classList.contains("chip")))
  .map((n) => n.textContent).join("")"""


async def test_dropped_stream_resumes_without_gaps_or_repeats_and_stop_frees_the_composer(stack, client, browser,
                                                                                         tmp_path):
    from playwright.async_api import expect

    body = await upload(client, NAME, GLASSWORKS)
    assert (await wait_for_status(client, body["doc_id"]))["status"] == "indexed"

    async with pages_for(browser, stack, tmp_path) as pages:
        page = await pages.open("resume")
        tap = WsTap()
        tap.forward_tokens = 3
        await page.route_web_socket("**/ws/chat", tap.route)
        await _open_chat(page)

        await page.fill("#question", "Describe the Tamsin Reach glassworks in detail: furnace, bottles and visitors.")
        await page.press("#question", "Enter")
        first = tap.connections[0]

        async def three_tokens_shown() -> bool:
            tokens = [f for f in first["forwarded"] if f["type"] == "token"]
            state, text = await page.evaluate(LAST_ANSWER)
            return len(tokens) == 3 and state == "streaming" and text == "".join(t["text"] for t in tokens)

        await _until(three_tokens_shown, what="the first three tokens on the page")
        query_id = first["forwarded"][0]["query_id"]
        tap.hold_done = True
        await first["server"].close()  # the connection drops mid-answer
        await first["page"].close()

        await _until(lambda: len(tap.connections) > 1, what="the page to reconnect")
        second = tap.connections[1]
        await _until(lambda: second["held"] is not None, what="the rest of the answer")
        assert second["sent"][0] == {"type": "resume", "query_id": query_id, "after_seq": 2}, second["sent"]
        done = json.loads(second["held"])
        resumed = [f for f in second["forwarded"] if f["type"] == "token"]
        assert resumed and resumed[0]["seq"] == 3
        # before `done` replaces it, the bubble holds exactly what was streamed: no gap, no repeat
        state, text = await page.evaluate(LAST_ANSWER)
        assert state == "streaming"
        streamed = [f for f in first["forwarded"] if f["type"] == "token"] + resumed
        assert [t["seq"] for t in streamed] == list(range(len(streamed)))
        assert text == "".join(t["text"] for t in streamed)
        assert text.strip() == done["answer"]
        second["page"].send(second["held"])
        answer = page.locator("#log .msg.assistant").last
        await expect(answer).to_have_attribute("data-state", "done")
        # the done frame's text, drawn sentence by sentence with citation chips instead of [n] markers
        shown = await answer.locator(".answer").evaluate(ANSWER_WITHOUT_CHIPS)
        assert " ".join(shown.split()) == " ".join(re.sub(r"\s*\[\d+\]", "", done["answer"]).split())
        await expect(answer.locator(".rate.up")).to_be_visible()
        await pages.shot(page, "resumed")

        # Stop: the answer freezes where it is, the composer is free, and the next question starts at once
        tap.hold_done = False
        await page.fill("#question", "What does Perpetua Vane make at the Tamsin Reach glassworks?")
        await page.press("#question", "Enter")
        await _until(lambda: page.evaluate("() => document.querySelector('#log .msg.assistant:last-child')"
                                           ".querySelector('.answer').textContent.length > 0"),
                     what="the first token")
        await page.locator("#stop").click()
        stopped = page.locator("#log .msg.assistant").nth(await page.locator("#log .msg.assistant").count() - 1)
        await expect(stopped).to_have_attribute("data-state", "stopped")
        await expect(stopped.locator(".meta")).to_have_text("Stopped.")
        frozen = await stopped.locator(".answer").inner_text()
        await expect(page.locator("#question")).to_be_enabled()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "online")
        await page.fill("#question", "When does the Tamsin Reach glassworks close every year?")
        await page.press("#question", "Enter")
        await expect(page.locator("#log .msg.assistant").last).to_have_attribute("data-state", "done",
                                                                                 timeout=SLOW)
        assert await stopped.locator(".answer").inner_text() == frozen
        assert len(tap.connections) == 3  # Stop moved the next question to a fresh socket
        assert not pages.errors, pages.errors


async def test_answer_sentences_show_their_sources_and_unsupported_ones_are_marked(stack, client, browser, tmp_path):
    """The page draws what answer.done says: one span per sentence, the citation chips after each supported
    one, a marked sentence (with its best score on hover) for each unsupported one, and the notices; the same
    again when the conversation is reopened from the answers read model."""
    from playwright.async_api import expect

    body = await upload(client, NAME, GLASSWORKS)
    assert (await wait_for_status(client, body["doc_id"]))["status"] == "indexed"
    async with pages_for(browser, stack, tmp_path) as pages:
        page = await pages.open("desktop-attribution")
        await _open_chat(page)
        await page.fill("#question", "What does Perpetua Vane make at the Tamsin Reach glassworks, and when does it "
                                     "close?")
        await page.press("#question", "Enter")
        answer = page.locator("#log .msg.assistant").last
        await expect(answer).to_have_attribute("data-state", "done", timeout=SLOW)
        query_id = await answer.get_attribute("data-query-id")
        session_id = await page.evaluate("sessionStorage.getItem('ragbus.session_id')")
        stored = None
        deadline = time.monotonic() + 60
        while stored is None and time.monotonic() < deadline:
            got = await client.get(f"/sessions/{session_id}")
            if got.status_code == 200:
                stored = next((m for m in got.json()["messages"] if m["query_id"] == query_id), None)
            await asyncio.sleep(0.2)
        assert stored is not None
        sentences = stored["attribution"]["sentences"]
        assert sentences, stored

        async def check(view: Any) -> None:
            spans = view.locator(".answer .sentence")
            await expect(spans).to_have_count(len(sentences))
            await expect(view.locator(".answer .sentence.unsupported")).to_have_count(
                sum(not s["supported"] for s in sentences))
            await expect(view.locator(".answer .chip")).to_have_count(sum(len(s["citations"]) for s in sentences))
            for k, s in enumerate(sentences):
                if not s["supported"]:
                    assert "Not supported by the sources" in (await spans.nth(k).get_attribute("title") or "")
            await expect(view.locator(".notice")).to_have_count(len(stored["attribution"]["notices"]))

        await check(answer)
        await pages.shot(page, "desktop-attribution")
        again = await pages.open("desktop-attribution-reopened")
        await _open_chat(again)
        await again.locator(f'#session-list .session[data-session-id="{session_id}"]').click()
        await check(again.locator(f'#log .msg.assistant[data-query-id="{query_id}"]'))
        # the answer mode under the composer goes with the next question and is remembered on reload
        await again.select_option("#answer-mode", "extractive")
        await again.fill("#question", "When does the Tamsin Reach glassworks close?")
        await again.press("#question", "Enter")
        quoted = again.locator("#log .msg.assistant").last
        await expect(quoted).to_have_attribute("data-state", "done", timeout=SLOW)
        await expect(quoted).to_have_attribute("data-answer-mode", "extractive")
        await again.reload()
        await expect(again.locator("#answer-mode")).to_have_value("extractive")
