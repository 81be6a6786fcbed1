"""Issue 9 against the real servers, as `ragbus up` secures them: nobody gets onto NATS without a user, each
agent's user is refused outside its own subjects (no forged document.deleted or answer.done, no stream
deleted, purged or listed, no other agent's durable read, reconfigured or deleted, no bytes of the Object
Store read, no other user's replies), and PostgreSQL lets nobody in without a password, gives the agents'
roles no superuser powers (no `COPY ... TO PROGRAM`) and takes no replication connection from them.

The expectations below are what the issue demands of each agent (the event contract of the architecture),
written out here and not read from `streams.access`: a test that derived them from the grants would check
nothing. A refusal is observed twice: the server reports the permissions violation to the client, and the
admin (or a listener) sees that nothing happened.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from ragbus.credentials import Credentials
from ragbus.servers import EmbeddedPostgres, NatsServer
from ragbus.stack import AgentStack, Servers
from streams import events as ev
from streams import subjects
from streams.connect import connect
from streams.publish import PublishRefused, encode, headers_for, publish
from streams.settings import BusSettings
from streams.topology import (
    ANSWERS,
    CHUNKS,
    CONDENSER,
    DEFAULT_EMBEDDING_MODEL,
    DOCUMENTS,
    DOCUMENTS_BUCKET,
    EMBEDDER_FOLLOWUPS,
    EMBEDDER_QUERIES,
    GENERATOR,
    INDEX_ADVISORIES,
    PARSER,
    STREAMS,
    TOKENS,
    advisories_of,
    index_durable,
    stream_for,
)

pytestmark = pytest.mark.timeout(120)

AGENTS = ("parser", "embedder", "generator", "projector", "gateway")
OBJECTS = f"OBJ_{DOCUMENTS_BUCKET}"
API = "$JS.API"
WINDOW = 2.0  # how long a refusal may take to be reported (only a test about to fail waits this long)

# What each agent publishes, by the architecture (README / issue 9): everything else is refused to it.
PUBLISHES: dict[str, set[type[ev.Event]]] = {
    "parser": {ev.DocumentParsed, ev.DocumentChunked, ev.DocumentFailed, ev.DeadLettered},
    "embedder": {ev.ChunksEmbedded, ev.ContextBuilt, ev.AnswerFailed, ev.DocumentFailed, ev.DeadLettered},
    "generator": {ev.AnswerTokenGenerated, ev.AnswerCompleted, ev.AnswerFailed, ev.QueryCondensed, ev.DeadLettered},
    "projector": set(),
    # + index.compared: the gateway may say index.started / activated / dropped (its re-index endpoints) under
    # one `index.>` grant; a forged comparison gives it nothing that index.activated does not
    "gateway": {ev.DocumentUploaded, ev.DocumentDeleted, ev.QueryAsked, ev.QueryCancelled, ev.AnswerRated,
                ev.IndexStarted, ev.IndexActivated, ev.IndexDropped, ev.IndexCompared},
}
# The durables each agent pulls from (and acks on): no other agent may read, reconfigure or delete them.
OWN_DURABLES: dict[str, set[tuple[str, str]]] = {
    "parser": {(d.stream, d.name) for d in (PARSER, advisories_of(PARSER))},
    "embedder": {(d.stream, d.name) for d in (EMBEDDER_QUERIES, EMBEDDER_FOLLOWUPS, advisories_of(EMBEDDER_QUERIES),
                                              advisories_of(EMBEDDER_FOLLOWUPS), INDEX_ADVISORIES,
                                              index_durable(DEFAULT_EMBEDDING_MODEL))},
    "generator": {(d.stream, d.name) for d in (CONDENSER, GENERATOR, advisories_of(CONDENSER),
                                               advisories_of(GENERATOR))},
    "projector": set(),
    "gateway": set(),
}
ALL_DURABLES = sorted(set().union(*OWN_DURABLES.values()))
INDEX_DURABLE = (CHUNKS, index_durable(DEFAULT_EMBEDDING_MODEL).name)


def event_classes() -> list[type[ev.Event]]:
    found: list[type[ev.Event]] = []
    pending = list(ev.Event.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "SUBJECT" in cls.__dict__ and cls not in found:
            found.append(cls)
    return sorted(found, key=lambda c: c.SUBJECT)


def forged_subject(cls: type[ev.Event]) -> str:
    return subjects.subject(cls.SUBJECT, f"forged-{uuid.uuid4().hex[:12]}")


def answer(query_id: str, text: str, generator: str = "generator-1") -> ev.AnswerCompleted:
    return ev.AnswerCompleted(event_id=f"answer.done:{query_id}:{uuid.uuid4().hex[:8]}", query_id=query_id,
                              question="what is the secret?", answer=text, citations=[], model="m", generator=generator)


# ---------------------------------------------------------------------------------------------- helpers

REFUSED = "refused"
SILENT = "silent"  # neither refused nor answered within WINDOW (allowed, and nothing replies)


@dataclass
class Bus:
    """One NATS login, with the errors the server reported to it."""

    user: str
    nc: NATS
    errors: list[str] = field(default_factory=list)

    def violated(self, kind: str, subject: str) -> bool:
        needle = f'permissions violation for {kind} to "{subject}"'.lower()
        return any(needle in e for e in self.errors)

    async def _wait_violation(self, kind: str, subject: str, window: float = WINDOW) -> bool:
        deadline = time.monotonic() + window
        while not self.violated(kind, subject):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def attempt(self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None) -> Msg | str:
        """Publish with a reply inbox: REFUSED (the server reported the violation), the reply, or SILENT."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, max_msgs=1)
        try:
            await self.nc.publish(subject, payload, reply=inbox, headers=headers)
            await self.nc.flush(timeout=5)
            deadline = time.monotonic() + WINDOW
            while time.monotonic() < deadline:
                if self.violated("publish", subject):
                    return REFUSED
                try:
                    return await sub.next_msg(timeout=0.02)
                except nats.errors.TimeoutError:
                    pass
            return REFUSED if self.violated("publish", subject) else SILENT
        finally:
            await sub.unsubscribe()

    async def attempts(self, requests: list[tuple[str, bytes]]) -> dict[str, Msg | str]:
        outcomes = await asyncio.gather(*(self.attempt(s, p) for s, p in requests))
        return {s: o for (s, _), o in zip(requests, outcomes, strict=True)}

    async def listen(self, subject: str) -> list[Msg]:
        """Subscribe; what arrives on it is kept in the returned list."""
        received: list[Msg] = []

        async def keep(msg: Msg) -> None:
            received.append(msg)

        await self.nc.subscribe(subject, cb=keep)
        await self.nc.flush(timeout=5)
        return received

    async def subscribe_refused(self, subject: str) -> tuple[bool, list[Msg]]:
        """Subscribe; whether the server refused it (its report may come after the flush's PONG, so this waits
        for it: quick when refused, WINDOW when not), and what arrives on it."""
        received = await self.listen(subject)
        return await self._wait_violation("subscription", subject), received


def describe(outcomes: dict[str, Msg | str]) -> dict[str, str]:
    """The attempts that were not refused, readably (for assertion messages)."""
    return {s: o if isinstance(o, str) else f"answered: {o.headers} {o.data[:160]!r}"
            for s, o in outcomes.items() if o != REFUSED}


async def anonymous_refused(url: str, **login: Any) -> str:
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    with pytest.raises(nats.errors.Error) as refused:
        nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3,
                                error_cb=on_error, **login)
        await nc.close()
    return f"{refused.value} {errors}".lower()


Login = Callable[[str], Awaitable[Bus]]


@pytest.fixture
async def login(nats_server: NatsServer, credentials: Credentials, prepared: None) -> AsyncIterator[Login]:
    """Connections as the agents' users (fresh ones per test: their reported errors are the test's)."""
    opened: list[Bus] = []

    async def open_as(user: str) -> Bus:
        bus = Bus(user, None)  # type: ignore[arg-type]

        async def on_error(e: Exception) -> None:
            bus.errors.append(str(e).lower())

        bus.nc = await connect(BusSettings(nats_url=nats_server.url, nats_user=user,
                                           nats_password=credentials.nats[user]), f"access-test-{user}",
                               error_cb=on_error, allow_reconnect=False, max_reconnect_attempts=0)
        opened.append(bus)
        return bus

    yield open_as
    for bus in opened:
        await bus.nc.close()


async def nothing_on(js: nats.js.JetStreamContext, stream: str, subject: str) -> bool:
    try:
        await js.get_last_msg(stream, subject)
    except NotFoundError:
        return True
    return False


# ---------------------------------------------------------------------------------------------- NATS: who gets in


async def test_anonymous_and_wrong_passwords_are_refused(nats_server: NatsServer, credentials: Credentials,
                                                         prepared: None) -> None:
    assert "authorization violation" in await anonymous_refused(nats_server.url)
    assert "authorization violation" in await anonymous_refused(nats_server.url, user="admin", password="wrong")
    assert "authorization violation" in await anonymous_refused(nats_server.url, user="admin")
    # one agent's password does not open another's user (nor the admin's)
    assert "authorization violation" in await anonymous_refused(nats_server.url, user="admin",
                                                                password=credentials.nats["gateway"])
    assert "authorization violation" in await anonymous_refused(nats_server.url, user="gateway",
                                                                password=credentials.nats["parser"])
    assert "authorization violation" in await anonymous_refused(nats_server.url, user="nobody", password="x")
    # the positive control: the right password gets in
    nc = await nats.connect(nats_server.url, user="parser", password=credentials.nats["parser"],
                            allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)
    assert nc.is_connected
    await nc.close()


async def test_no_password_is_stored_in_the_server_config(nats_server: NatsServer, credentials: Credentials,
                                                          prepared: None) -> None:
    config = nats_server.config_path.read_text()
    for password in credentials.nats.values():
        assert password not in config
    assert nats_server.config_path.stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------------------------------------- forged events


async def test_only_the_gateway_may_delete_a_document(login: Login, js) -> None:
    doc = f"victim-{uuid.uuid4().hex[:12]}"
    deletion = ev.DocumentDeleted(event_id=f"document.deleted:{doc}", doc_id=doc, upload_id=f"u-{doc}")
    subject = deletion.subject()
    forgers = [await login(agent) for agent in AGENTS if agent != "gateway"]
    gateway = await login("gateway")
    try:
        async def forge(bus: Bus) -> BaseException | None:
            try:
                await publish(bus.nc.jetstream(timeout=0.5), deletion, timeout=0.5)
            except PublishRefused as e:  # no ack, and the server reported the violation: no retries
                return e
            return None

        outcomes = await asyncio.gather(*(forge(bus) for bus in forgers))
        assert all(outcomes), {b.user: "published" for b, o in zip(forgers, outcomes, strict=True) if not o}
        for bus in forgers:
            assert await bus._wait_violation("publish", subject), (bus.user, bus.errors)
        assert await nothing_on(js, DOCUMENTS, subject), "a forged document.deleted is in the log"

        ack = await publish(gateway.nc.jetstream(), deletion, timeout=5)  # the one who may
        assert ack.stream == DOCUMENTS
        stored = await js.get_last_msg(DOCUMENTS, subject)
        assert json.loads(stored.data)["doc_id"] == doc and stored.seq == ack.seq
    finally:
        await js.purge_stream(DOCUMENTS, subject=subject)


async def test_only_a_generator_may_answer(login: Login, js) -> None:
    """The issue's forged answer: no one but a generator can put an answer.done / answer.token on the bus, in
    JetStream or on core NATS, and a gateway listening for the answer (its websocket) sees only the real one."""
    query = f"q-{uuid.uuid4().hex[:12]}"
    done, token = subjects.subject(ev.AnswerCompleted.SUBJECT, query), subjects.subject(
        ev.AnswerTokenGenerated.SUBJECT, query)
    forgery = answer(query, "FORGED: send your password to evil.example")
    forged_token = ev.AnswerTokenGenerated(event_id=f"answer.token:{query}:0", query_id=query, seq=0, text="FORGED")
    listener = await login("gateway")
    forgers = [await login(agent) for agent in AGENTS if agent != "generator"]
    generator = await login("generator")
    try:
        heard_done = await listener.listen(done)  # the gateway listens there (it hears the real answer below)
        heard_token = await listener.listen(token)

        async def forge(bus: Bus, event: ev.Event) -> None:
            with pytest.raises(PublishRefused):  # no ack, and the server reported the violation: no retries
                await publish(bus.nc.jetstream(timeout=0.5), event, timeout=0.5)

        await asyncio.gather(*(forge(bus, event) for bus in forgers for event in (forgery, forged_token)))
        for bus in forgers:  # and on core NATS, where the gateway listens
            await bus.nc.publish(done, encode(forgery), headers=headers_for(forgery))
            await bus.nc.publish(token, encode(forged_token), headers=headers_for(forged_token))
            await bus.nc.flush(timeout=5)
            assert await bus._wait_violation("publish", done), (bus.user, bus.errors)
            assert await bus._wait_violation("publish", token), (bus.user, bus.errors)

        real = answer(query, "the real answer")
        await publish(generator.nc.jetstream(), real, timeout=5)
        deadline = time.monotonic() + 5
        while not heard_done and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await listener.nc.flush(timeout=5)
        assert [json.loads(m.data)["answer"] for m in heard_done] == ["the real answer"]
        assert heard_token == []
        stored = await js.get_last_msg(ANSWERS, done)
        assert json.loads(stored.data)["event_id"] == real.event_id
        info = await js.stream_info(ANSWERS, subjects_filter=done)
        assert info.state.subjects == {done: 1}, "a forged answer.done is in the log"
        assert await nothing_on(js, TOKENS, token), "a forged answer.token is in the log"
    finally:
        await js.purge_stream(ANSWERS, subject=done)


async def test_an_agent_publisher_refused_a_subject_fails_at_once(nats_server: NatsServer, credentials: Credentials,
                                                                  prepared: None, js) -> None:
    """An agent's own publisher (FastStream, the agents' broker options) on a subject its login may not publish:
    the server's permissions violation ends the publish after its first ack timeout, not after the 30 s of
    retries a leader election gets, and nothing is stored."""
    from faststream.nats import NatsBroker

    from streams.connect import broker_options
    from streams.publish import RETRY_FOR, EventPublisher

    broker = NatsBroker(nats_server.url, **broker_options(BusSettings(
        nats_url=nats_server.url, nats_user="parser", nats_password=credentials.nats["parser"])))
    forged = EventPublisher(broker, ev.DocumentDeleted, "a parser may not say this")
    doc = f"victim-{uuid.uuid4().hex[:12]}"
    await broker.start()
    try:
        started = time.monotonic()
        with pytest.raises(PublishRefused, match="permissions violation"):
            await forged(ev.DocumentDeleted(event_id=f"document.deleted:{doc}", doc_id=doc, upload_id=f"u-{doc}"))
        assert time.monotonic() - started < RETRY_FOR / 3
    finally:
        await broker.stop()
    assert await nothing_on(js, DOCUMENTS, f"document.deleted.{doc}")


@pytest.mark.parametrize("agent", AGENTS)
async def test_no_agent_publishes_another_agents_events(agent: str, login: Login, js) -> None:
    """Every event this agent does not publish by the architecture is refused to it, in JetStream and on core
    NATS: the projector publishes none, and none but the CLI says deadletter.retried, key.created/revoked."""
    bus = await login(agent)
    foreign = [cls for cls in event_classes() if cls not in PUBLISHES[agent]]
    assert ev.KeyCreated in foreign and ev.DeadLetterRetried in foreign
    requests = [(forged_subject(cls), b"{}") for cls in foreign]
    outcomes = await bus.attempts(requests)
    assert not describe(outcomes), f"{agent} published another agent's events: {describe(outcomes)}"
    for subject, _ in requests:
        assert await nothing_on(js, stream_for(subject), subject), subject


async def test_projection_notifications_come_from_the_projector_only(login: Login) -> None:
    """projection.updated tells the gateway that rows changed (not an event, stored nowhere): only the
    projector says it."""
    listener = await login("gateway")
    subject = f"projection.updated.documents.{uuid.uuid4().hex[:12]}"
    heard = await listener.listen(subject)
    for agent in ("parser", "embedder", "generator", "gateway"):
        bus = await login(agent)
        assert await bus.attempt(subject, b"{}") == REFUSED, agent
    projector = await login("projector")
    await projector.nc.publish(subject, b"{}")
    await projector.nc.flush(timeout=5)
    deadline = time.monotonic() + 5
    while not heard and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(heard) == 1


# ---------------------------------------------------------------------------------------------- streams and consumers


async def test_no_agent_lists_deletes_purges_or_changes_a_stream(login: Login, js, nc: NATS) -> None:
    names = [*STREAMS, OBJECTS]
    before = {name: await js.stream_info(name) for name in names}
    for agent in AGENTS:
        bus = await login(agent)
        requests: list[tuple[str, bytes]] = [(f"{API}.STREAM.LIST", b"{}"),
                                             (f"{API}.STREAM.CREATE.EVIL", json.dumps(
                                                 {"name": "EVIL", "subjects": ["answer.done.evil"]}).encode())]
        for name in names:
            raw = json.loads((await nc.request(f"{API}.STREAM.INFO.{name}", b"", timeout=5)).data)
            never = raw["config"]["subjects"][0].replace(">", f"never-{uuid.uuid4().hex[:8]}")
            requests += [
                (f"{API}.STREAM.DELETE.{name}", b""),
                (f"{API}.STREAM.PURGE.{name}", json.dumps({"filter": never}).encode()),  # harmless if it ran
                (f"{API}.STREAM.UPDATE.{name}", json.dumps(raw["config"]).encode()),  # the same config
                (f"{API}.CONSUMER.LIST.{name}", b"{}"),
                (f"{API}.CONSUMER.NAMES.{name}", b"{}"),
            ]
        outcomes = await bus.attempts(requests)
        assert not describe(outcomes), f"{agent}: {describe(outcomes)}"
    for name in names:
        after = await js.stream_info(name)
        assert after.created == before[name].created, f"{name} was recreated"
        assert after.state.first_seq == before[name].state.first_seq, f"{name} was purged"
        assert after.state.last_seq >= before[name].state.last_seq
    with pytest.raises(NotFoundError):
        await js.stream_info("EVIL")


async def test_admin_may_do_all_of_it(login: Login, js) -> None:
    """The positive control: the CLI's admin lists every stream, reads the bytes, reads any consumer."""
    admin = await login("admin")
    listed = await admin.attempt(f"{API}.STREAM.LIST", b"{}")
    assert isinstance(listed, Msg)
    assert {s["config"]["name"] for s in json.loads(listed.data)["streams"]} >= {*STREAMS, OBJECTS}
    info = await admin.attempt(f"{API}.CONSUMER.INFO.{PARSER.stream}.{PARSER.name}")
    assert isinstance(info, Msg) and json.loads(info.data)["name"] == PARSER.name
    # the helper tells an allowed call from a refused one: an agent's own reads are answered
    gateway = await login("gateway")
    answered = await gateway.attempt(f"{API}.STREAM.INFO.{DOCUMENTS}")
    assert isinstance(answered, Msg) and json.loads(answered.data)["config"]["name"] == DOCUMENTS
    names = await gateway.attempt(f"{API}.STREAM.NAMES", b"{}")  # nats.py finds streams by subject: names only
    assert isinstance(names, Msg) and DOCUMENTS in json.loads(names.data)["streams"]


async def test_the_nats_cli_gets_a_context_with_the_admin_login(nats_server: NatsServer, credentials: Credentials,
                                                              prepared: None, tmp_path: Path) -> None:
    """`ragbus nats-context` writes what the `nats` CLI reads (url, user, password; 0600), and it gets in."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "RAGBUS_NATS_URL": nats_server.url,
           "RAGBUS_NATS_USER": "admin", "RAGBUS_NATS_PASSWORD": credentials.nats["admin"]}
    run = subprocess.run([sys.executable, "-m", "ragbus.cli", "nats-context", "--select"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    path = tmp_path / "nats" / "context" / "ragbus.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "nats" / "context.txt").read_text() == "ragbus"
    context = json.loads(path.read_text())
    nc = await nats.connect(context["url"], user=context["user"], password=context["password"])
    try:
        names = {s.config.name for s in await nc.jetstream().streams_info()}
        assert set(STREAMS) <= names
    finally:
        await nc.close()


@pytest.mark.parametrize("agent", AGENTS)
async def test_no_agent_reads_changes_or_deletes_another_agents_durable(agent: str, login: Login, nc: NATS) -> None:
    """The embedder cannot pull the parser's work (nor anyone another's): no fetch, no ack, no create with its
    name (which would update its configuration), no delete. The gateway drops and declares the index durables
    (its re-index endpoints), but cannot pull from them."""
    configs = {}
    for stream, name in ALL_DURABLES:
        reply = await nc.request(f"{API}.CONSUMER.INFO.{stream}.{name}", b"", timeout=5)
        configs[stream, name] = json.loads(reply.data)["config"]
        assert configs[stream, name].get("durable_name") == name, (stream, name, reply.data)
    bus = await login(agent)
    requests: list[tuple[str, bytes]] = []
    for stream, name in ALL_DURABLES:
        if (stream, name) in OWN_DURABLES[agent]:
            continue
        config = configs[stream, name]
        same = json.dumps({"stream_name": stream, "config": config}).encode()  # harmless if it ran
        requests += [(f"{API}.CONSUMER.MSG.NEXT.{stream}.{name}", b'{"batch": 1, "no_wait": true}'),
                     (f"$JS.ACK.{stream}.{name}.1.999999999.999999999.0.0", b"+ACK")]
        if agent == "gateway" and (stream, name) == INDEX_DURABLE:
            continue
        requests += [(f"{API}.CONSUMER.CREATE.{stream}.{name}", same),
                     (f"{API}.CONSUMER.CREATE.{stream}.{name}.{config['filter_subject']}", same),
                     (f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{name}", same),
                     (f"{API}.CONSUMER.DELETE.{stream}.{name}", b"")]
    outcomes = await bus.attempts(requests)
    assert not describe(outcomes), f"{agent}: {describe(outcomes)}"
    for (stream, name), config in configs.items():
        reply = await nc.request(f"{API}.CONSUMER.INFO.{stream}.{name}", b"", timeout=5)
        assert json.loads(reply.data).get("config") == config, f"{stream}/{name} was deleted or changed"


async def test_a_durable_is_read_by_its_agent(login: Login) -> None:
    """The positive control of the one above: the parser fetches from its own durable."""
    parser = await login("parser")
    reply = await parser.attempt(f"{API}.CONSUMER.MSG.NEXT.{PARSER.stream}.{PARSER.name}",
                                 b'{"batch": 1, "no_wait": true}')
    assert isinstance(reply, Msg), reply  # a message, or 404 "No Messages": answered either way


# ---------------------------------------------------------------------------------------------- the Object Store


async def test_only_the_parser_and_gateway_read_uploaded_bytes(login: Login, js, nc: NATS) -> None:
    secret = f"secret bytes {uuid.uuid4().hex}".encode()
    name = f"access-test-{uuid.uuid4().hex[:12]}"
    store = await js.object_store(DOCUMENTS_BUCKET)
    info = await store.put(name, secret)
    chunk = f"$O.{DOCUMENTS_BUCKET}.C.{info.nuid}"
    later = f"access-test-later-{uuid.uuid4().hex[:12]}"
    try:
        # the controls: the admin, the parser (through the Object Store API) and the gateway read them
        admin = await login("admin")
        got = await admin.attempt(f"{API}.DIRECT.GET.{OBJECTS}", json.dumps({"last_by_subj": chunk}).encode())
        assert isinstance(got, Msg) and got.data == secret
        parser = await login("parser")
        parser_store = await parser.nc.jetstream().object_store(DOCUMENTS_BUCKET)
        assert (await parser_store.get(name)).data == secret
        gateway = await login("gateway")
        got = await gateway.attempt(f"{API}.DIRECT.GET.{OBJECTS}", json.dumps({"last_by_subj": chunk}).encode())
        assert isinstance(got, Msg) and got.data == secret

        consumer = {"stream_name": OBJECTS, "config": {"name": "peek", "ack_policy": "none", "deliver_policy": "all",
                                                       "filter_subject": chunk}}
        eavesdroppers = []
        for agent in ("embedder", "generator", "projector"):
            bus = await login(agent)
            outcomes = await bus.attempts([
                (f"{API}.DIRECT.GET.{OBJECTS}", json.dumps({"last_by_subj": chunk}).encode()),
                (f"{API}.DIRECT.GET.{OBJECTS}.{chunk}", b""),
                (f"{API}.STREAM.MSG.GET.{OBJECTS}", json.dumps({"last_by_subj": chunk}).encode()),
                (f"{API}.STREAM.INFO.{OBJECTS}", b""),
                (f"{API}.CONSUMER.CREATE.{OBJECTS}", json.dumps(consumer).encode()),
                (f"{API}.CONSUMER.CREATE.{OBJECTS}.peek", json.dumps(consumer).encode()),
                (f"{API}.CONSUMER.CREATE.{OBJECTS}.peek.{chunk}", json.dumps(consumer).encode()),
            ])
            assert not describe(outcomes), f"{agent}: {describe(outcomes)}"
            assert all(secret not in e.encode() for e in bus.errors)
        for agent in AGENTS:  # nobody listens to the bucket's subjects directly: not even the parser
            bus = await login(agent)
            refused, heard = await bus.subscribe_refused(f"$O.{DOCUMENTS_BUCKET}.>")
            assert refused, f"{agent} may subscribe to the bucket's subjects"
            eavesdroppers.append((agent, bus, heard))
        await store.put(later, b"uploaded while they listen")
        for agent, bus, heard in eavesdroppers:
            await bus.nc.flush(timeout=5)
            assert heard == [], f"{agent} heard an upload"
    finally:
        for obj in (name, later):
            try:
                await store.delete(obj)
            except nats.js.errors.ObjectNotFoundError:
                pass


# ---------------------------------------------------------------------------------------------- replies


async def test_no_one_reads_another_users_replies(login: Login, nc: NATS) -> None:
    buses = {agent: await login(agent) for agent in AGENTS}
    owners_heard: dict[str, list[Msg]] = {}
    for owner, bus in buses.items():  # each user's own inbox (the control: each hears its probe below)
        owners_heard[owner] = await bus.listen(f"_INBOX_{owner}.probe.>")
    thieves: list[tuple[str, str, list[Msg]]] = []
    for thief, bus in buses.items():
        for owner in [*AGENTS, "admin"]:
            if owner == thief:
                continue
            refused, heard = await bus.subscribe_refused(f"_INBOX_{owner}.>")
            assert refused, f"{thief} may read {owner}'s replies"
            thieves.append((thief, owner, heard))
        for broad in ("_INBOX.>", ">", "*.>", "$JS.>", "$JS.API.>"):
            refused, heard = await bus.subscribe_refused(broad)
            assert refused, f"{thief} may subscribe to {broad}"
            thieves.append((thief, broad, heard))
    for owner in AGENTS:
        await nc.publish(f"_INBOX_{owner}.probe.1", b"for the owner only")
    await nc.flush(timeout=5)
    deadline = time.monotonic() + 5
    while not all(owners_heard.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert {owner: len(heard) for owner, heard in owners_heard.items()} == dict.fromkeys(AGENTS, 1)
    for bus in buses.values():
        await bus.nc.flush(timeout=5)
    assert [(thief, owner) for thief, owner, heard in thieves if heard] == []


# ---------------------------------------------------------------------------------------------- a known gap


async def test_an_answer_a_deputy_consumer_delivers_is_not_taken_for_one(login: Login, js, stack, pool,
                                                                         nats_server: NatsServer,
                                                                         credentials: Credentials) -> None:
    """nats-server does not check a push consumer's deliver subject against its creator's permissions: an agent
    that may create consumers (the parser, on the Object Store's stream it reads) can have the server deliver
    an uploaded file's bytes, written to look like an answer, to a question's answer.done subject, and the
    ANSWERS stream stores the delivery. Subject permissions cannot close that; what closes it is that the
    delivery keeps the file chunk's own subject: the gateway's watch of the question hears only the
    generator's answer, the log holds no other answer.done of the question, and the projector, which reads
    every message of ANSWERS, projects no forged answer."""
    from agents.gateway.bus import Bus as GatewayBus

    query = f"q-{uuid.uuid4().hex[:12]}"
    done = subjects.subject(ev.AnswerCompleted.SUBJECT, query)
    store = await js.object_store(DOCUMENTS_BUCKET)
    name = f"access-test-forged-{uuid.uuid4().hex[:12]}"
    forged = answer(query, "FORGED through the Object Store")
    info = await store.put(name, encode(forged))
    chunk = f"$O.{DOCUMENTS_BUCKET}.C.{info.nuid}"
    gateway = await GatewayBus.connect(BusSettings(nats_url=nats_server.url, nats_user="gateway",
                                                   nats_password=credentials.nats["gateway"]))
    raw = await (await login("gateway")).listen(done)  # what the server delivers, as a plain subscriber sees it
    parser, generator = await login("parser"), await login("generator")
    consumer = {"stream_name": OBJECTS, "config": {
        "name": f"deputy-{query}", "ack_policy": "none", "deliver_policy": "all",
        "filter_subject": chunk, "deliver_subject": done}}
    try:
        async with gateway.watch(query, ev.AnswerCompleted.SUBJECT) as heard:
            created = await parser.attempt(f"{API}.CONSUMER.CREATE.{OBJECTS}.deputy-{query}",
                                           json.dumps(consumer).encode())
            assert created not in (REFUSED, SILENT) and b'"error"' not in created.data, created
            deadline = time.monotonic() + 5
            while not raw and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert raw and raw[0].subject == chunk, "the server no longer delivers it: this test checks nothing"
            real = answer(query, "the real answer")
            await publish(generator.nc.jetstream(), real, timeout=5)
            first = await asyncio.wait_for(heard.get(), 5)
            assert first["answer"] == "the real answer", first
            assert heard.empty()
        stored = await js.get_last_msg(ANSWERS, done)
        assert json.loads(stored.data)["event_id"] == real.event_id
        assert (await js.stream_info(ANSWERS, subjects_filter=done)).state.subjects == {done: 1}
        # the delivery is in ANSWERS all the same, under the chunk's subject: the projector reads past it
        delivered = await js.get_last_msg(ANSWERS, chunk)
        deadline = time.monotonic() + 30
        while (await pool.fetchval("SELECT last_seq FROM projection_positions WHERE projection = 'answers' "
                                   "AND stream = $1", ANSWERS) or 0) < delivered.seq:
            assert time.monotonic() < deadline, "the projector did not get past the delivered chunk"
            await asyncio.sleep(0.1)
        rows = await pool.fetch("SELECT answer FROM answers WHERE query_id = $1 OR answer LIKE 'FORGED%'", query)
        assert [r["answer"] for r in rows] in ([], ["the real answer"]), rows
    finally:
        await gateway.close()
        try:
            await js.delete_consumer(OBJECTS, f"deputy-{query}")
        except NotFoundError:
            pass
        await js.purge_stream(ANSWERS, subject=done)
        await js.purge_stream(ANSWERS, subject=chunk)
        await store.delete(name)


# ---------------------------------------------------------------------------------------------- PostgreSQL

PG_ROLES = ("postgres", "ragbus_projector", "ragbus_reader")


async def pg_connect(postgres: EmbeddedPostgres, user: str, password: str | None, tmp_path: Path,
                     **kw: Any) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=postgres.port, user=user, password=password,
                                 database=postgres.database, passfile=str(tmp_path / "no-passfile"), timeout=5, **kw)


@pytest.fixture
def no_pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No password from the environment: a connection without one really has none."""
    for name in ("PGPASSWORD", "PGPASSFILE", "PGUSER", "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("role", PG_ROLES)
async def test_postgres_refuses_logins_without_the_password(role: str, postgres: EmbeddedPostgres,
                                                            credentials: Credentials, prepared: None,
                                                            tmp_path: Path, no_pg_env: None) -> None:
    others = [p for r, p in credentials.postgres.items() if r != role]
    for password in (None, "", "wrong", *others):
        with pytest.raises(asyncpg.InvalidPasswordError):
            conn = await pg_connect(postgres, role, password, tmp_path)
            await conn.close()
    for database in ("postgres", "template1"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            conn = await asyncpg.connect(host="127.0.0.1", port=postgres.port, user=role, database=database,
                                         passfile=str(tmp_path / "none"), timeout=5)
            await conn.close()
    # the positive control: its own password gets in, as itself
    conn = await pg_connect(postgres, role, credentials.postgres[role], tmp_path)
    try:
        assert await conn.fetchval("SELECT current_user") == role
    finally:
        await conn.close()


@pytest.mark.parametrize("role", ["ragbus_projector", "ragbus_reader", "postgres"])
async def test_postgres_refuses_replication_connections(role: str, postgres: EmbeddedPostgres,
                                                        credentials: Credentials, prepared: None,
                                                        tmp_path: Path, no_pg_env: None) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await pg_connect(postgres, role, None, tmp_path, server_settings={"replication": "database"})
    if role == "postgres":
        return  # the superuser may replicate, with its password (which no agent has: see below)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="WAL sender"):
        await pg_connect(postgres, role, credentials.postgres[role], tmp_path,
                         server_settings={"replication": "database"})


async def test_postgres_authenticates_every_connection(postgres: EmbeddedPostgres, prepared: None) -> None:
    """pg_hba: scram-sha-256 on every line (no trust, peer or ident, replication included), TCP on loopback
    only, no Unix socket; every password stored as a SCRAM verifier."""
    rules = [line.split() for line in (postgres.data_dir / "pg_hba.conf").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), rules
    assert all(rule[0] == "host" for rule in rules), rules  # no `local` (socket) lines
    conn = await asyncpg.connect(postgres.dsn, timeout=5)
    try:
        loaded = await conn.fetch("SELECT type, database, address, auth_method, error FROM pg_hba_file_rules")
        assert loaded and all(r["auth_method"] == "scram-sha-256" and r["error"] is None for r in loaded), loaded
        assert {r["address"] for r in loaded} <= {"127.0.0.1", "::1"}
        assert await conn.fetchval("SHOW unix_socket_directories") == ""
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        verifiers = dict(await conn.fetch("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1)",
                                          list(PG_ROLES)))
        assert set(verifiers) == set(PG_ROLES)
        assert all(v and v.startswith("SCRAM-SHA-256$") for v in verifiers.values()), verifiers
    finally:
        await conn.close()
    assert not any(Path(d, f".s.PGSQL.{postgres.port}").exists() for d in ("/tmp", "/var/run/postgresql"))


async def test_the_agents_roles_are_not_superusers(postgres: EmbeddedPostgres, credentials: Credentials,
                                                   prepared: None) -> None:
    conn = await asyncpg.connect(postgres.dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
            "pg_has_role(rolname, 'pg_execute_server_program', 'USAGE') AS program, "
            "pg_has_role(rolname, 'pg_read_server_files', 'USAGE') AS read_files, "
            "pg_has_role(rolname, 'pg_write_server_files', 'USAGE') AS write_files "
            "FROM pg_roles WHERE rolname IN ('ragbus_projector', 'ragbus_reader')")
    finally:
        await conn.close()
    assert len(rows) == 2
    for row in rows:
        assert not any(v for k, v in dict(row).items() if k != "rolname"), dict(row)
    for agent, role in (("projector", "ragbus_projector"), ("gateway", "ragbus_reader"),
                        ("embedder", "ragbus_reader")):
        conn = await asyncpg.connect(credentials.dsn(postgres.host_dsn, agent), timeout=5)
        try:
            assert await conn.fetchval("SELECT current_user") == role
            assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        finally:
            await conn.close()


async def test_no_agent_process_gets_superuser_or_admin_credentials(nats_server: NatsServer,
                                                                    postgres: EmbeddedPostgres,
                                                                    credentials: Credentials, tmp_path: Path) -> None:
    """What an agent process is started with (as `ragbus up` starts it): its own NATS user and a role that is
    not the superuser; neither the superuser's password nor the admin's is anywhere in its environment."""
    stack = AgentStack.for_servers(Servers(nats_server, postgres, credentials), tmp_path)
    for agent in AGENTS:
        env = {**stack.env, **stack.login(agent)}
        assert env["RAGBUS_NATS_USER"] == agent and env["RAGBUS_NATS_PASSWORD"] == credentials.nats[agent]
        for secret in (credentials.postgres["postgres"], credentials.nats["admin"]):
            assert not [k for k, v in env.items() if secret in v], agent
        dsn = env.get("RAGBUS_DATABASE_URL", "")
        assert "postgres:" not in dsn.split("://", 1)[-1].split("@")[0] + ":", (agent, "superuser")
        if agent in ("parser", "generator"):
            assert dsn == "", f"the {agent} needs no database"


@pytest.mark.parametrize("agent", ["gateway", "projector"])
async def test_no_agent_role_runs_programs_or_reads_server_files(agent: str, postgres: EmbeddedPostgres,
                                                                 credentials: Credentials, prepared: None) -> None:
    """The issue's `COPY (SELECT 1) TO PROGRAM 'id'`, and its neighbours, as ragbus_reader and ragbus_projector."""
    refused = [
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "COPY projection_positions FROM PROGRAM 'id'",
        "COPY (SELECT 1) TO '/tmp/ragbus-access-test'",
        "COPY projection_positions FROM '/etc/passwd'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_ls_dir('.')",
        "CREATE ROLE evil LOGIN SUPERUSER",
        "SET ROLE postgres",
        "CREATE SCHEMA evil",
    ]
    if agent == "gateway":  # ragbus_reader only reads
        refused += ["INSERT INTO projection_positions (projection, stream, last_seq) VALUES ('x', 'y', 1)",
                    "UPDATE projection_positions SET last_seq = 0", "DELETE FROM projection_positions",
                    "TRUNCATE projection_positions",
                    "CREATE TABLE evil (x int)", "DROP TABLE projection_positions",
                    "ALTER TABLE projection_positions ADD COLUMN evil int"]
    conn = await asyncpg.connect(credentials.dsn(postgres.host_dsn, agent), timeout=5)
    try:
        allowed = []
        for sql in refused:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(sql)
                allowed.append(sql)
            except asyncpg.InsufficientPrivilegeError:
                pass
            finally:
                await transaction.rollback()
        try:
            await conn.execute("CREATE DATABASE evil")  # not in a transaction
            allowed.append("CREATE DATABASE evil")
        except asyncpg.InsufficientPrivilegeError:
            pass
        assert allowed == [], f"{agent}'s role may: {allowed}"
        assert await conn.fetchval("SELECT count(*) FROM projection_positions") >= 0  # it does read
    finally:
        await conn.close()
