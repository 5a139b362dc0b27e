"""deploy/: the manifests an operator runs, checked without a cluster, Docker or network.

* Kubernetes: the base and each overlay are rendered the way ``kubectl apply -k``
  renders them (by a small kustomize for the features deploy/k8s uses, compared
  with ``kubectl kustomize`` where that binary exists), and every object is
  validated against the Kubernetes schemas that ``kubernetes-validate`` ships.
* Compose: every worker kind the CLI knows runs, each with only its own secrets.
* The configuration the manifests mount is the one the workers load, and each
  kind finds exactly the keys it loads where its mount puts them.
* The image's entry point answers ``--help``. (Docker is not available where
  the tests run, so the installed ``mcp-handshake`` script stands in for it.)
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mcp_handshake.services.core.config import load_config
from mcp_handshake.services.core.tools import ToolRegistry
from mcp_handshake.services.dev.cli._app import Kind
from mcp_handshake.services.dev.permissions import (
    CONSOLE,
    OPERATOR,
    WORKER_KINDS,
    Identity,
    permissions,
)
from mcp_handshake.services.policy import load_policy
from mcp_handshake.shared.subjects import Keys, Subjects

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
RENDERS = ["base", "overlays/dev", "overlays/prod"]
#: The oldest Kubernetes the manifests support, and the newest the schemas know.
K8S_VERSIONS = ["1.29", kubernetes_validate.latest_version()]

#: What each kind loads from the [keys] section of handshake.toml (see each kind's
#: main.py), and the files of its key mount: its own keys and nothing else.
KIND_KEYS: dict[str, dict[str, str]] = {
    "authorize": {"internal": "internal.pem"},
    "execute": {"receipt": "receipt.pem", "dispatch": "dispatch.pem", "gateway": "gateway_key"},
    "approval": {"internal_public": "internal.jwks.json"},
    "audit": {"audit": "audit.pem", "audit_public": "audit.jwks.json"},
    "executor": {"dispatch_public": "dispatch.jwks.json"},
    "gateway": {"gateway": "gateway_key"},  # shared with execute: it tags the DPoP htu
    "console": {"audit_public": "audit.jwks.json"},  # verifies the log; never signs
}
KEYS_DIR = "/etc/handshake/keys"
CONFIG_DIR = "/etc/handshake/config"
HOME_DIR = "/var/lib/handshake"
#: The worker kinds the Kubernetes manifests run: the web console is not among them
#: (it reads the audit log, on the audit worker's ReadWriteOnce volume; docs/console.md).
DEPLOYED_KINDS = {k.value for k in Kind} - {"console"}
#: Compose runs the console too, next to the audit log's volume (read-only).
COMPOSE_KINDS = DEPLOYED_KINDS | {"console"}
#: Kinds that never talk to Redis, so never get its password.
NO_REDIS = {"audit", "gateway"}
#: A Kubernetes resource quantity (the forms these manifests use).
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
#: Flags the manifests pass to workers that the CLI does not have yet (issue 11).
PENDING_FLAGS = {"--health-port"}


# -- a small kustomize: the features deploy/k8s uses, nothing more ------------


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _go_json(value: Any) -> str:
    """``json.Marshal`` of Go, which kustomize hashes: sorted keys, no spaces, HTML-escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _name_suffix(config_map: dict[str, Any]) -> str:
    """kustomize's content hash of a generated ConfigMap (api/hasher). Its lookup of
    ``metadata/name`` finds nothing, so the name it hashes is always empty."""
    encoded = _go_json({"kind": "ConfigMap", "name": "", "data": config_map["data"]})
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _keyed(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge: maps merge, lists of named items merge by name, the rest replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if _keyed(base) and _keyed(patch) and base:
        names = {item["name"] for item in base}
        patched = {item["name"]: item for item in patch}
        added = [copy.deepcopy(item) for item in patch if item["name"] not in names]
        kept = [_merge(i, patched[i["name"]]) if i["name"] in patched else i for i in base]
        return added + kept
    return copy.deepcopy(patch)


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return [obj["spec"]["template"]["spec"]]
    return []


def _apply_patch(objs: list[dict[str, Any]], base: Path, entry: dict[str, Any]) -> None:
    (patch,) = _docs(base / entry["path"])
    target = entry.get("target") or {
        "kind": patch["kind"],
        "name": patch["metadata"]["name"],
    }
    assert set(target) <= {"kind", "name"}, f"unsupported patch target {target}"
    hits = 0
    for i, obj in enumerate(objs):
        if obj["kind"] != target["kind"]:
            continue
        if "name" in target and obj["metadata"]["name"] != target["name"]:
            continue
        body = {k: v for k, v in patch.items() if k not in {"apiVersion", "kind", "metadata"}}
        objs[i] = _merge(obj, body)
        hits += 1
    assert hits, f"{entry['path']} patches nothing"


def _build(root: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((root / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "configMapGenerator", "namespace", "replicas",
             "images", "patches"}  # fmt: skip
    assert set(k) <= known, f"{root}: this test's kustomize lacks {set(k) - known}"
    objs: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = root / entry
        objs.extend(_build(path) if path.is_dir() else _docs(path))
    for gen in k.get("configMapGenerator", []):
        assert set(gen) <= {"name", "files"}, gen
        data = {Path(f).name: (root / f).read_text() for f in gen["files"]}
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
              "data": data}  # fmt: skip
        cm["metadata"]["name"] = f"{gen['name']}-{_name_suffix(cm)}"
        cm["_generated_from"] = gen["name"]
        objs.append(cm)
    for entry in k.get("patches", []):
        _apply_patch(objs, root, entry)
    for entry in k.get("replicas", []):
        (obj,) = [o for o in objs if o["kind"] == "Deployment"
                  and o["metadata"]["name"] == entry["name"]]  # fmt: skip
        obj["spec"]["replicas"] = entry["count"]
    for entry in k.get("images", []):
        for obj in objs:
            for spec in _pod_specs(obj):
                for c in spec["containers"]:
                    name, _, tag = c["image"].partition(":")
                    if name == entry["name"]:
                        c["image"] = f"{entry.get('newName', name)}:{entry.get('newTag', tag)}"
    if "namespace" in k:
        for obj in objs:
            obj["metadata"]["namespace"] = k["namespace"]
    return objs


@cache
def render(which: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl apply -k deploy/k8s/<which>`` would send."""
    objs = _build(K8S / which)
    renamed = {o.pop("_generated_from"): o["metadata"]["name"] for o in objs
               if "_generated_from" in o}  # fmt: skip
    for obj in objs:
        for spec in _pod_specs(obj):
            for vol in spec.get("volumes", []):
                if "configMap" in vol:
                    vol["configMap"]["name"] = renamed.get(
                        vol["configMap"]["name"], vol["configMap"]["name"]
                    )
    return tuple(objs)


def _normal(value: Any) -> Any:
    """Order-free form: lists of named items sorted by name (their order means nothing here)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normal(v) for v in value]
        return sorted(items, key=lambda i: i["name"]) if _keyed(items) else items
    return value


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def worker_kind(deployment: dict[str, Any]) -> str:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "worker", args
    return str(args[1])


# -- Kubernetes ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("which", RENDERS)
def test_renders_like_kubectl_kustomize(which: str) -> None:
    """The renderer the other tests rely on agrees with the real kustomize."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / which)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    real = {_key(o): _normal(o) for o in yaml.safe_load_all(out.stdout) if o}
    ours = {_key(o): _normal(o) for o in render(which)}
    assert sorted(ours) == sorted(real)
    for key, obj in real.items():
        assert ours[key] == obj, key


def _check_scaled_object(obj: dict[str, Any]) -> None:
    """KEDA's CRD is not in the Kubernetes schemas: its shape is checked here instead."""
    assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject"
    assert obj["metadata"]["name"]
    spec = obj["spec"]
    assert spec["scaleTargetRef"]["name"]
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["triggers"], "a ScaledObject needs at least one trigger"
    for trigger in spec["triggers"]:
        assert trigger["type"] and isinstance(trigger["metadata"], dict)
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("which", RENDERS)
def test_manifests_validate_against_kubernetes_schemas(which: str, version: str) -> None:
    objs = render(which)
    assert objs
    for obj in objs:
        if obj["apiVersion"].startswith("keda.sh/"):
            _check_scaled_object(obj)  # a CRD: not in the schemas, skipped on purpose
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{which}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


@pytest.mark.parametrize("which", RENDERS)
def test_every_worker_kind_runs_hardened_and_probed(which: str) -> None:
    objs = render(which)
    deployments = of_kind(objs, "Deployment")
    assert {worker_kind(d) for d in deployments.values()} == DEPLOYED_KINDS
    pdbs = of_kind(objs, "PodDisruptionBudget")
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["args"][c["args"].index("--health-port") + 1] == "8081"
        assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in c["ports"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), (name, part)
            # the schemas take any string as a quantity; the API server does not
            for value in c["resources"][part].values():
                assert QUANTITY.fullmatch(str(value)), (name, part, value)
        # the only writable places: HANDSHAKE_HOME and /tmp
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["HANDSHAKE_HOME"] == HOME_DIR
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        assert writable == {HOME_DIR, "/tmp"}, name
        home = next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == HOME_DIR)
        (home_vol,) = [v for v in pod["volumes"] if v["name"] == home]
        if worker_kind(dep) == "audit":  # the audit log outlives the pod
            assert "persistentVolumeClaim" in home_vol
            assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
        else:
            assert "emptyDir" in home_vol
        # a disruption budget covers every kind
        selectors = [p["spec"]["selector"]["matchLabels"] for p in pdbs.values()]
        assert any(s.items() <= labels.items() for s in selectors), name


def _secret_volumes(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pod = dep["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    return {mounts[v["name"]]: v["secret"] for v in pod["volumes"] if "secret" in v}


@pytest.mark.parametrize("which", RENDERS)
def test_each_kind_mounts_only_its_own_secrets(which: str) -> None:
    for name, dep in of_kind(render(which), "Deployment").items():
        kind = worker_kind(dep)
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert [e["secretRef"]["name"] for e in c["envFrom"]] == [f"handshake-{kind}-env"]
        secrets = _secret_volumes(dep)
        if not KIND_KEYS[kind]:  # no key, no key mount
            assert secrets == {}, name
            continue
        keys = secrets.pop(KEYS_DIR)
        assert keys["secretName"] == f"handshake-{kind}-keys", name
        # `items` mounts these keys only, whatever else the Secret holds
        assert {i["key"] for i in keys["items"]} == set(KIND_KEYS[kind].values()), name
        assert all(i["key"] == i["path"] for i in keys["items"])
        if kind == "executor":
            target = name.removeprefix("handshake-executor-")
            creds = secrets.pop(f"/etc/handshake/targets/{target}")
            assert creds["secretName"] == f"handshake-target-{target}"
            assert not any(i["key"].endswith(".pem") for i in keys["items"])
        assert secrets == {}, f"{name} mounts other secrets: {secrets}"


def test_config_map_is_the_config_the_workers_load() -> None:
    (cm,) = of_kind(render("base"), "ConfigMap").values()
    common = DEPLOY / "config" / "common"
    assert set(cm["data"]) == {"handshake.toml", "policy.cedar", "idp.jwks.json"}
    for file, text in cm["data"].items():
        assert text == (common / file).read_text()  # compose mounts the same files
        assert "PRIVATE KEY" not in text
    cfg = load_config(common / "handshake.toml")
    load_policy(cfg.policy_file, ToolRegistry.from_modules(cfg.tool_modules), cfg.policy_defaults)
    assert cfg.session.jwks_file is not None
    assert (common / cfg.session.jwks_file).is_file()
    # every key a kind loads is a file of that kind's key mount, and nothing else
    for fields in KIND_KEYS.values():
        for field, file in fields.items():
            if field == "gateway":  # named by HANDSHAKE_GATEWAY_KEY_FILE, not the config
                continue
            assert getattr(cfg.keys, field) == f"{KEYS_DIR}/{file}", field
    for target, tc in cfg.targets.items():
        assert tc.auth.secret_file == f"/etc/handshake/targets/{target}/api_key"
        (dep,) = [d for n, d in of_kind(render("base"), "Deployment").items()
                  if n == f"handshake-executor-{target}"]  # fmt: skip
        items = _secret_volumes(dep)[f"/etc/handshake/targets/{target}"]["items"]
        assert items == [{"key": "api_key", "path": "api_key"}]


@pytest.mark.parametrize("which", RENDERS)
def test_autoscaling(which: str) -> None:
    objs = render(which)
    hpas = of_kind(objs, "HorizontalPodAutoscaler")
    deployments = of_kind(objs, "Deployment")
    scaled = {worker_kind(deployments[h["spec"]["scaleTargetRef"]["name"]])
              for h in hpas.values()}  # fmt: skip
    assert scaled == {"authorize", "execute", "executor"}  # the CPU-bound kinds
    for hpa in hpas.values():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        dep = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        assert hpa["spec"]["minReplicas"] == dep["spec"]["replicas"]
    (so,) = of_kind(objs, "ScaledObject").values()
    assert so["spec"]["scaleTargetRef"]["name"] == "handshake-approval"
    assert so["spec"]["minReplicaCount"] >= 1  # approval workers also answer status polls
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    assert (meta["stream"], meta["consumer"]) == ("HANDSHAKE_APPROVALS", "approval-workers")
    assert meta["account"] == "HANDSHAKE" and meta["natsServerMonitoringEndpoint"].endswith(":8222")
    # the names the approval worker really uses
    from mcp_handshake.services.runtime.approvals import DURABLE, STREAM

    assert (meta["stream"], meta["consumer"]) == (STREAM, DURABLE)


def _egress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy["spec"].get("egress", []) for p in rule.get("ports", [])}


def test_network_policies() -> None:
    policies = of_kind(render("base"), "NetworkPolicy")
    workers = {"app.kubernetes.io/name": "mcp-handshake"}
    deny = policies["handshake-default-deny"]["spec"]
    assert deny["podSelector"]["matchLabels"] == workers
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    common = policies["handshake-workers"]
    assert _egress_ports(common) == {53, 4222, 6379, 26379}
    assert {p["port"] for r in common["spec"]["ingress"] for p in r["ports"]} == {8081}
    # the gateway's pods take HTTP on 8080, and nothing more
    gateway = policies["handshake-gateway-ingress"]["spec"]
    assert gateway["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert gateway["policyTypes"] == ["Ingress"]
    assert {p["port"] for r in gateway["ingress"] for p in r["ports"]} == {8080}
    # only executors go further, and every executor pod is selected
    others = [p for n, p in policies.items() if n not in {"handshake-default-deny",
              "handshake-workers", "handshake-gateway-ingress"}]  # fmt: skip
    for policy in others:
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
            "executor"
        )
    assert any(443 in _egress_ports(p) for p in others)
    for dep in of_kind(render("base"), "Deployment").values():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert workers.items() <= labels.items()
        assert (labels["app.kubernetes.io/component"] == "executor") == (
            worker_kind(dep) == "executor"
        )


def test_overlays() -> None:
    dev, prod = render("overlays/dev"), render("overlays/prod")
    for dep in of_kind(dev, "Deployment").values():
        assert dep["spec"]["replicas"] == 1
        assert dep["metadata"]["namespace"] == "mcp-handshake"
    for name, dep in of_kind(prod, "Deployment").items():
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]
               ["env"]}  # fmt: skip
        assert env["HANDSHAKE_STREAM_REPLICAS"] == "3", name
        if worker_kind(dep) != "audit":
            assert dep["spec"]["replicas"] >= 2, name
    assert "mcp-handshake.svc" in next(iter(of_kind(prod, "ScaledObject").values()))["spec"][
        "triggers"][0]["metadata"]["natsServerMonitoringEndpoint"]  # fmt: skip


# -- NATS, Redis, Helm values -------------------------------------------------


def _nats_conf_users() -> dict[str, dict[str, Any]]:
    """Each user's permissions in the permission model (which renders deploy/nats/nats.conf;
    tests/test_nats_permissions.py checks the file is its output)."""
    users = [(k, k) for k in WORKER_KINDS] + [
        (OPERATOR, OPERATOR),
        (CONSOLE, CONSOLE),
        ("agent", "agent"),
    ]
    return {n: permissions(Identity(n, role, ""), Subjects()) for n, role in users}


def test_helm_nats_values_match_nats_conf() -> None:
    values = yaml.safe_load((K8S / "helm-values" / "nats.yaml").read_text())
    cfg = values["config"]
    assert cfg["cluster"]["enabled"] is True and cfg["cluster"]["replicas"] == 3
    assert cfg["jetstream"]["enabled"] is True and cfg["jetstream"]["fileStore"]["enabled"] is True
    (account,) = cfg["merge"]["accounts"].values()
    assert account["jetstream"] == "enabled"
    helm: dict[str, dict[str, Any]] = {}
    for user in account["users"]:
        assert user["password"] == f"<< $NATS_{user['user'].upper()}_PASSWORD >>"
        helm[user["user"]] = copy.deepcopy(user["permissions"])
        secret = values["container"]["env"][f"NATS_{user['user'].upper()}_PASSWORD"]
        assert secret["valueFrom"]["secretKeyRef"]["key"] == user["user"]
    conf = _nats_conf_users()
    assert set(conf) >= {k.value for k in Kind} | {"agent", "operator"}
    assert helm == conf


def test_redis_is_durable_and_never_evicts() -> None:
    conf = dict(
        line.split(None, 1)
        for line in (DEPLOY / "redis" / "redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    values = yaml.safe_load((K8S / "helm-values" / "redis.yaml").read_text())
    assert values["architecture"] == "replication" and values["sentinel"]["enabled"] is True
    assert values["auth"]["enabled"] is True and values["auth"]["existingSecret"]
    common = values["commonConfiguration"]
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"):
        assert line in common


# -- Compose --------------------------------------------------------------------


@cache
def compose_workers() -> dict[str, dict[str, Any]]:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return {n: s for n, s in services.items() if s.get("command", [None])[0] == "worker"}


def test_compose_runs_every_worker_kind() -> None:
    workers = compose_workers()
    assert {s["command"][1] for s in workers.values()} == COMPOSE_KINDS
    for name, svc in workers.items():
        assert svc["restart"] == "unless-stopped", name
        assert svc["command"][svc["command"].index("--health-port") + 1] == "8081"
        assert "http://127.0.0.1:8081/readyz" in " ".join(svc["healthcheck"]["test"]), name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name


def test_compose_mounts_only_each_kinds_own_secrets() -> None:
    for name, svc in compose_workers().items():
        kind = svc["command"][1]
        mounts = {v.split(":")[1]: v for v in svc["volumes"]}
        expected = {CONFIG_DIR: f"./config/common:{CONFIG_DIR}:ro"}
        if KIND_KEYS[kind]:
            expected[KEYS_DIR] = f"./config/keys/{kind}:{KEYS_DIR}:ro"
        if kind == "executor":
            target = svc["command"][svc["command"].index("--target") + 1]
            path = f"/etc/handshake/targets/{target}"
            expected[path] = f"./config/targets/{target}:{path}:ro"
        if kind == "audit":
            expected[HOME_DIR] = f"audit-log:{HOME_DIR}"  # the log, on a named volume
        if kind == "console":  # the same volume, read-only; its cookie secret
            expected[HOME_DIR] = f"audit-log:{HOME_DIR}:ro"
            expected["/etc/handshake/console"] = "./config/console:/etc/handshake/console:ro"
        assert mounts == expected, name
        env = svc["environment"]
        assert env["HANDSHAKE_CONFIG"] == f"{CONFIG_DIR}/handshake.toml"
        # its own NATS user (deploy/nats/nats.conf); Redis only for the kinds that use it
        assert env["HANDSHAKE_NATS_URL"].startswith(f"nats://{kind}:"), name
        assert ("HANDSHAKE_REDIS_URL" in env) == (kind not in NO_REDIS), name
        if kind == "console":  # not the workers' Redis password: its own ACL user
            assert env["HANDSHAKE_REDIS_URL"].startswith("redis://console:"), name
        else:
            assert env.get("HANDSHAKE_REDIS_URL", "redis://:").startswith("redis://:"), name
        assert kind in _nats_conf_users()


@pytest.mark.parametrize("which", RENDERS)
def test_gateway_and_execute_share_the_gateway_key(which: str) -> None:
    """Both name the mounted gateway key; the gateway its public URL (DPoP's htu), which
    it needs to start when it listens beyond loopback."""
    key = f"{KEYS_DIR}/gateway_key"
    compose = compose_workers()
    for kind in ("gateway", "execute"):
        assert compose[kind]["environment"]["HANDSHAKE_GATEWAY_KEY_FILE"] == key
    assert "HANDSHAKE_GATEWAY_PUBLIC_URL" in compose["gateway"]["environment"]
    for dep in of_kind(render(which), "Deployment").values():
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]
               ["containers"][0]["env"]}  # fmt: skip
        if worker_kind(dep) in ("gateway", "execute"):
            assert env["HANDSHAKE_GATEWAY_KEY_FILE"] == key
        if worker_kind(dep) == "gateway":
            assert env["HANDSHAKE_GATEWAY_PUBLIC_URL"].startswith("https://")


def test_readme_gives_redis_to_the_kinds_that_use_it() -> None:
    """The Kubernetes install's Secret loop (deploy/README.md) leaves out of Redis exactly
    the kinds that never use it: an executor without it could claim no dispatch marker
    and would run nothing."""
    text = (DEPLOY / "README.md").read_text()
    (block,) = re.findall(r"for kind in ([a-z ]+); do\n[^\n]*HANDSHAKE_NATS_URL.*?\bdone\b",
                          text, re.S)  # fmt: skip
    (skipped,) = re.findall(r"case \$kind in ([a-z|]+)\) ;;", text)
    loop = block
    assert set(loop.split()) == DEPLOYED_KINDS
    assert set(skipped.split("|")) == NO_REDIS


def test_compose_redis_user_console_reads_three_counters_only() -> None:
    """The ACL of compose's Redis user ``console``: read access to the keys the status
    view counts (the store's own names), no other key, command or channel."""
    command = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["redis"][
        "command"]  # fmt: skip
    rules = command[command.index("--user") + 1 :]
    assert rules[:2] == ["console", "on"] and rules[2].startswith(">${")
    keys = {r[1:] for r in rules if r.startswith("~")}
    assert keys == {Keys.PENDING, Keys.LIVE, Keys.EXPIRED}
    assert [r for r in rules if r[0] in "+-"] == ["-@all", "+hello", "+ping", "+zcard", "+get"]
    assert "resetchannels" in rules


# -- the key layout ---------------------------------------------------------------


def _keys_tool() -> Any:
    """deploy/keys.py, the operator's key helper (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("deploy_keys", DEPLOY / "keys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_key_layout_gives_each_kind_its_keys_and_rotates(tmp_path: Path) -> None:
    main = _keys_tool().main
    assert main(["init", str(tmp_path)]) == 0
    for kind, files in KIND_KEYS.items():
        if not files:
            assert not (tmp_path / "keys" / kind).exists(), kind
            continue
        got = {p.name for p in (tmp_path / "keys" / kind).iterdir()}
        assert got == set(files.values()), kind
    executor = tmp_path / "keys" / "executor"
    assert not any("PRIVATE KEY" in p.read_text() for p in executor.iterdir())
    jwks = executor / "dispatch.jwks.json"
    (old,) = json.loads(jwks.read_text())["keys"]
    # rotate: executors trust old and new; promote: execute signs with new; retire: old goes
    for step in ("rotate", "promote"):
        assert main([step, str(tmp_path), "dispatch"]) == 0
        assert json.loads(jwks.read_text())["keys"][0]["kid"] == old["kid"]
    assert main(["retire", str(tmp_path), "dispatch"]) == 0
    (new,) = json.loads(jwks.read_text())["keys"]
    assert new["kid"] != old["kid"]
    assert {p.name for p in executor.iterdir()} == {"dispatch.jwks.json"}
    with pytest.raises(SystemExit):  # old checkpoints need every audit key, forever
        main(["retire", str(tmp_path), "audit"])


def test_key_layout_console_part_added_to_an_older_layout(tmp_path: Path) -> None:
    """``init`` writes the console's copy of the audit keys and its cookie secret (0600);
    ``console`` adds them to a layout made before the console, and rotating the audit
    key keeps the copy in step."""
    main = _keys_tool().main
    assert main(["init", str(tmp_path)]) == 0
    audit, copy = (tmp_path / "keys" / k / "audit.jwks.json" for k in ("audit", "console"))
    secret = tmp_path / "console" / "console_secret"
    assert copy.read_text() == audit.read_text()
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text()) >= 32
    copy.unlink()
    secret.unlink()
    with pytest.raises(SystemExit):  # init never touches an existing layout
        main(["init", str(tmp_path)])
    assert main(["console", str(tmp_path)]) == 0
    assert copy.read_text() == audit.read_text() and secret.stat().st_mode & 0o777 == 0o600
    kept = secret.read_text()
    assert main(["console", str(tmp_path)]) == 0  # again: nothing replaced
    assert secret.read_text() == kept
    assert main(["rotate", str(tmp_path), "audit"]) == 0
    assert len(json.loads(copy.read_text())["keys"]) == 2
    assert copy.read_text() == audit.read_text()


# -- the image --------------------------------------------------------------------


def _entrypoint() -> str:
    """The console script the image runs (`ENTRYPOINT ["mcp-handshake"]`), from this venv."""
    script = Path(sys.executable).with_name("mcp-handshake")
    assert script.exists(), f"{script}: install the project (scripts/bootstrap.sh)"
    return str(script)


@pytest.mark.parametrize("args", [["--help"], ["worker", "--help"]])
def test_entrypoint_answers_help(args: list[str]) -> None:
    # No Docker here: the installed console script is what the image's ENTRYPOINT runs.
    out = subprocess.run(
        [_entrypoint(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_dockerfile_runs_the_entrypoint_as_its_user_with_a_writable_home() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert 'ENTRYPOINT ["mcp-handshake"]' in final
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert re.search(r"HANDSHAKE_HOME=/var/lib/handshake\b", final)
    assert "install -d -o 10001 -g 10001 -m 0700 /var/lib/handshake" in final


def _manifest_flags() -> set[str]:
    flags: set[str] = set()
    for dep in of_kind(render("base"), "Deployment").values():
        flags |= {a for a in dep["spec"]["template"]["spec"]["containers"][0]["args"]
                  if a.startswith("--")}  # fmt: skip
    for svc in compose_workers().values():
        flags |= {a for a in svc["command"] if a.startswith("--")}
    return flags


def test_manifests_pass_only_flags_the_cli_knows_or_is_getting() -> None:
    out = subprocess.run(
        [_entrypoint(), "worker", "--help"], capture_output=True, text=True, timeout=60,
        check=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    unknown = {f for f in _manifest_flags() if f not in out.stdout}
    assert unknown <= PENDING_FLAGS, unknown


def test_pending_flags_have_landed() -> None:
    out = subprocess.run(
        [_entrypoint(), "worker", "--help"], capture_output=True, text=True, timeout=60,
        check=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert all(f in out.stdout for f in PENDING_FLAGS)


def test_pyproject_lists_the_test_dependencies() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["dev"]  # fmt: skip
    assert any(e.startswith("kubernetes-validate") for e in extras)
    assert any(e.lower().startswith("pyyaml") for e in extras)
