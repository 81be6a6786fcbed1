"""Static checks of the k3s manifests, runnable without a cluster: `python k3s/check.py`.

Renders every overlay with `kustomize build` (or `kubectl kustomize`, which embeds kustomize) and checks what
a schema validator does not: references between objects, selectors, named ports, $(VAR) expansion, node
roles, the one-image-per-agent contract with `ragbus agent NAME`, and that every RAGBUS_ variable set is a
setting some process reads. Needs PyYAML; `nats-server -t` is run on the NATS config when it is installed.
Prints one line per failed check and a closing 'N passed, N failed' line; exits non-zero on a failure.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

K3S = Path(__file__).resolve().parent
REPO = K3S.parent
OVERLAYS = {"pi-cluster": {"master", "worker"}, "pi-cluster-pc": {"master", "worker", "pc"}}
EXTERNAL_SECRETS = {"ragbus-db"}  # created by hand (k3s/README.md), never by kustomize
WORKLOADS = ("Deployment", "StatefulSet", "Job")

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


def check_overlay(name: str, allowed_roles: set[str], settings: set[str], agents: set[str]) -> None:
    objs = render(K3S / "overlays" / name)
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
                ref = ef.get("configMapRef", {}).get("name")
                check(ref in configmaps, f"{name}: {cname} envFrom ConfigMap {ref} exists")
                known |= set((configmaps.get(ref) or {}).get("data", {}))
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                if "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    check(r["key"] in (configmaps.get(r["name"]) or {}).get("data", {}), f"{name}: {cname} {r}")
                if "secretKeyRef" in vf:
                    check(vf["secretKeyRef"]["name"] in EXTERNAL_SECRETS, f"{name}: {cname} secret is documented")
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
                else:
                    check(args == ["streams", "declare"], f"{name}: {cname} runs `ragbus streams declare`")
    check(deployed_agents == agents, f"{name}: one Deployment per agent ({sorted(agents - deployed_agents)} missing)")

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
    server = shutil.which("nats-server") or (Path(sys.executable).parent / "nats-server")
    if Path(server).exists():
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(conf)
            f.flush()
            res = subprocess.run([str(server), "-c", f.name, "-t"], capture_output=True, text=True)
        check(res.returncode == 0, f"{name}: nats-server -t accepts nats.conf ({res.stderr.strip()[:200]})")


def main() -> int:
    for f in sorted(K3S.rglob("*.yaml")):
        try:
            list(yaml.safe_load_all(f.read_text()))
            check(True, "")
        except yaml.YAMLError as exc:
            check(False, f"{f.relative_to(REPO)} parses: {exc}")
    kustomization_refs()
    settings, agents = setting_env_names(), cli_agents()
    for overlay, roles in OVERLAYS.items():
        check_overlay(overlay, roles, settings, agents)
    print(f"k3s manifests: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
