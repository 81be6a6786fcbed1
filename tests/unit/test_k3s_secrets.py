"""`ragbus k3s-secrets` (ragbus/k3s_secrets.py) and the client side of the k3s TLS component (streams/connect.py).

No cluster: the printed manifests are parsed as `kubectl apply -f` would read them (YAML), the generated
auth.conf is checked by nats-server itself (`-t`, then a short-lived server on a free port: a user gets in, a
stranger does not), and the TLS context is built from a throwaway CA and used against a nats-server that
requires TLS. The manifests that mount these Secrets are checked by k3s/check.py."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt
import nats
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faststream.nats import NatsBroker

from ragbus import k3s_secrets
from ragbus.credentials import PG_ROLE_OF, Credentials
from ragbus.servers.nats import find_nats_server
from ragbus.servers.ports import free_port, port_is_open
from streams.access import ROLES
from streams.connect import broker_options, connect, connect_options, note_refusal, tls_context
from streams.settings import BusSettings

MINIMAL_CONF = "port: {port}\ninclude auth.conf\n{tls}"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return Credentials.ensure(tmp_path_factory.mktemp("k3s") / "secrets")


@pytest.fixture(scope="module")
def secrets(credentials: Credentials) -> dict[str, dict[str, str]]:
    """name -> stringData of every Secret, read back from the printed YAML."""
    docs = [d for d in yaml.safe_load_all(k3s_secrets.render(k3s_secrets.manifests(credentials))) if d]
    assert all(d["apiVersion"] == "v1" and d["kind"] == "Secret" and d["type"] == "Opaque" for d in docs)
    assert {d["metadata"]["namespace"] for d in docs} == {"ragbus"}
    by_name = {d["metadata"]["name"]: d["stringData"] for d in docs}
    assert len(by_name) == len(docs)
    return by_name


def test_every_secret_is_there(secrets: dict[str, dict[str, str]]) -> None:
    assert set(secrets) == {"ragbus-nats-auth", "ragbus-db", *(f"ragbus-{user}-login" for user in ROLES)}
    assert all(isinstance(v, str) for data in secrets.values() for v in data.values())


def test_auth_conf_has_every_user_hashed_never_a_password(credentials: Credentials, secrets) -> None:
    conf = secrets["ragbus-nats-auth"]["auth.conf"]
    users = yaml.safe_load(conf.split("authorization:", 1)[1])["users"]  # the JSON after the key
    assert [u["user"] for u in users] == list(ROLES)
    for u in users:
        assert u["password"].startswith("$2") and bcrypt.checkpw(credentials.nats[u["user"]].encode(),
                                                                 u["password"].encode())
        assert u["permissions"] == ROLES[u["user"]].permissions()
    for password in (*credentials.nats.values(), *credentials.postgres.values()):
        assert password not in conf


def test_each_login_carries_its_own_agent_only(credentials: Credentials, secrets) -> None:
    for user in ROLES:
        login = secrets[f"ragbus-{user}-login"]
        assert login["RAGBUS_NATS_USER"] == user
        assert login["RAGBUS_NATS_PASSWORD"] == credentials.nats[user]
        if user in PG_ROLE_OF:
            role = PG_ROLE_OF[user]
            assert set(login) == {"RAGBUS_NATS_USER", "RAGBUS_NATS_PASSWORD", "RAGBUS_DATABASE_URL"}
            assert login["RAGBUS_DATABASE_URL"] == (
                f"postgresql://{role}:{credentials.postgres[role]}@postgres:5432/ragbus")
        else:
            assert set(login) == {"RAGBUS_NATS_USER", "RAGBUS_NATS_PASSWORD"}
        text = "\n".join(login.values())
        others = [p for u, p in credentials.nats.items() if u != user]
        others += [p for r, p in credentials.postgres.items() if r != PG_ROLE_OF.get(user)]
        assert not [p for p in others if p in text]  # the superuser's in particular


def test_db_secret_is_what_postgres_and_the_job_read(credentials: Credentials, secrets) -> None:
    assert secrets["ragbus-db"] == {"password": credentials.postgres["postgres"],
                                    **{r: credentials.postgres[r] for r in k3s_secrets.app_roles()}}
    assert k3s_secrets.app_roles() == ("ragbus_projector", "ragbus_reader")


def test_from_dir_keeps_the_passwords(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    k3s_secrets.add_arguments(parser)
    out = tmp_path / "secrets.yaml"
    args = ["--from", str(tmp_path / "creds"), "-o", str(out)]
    assert k3s_secrets.run_k3s_secrets(parser.parse_args(args)) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    first = out.read_text()
    assert k3s_secrets.run_k3s_secrets(parser.parse_args(args)) == 1  # an existing file is not replaced
    assert out.read_text() == first
    assert k3s_secrets.run_k3s_secrets(parser.parse_args([*args, "--force"])) == 0

    def logins(text: str) -> dict[str, dict[str, str]]:
        return {d["metadata"]["name"]: d["stringData"] for d in yaml.safe_load_all(text)
                if d and d["metadata"]["name"] != "ragbus-nats-auth"}  # bcrypt salts differ

    assert logins(out.read_text()) == logins(first)
    assert (tmp_path / "creds" / "credentials.json").stat().st_mode & 0o777 == 0o600


def _write_conf(folder: Path, secrets, port: int, tls: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "auth.conf").write_text(secrets["ragbus-nats-auth"]["auth.conf"])
    conf = folder / "nats.conf"
    conf.write_text(MINIMAL_CONF.format(port=port, tls=tls))
    return conf


def test_nats_server_accepts_the_auth_conf(tmp_path: Path, secrets) -> None:
    conf = _write_conf(tmp_path / "etc", secrets, 4222)
    res = subprocess.run([str(find_nats_server()), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr


class _Server:
    """nats-server on `conf`, stopped on exit."""

    def __init__(self, conf: Path, port: int) -> None:
        self.proc = subprocess.Popen([str(find_nats_server()), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not port_is_open(port):
            assert self.proc.poll() is None and time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def test_a_user_gets_in_a_stranger_does_not(tmp_path: Path, credentials: Credentials, secrets) -> None:
    port = free_port()
    with _Server(_write_conf(tmp_path / "etc", secrets, port), port):
        login = secrets["ragbus-parser-login"]
        settings = BusSettings(nats_url=f"nats://127.0.0.1:{port}", nats_user=login["RAGBUS_NATS_USER"],
                               nats_password=login["RAGBUS_NATS_PASSWORD"])
        nc = await connect(settings, "test")
        await nc.close()
        for user, password in ((None, None), ("parser", credentials.nats["gateway"])):
            with pytest.raises(Exception):  # nats.py raises its own error for a refused login
                await nats.connect(f"nats://127.0.0.1:{port}", user=user, password=password,
                                   allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)


def _ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA, and a certificate it signed for 127.0.0.1 (what nats-server presents)."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("nats"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    folder.mkdir(exist_ok=True)
    paths = folder / "ca.crt", folder / "tls.crt", folder / "tls.key"
    paths[0].write_bytes(cert("ragbus test CA", ca_key, "ragbus test CA", ca_key, True)
                         .public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert("nats", server_key, "ragbus test CA", ca_key, False)
                         .public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


def test_no_ca_no_tls_options() -> None:
    settings = BusSettings(nats_user="parser", nats_password="pw")
    assert tls_context(settings) is None
    assert "tls" not in connect_options(settings)
    assert broker_options(settings)["security"].ssl_context is None
    assert broker_options(BusSettings()) == {"error_cb": note_refusal}  # no login, no TLS: refusals noted only


def test_tls_context_trusts_the_ca(tmp_path: Path) -> None:
    ca, _, _ = _ca_and_server_cert(tmp_path)
    settings = BusSettings(nats_tls_ca=str(ca), nats_user="parser", nats_password="pw")
    context = tls_context(settings)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [dict(x[0] for x in c["subject"])["commonName"] for c in context.get_ca_certs()] == ["ragbus test CA"]
    assert isinstance(connect_options(settings)["tls"], ssl.SSLContext)
    security = broker_options(settings)["security"]
    assert security.username == "parser" and security.use_ssl and isinstance(security.ssl_context, ssl.SSLContext)
    anonymous = broker_options(BusSettings(nats_tls_ca=str(ca)))
    assert set(anonymous) == {"security", "error_cb"} and isinstance(anonymous["security"].ssl_context, ssl.SSLContext)


async def test_tls_connection_to_a_server_that_requires_it(tmp_path: Path, secrets) -> None:
    ca, crt, key = _ca_and_server_cert(tmp_path / "tls")
    port = free_port()
    tls = f'tls {{\n  cert_file: "{crt}"\n  key_file: "{key}"\n  timeout: 2\n}}\n'
    login = secrets["ragbus-generator-login"]
    with _Server(_write_conf(tmp_path / "etc", secrets, port, tls), port):
        settings = BusSettings(nats_url=f"tls://127.0.0.1:{port}", nats_tls_ca=str(ca),
                               nats_user=login["RAGBUS_NATS_USER"], nats_password=login["RAGBUS_NATS_PASSWORD"])
        nc = await connect(settings, "test")
        assert nc.is_connected
        await nc.close()
        broker = NatsBroker(settings.nats_url, allow_reconnect=False, **broker_options(settings))  # the agents'
        connection = await broker.connect()
        assert connection.is_connected
        await broker.stop()
        with pytest.raises(Exception):  # the system's CAs do not know the throwaway one
            await asyncio.wait_for(nats.connect(f"tls://127.0.0.1:{port}", user=login["RAGBUS_NATS_USER"],
                                                password=login["RAGBUS_NATS_PASSWORD"], allow_reconnect=False,
                                                max_reconnect_attempts=0, connect_timeout=2), 10)


def test_route_password_is_in_the_nats_secret_stable_and_nobody_elses(credentials: Credentials, secrets) -> None:
    route = secrets["ragbus-nats-auth"][k3s_secrets.NATS_ROUTE_PASSWORD_KEY]
    assert route == k3s_secrets.route_password(credentials) == k3s_secrets.route_password(credentials)
    assert route.isalnum() and route[0].isalpha() and len(route) >= 40  # safe in a URL and as a nats.conf value
    assert route not in secrets["ragbus-nats-auth"]["auth.conf"]
    assert route not in (*credentials.nats.values(), *credentials.postgres.values())
    assert not [s for name, s in secrets.items() if name != "ragbus-nats-auth" and route in "\n".join(s.values())]


def test_cnpg_points_the_urls_at_the_cluster_and_adds_its_secrets(credentials: Credentials, secrets) -> None:
    docs = [d for d in yaml.safe_load_all(k3s_secrets.render(k3s_secrets.manifests(credentials, cnpg=True))) if d]
    cnpg = {d["metadata"]["name"]: d for d in docs}
    assert set(cnpg) == set(secrets) | {"ragbus-pg-superuser", "ragbus-pg-ragbus-projector", "ragbus-pg-ragbus-reader"}
    for role, name in (("postgres", "ragbus-pg-superuser"), ("ragbus_projector", "ragbus-pg-ragbus-projector"),
                       ("ragbus_reader", "ragbus-pg-ragbus-reader")):
        assert cnpg[name]["type"] == "kubernetes.io/basic-auth"
        assert cnpg[name]["stringData"] == {"username": role, "password": credentials.postgres[role]}
    hosts = {"projector": "ragbus-pg-rw", "gateway": "ragbus-pg-rw", "admin": "ragbus-pg-rw", "embedder": "ragbus-pg-r"}
    for user, host in hosts.items():
        role = PG_ROLE_OF[user]
        assert cnpg[f"ragbus-{user}-login"]["stringData"]["RAGBUS_DATABASE_URL"] == (
            f"postgresql://{role}:{credentials.postgres[role]}@{host}:5432/ragbus")
    unchanged = {n for n in secrets if n.endswith("-login") and n[len("ragbus-"):-len("-login")] not in hosts}
    assert unchanged and all(cnpg[n]["stringData"] == secrets[n] for n in unchanged | {"ragbus-db"})
