"""Issue 9 at the gateway, against the real system: API keys with scopes made and revoked by `ragbus keys`,
sessions that belong to the key that made them, Origin and Host checks, and the web page signing in with a
key in Chromium.

A second gateway process runs beside the session's open one (127.0.0.1, no key needed), with
RAGBUS_REQUIRE_API_KEYS=true: what a k3s overlay runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ragbus.servers import free_port
from tests.conftest import upload, wait_for_status
from tests.integration.test_web_page import SLOW, browser, pages_for  # noqa: F401 - the browser fixture

ROOT = Path(__file__).resolve().parents[2]
EVIL = "http://evil.example"


@dataclass
class Keyed:
    url: str
    env: dict[str, str]  # the CLI's (admin login)

    def keys(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        run = subprocess.run([sys.executable, "-m", "ragbus.cli", "keys", *args], env=self.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert not check or run.returncode == 0, run.stdout + run.stderr
        return run

    def create(self, name: str, scope: str) -> str:
        token = self.keys("create", "--name", name, "--scope", scope).stdout.strip()
        assert token.startswith("rbk_"), token
        return token


@pytest.fixture(scope="module")
async def keyed(stack) -> AsyncIterator[Keyed]:
    port = free_port()
    name = "gateway-keys"
    stack.start(name, "gateway", RAGBUS_PORT=str(port), RAGBUS_REQUIRE_API_KEYS="true")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=url, timeout=2) as c:
        while True:
            stack.check_alive()
            try:
                if (await c.get("/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, stack.log(name)[-2000:]
            await asyncio.sleep(0.3)
    yield Keyed(url, {**os.environ, **stack.env, "COLUMNS": "200"})
    stack.kill(name, signal.SIGTERM)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_keys_with_scopes_are_required_and_revocation_takes_effect_at_once(keyed, tmp_path):
    reader, writer, admin = (keyed.create(f"test-{s}", s) for s in ("read", "write", "admin"))
    listed = keyed.keys("list").stdout
    assert "test-read" in listed and "test-admin" in listed and reader not in listed  # the secret is never shown

    async with httpx.AsyncClient(base_url=keyed.url, timeout=30) as c:
        # without a key: the data and actions are refused; the page, health and docs are not
        for method, path, kw in (("GET", "/documents", {}), ("GET", "/sessions", {}), ("GET", "/indexes", {}),
                                 ("POST", "/search", {"json": {"query": "x"}}),
                                 ("POST", "/ask", {"json": {"question": "x"}}),
                                 ("POST", "/documents", {"files": {"file": ("a.txt", b"hello there")}})):
            response = await c.request(method, path, **kw)
            assert response.status_code == 401, (path, response.text)
            assert "API key" in response.json()["detail"] and response.headers["www-authenticate"] == "Bearer"
        for path in ("/", "/healthz", "/readyz", "/openapi.json", "/auth"):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.get("/auth")).json() == {"keys_required": True, "authenticated": False, "name": None,
                                                  "key_id": None, "scopes": []}
        # a wrong secret, a made-up key, garbage: 401 too
        forged = reader[:-4] + ("AAAA" if not reader.endswith("AAAA") else "BBBB")
        for bad in (forged, "rbk_000000000000_" + "x" * 43, "hunter2"):
            assert (await c.get("/documents", headers=bearer(bad))).status_code == 401, bad

        # read: reading and asking, not writing
        assert (await c.get("/documents", headers=bearer(reader))).status_code == 200
        assert (await c.get("/documents", headers={"X-API-Key": reader})).status_code == 200
        refused = await c.post("/documents", headers=bearer(reader), files={"file": ("r.txt", b"from a reader")})
        assert refused.status_code == 403 and "'write' scope" in refused.json()["detail"]
        assert (await c.delete("/documents/0123456789abcdef01234567", headers=bearer(reader))).status_code == 403
        # write: uploads; admin endpoints refused (403 before the 404 an admin gets for an unknown model)
        accepted = await c.post("/documents", headers=bearer(writer),
                                files={"file": ("keyed-upload.txt", b"The keyed gateway took this upload.")})
        assert accepted.status_code == 202, accepted.text
        assert (await c.post("/admin/indexes", headers=bearer(writer),
                             json={"model": "no-such-model"})).status_code == 403
        assert (await c.post("/admin/indexes", headers=bearer(admin),
                             json={"model": "no-such-model"})).status_code == 404
        me = (await c.get("/auth", headers=bearer(writer))).json()
        assert me["authenticated"] and me["name"] == "test-write" and me["scopes"] == ["read", "write"]
        async with httpx.AsyncClient(base_url=keyed.url, headers=bearer(reader), timeout=30) as as_reader:
            doc = await wait_for_status(as_reader, accepted.json()["doc_id"])
        assert doc["status"] == "indexed"

        # revoked: refused by the running gateway within moments, no restart
        key_id = reader.split("_")[1]
        keyed.keys("revoke", key_id, "--reason", "test")
        assert await until(lambda: _status(c, "/documents", reader, 401)), "revocation not in effect after 5 s"
        row = next(line for line in keyed.keys("list").stdout.splitlines() if key_id in line)
        assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)) == 2, row  # created and revoked
        assert (await c.get("/documents", headers=bearer(writer))).status_code == 200  # the others still work

    # the CLI: ingest says once that it needs a key, and works with one
    sample = tmp_path / "cli-keyed.md"
    sample.write_text("# CLI upload\n\nUploaded by `ragbus ingest` with RAGBUS_API_KEY.\n")
    env = {**keyed.env, "RAGBUS_GATEWAY_URL": keyed.url}
    env.pop("RAGBUS_API_KEY", None)
    run = subprocess.run([sys.executable, "-m", "ragbus.cli", "ingest", str(sample)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "RAGBUS_API_KEY" in run.stderr, run.stderr
    run = subprocess.run([sys.executable, "-m", "ragbus.cli", "ingest", str(sample)],
                         env={**env, "RAGBUS_API_KEY": writer}, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


async def _status(c: httpx.AsyncClient, path: str, token: str, expected: int) -> bool:
    return (await c.get(path, headers=bearer(token))).status_code == expected


async def test_sessions_and_answers_belong_to_the_key_that_made_them(keyed, stack):
    alice, bob = keyed.create("alice", "write"), keyed.create("bob", "write")
    session = f"alice-{time.time_ns()}"
    async with httpx.AsyncClient(base_url=keyed.url, timeout=240) as c:
        asked = await c.post("/ask", headers=bearer(alice), json={"question": "What did the keyed gateway take?",
                                                                  "session_id": session})
        assert asked.status_code == 200, asked.text
        query_id = asked.json()["query_id"]
        mine = (await c.get("/sessions", headers=bearer(alice))).json()["sessions"]
        assert [s["session_id"] for s in mine] == [session]
        assert (await c.get(f"/sessions/{session}", headers=bearer(alice))).status_code == 200

        # bob sees nothing of it, cannot continue, rate, cancel or resume it
        assert session not in {s["session_id"] for s in (await c.get("/sessions", headers=bearer(bob))).json()[
            "sessions"]}
        assert (await c.get(f"/sessions/{session}", headers=bearer(bob))).status_code == 404
        follow_up = await c.post("/ask", headers=bearer(bob), json={"question": "and then?", "session_id": session})
        assert follow_up.status_code == 404, follow_up.text
        assert (await c.post(f"/answers/{query_id}/rating", headers=bearer(bob),
                             json={"rating": "down"})).status_code == 404
        assert (await c.post(f"/answers/{query_id}/cancel", headers=bearer(bob))).status_code == 404
        ws_url = keyed.url.replace("http", "ws", 1) + "/ws/chat"
        async with ws_connect(ws_url, additional_headers=bearer(bob)) as ws:
            await ws.send(json.dumps({"type": "resume", "query_id": query_id, "after_seq": -1}))
            frame = await asyncio.wait_for(ws.recv(), 10)
            assert '"error"' in frame and "unknown question" in frame, frame
        # alice may rate her own answer
        assert (await c.post(f"/answers/{query_id}/rating", headers=bearer(alice),
                             json={"rating": "up"})).status_code == 202
    # the open gateway's anonymous user does not see alice's sessions either
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as open_client:
        assert session not in {s["session_id"] for s in (await open_client.get("/sessions")).json()["sessions"]}


async def test_the_websocket_needs_a_key_where_keys_are_required(keyed):
    token = keyed.create("socket", "read")
    ws_url = keyed.url.replace("http", "ws", 1) + "/ws/chat"
    async with ws_connect(ws_url) as ws:
        frame = await asyncio.wait_for(ws.recv(), 10)
        assert '"unauthorized"' in frame, frame
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    async with ws_connect(ws_url, additional_headers=bearer(token)) as ws:
        await ws.send('{"type": "ask", "question": "What did the keyed gateway take?"}')
        kinds = []
        while not kinds or kinds[-1] not in ("done", "error"):
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), SLOW / 1000))["type"])
        assert kinds[0] == "accepted" and kinds[-1] == "done", kinds


async def test_another_site_cannot_drive_the_gateway_nor_rebind_its_name(stack, keyed):
    port = stack.port
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as c:
        before = {d["doc_id"] for d in (await c.get("/documents")).json()["documents"]}
        # the CSRF of the issue: a multipart upload from another site's page
        forged = await c.post("/documents", headers={"Origin": EVIL},
                              files={"file": ("design.html", b"<html><body>evil</body></html>")})
        assert forged.status_code == 403 and "RAGBUS_ALLOWED_ORIGINS" in forged.json()["detail"], forged.text
        assert (await c.get("/sessions", headers={"Origin": EVIL})).status_code == 403
        assert (await c.get("/documents", headers={"Origin": "null"})).status_code == 403
        after = {d["doc_id"] for d in (await c.get("/documents")).json()["documents"]}
        assert after == before
        # the gateway's own page (same origin), and programs without Origin, pass
        own = f"http://127.0.0.1:{port}"
        assert (await c.get("/documents", headers={"Origin": own})).status_code == 200
        # DNS rebinding: evil.example resolved to 127.0.0.1 arrives with its own name in Host
        rebound = await c.get("/documents", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 421 and "RAGBUS_ALLOWED_HOSTS" in rebound.json()["detail"]
        assert (await c.get("/documents", headers={"Host": f"localhost:{port}"})).status_code == 200
        assert (await c.get("/healthz", headers={"Host": "10.0.0.7:8000"})).status_code == 200  # probes pass
    ws_url = stack.url.replace("http", "ws", 1) + "/ws/chat"
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(ws_url, origin=EVIL):
            pass
    assert refused.value.response.status_code == 403
    async with ws_connect(ws_url, origin=f"http://127.0.0.1:{port}") as ws:  # the page's own origin
        await ws.send("not json")
        assert "not JSON" in await asyncio.wait_for(ws.recv(), 10)
    # a key does not make a foreign page welcome either
    token = keyed.create("origin", "write")
    async with httpx.AsyncClient(base_url=keyed.url, timeout=30) as c:
        assert (await c.get("/documents", headers={**bearer(token), "Origin": EVIL})).status_code == 403


async def test_the_web_page_asks_for_a_key_and_works_with_it(keyed, client, browser, tmp_path):  # noqa: F811
    from playwright.async_api import expect

    token = keyed.create("browser", "write")
    doc = await upload(client, "signin-lighthouse.md", b"# Signin lighthouse\n\nThe Signin lighthouse on "
                       b"Marrow Point is painted in red and white bands and its lamp turns every 12 seconds.\n")
    await wait_for_status(client, doc["doc_id"])
    async with pages_for(browser, keyed, tmp_path) as pages:
        page = await pages.open("signin")
        await page.goto("/")
        dialog = page.locator("#signin")
        await expect(dialog).to_be_visible()
        await pages.shot(page, "signin-dialog")
        await page.fill("#signin-key", "rbk_000000000000_" + "x" * 43)
        await page.click("#signin-form button[type=submit]")
        await expect(page.locator("#signin-error")).to_contain_text("not valid")
        await page.fill("#signin-key", token)
        await page.click("#signin-form button[type=submit]")
        await expect(dialog).to_be_hidden()
        await expect(page.locator("#who-name")).to_have_text("browser")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "online")
        await expect(page.locator("#doc-list .doc", has_text="signin-lighthouse.md")).to_be_visible()
        cookies = await page.context.cookies()
        cookie = next(c for c in cookies if c["name"] == "ragbus_key")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert token not in await page.evaluate("document.cookie + JSON.stringify(sessionStorage)")
        await page.fill("#question", "How often does the Signin lighthouse lamp turn?")
        await page.press("#question", "Enter")
        answer = page.locator("#log .msg.assistant").last
        await expect(answer).to_have_attribute("data-state", "done", timeout=SLOW)
        await pages.shot(page, "signed-in-answer")
        # the console's only complaint: the wrong key's 401
        assert all("401" in e for e in pages.errors), pages.errors
        # the conversation belongs to this key: listed for it, not for the open gateway's anonymous user
        sessions = (await client.get("/sessions")).json()["sessions"]
        keyed_sessions = httpx.get(f"{keyed.url}/sessions", headers=bearer(token)).json()["sessions"]
        assert keyed_sessions and not {s["session_id"] for s in keyed_sessions} & {s["session_id"] for s in sessions}
