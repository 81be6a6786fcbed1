"""Static checks of the k3s manifests, runnable without a cluster: `python k3s/check.py`.

Renders every overlay with `kustomize build` (or `kubectl kustomize`, which embeds kustomize), and the overlays
with the optional components (nats-tls on both, cnpg on the PC's), and checks what a schema validator does not:
references between objects,
selectors, named ports, $(VAR) expansion, node roles, the one-image-per-agent contract with `ragbus agent
NAME`, that every RAGBUS_ variable set is a setting some process reads, and the security of the deployment:
each workload has its own login Secret and no other, only the Job's db-roles step (and PostgreSQL itself)
sees the superuser's password, nats.conf includes the users of the Secret ragbus-nats-auth, PostgreSQL
refuses trust, the overlays require API keys, and the TLS component reaches every NATS client. The NATS
topology: one server on two Pis, a three-member cluster with the PC (replicas, headless Service, routes to every
member with the route login of the Secret, server names, anti-affinity, PodDisruptionBudget, probes, lame duck),
every process listing every member, streams declared with as many replicas. The custom resources are validated
against their operators' CRD schemas (k3s/schemas/: KEDA's ScaledObject, CloudNativePG's Cluster), and checked for
what ragbus needs of them: KEDA scales the work agents on exactly the durables they pull from (streams/topology.py,
the agents' require_durables), one worker per queued job, at least one, bounded, with a fallback; the CNPG cluster
creates the database, the roles and the privileges of ragbus.database.ensure_roles, and who writes reads the primary.
The Secrets are not in the manifests: they are generated here with ragbus.k3s_secrets (fresh passwords, thrown
away), so run this with the repository's environment (.venv/bin/python k3s/check.py). Needs PyYAML;
`nats-server -t` is run on the NATS config (with the generated auth.conf) when it is installed.
Schemas are checked with jsonschema_rs (the test extras). Prints one line per failed check and a closing
'N passed, N failed' line; exits non-zero on a failure.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

K3S = Path(__file__).resolve().parent
REPO = K3S.parent
sys.path.insert(0, str(REPO))
OVERLAYS = {"pi-cluster": {"master", "worker"}, "pi-cluster-pc": {"master", "worker", "pc"}}
# overlays plus optional components, as an overlay of the user's would add them (rendered from a temporary folder)
WITH_COMPONENTS = (("pi-cluster", ("nats-tls",)), ("pi-cluster-pc", ("nats-tls",)), ("pi-cluster-pc", ("cnpg",)))
SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.v1alpha1.json",
           ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_clusters.v1.json"}
KEDA_AGENTS = {"parser", "embedder", "generator"}  # the agents that pull work, scaled on their durables' lag
NAMESPACE_DOMAIN = "ragbus.svc.cluster.local"
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


def render_with_components(overlay: str, components: tuple[str, ...]) -> list[dict]:
    """`overlay` plus `components`, as an overlay of the user's would add them (kustomize wants relative paths)."""
    with tempfile.TemporaryDirectory() as tmp:
        rel = lambda p: os.path.relpath(p, tmp)  # noqa: E731
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump({
            "resources": [rel(K3S / "overlays" / overlay)],
            "components": [rel(K3S / "components" / c) for c in components]}))
        return render(Path(tmp))


def generated_secrets(cnpg: bool = False) -> dict[str, dict[str, str]] | None:
    """The Secrets `ragbus k3s-secrets [--cnpg]` prints (name -> stringData), from fresh throwaway credentials."""
    try:
        from ragbus import k3s_secrets
        from ragbus.credentials import Credentials
    except ImportError as exc:
        check(False, f"ragbus importable, to generate the Secrets (run with the repository's venv): {exc}")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        text = k3s_secrets.render(k3s_secrets.manifests(Credentials.ensure(Path(tmp) / "secrets"), cnpg))
    docs = [d for d in yaml.safe_load_all(text) if d]  # what `kubectl apply -f` would read
    check(all(d["kind"] == "Secret" and d["metadata"]["namespace"] == "ragbus" for d in docs),
          f"ragbus k3s-secrets{' --cnpg' if cnpg else ''}: only Secrets, in namespace ragbus")
    check(all(d["type"] == "kubernetes.io/basic-auth" for d in docs
              if set(d["stringData"]) == {"username", "password"}),
          "ragbus k3s-secrets: the username/password Secrets are of type basic-auth")
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
                    check(args in (["streams", "declare"], ["k3s-secrets", "--apply-db-roles"])
                          or (args[:3] == ["streams", "declare", "--replicas"] and len(args) == 4),
                          f"{name}: {cname} runs `ragbus streams declare [--replicas N]` or `ragbus k3s-secrets "
                          f"--apply-db-roles` ({args})")
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
    check_nats_topology(name, by_kind, allowed_roles)
    check_nats_clients(name, by_kind)
    if "Cluster" in by_kind:
        check_cnpg(name, by_kind, allowed_roles, secrets)
    else:
        check_postgres_auth(name, by_kind)
    check_keda(name, by_kind)
    for o in objs:
        if (o["apiVersion"], o["kind"]) in SCHEMAS:
            errors = schema_errors(o)
            check(not errors, f"{name}: {o['kind']}/{o['metadata']['name']} valid against its CRD schema: {errors[:3]}")
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
    for part in ("tls.conf", "cluster.conf"):
        check(re.search(rf"^\s*include\s+\"?{re.escape(part)}\"?\s*$", conf, re.M) is not None and part in data,
              f"{name}: nats.conf includes {part}, a key of nats-config")
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
    for part in ("tls.conf", "cluster.conf"):
        check(folder.get(part) == ("configMap", "nats-config", part), f"{name}: {part} next to nats.conf")
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
        env = pod_env(by_kind["StatefulSet"]["nats"], sts["containers"][0], secrets)  # the pod's, for $SERVER_NAME
        res = subprocess.run([str(server), "-c", str(etc / "nats.conf"), "-t"], capture_output=True, text=True,
                             env={**os.environ, **env})
    check(res.returncode == 0, f"{name}: nats-server -t accepts nats.conf + auth.conf + tls.conf + cluster.conf, "
          f"with the pod's environment ({res.stderr.strip()[:200]})")


def pod_env(w: dict, c: dict, secrets: dict[str, dict[str, str]], ordinal: int = 0) -> dict[str, str]:
    """Container `c`'s environment as the kubelet makes it from its `env` (values with $(VAR) expanded, the pod's
    name for metadata.name, the generated Secrets' values); envFrom is left out."""
    env: dict[str, str] = {}
    for e in c.get("env", []):
        vf = e.get("valueFrom", {})
        if "fieldRef" in vf:
            value = {"metadata.name": f"{w['metadata']['name']}-{ordinal}"}.get(vf["fieldRef"]["fieldPath"], "")
        elif "secretKeyRef" in vf:
            value = secrets.get(vf["secretKeyRef"]["name"], {}).get(vf["secretKeyRef"]["key"], "")
        else:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), e.get("value", ""))
        env[e["name"]] = value
    return env


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
    from ragbus.k3s_secrets import DB_HOST, DB_NAME, DB_PORT

    pg = pod_spec(by_kind["StatefulSet"]["postgres"])["containers"][0]
    env = {e["name"]: e.get("value", "") for e in pg.get("env", [])}
    check(env.get("POSTGRES_HOST_AUTH_METHOD") == "scram-sha-256"
          and "--auth-host=scram-sha-256" in env.get("POSTGRES_INITDB_ARGS", "").split(),
          f"{name}: postgres initialises with scram-sha-256 for TCP clients")
    check("trust" not in " ".join(env.values()), f"{name}: postgres is given no trust")
    config = by_kind["ConfigMap"][CONFIG]["data"]
    check((config.get("DB_HOST"), config.get("DB_PORT"), config.get("DB_NAME")) == (DB_HOST, str(DB_PORT), DB_NAME),
          f"{name}: DB_HOST/DB_PORT/DB_NAME are where ragbus k3s-secrets points the agents' database URLs")
    check_db_roles_step(name, by_kind)


def check_db_roles_step(name: str, by_kind: dict[str, dict[str, dict]]) -> None:
    from ragbus.k3s_secrets import DB_ENV, app_roles, role_password_env

    job = pod_spec(by_kind["Job"]["streams-declare"])
    steps = [c for c in job.get("initContainers", []) if c.get("args") == ["k3s-secrets", "--apply-db-roles"]]
    given = {e["name"] for c in steps for e in c.get("env", [])}
    check(len(steps) == 1 and given >= {*DB_ENV, *map(role_password_env, app_roles())},
          f"{name}: the Job sets up the database roles first, with what it needs ({sorted(given)})")


def check_tls(name: str, by_kind: dict[str, dict[str, dict]], base: dict[str, dict[str, dict]]) -> None:
    """The component: TLS on in nats.conf, its certificate next to it, and every NATS client on tls:// with
    the CA where RAGBUS_NATS_TLS_CA says; the workloads keep the volumes they had without it."""
    config = by_kind["ConfigMap"][CONFIG]["data"]
    urls = config.get("RAGBUS_NATS_URL", "").split(",")
    check(all(u.strip().startswith("tls://") for u in urls),
          f"{name}: every server of RAGBUS_NATS_URL is tls:// ({urls})")
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


def nats_members(by_kind: dict[str, dict[str, dict]]) -> tuple[int, str, list[str]]:
    """The NATS StatefulSet's replicas, its governing Service, and its members' DNS names (one server: `nats`)."""
    sts = by_kind["StatefulSet"]["nats"]
    n, service = sts["spec"].get("replicas", 1), sts["spec"]["serviceName"]
    if n == 1:
        return n, service, ["nats"]
    return n, service, [f"nats-{i}.{service}.{NAMESPACE_DOMAIN}" for i in range(n)]


def conf_value(conf: str, key: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(key)}\s*[:=]\s*(\S+)", conf, re.M)
    return m[1] if m else None


def seconds(value: str | None) -> int:
    m = re.fullmatch(r"(\d+)(s|m)?", value or "")
    return int(m[1]) * (60 if m[2] == "m" else 1) if m else 0


def check_nats_topology(name: str, by_kind: dict[str, dict[str, dict]], allowed_roles: set[str]) -> None:
    """One server, or an odd cluster of at least three, one member per node, that survives losing one: routes to every
    member (with the route login of the Secret), stable names, a PDB, probes, lame duck; streams declared R<n>."""
    from ragbus.k3s_secrets import NATS_AUTH_SECRET, NATS_ROUTE_PASSWORD_KEY, NATS_ROUTE_USER

    sts = by_kind["StatefulSet"]["nats"]
    n, service, members = nats_members(by_kind)
    spec = pod_spec(sts)
    c = spec["containers"][0]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    cluster_conf = by_kind["ConfigMap"]["nats-config"]["data"].get("cluster.conf", "")
    declare = [x for x in pod_spec(by_kind["Job"]["streams-declare"])["containers"] if x.get("args", [])[:2]
               == ["streams", "declare"]]
    args = declare[0]["args"] if declare else []
    replicas_arg = int(args[args.index("--replicas") + 1]) if "--replicas" in args else 1
    check(replicas_arg == n, f"{name}: streams declared with as many replicas as NATS servers ({args}, {n} servers)")
    if n == 1:
        check(not re.search(r"^\s*cluster\s*\{", cluster_conf, re.M), f"{name}: one server, no cluster block")
        return
    check(n >= 3 and n % 2 == 1,
          f"{name}: a NATS cluster of an odd number, at least 3 ({n}): a quorum survives one loss")
    check(len(allowed_roles) >= n, f"{name}: {n} members fit on {len(allowed_roles)} nodes, one each")
    check(sts["spec"].get("podManagementPolicy") == "Parallel", f"{name}: nats members start in parallel")
    headless = by_kind.get("Service", {}).get(service, {}).get("spec", {})
    check(headless.get("clusterIP") == "None" and headless.get("publishNotReadyAddresses") is True
          and matches(headless.get("selector", {}), labels),
          f"{name}: serviceName {service} is a headless Service of the members, publishing them before they are Ready")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check({p.get("targetPort") for p in headless.get("ports", [])} >= {"client", "cluster", "monitor"},
          f"{name}: {service} serves the client, cluster and monitor ports")
    anti = ((spec.get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", [])
    check(any(t.get("topologyKey") == "kubernetes.io/hostname" and matches(t["labelSelector"].get("matchLabels", {}),
                                                                          labels) for t in anti),
          f"{name}: required podAntiAffinity by kubernetes.io/hostname among the members")
    pdbs = [d["spec"] for d in by_kind.get("PodDisruptionBudget", {}).values()
            if matches(d["spec"]["selector"].get("matchLabels", {}), labels)]
    quorum = n // 2 + 1
    check(len(pdbs) == 1 and (pdbs[0].get("maxUnavailable") == n - quorum or pdbs[0].get("minAvailable") == quorum),
          f"{name}: one PodDisruptionBudget keeps a quorum of {quorum} ({pdbs})")
    # cluster.conf: the block, its routes and its authorization
    block = re.search(r"^([ \t]*)cluster\s*\{(.*?)^\1\}", cluster_conf, re.M | re.S)  # to its own closing brace
    body = block[2] if block else ""
    check(block is not None and conf_value(body, "name") is not None, f"{name}: cluster.conf has a named cluster block")
    check(conf_value(body, "port") == str(ports.get("cluster")),
          f"{name}: the cluster port is the container's `cluster`")
    auth = re.search(r"authorization\s*\{(.*?)\}", body, re.S)
    auth_body = auth[1] if auth else ""
    password_var = (conf_value(auth_body, "password") or "").lstrip("$")
    check(conf_value(auth_body, "user") == NATS_ROUTE_USER and bool(password_var),
          f"{name}: the routes ask for the route user {NATS_ROUTE_USER} and a password from the environment")
    env_src = {e["name"]: e for e in c.get("env", [])}
    check(env_src.get(password_var, {}).get("valueFrom", {}).get("secretKeyRef") ==
          {"name": NATS_AUTH_SECRET, "key": NATS_ROUTE_PASSWORD_KEY},
          f"{name}: ${password_var} is the key {NATS_ROUTE_PASSWORD_KEY} of the Secret {NATS_AUTH_SECRET}")
    check(env_src.get("SERVER_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
          and conf_value(by_kind["ConfigMap"]["nats-config"]["data"]["nats.conf"], "server_name") == "$SERVER_NAME",
          f"{name}: each member's server_name is its pod name")
    routes_var = (conf_value(body, "routes") or "").lstrip("$")
    try:
        routes = [urlsplit(u) for u in json.loads(env_src.get(routes_var, {}).get("value", ""))]
    except ValueError:
        routes = []
    check({f"{u.hostname}:{u.port}" for u in routes} == {f"{m}:{ports.get('cluster')}" for m in members}
          and len(routes) == n, f"{name}: routes to every member ({[u.hostname for u in routes]})")
    check(bool(routes) and all(u.scheme == "nats" and u.username == NATS_ROUTE_USER
                               and u.password == f"$({password_var})" for u in routes),
          f"{name}: every route logs in as {NATS_ROUTE_USER} with ${password_var}")
    check(conf_value(body, "no_advertise") == "true", f"{name}: the cluster advertises no pod IPs to clients")
    # probes: started = caught up (full /healthz, generous), then the server alone (js-server-only)
    probe = {k: (c.get(k) or {}) for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for k in ("readinessProbe", "livenessProbe"):
        check(probe[k].get("httpGet", {}).get("path") == "/healthz?js-server-only=true"
              and probe[k]["httpGet"].get("port") == "monitor", f"{name}: nats {k} on /healthz?js-server-only=true")
    startup = probe["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    check(startup.get("httpGet", {}).get("path", "").startswith("/healthz") and budget >= 600,
          f"{name}: nats startupProbe on /healthz with at least 10 minutes to recover ({budget} s)")
    # lame duck: the signal in preStop, the pid file on a volume, and time for it
    pid_file = conf_value(cluster_conf, "pid_file") or ""
    stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command", [])
    check(stop[:1] == ["nats-server"] and f"ldm={pid_file}" in stop and "--signal" in stop,
          f"{name}: preStop puts the member into lame duck mode ({stop})")
    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    check(os.path.dirname(pid_file) in mounts, f"{name}: the pid file {pid_file} is on a volume")
    ldm = seconds(conf_value(cluster_conf, "lame_duck_duration")) + seconds(
        conf_value(cluster_conf, "lame_duck_grace_period"))
    check(seconds(conf_value(cluster_conf, "lame_duck_duration")) >= 30
          and spec.get("terminationGracePeriodSeconds", 30) >= ldm + 20,
          f"{name}: terminationGracePeriodSeconds covers lame duck ({ldm} s) and the store's close")


def nats_urls(value: str) -> list[tuple[str, str]]:
    return [(u.scheme, f"{u.hostname}:{u.port}") for u in map(urlsplit, (v.strip() for v in value.split(",")))]


def check_nats_clients(name: str, by_kind: dict[str, dict[str, dict]]) -> None:
    """Every process that reads ragbus-config dials every NATS server; NATS_TLS_URL names the same servers."""
    _, _, members = nats_members(by_kind)
    config = by_kind["ConfigMap"][CONFIG]["data"]
    client = {p["name"]: p["containerPort"] for p in pod_spec(by_kind["StatefulSet"]["nats"])["containers"][0]["ports"]}
    want = {f"{m}:{client['client']}" for m in members}
    tls = nats_urls(config.get("NATS_TLS_URL", ""))
    check({h for _, h in tls} == want and {sch for sch, _ in tls} == {"tls"},
          f"{name}: NATS_TLS_URL lists every server, tls:// ({tls})")
    for kind in WORKLOADS:
        for wname, w in by_kind.get(kind, {}).items():
            spec = pod_spec(w)
            for c in spec.get("initContainers", []) + spec["containers"]:
                if not any(ef.get("configMapRef", {}).get("name") == CONFIG for ef in c.get("envFrom", [])):
                    continue
                env = {**config, **{e["name"]: e.get("value", "") for e in c.get("env", [])}}
                got = nats_urls(env.get("RAGBUS_NATS_URL", ""))
                check(sorted(h for _, h in got) == sorted(want) and len({sch for sch, _ in got}) == 1,
                      f"{name}: {wname}/{c['name']} RAGBUS_NATS_URL lists every NATS server ({got})")


def agent_of(w: dict) -> str | None:
    for c in pod_spec(w)["containers"]:
        if c.get("command") == ["ragbus"] and c.get("args", [])[:1] == ["agent"]:
            return c["args"][1]
    return None


def agent_durables() -> dict[str, set[tuple[str, str]]]:
    """(stream, durable) each work agent pulls from: the workers of its require_durables (agents/<agent>/app.py),
    and for the embedder the index durable of the default model."""
    from streams import topology

    out: dict[str, set[tuple[str, str]]] = {}
    for agent in KEDA_AGENTS:
        tree = ast.parse((REPO / "agents" / agent / "app.py").read_text())
        calls = [n for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "require_durables"]
        durables = [getattr(topology, a.id) for call in calls for a in call.args[1:] if isinstance(a, ast.Name)]
        if agent == "embedder":
            durables.append(topology.index_durable(topology.DEFAULT_EMBEDDING_MODEL))
        out[agent] = {(d.stream, d.name) for d in durables}
    return out


def check_keda(name: str, by_kind: dict[str, dict[str, dict]]) -> None:
    """KEDA scales each work agent's Deployment on the lag of exactly the durables it pulls from: one worker per
    queued job, at least one, at most a number, a fallback when the scaler fails; the replicas are left to it."""
    scaled = by_kind.get("ScaledObject", {})
    if not scaled:
        return
    n, service, _ = nats_members(by_kind)
    nats = pod_spec(by_kind["StatefulSet"]["nats"])["containers"][0]
    monitor = {p["name"]: p["containerPort"] for p in nats["ports"]}
    endpoint = f"{service}.{NAMESPACE_DOMAIN}:{monitor['monitor']}"
    check(n > 1 or by_kind["Service"][service]["spec"].get("clusterIP") == "None",
          f"{name}: KEDA's endpoint {service} is a headless Service (the scaler asks each member for the "
          "consumer leader)")
    expected = agent_durables()
    seen: dict[str, str] = {}
    for so_name, so in scaled.items():
        spec = so["spec"]
        ref = spec["scaleTargetRef"]
        target = by_kind.get("Deployment", {}).get(ref["name"])
        agent = agent_of(target) if target and ref.get("kind", "Deployment") == "Deployment" else None
        check(agent in KEDA_AGENTS, f"{name}: ScaledObject {so_name} scales a work agent's Deployment ({ref})")
        if agent is None or target is None:
            continue
        check(agent not in seen, f"{name}: one ScaledObject for {agent} ({seen.get(agent)}, {so_name})")
        seen[agent] = so_name
        check("replicas" not in target["spec"], f"{name}: {ref['name']} leaves its replicas to KEDA (no spec.replicas)")
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        check(low >= 1 and "maxReplicaCount" in spec and high >= low,
              f"{name}: {so_name} scales between at least one and a set maximum ({low}..{spec.get('maxReplicaCount')})")
        fallback = spec.get("fallback") or {}
        check(low <= fallback.get("replicas", -1) <= high and fallback.get("failureThreshold", 0) >= 1,
              f"{name}: {so_name} has a fallback within its bounds ({fallback})")
        triggers = spec.get("triggers", [])
        got = set()
        for t in triggers:
            meta = t.get("metadata", {})
            got.add((meta.get("stream"), meta.get("consumer")))
            check(t.get("type") == "nats-jetstream" and t.get("metricType") == "AverageValue",
                  f"{name}: {so_name} trigger {t.get('name')}: nats-jetstream, metricType AverageValue")
            check(meta.get("lagThreshold") == "1" and "activationLagThreshold" in meta,
                  f"{name}: {so_name} trigger {t.get('name')}: one worker per queued job (lagThreshold 1)")
            check(meta.get("natsServerMonitoringEndpoint") == endpoint and meta.get("account") == "$G",
                  f"{name}: {so_name} trigger {t.get('name')} reads {endpoint}, account $G "
                  f"({meta.get('natsServerMonitoringEndpoint')})")
        check(got == expected[agent] and len(triggers) == len(got),
              f"{name}: {so_name} triggers on exactly {agent}'s durables {sorted(expected[agent])} ({sorted(got)})")


def ensure_roles_statements() -> list[str]:
    """The GRANT/REVOKE/ALTER DEFAULT statements of ragbus.database.ensure_roles, {database} filled in."""
    from ragbus.k3s_secrets import DB_NAME

    tree = ast.parse((REPO / "ragbus/database.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "execute" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                text = arg.value
            elif isinstance(arg, ast.JoinedStr):
                text = "".join(str(v.value) if isinstance(v, ast.Constant) else
                               "{" + ast.unparse(v.value) + "}" if isinstance(v, ast.FormattedValue) else ""
                               for v in arg.values)
            else:
                continue
            if re.match(r"(GRANT|REVOKE|ALTER DEFAULT)\b", text):
                out.append(" ".join(text.replace("{database}", DB_NAME).split()))
    return out


def check_cnpg(name: str, by_kind: dict[str, dict[str, dict]], allowed_roles: set[str],
               secrets: dict[str, dict[str, str]]) -> None:
    """The CloudNativePG cluster replaces the postgres pod: two or more instances on distinct nodes, the standard image
    (pgvector), the database, the roles and ensure_roles' privileges, and every database URL on its Services."""
    from ragbus.credentials import PG_ROLE_OF
    from ragbus.k3s_secrets import CNPG_CLUSTER, DB_NAME, DB_PORT, app_roles, db_host, login_secret

    check("postgres" not in by_kind.get("StatefulSet", {}) and "postgres" not in by_kind.get("Service", {}),
          f"{name}: the postgres pod and Service are gone")
    check(set(by_kind["Cluster"]) == {CNPG_CLUSTER}, f"{name}: one CNPG Cluster, {CNPG_CLUSTER}")
    cluster = by_kind["Cluster"].get(CNPG_CLUSTER, {}).get("spec", {})
    instances = cluster.get("instances", 1)
    check(instances >= 2, f"{name}: {CNPG_CLUSTER} has a replica ({instances} instances)")
    check(re.fullmatch(r"ghcr\.io/cloudnative-pg/postgresql:\d+(\.\d+)?(-\d+)?-standard-\w+",
                       cluster.get("imageName", "")) is not None,
          f"{name}: {CNPG_CLUSTER} runs CNPG's standard image, which has pgvector ({cluster.get('imageName')})")
    affinity = cluster.get("affinity", {})
    roles = node_roles({"nodeSelector": affinity.get("nodeSelector"), "affinity": affinity})
    check(affinity.get("enablePodAntiAffinity") is True and affinity.get("podAntiAffinityType") == "required"
          and affinity.get("topologyKey") == "kubernetes.io/hostname" and roles <= allowed_roles
          and len(roles) >= instances, f"{name}: {CNPG_CLUSTER}'s instances on {instances} distinct nodes of {roles}")
    initdb = cluster.get("bootstrap", {}).get("initdb", {})
    owner = PG_ROLE_OF["projector"]
    check(initdb.get("database") == DB_NAME and initdb.get("owner") == owner
          and secrets.get(initdb.get("secret", {}).get("name"), {}).get("username") == owner,
          f"{name}: {CNPG_CLUSTER} creates the database {DB_NAME}, owned by {owner}, with its generated password")
    managed = {r["name"]: r for r in cluster.get("managed", {}).get("roles", [])}
    for role in app_roles():
        r = managed.get(role, {})
        check(r.get("login") is True and r.get("superuser") is False and r.get("ensure", "present") == "present"
              and secrets.get(r.get("passwordSecret", {}).get("name"), {}).get("username") == role,
              f"{name}: {CNPG_CLUSTER} keeps the role {role} (login, no superuser) with its generated password")
    sql = [" ".join(q.split()) for q in initdb.get("postInitApplicationSQL", [])]
    check(any(re.match(r"CREATE EXTENSION (IF NOT EXISTS )?vector\b", q) for q in sql),
          f"{name}: {CNPG_CLUSTER}'s bootstrap creates the extension vector")
    statements = ensure_roles_statements()
    missing = [q for q in statements if q not in sql]
    check(len(statements) >= 5 and not missing,
          f"{name}: {CNPG_CLUSTER}'s bootstrap grants what ragbus.database.ensure_roles does ({missing})")
    config = by_kind["ConfigMap"][CONFIG]["data"]
    superuser = secrets.get(cluster.get("superuserSecret", {}).get("name"), {})
    check(cluster.get("enableSuperuserAccess") is True and superuser.get("username") == config.get("DB_SUPERUSER")
          and superuser.get("password") == secrets["ragbus-db"]["password"],
          f"{name}: the Job's db-roles step can log in as {CNPG_CLUSTER}'s superuser (DB_SUPERUSER, ragbus-db)")
    check((config.get("DB_HOST"), config.get("DB_PORT"), config.get("DB_NAME")) ==
          (f"{CNPG_CLUSTER}-rw", str(DB_PORT), DB_NAME), f"{name}: the Job's db-roles step works on the primary")
    services = {f"{CNPG_CLUSTER}-{s}" for s in ("rw", "r", "ro")}
    for user, role in PG_ROLE_OF.items():
        url = urlsplit(secrets.get(login_secret(user), {}).get("RAGBUS_DATABASE_URL", ""))
        check(url.hostname == db_host(user, cnpg=True) in services and url.username == role,
              f"{name}: {user}'s database URL is {role} on a {CNPG_CLUSTER} Service ({url.hostname})")
        if user != "embedder":  # the writers, and the gateway, which shows what the projector has just written
            check(url.hostname == f"{CNPG_CLUSTER}-rw", f"{name}: {user} reads its own writes on the primary")
    check_db_roles_step(name, by_kind)


def strict(schema: Any) -> Any:
    """kubectl's strict field validation, in JSON schema: no field a schema does not name (unless it keeps them)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    keeps_unknown = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not keeps_unknown:
        out["additionalProperties"] = False
    return out


_validators: dict[str, object] = {}


def schema_errors(obj: dict) -> list[str]:
    import jsonschema_rs

    file = SCHEMAS[(obj["apiVersion"], obj["kind"])]
    if file not in _validators:
        _validators[file] = jsonschema_rs.Draft7Validator(strict(json.loads((K3S / "schemas" / file).read_text())))
    validator = _validators[file]
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(obj)]  # type: ignore[attr-defined]


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
    cnpg_secrets = generated_secrets(cnpg=True) or {}
    check(secrets.keys() <= cnpg_secrets.keys(), "ragbus k3s-secrets --cnpg: every Secret of the plain form, and more")
    rendered = {}
    for overlay, roles in OVERLAYS.items():
        rendered[overlay] = check_overlay(overlay, render(K3S / "overlays" / overlay), roles, settings, agents,
                                          secrets)
    for overlay, components in WITH_COMPONENTS:
        name = "+".join((overlay, *components))
        given = {**(cnpg_secrets if "cnpg" in components else secrets),
                 TLS_SECRET: {"tls.crt": "", "tls.key": "", "ca.crt": ""}}
        by_kind = check_overlay(name, render_with_components(overlay, components), OVERLAYS[overlay], settings,
                                agents, given)
        if "nats-tls" in components:
            check_tls(name, by_kind, rendered[overlay])
    for data in schema_rejects():
        check(bool(data[1]), f"the schema check rejects {data[0]}")
    print(f"k3s manifests: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


def schema_rejects() -> list[tuple[str, list[str]]]:
    """The schema check itself: tampered copies of a valid object must fail it."""
    so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
          "spec": {"scaleTargetRef": {"name": "x"},
                   "triggers": [{"type": "nats-jetstream", "metadata": {"stream": "S"}}]}}
    ok = schema_errors(so)
    check(not ok, f"a minimal ScaledObject passes the schema check ({ok})")
    typo = json.loads(json.dumps(so))
    typo["spec"]["maxReplicas"] = 3
    wrong_type = json.loads(json.dumps(so))
    wrong_type["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 1  # must be a string
    no_triggers = json.loads(json.dumps(so))
    del no_triggers["spec"]["triggers"]
    cluster = {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "x"},
               "spec": {"instances": 2, "storage": {"size": "1Gi"}, "bootstrap": {"initdb": {"databse": "x"}}}}
    return [("an unknown ScaledObject field", schema_errors(typo)), ("a number for a trigger's metadata",
            schema_errors(wrong_type)), ("a ScaledObject without triggers", schema_errors(no_triggers)),
            ("a misspelt Cluster field", schema_errors(cluster))]


if __name__ == "__main__":
    sys.exit(main())
