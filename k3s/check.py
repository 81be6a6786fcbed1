"""Static checks of the k3s manifests, runnable without a cluster: `python k3s/check.py`.

Renders every overlay with `kustomize build` (or `kubectl kustomize`, which embeds kustomize), and the PC
overlay with the component nats-tls, and checks what a schema validator does not: references between objects,
selectors, named ports, $(VAR) expansion, node roles, the one-image-per-agent contract with `ragbus agent
NAME`, that every RAGBUS_ variable set is a setting some process reads, and the security of the deployment:
each workload has its own login Secret and no other, only the Job's db-roles step (and PostgreSQL itself)
sees the superuser's password, nats.conf includes the users of the Secret ragbus-nats-auth, PostgreSQL
refuses trust, the overlays require API keys, and the TLS component reaches every NATS client.
The Secrets are not in the manifests: they are generated here with ragbus.k3s_secrets (fresh passwords, thrown
away), so run this with the repository's environment (.venv/bin/python k3s/check.py). Needs PyYAML;
`nats-server -t` is run on the NATS config (with the generated auth.conf) when it is installed.
Prints one line per failed check and a closing 'N passed, N failed' line; exits non-zero on a failure.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

K3S = Path(__file__).resolve().parent
REPO = K3S.parent
sys.path.insert(0, str(REPO))
OVERLAYS = {"pi-cluster": {"master", "worker"}, "pi-cluster-pc": {"master", "worker", "pc"}}
TLS_OVERLAY = ("pi-cluster-pc", "nats-tls")  # the PC overlay plus the component, rendered from a temporary folder
TLS_SECRET = "ragbus-nats-tls"  # made by hand (openssl or cert-manager, k3s/README.md), only for the component
WORKLOADS = ("Deployment", "StatefulSet", "Job")
CONFIG = "ragbus-config"
ADMIN_WORKLOADS = {"streams-declare", "admin"}  # the CLI's admin login; every agent has its own
# who may read the PostgreSQL superuser's password: the server, and the Job's step that sets up the roles
SUPERUSER_READERS = {"postgres/postgres", "streams-declare/db-roles"}

passed = 0
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL {what}")


def render(path: Path) -> list[dict]:
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(path)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(path)]
    else:
        raise SystemExit("neither kustomize nor kubectl is installed")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_with_component(overlay: str, component: str) -> list[dict]:
    """`overlay` plus `component`, as an overlay of the user's would add it (kustomize wants relative paths)."""
    with tempfile.TemporaryDirectory() as tmp:
        rel = lambda p: os.path.relpath(p, tmp)  # noqa: E731
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [rel(K3S / "overlays" / overlay)], "components": [rel(K3S / "components" / component)]}))
        return render(Path(tmp))


def generated_secrets() -> dict[str, dict[str, str]] | None:
    """The Secrets `ragbus k3s-secrets` prints (name -> stringData), from fresh throwaway credentials."""
    try:
        from ragbus import k3s_secrets
        from ragbus.credentials import Credentials
    except ImportError as exc:
        check(False, f"ragbus importable, to generate the Secrets (run with the repository's venv): {exc}")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        text = k3s_secrets.render(k3s_secrets.manifests(Credentials.ensure(Path(tmp) / "secrets")))
    docs = [d for d in yaml.safe_load_all(text) if d]  # what `kubectl apply -f` would read
    check(all(d["kind"] == "Secret" and d["metadata"]["namespace"] == "ragbus" for d in docs),
          "ragbus k3s-secrets: only Secrets, in namespace ragbus")
    return {d["metadata"]["name"]: d["stringData"] for d in docs}


def kustomization_refs() -> None:
    for kfile in sorted(K3S.rglob("kustomization.yaml")):
        k = yaml.safe_load(kfile.read_text())
        refs = list(k.get("resources", [])) + list(k.get("components", []))
        refs += [p["path"] for p in k.get("patches", []) if "path" in p]
        for ref in refs:
            check((kfile.parent / ref).exists(), f"{kfile.relative_to(REPO)}: {ref} exists")


def setting_env_names() -> set[str]:
    """RAGBUS_<FIELD> for every field of every pydantic settings class (prefix RAGBUS_)."""
    names: set[str] = set()
    files = [REPO / "streams/settings.py", REPO / "projections/app.py", *REPO.glob("agents/*/settings.py")]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        names.add(f"RAGBUS_{item.target.id.upper()}")
    return names


def cli_agents() -> set[str]:
    for node in ast.walk(ast.parse((REPO / "ragbus/cli.py").read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "AGENTS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise SystemExit("ragbus/cli.py: AGENTS not found")


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def node_roles(spec: dict) -> set[str]:
    roles = set()
    if "ragbus/role" in (spec.get("nodeSelector") or {}):
        roles.add(spec["nodeSelector"]["ragbus/role"])
    terms = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
        or {}
    ).get("nodeSelectorTerms", [])
    for term in terms:
        for expr in term.get("matchExpressions", []):
            if expr["key"] == "ragbus/role":
                roles.update(expr["values"])
    return roles


def check_overlay(name: str, objs: list[dict], allowed_roles: set[str], settings: set[str], agents: set[str],
                  secrets: dict[str, dict[str, str]]) -> dict[str, dict[str, dict]]:
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        if o["kind"] != "Namespace":
            check(
                o["metadata"].get("namespace") == "ragbus", f"{name}: {o['kind']}/{o['metadata']['name']} in ns ragbus"
            )
    configmaps = by_kind.get("ConfigMap", {})
    workloads = [o for o in objs if o["kind"] in WORKLOADS]
    templated = [o for o in workloads if o["kind"] != "Job"]

    for w in templated:  # each selector picks its own pods and nobody else's
        sel = w["spec"]["selector"]["matchLabels"]
        owners = [o["metadata"]["name"] for o in templated if matches(sel, o["spec"]["template"]["metadata"]["labels"])]
        check(
            owners == [w["metadata"]["name"]], f"{name}: selector of {w['metadata']['name']} matches only it ({owners})"
        )

    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"]["selector"]
        owners = [o for o in templated if matches(sel, o["spec"]["template"]["metadata"]["labels"])]
        check(len(owners) == 1, f"{name}: Service {svc['metadata']['name']} selects exactly one workload")
        ports = {p.get("name") for o in owners for c in pod_spec(o)["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            check(isinstance(tp, int) or tp in ports, f"{name}: Service {svc['metadata']['name']} targetPort {tp}")

    deployed_agents = set()
    for w in workloads:
        wname = w["metadata"]["name"]
        spec = pod_spec(w)
        roles = node_roles(spec)
        check(
            bool(roles) and roles <= allowed_roles,
            f"{name}: {wname} placed on roles {roles or '{}'} within {allowed_roles}",
        )
        check(spec.get("enableServiceLinks") is False, f"{name}: {wname} disables service links")
        for c in spec.get("initContainers", []) + spec["containers"]:
            cname = f"{wname}/{c['name']}"
            check("memory" in c.get("resources", {}).get("limits", {}), f"{name}: {cname} has a memory limit")
            known = set()
            for ef in c.get("envFrom", []):
                if "secretRef" in ef:
                    ref = ef["secretRef"]["name"]
                    check(ref in secrets, f"{name}: {cname} envFrom Secret {ref} is one `ragbus k3s-secrets` makes")
                    known |= set(secrets.get(ref, {}))
                    continue
                ref = ef.get("configMapRef", {}).get("name")
                check(ref in configmaps, f"{name}: {cname} envFrom ConfigMap {ref} exists")
                known |= set((configmaps.get(ref) or {}).get("data", {}))
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                if "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    check(r["key"] in (configmaps.get(r["name"]) or {}).get("data", {}), f"{name}: {cname} {r}")
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    check(r["key"] in secrets.get(r["name"], {}), f"{name}: {cname} {r} is made by ragbus k3s-secrets")
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
                    check(ref in known, f"{name}: {cname} $({ref}) defined before {e['name']}")
                known.add(e["name"])
            for var in known:
                if var.startswith("RAGBUS_"):
                    check(var in settings, f"{name}: {cname} sets {var}, a setting ragbus reads")
            ports = {p.get("name") for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = (c.get(probe) or {}).get("httpGet", {}).get("port")
                if port is not None:
                    check(isinstance(port, int) or port in ports, f"{name}: {cname} {probe} port {port}")
            args = c.get("args", [])
            if c.get("command") == ["ragbus"]:
                check(c["image"].split(":")[0].endswith("ragbus"), f"{name}: {cname} runs the ragbus image")
                if args[:1] == ["agent"]:
                    check(args[1] in agents, f"{name}: {cname} agent {args[1]} exists in ragbus.cli")
                    deployed_agents.add(args[1])
                    check_scrape(name, w, c, args[1], configmaps)
                else:
                    check(args in (["streams", "declare"], ["k3s-secrets", "--apply-db-roles"]),
                          f"{name}: {cname} runs `ragbus streams declare` or `ragbus k3s-secrets --apply-db-roles`")
    check(deployed_agents == agents, f"{name}: one Deployment per agent ({sorted(agents - deployed_agents)} missing)")
    check_logins(name, workloads, secrets)

    projector = by_kind["Deployment"]["projector"]["spec"]
    check(
        projector["replicas"] == 1 and projector["strategy"]["type"] == "Recreate",
        f"{name}: projector has exactly one replica, strategy Recreate",
    )
    check(
        "streams-declare" in by_kind.get("Job", {})
        and by_kind["Job"]["streams-declare"]["spec"].get("backoffLimit", 0) > 0,
        f"{name}: Job streams-declare with a backoffLimit",
    )

    conf = configmaps["nats-config"]["data"]["nats.conf"]
    check(re.search(r"^\s*sync_interval:", conf, re.M) is not None, f"{name}: nats.conf sets sync_interval")
    check(re.search(r"^\s*max_payload:\s*8MB", conf, re.M) is not None, f"{name}: nats.conf max_payload 8MB")
    check_nats_auth(name, by_kind, secrets)
    check_postgres_auth(name, by_kind)
    gateway_config = dict(configmaps[CONFIG]["data"])
    for c in pod_spec(by_kind["Deployment"]["gateway"])["containers"]:
        gateway_config |= {e["name"]: e.get("value") for e in c.get("env", [])}
    check(gateway_config.get("RAGBUS_REQUIRE_API_KEYS") == "true", f"{name}: the gateway requires API keys")
    return by_kind


def check_scrape(name: str, w: dict, c: dict, agent: str, configmaps: dict[str, dict]) -> None:
    """Prometheus finds every agent's pod by its annotations (ops/prometheus/prometheus-k3s.yml), on the port
    the process serves its metrics on: RAGBUS_METRICS_PORT, or the gateway's HTTP port."""
    notes = w["spec"]["template"].get("metadata", {}).get("annotations", {})
    cname = f"{w['metadata']['name']}/{c['name']}"
    env = {k: v for ef in c.get("envFrom", []) if "configMapRef" in ef
           for k, v in (configmaps.get(ef["configMapRef"]["name"]) or {}).get("data", {}).items()}
    env |= {e["name"]: e.get("value") for e in c.get("env", [])}
    served = env.get("RAGBUS_PORT" if agent == "gateway" else "RAGBUS_METRICS_PORT")
    check(notes.get("prometheus.io/scrape") == "true" and notes.get("prometheus.io/path") == "/metrics",
          f"{name}: {cname} pods are annotated for Prometheus (scrape, path /metrics)")
    check(notes.get("prometheus.io/port") == served and served in {str(p["containerPort"]) for p in c.get("ports", [])},
          f"{name}: {cname} prometheus.io/port {notes.get('prometheus.io/port')} is the port it serves metrics on "
          f"({served}), a containerPort")


def secret_refs(c: dict) -> tuple[set[str], set[tuple[str, str]]]:
    """The Secrets a container reads whole (envFrom), and the (Secret, key) pairs it reads one by one."""
    whole = {ef["secretRef"]["name"] for ef in c.get("envFrom", []) if "secretRef" in ef}
    keys = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    return whole, keys


def check_logins(name: str, workloads: list[dict], secrets: dict[str, dict[str, str]]) -> None:
    """Least privilege: each process that reads ragbus-config has exactly one login Secret, its own (agents)
    or admin's (the Job, the admin shell); the superuser's password reaches only SUPERUSER_READERS."""
    from ragbus.k3s_secrets import DB_SECRET, DB_SUPERUSER_KEY, login_secret

    logins = {s for s in secrets if s.endswith("-login")}
    for w in workloads:
        app = w["metadata"]["labels"].get("app.kubernetes.io/name")  # generator for generator-pc too
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            cname = f"{w['metadata']['name']}/{c['name']}"
            whole, keys = secret_refs(c)
            reads_config = any(ef.get("configMapRef", {}).get("name") == CONFIG for ef in c.get("envFrom", []))
            args = c.get("args", [])
            if c.get("command") == ["ragbus"] and args[:1] == ["agent"]:
                check(whole == {login_secret(args[1])} and not keys,
                      f"{name}: {cname} reads its own login Secret {login_secret(args[1])} and no other ({whole})")
            elif reads_config:  # a ragbus process that is no agent: the CLI
                check(app in ADMIN_WORKLOADS and whole & logins == {login_secret("admin")},
                      f"{name}: {cname} reads the admin login and no agent's ({whole & logins})")
            else:
                check(not (whole & logins), f"{name}: {cname} reads no login Secret ({whole & logins})")
            superuser = DB_SECRET in whole or (DB_SECRET, DB_SUPERUSER_KEY) in keys
            check(not superuser or f"{app}/{c['name']}" in SUPERUSER_READERS,
                  f"{name}: {cname} does not read the PostgreSQL superuser's password")
            check(not any("DB_PASSWORD" in (e.get("value") or "") for e in c.get("env", [])),
                  f"{name}: {cname} builds no database URL from a password")


def check_nats_auth(name: str, by_kind: dict[str, dict[str, dict]], secrets: dict[str, dict[str, str]]) -> None:
    """nats.conf includes auth.conf and tls.conf, both next to it in the pod; nats-server -t accepts the three."""
    from ragbus.k3s_secrets import NATS_AUTH_FILE, NATS_AUTH_SECRET

    data = by_kind["ConfigMap"]["nats-config"]["data"]
    conf = data["nats.conf"]
    check(re.search(rf"^\s*include\s+\"?\.?/?{re.escape(NATS_AUTH_FILE)}\"?\s*$", conf, re.M) is not None,
          f"{name}: nats.conf includes {NATS_AUTH_FILE}")
    check(re.search(r"^\s*include\s+\"?tls\.conf\"?\s*$", conf, re.M) is not None and "tls.conf" in data,
          f"{name}: nats.conf includes tls.conf, a key of nats-config")
    check(not re.search(r"^\s*(authorization|no_auth_user|accounts)\b", conf, re.M),
          f"{name}: nats.conf itself defines no users and no anonymous user")
    sts = pod_spec(by_kind["StatefulSet"]["nats"])
    cmd = sts["containers"][0].get("command", [])
    conf_path = cmd[cmd.index("--config") + 1] if "--config" in cmd else ""
    mounts = {m["name"]: m["mountPath"] for m in sts["containers"][0].get("volumeMounts", [])}
    folder: dict[str, tuple[str, str, str]] = {}  # file in nats.conf's folder -> (kind, name, key) of its source
    for v in sts.get("volumes", []):
        if mounts.get(v["name"]) != os.path.dirname(conf_path):
            continue
        for src in (v.get("projected") or {}).get("sources", []):
            for kind in ("configMap", "secret"):
                if kind not in src:
                    continue
                items = src[kind].get("items") or [{"key": k, "path": k} for k in (data if kind == "configMap" else {})]
                folder |= {i["path"]: (kind, src[kind]["name"], i["key"]) for i in items}
    check(folder.get(os.path.basename(conf_path)) == ("configMap", "nats-config", "nats.conf"),
          f"{name}: nats.conf of nats-config is the server's --config ({conf_path})")
    check(folder.get("tls.conf") == ("configMap", "nats-config", "tls.conf"), f"{name}: tls.conf next to nats.conf")
    check(folder.get(NATS_AUTH_FILE) == ("secret", NATS_AUTH_SECRET, NATS_AUTH_FILE),
          f"{name}: Secret {NATS_AUTH_SECRET} mounted as {NATS_AUTH_FILE} next to nats.conf")
    check(NATS_AUTH_FILE in secrets.get(NATS_AUTH_SECRET, {}), f"{name}: ragbus k3s-secrets makes {NATS_AUTH_FILE}")
    server = shutil.which("nats-server") or (Path(sys.executable).parent / "nats-server")
    if not Path(server).exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        etc = Path(tmp)
        for file, text in data.items():
            (etc / file).write_text(text.replace("/etc/nats/", f"{etc}/"))  # the component's tls.conf
        (etc / NATS_AUTH_FILE).write_text(secrets[NATS_AUTH_SECRET][NATS_AUTH_FILE])
        if "tls {" in data.get("tls.conf", ""):
            self_signed(etc / "tls")
        res = subprocess.run([str(server), "-c", str(etc / "nats.conf"), "-t"], capture_output=True, text=True)
    check(res.returncode == 0, f"{name}: nats-server -t accepts nats.conf + auth.conf + tls.conf "
          f"({res.stderr.strip()[:200]})")


def self_signed(folder: Path) -> None:
    """A throwaway certificate for `nats`, so that `nats-server -t` can load the TLS block."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("nats")]), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir()
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))


def check_postgres_auth(name: str, by_kind: dict[str, dict[str, dict]]) -> None:
    """PostgreSQL asks every TCP client for a password (scram-sha-256), and the agents' URLs point at it."""
    from ragbus.k3s_secrets import DB_ENV, DB_HOST, DB_NAME, DB_PORT, app_roles, role_password_env

    pg = pod_spec(by_kind["StatefulSet"]["postgres"])["containers"][0]
    env = {e["name"]: e.get("value", "") for e in pg.get("env", [])}
    check(env.get("POSTGRES_HOST_AUTH_METHOD") == "scram-sha-256"
          and "--auth-host=scram-sha-256" in env.get("POSTGRES_INITDB_ARGS", "").split(),
          f"{name}: postgres initialises with scram-sha-256 for TCP clients")
    check("trust" not in " ".join(env.values()), f"{name}: postgres is given no trust")
    config = by_kind["ConfigMap"][CONFIG]["data"]
    check((config.get("DB_HOST"), config.get("DB_PORT"), config.get("DB_NAME")) == (DB_HOST, str(DB_PORT), DB_NAME),
          f"{name}: DB_HOST/DB_PORT/DB_NAME are where ragbus k3s-secrets points the agents' database URLs")
    job = pod_spec(by_kind["Job"]["streams-declare"])
    steps = [c for c in job.get("initContainers", []) if c.get("args") == ["k3s-secrets", "--apply-db-roles"]]
    given = {e["name"] for c in steps for e in c.get("env", [])}
    check(len(steps) == 1 and given >= {*DB_ENV, *map(role_password_env, app_roles())},
          f"{name}: the Job sets up the database roles first, with what it needs ({sorted(given)})")


def check_tls(name: str, by_kind: dict[str, dict[str, dict]], base: dict[str, dict[str, dict]]) -> None:
    """The component: TLS on in nats.conf, its certificate next to it, and every NATS client on tls:// with
    the CA where RAGBUS_NATS_TLS_CA says; the workloads keep the volumes they had without it."""
    config = by_kind["ConfigMap"][CONFIG]["data"]
    check(config.get("RAGBUS_NATS_URL", "").startswith("tls://"), f"{name}: RAGBUS_NATS_URL is tls://")
    ca = config.get("RAGBUS_NATS_TLS_CA", "")
    check(ca.startswith("/"), f"{name}: RAGBUS_NATS_TLS_CA is a path ({ca!r})")
    tls_conf = by_kind["ConfigMap"]["nats-config"]["data"].get("tls.conf", "")
    check(re.search(r"^\s*tls\s*\{", tls_conf, re.M) is not None, f"{name}: tls.conf turns TLS on")
    nats = pod_spec(by_kind["StatefulSet"]["nats"])
    sources = [s.get("secret", {}).get("name") for v in nats["volumes"] for s in (v.get("projected") or {})
               .get("sources", [])]
    check(TLS_SECRET in sources and "ragbus-nats-auth" in sources, f"{name}: nats mounts {TLS_SECRET} and its users")
    for kind in WORKLOADS:
        for wname, w in by_kind.get(kind, {}).items():
            spec = pod_spec(w)
            had = {v["name"] for v in pod_spec(base[kind][wname]).get("volumes", [])} if wname in base.get(kind, {}) \
                else set()
            check(had <= {v["name"] for v in spec.get("volumes", [])}, f"{name}: {wname} keeps its volumes {had}")
            tls_volumes = {v["name"] for v in spec.get("volumes", []) if v.get("secret", {}).get("secretName") ==
                           TLS_SECRET}
            for c in spec.get("initContainers", []) + spec["containers"]:
                if any(ef.get("configMapRef", {}).get("name") == CONFIG for ef in c.get("envFrom", [])):
                    mounted = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in tls_volumes}
                    check(os.path.dirname(ca) in mounted, f"{name}: {wname}/{c['name']} has the CA at {ca}")


def main() -> int:
    for f in sorted(K3S.rglob("*.yaml")):
        try:
            list(yaml.safe_load_all(f.read_text()))
            check(True, "")
        except yaml.YAMLError as exc:
            check(False, f"{f.relative_to(REPO)} parses: {exc}")
    kustomization_refs()
    settings, agents = setting_env_names(), cli_agents()
    secrets = generated_secrets()
    if secrets is None:
        print(f"k3s manifests: {passed} passed, {len(failures)} failed")
        return 1
    for key in (k for data in secrets.values() for k in data if k.startswith("RAGBUS_")):
        check(key in settings, f"ragbus k3s-secrets: {key} is a setting ragbus reads")
    rendered = {}
    for overlay, roles in OVERLAYS.items():
        rendered[overlay] = check_overlay(overlay, render(K3S / "overlays" / overlay), roles, settings, agents,
                                          secrets)
    overlay, component = TLS_OVERLAY
    name = f"{overlay}+{component}"
    by_kind = check_overlay(name, render_with_component(overlay, component), OVERLAYS[overlay], settings, agents,
                            {**secrets, TLS_SECRET: {"tls.crt": "", "tls.key": "", "ca.crt": ""}})
    check_tls(name, by_kind, rendered[overlay])
    print(f"k3s manifests: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
