"""API keys (token format, scopes, the fold of the KEYS stream) and the Host/Origin guard, as plain data."""

from __future__ import annotations

from agents.gateway.origins import HostAndOrigin, host_name
from streams.events import KeyCreated, KeyRevoked
from streams.keys import KeyRing, implied, new_key, parse_token


def _created(key_id: str, digest: str, scope: str = "read") -> KeyCreated:
    return KeyCreated(event_id=f"key.created:{key_id}", key_id=key_id, name="t", scopes=[scope], secret_sha256=digest)


def test_a_key_is_proved_by_its_secret_and_refused_once_revoked():
    key_id, token, digest = new_key()
    assert digest not in token and len(token) > 50
    ring = KeyRing()
    ring.apply(_created(key_id, digest, "write"), 1)
    key = ring.authenticate(token)
    assert key is not None and key.scopes == {"read", "write"}
    assert ring.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # wrong secret
    _, other_token, _ = new_key()
    assert ring.authenticate(other_token) is None  # unknown key
    assert ring.authenticate("Bearer " + token) is None and ring.authenticate("") is None
    ring.apply(KeyRevoked(event_id=f"key.revoked:{key_id}", key_id=key_id), 2)
    assert ring.authenticate(token) is None and ring.last_seq == 2
    ring.apply(_created(key_id, digest, "admin"), 3)  # a replayed creation does not revive or widen it
    assert ring.authenticate(token) is None and ring.keys[key_id].scopes == {"read", "write"}


def test_scopes_include_the_lesser_ones_and_tokens_parse_strictly():
    assert implied(["admin"]) == {"read", "write", "admin"} and implied(["read"]) == {"read"}
    assert implied([]) == frozenset() and implied(["bogus"]) == frozenset()
    key_id, token, _ = new_key()
    assert parse_token(token) == (key_id, token.split("_", 2)[2])
    assert parse_token(token + "x") is None and parse_token(token.replace("rbk_", "rbx_")) is None


def _scope(host: str, origin: str | None = None, path: str = "/documents") -> dict:
    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin is not None else [])
    return {"type": "http", "path": path, "headers": headers}


def test_an_open_gateway_answers_only_to_loopback_names_and_its_own_page():
    guard = HostAndOrigin(None, "", "", keys_required=False, bind_host="127.0.0.1")  # type: ignore[arg-type]
    assert guard.refusal(_scope("127.0.0.1:8000")) is None
    assert guard.refusal(_scope("localhost:8000", "http://localhost:8000")) is None
    assert guard.refusal(_scope("[::1]:8000")) is None
    code, reason = guard.refusal(_scope("evil.example:8000"))
    assert code == 421 and "RAGBUS_ALLOWED_HOSTS" in reason
    assert guard.refusal(_scope("evil.example", path="/healthz")) is None  # probes
    code, reason = guard.refusal(_scope("127.0.0.1:8000", "http://evil.example"))
    assert code == 403 and "evil.example" in reason
    assert guard.refusal(_scope("127.0.0.1:8000", "null"))[0] == 403
    assert guard.refusal(_scope("127.0.0.1:8000", "http://127.0.0.1:9999"))[0] == 403  # another port
    assert host_name("[::1]:8000") == "[::1]" and host_name("Example.org:80") == "example.org"


def test_with_keys_any_host_unless_listed_and_configured_origins_pass():
    keyed = HostAndOrigin(None, "", "https://app.example", keys_required=True, bind_host="0.0.0.0")  # type: ignore[arg-type]
    assert keyed.refusal(_scope("ragbus.lan:8000")) is None
    assert keyed.refusal(_scope("ragbus.lan:8000", "https://app.example/")) is None
    assert keyed.refusal(_scope("ragbus.lan:8000", "https://other.example"))[0] == 403
    listed = HostAndOrigin(None, "ragbus.lan, pi-master", "", keys_required=True, bind_host="0.0.0.0")  # type: ignore[arg-type]
    assert listed.refusal(_scope("pi-master:8000")) is None
    assert listed.refusal(_scope("192.168.1.20:8000"))[0] == 421
