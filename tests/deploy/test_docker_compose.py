"""deploy/docker and deploy/monitoring, checked without a Docker engine: the Dockerfile (stages, user,
health check, what the build context lets in), docker-compose.yml (against the Compose spec's JSON schema,
and every file, service, port and setting it refers to), Prometheus rules and the Grafana dashboard (the
PromQL parses and names only metrics dqd exports)."""
from __future__ import annotations

import fnmatch
import importlib.resources
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from dqd_server.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "docker-compose.yml"
MONITORING = ROOT / "deploy" / "monitoring"
ENVOY_DIR = ROOT / "deploy" / "envoy"
Obj = dict[str, Any]


# --- Dockerfile --------------------------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in instructions(text):
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


def args_of(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [a for i, a in stage if i == name]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_dockerfile_is_multi_stage(dockerfile: str) -> None:
    assert dockerfile.splitlines()[0] == "# syntax=docker/dockerfile:1"  # COPY --chmod needs BuildKit's syntax
    froms = [a for i, a in instructions(dockerfile) if i == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    arg = next(a for i, a in instructions(dockerfile) if i == "ARG" and a.startswith("PYTHON_IMAGE="))
    assert arg.split("=", 1)[1].startswith("python:3.11-slim")
    builder, runtime = stages(dockerfile)
    build = " && ".join(args_of(builder, "RUN"))
    # stubs are generated before the wheels are built (setup.py would package none otherwise)
    assert build.index("scripts/gen_protos.py") < build.index("pip wheel") < build.index("--no-index")
    assert "./clients/python[cli]" in build and "dqd-client[cli]" in build
    copies = args_of(runtime, "COPY")
    assert "--from=builder /opt/dqd /opt/dqd" in copies
    assert not any(c.split()[-2:] == [".", "."] or c.startswith(". ") for c in copies), "no whole-context copy"
    assert not any("pip install" in r for r in args_of(runtime, "RUN")), "the runtime stage installs nothing"


def test_runtime_runs_as_non_root_with_a_grpc_health_check(dockerfile: str) -> None:
    runtime = stages(dockerfile)[-1]
    users = args_of(runtime, "USER")
    assert users and users[-1] == "10001:10001"
    assert "--uid 10001" in " ".join(args_of(runtime, "RUN"))
    (health,) = args_of(runtime, "HEALTHCHECK")
    options, _, command = health.partition(" CMD ")
    assert "dqd-client health" in command and "127.0.0.1:${API_PORT:-50051}" in command
    start = re.search(r"--start-period=(\d+)s", options)
    assert start and int(start.group(1)) >= 30, "leave time to load the rules"
    assert json.loads(args_of(runtime, "ENTRYPOINT")[-1]) == ["dqd", "serve"]
    assert set(" ".join(args_of(runtime, "EXPOSE")).split()) == {"50051", "9090"}
    assert json.loads(args_of(runtime, "VOLUME")[-1]) == ["/data"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args_of(runtime, "ENV"))))
    assert env["DATA_PATH"] == "/data" and env["TMPDIR"] == "/tmp"
    assert env["API_PORT"] == "50051" and env["METRICS_PORT"] == "9090" and env["API_HOST"] == "0.0.0.0"
    assert "MODEL_PATH" not in env, "without a mounted repository the bundled rules serve"


def test_health_check_command_exits_zero_only_when_serving() -> None:
    """The HEALTHCHECK relies on dqd-client's exit codes (0: SERVING; else 1, 3 …)."""
    from dqd_client._cli import EXIT_FINDINGS, EXIT_OK, build_parser

    args = build_parser().parse_args(["health", "--target", "127.0.0.1:50051", "--timeout", "5"])
    assert args.command == "health" and args.timeout == 5.0 and (EXIT_OK, EXIT_FINDINGS) == (0, 1)


def dockerignore_admits(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    admitted = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pats = [pat.rstrip("/")] + ([pat[3:].rstrip("/")] if pat.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in pats):
            admitted = negate
    return admitted


def test_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    patterns = [ln.strip() for ln in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    sources = []
    for instr, args in instructions(DOCKERFILE.read_text()):
        if instr == "COPY" and "--from=" not in args:
            words = [w for w in args.split() if not w.startswith("--")]
            sources += words[:-1]
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [f for f in tracked if f == source.rstrip("/") or f.startswith(source.rstrip("/") + "/")] \
            or [source]
        for f in files:
            assert dockerignore_admits(f, patterns), f"COPY {source}: {f} is excluded from the build context"
    for kept_out in (".venv/bin/python", ".git/HEAD", "deploy/docker/.env", "deploy/docker/secrets/tls/tls.key",
                     "dqd_server/_proto/detection_pb2.py", "dqd_server/__pycache__/x.pyc", "tests/conftest.py",
                     "deploy/k8s/overlays/production/secret.env", "bench/x.py"):
        assert not dockerignore_admits(kept_out, patterns), f"{kept_out} would be sent to the build"
    for needed in ("dqd_server/engine/pipeline.py", "dqd_server/rules/material/1/field.yaml",
                   "dqd_server/storage/migrations/versions/0001_initial.py", "clients/python/setup.py",
                   "protos/dqd/v1/detection.proto", "scripts/backup.sh"):
        assert dockerignore_admits(needed, patterns), f"{needed} is missing from the build context"


# --- docker-compose.yml -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> Obj:
    return yaml.safe_load(COMPOSE.read_text())


def env_of(service: Obj) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


_VAR = re.compile(r"\$\{(\w+)(?:(:?-)([^}]*)|:?\?[^}]*)?\}")


def with_defaults(text: str) -> str:
    """Interpolate ${VAR:-default} with its default, other variables with "" (what an empty .env gives)."""
    return _VAR.sub(lambda m: m.group(3) if m.group(2) else "", text)


def test_compose_matches_the_compose_spec(compose: Obj) -> None:
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (it ships the Compose spec schema)")
    import jsonschema

    schema = json.loads((importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
                         / "compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_services(compose: Obj) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "dqd", "envoy", "prometheus", "grafana", "backup", "restore"}
    for name, svc in services.items():
        if name == "dqd":
            assert svc["build"] == {"context": "../..", "dockerfile": "deploy/docker/Dockerfile"}
            assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
            continue
        image, _, tag = svc["image"].rpartition(":")
        assert image and tag and tag != "latest", f"{name}: pin the image version"
    assert services["postgres"]["image"] == "postgres:16"
    assert set(services["backup"]["profiles"]) == {"backup"} and set(services["restore"]["profiles"]) == {"restore"}


def test_compose_dqd(compose: Obj) -> None:
    dqd = compose["services"]["dqd"]
    env = env_of(dqd)
    assert dqd["deploy"]["replicas"] == 2
    assert "dqd-headless" in dqd["networks"]["default"]["aliases"]
    assert dqd["read_only"] is True and "/tmp" in dqd["tmpfs"] and dqd["cap_drop"] == ["ALL"]
    assert dqd["healthcheck"]["test"][:3] == ["CMD", "dqd-client", "health"]
    assert dqd["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert env["DATABASE_URL"].startswith("postgresql://dqd:${POSTGRES_PASSWORD:?") and "@postgres:5432/dqd" in env[
        "DATABASE_URL"]
    assert env["API_KEY_REQUIRED"] == "false", "Envoy strips x-api-key: dqd must not require it"
    grace = int(dqd["stop_grace_period"].rstrip("s"))
    assert grace >= float(env["SHUTDOWN_DELAY"]) + float(env["SHUTDOWN_GRACE"]) + 5
    assert "ports" not in dqd, "dqd is reached through Envoy only"
    mounts = {m.split(":")[1]: m for m in map(with_defaults, dqd["volumes"])}
    assert env["MODEL_PATH"] in mounts and mounts[env["MODEL_PATH"]].endswith(":ro")
    assert env["DATA_PATH"] in mounts


def test_compose_health_dependencies(compose: Obj) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep, spec in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}: {dep} needs a healthcheck"
            if spec.get("condition") == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must run once"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_compose_files_and_volumes_exist(compose: Obj) -> None:
    made_by_dev_secrets = {"./secrets/tls", "./secrets/keys"}
    made_at_run_time = {"./backups"}
    named = set(compose["volumes"])
    dev_secrets = (DOCKER / "dev-secrets.sh").read_text()
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = with_defaults(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: volume {source} is not declared"
            elif source in made_by_dev_secrets:
                assert source.removeprefix("./secrets/") in dev_secrets, f"dev-secrets.sh does not make {source}"
            elif source not in made_at_run_time:
                assert (DOCKER / source).exists(), f"{name}: {source} does not exist in the repository"
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    documented = set(re.findall(r"^#?\s*(\w+)=", (DOCKER / ".env.example").read_text(), re.MULTILINE))
    assert used <= documented, f"not in .env.example: {sorted(used - documented)}"
    for ignored in (".env", "secrets/", "backups/"):
        assert ignored in (DOCKER / ".gitignore").read_text().split()


def test_compose_ports(compose: Obj) -> None:
    published = {name: svc.get("ports", []) for name, svc in compose["services"].items()}
    assert published["envoy"] == ["8443:8443"]
    for name in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in published[name]), f"{name}: bind to loopback only"
    assert not published["postgres"] and not published["dqd"]


def _mounts(service: Obj) -> dict[str, str]:
    """container path -> source of a service's volumes (defaults interpolated)."""
    return {parts[1]: parts[0] for parts in (with_defaults(v).split(":") for v in service.get("volumes", []))}


def _host_path(service: Obj, container_path: str, secrets_dir: Path) -> Path:
    """Where a file Envoy reads comes from on the host (./secrets -> ``secrets_dir``)."""
    for target, source in sorted(_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target + "/"):
            rest = container_path[len(target):].lstrip("/")
            base = secrets_dir / source.removeprefix("./secrets/") if source.startswith("./secrets/") \
                else DOCKER / source
            return base / rest if rest else base
    raise AssertionError(f"{container_path} is not mounted into the Envoy container")


@pytest.fixture(scope="module")
def envoy_config() -> Obj:
    return yaml.safe_load((ENVOY_DIR / "envoy.yaml").read_text())


def test_compose_envoy_runs_the_committed_config(compose: Obj, envoy_config: Obj) -> None:
    """Envoy gets deploy/envoy/envoy.yaml; its listener, upstream and files fit this stack."""
    services = compose["services"]
    envoy = services["envoy"]
    config_path = envoy["command"][envoy["command"].index("--config-path") + 1]
    assert _host_path(envoy, config_path, DOCKER / "secrets").resolve() == ENVOY_DIR / "envoy.yaml"
    listener = envoy_config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    assert f"{listener}:{listener}" in envoy["ports"]
    cluster = envoy_config["static_resources"]["clusters"][0]
    (endpoint,) = [e["endpoint"]["address"]["socket_address"] for g in cluster["load_assignment"]["endpoints"]
                   for e in g["lb_endpoints"]]
    assert endpoint["address"] in services["dqd"]["networks"]["default"]["aliases"]
    assert str(endpoint["port_value"]) == env_of(services["dqd"])["API_PORT"]
    assert envoy["user"] == "101:101" and envoy["read_only"] is True


def _envoy_files(cfg: Obj) -> list[str]:
    """The files Envoy's config reads: certificate, key, API keys."""
    text = json.dumps(cfg)
    return sorted(set(re.findall(r'"(?:filename|path)": "(/etc/envoy/[^"]+\.\w+)"', text)))


def test_dev_secrets_make_the_files_envoy_reads(compose: Obj, envoy_config: Obj, tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    proc = subprocess.run(["bash", str(DOCKER / "dev-secrets.sh"), str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    files = _envoy_files(envoy_config)
    assert len(files) == 3, files
    envoy = compose["services"]["envoy"]
    for path in files:
        assert _host_path(envoy, path, tmp_path).is_file(), f"dev-secrets.sh makes no file for {path}"
    assert (tmp_path / "tls" / "tls.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in (tmp_path / "tls" / "tls.key").read_text()
    key = (tmp_path / "client-key.txt").read_text().strip()
    keys = json.loads((tmp_path / "keys" / "keys.yaml").read_text())
    assert keys["resources"][0]["typed_config"]["credentials"] == [{"key": key, "client": "dev"}]
    assert (tmp_path / "client-key.txt").stat().st_mode & 0o777 == 0o600


# --- monitoring -----------------------------------------------------------------------------------------------

def exported_metric_names() -> set[str]:
    """Every sample name dqd exposes: its Metrics (in a private registry), the supervisor's collector
    (workers.py) and the standard process_* metrics."""
    registry = CollectorRegistry()
    Metrics(registry=registry)
    names: set[str] = set()
    kinds: list[tuple[str, str]] = [(m.name, m.type) for m in registry.collect()]
    kinds += [(m.name, m.type) for m in ProcessCollector(registry=None).collect()]
    source = "\n".join(p.read_text() for p in (ROOT / "dqd_server").rglob("*.py"))
    kinds += [(n, "counter" if k == "Counter" else "gauge")
              for k, n in re.findall(r'(Counter|Gauge)MetricFamily\(\s*"(\w+)"', source)]
    for name, kind in kinds:
        if kind == "counter":
            names.add(name + "_total")
        elif kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


EXTERNAL = {"up"}  # Prometheus' own; kube_* come from kube-state-metrics on Kubernetes


def metric_names(expr: str) -> set[str]:
    promql = pytest.importorskip("promql_parser", reason="pip install promql-parser")
    tree = promql.parse(expr.replace("$__rate_interval", "5m"))
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            found.add(node.name)

    promql.walk(tree, visit)
    return found


@pytest.fixture(scope="module")
def known() -> set[str]:
    names = exported_metric_names()
    assert {"dqd_requests_total", "detection_duration_seconds_bucket", "detection_errors_total",
            "dqd_streams_in_flight", "dqd_records_processed_total", "dqd_worker_restarts_total",
            "process_resident_memory_bytes"} <= names
    return names


def _unknown(names: set[str], known: set[str]) -> set[str]:
    return {n for n in names if n not in known and n not in EXTERNAL and not n.startswith("kube_")}


def test_alert_rules(known: set[str]) -> None:
    rules = [r for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules}
    assert len(alerts) == len(rules), "alert names must be unique"
    used: dict[str, set[str]] = {}
    for name, rule in alerts.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        used[name] = metric_names(rule["expr"])
        assert not _unknown(used[name], known), f"{name} uses metrics dqd lacks: {_unknown(used[name], known)}"
    # what operators asked for
    assert 'code!="OK"' in alerts["DqdHighErrorRate"]["expr"]
    assert "histogram_quantile(0.95" in alerts["DqdDetectionSlow"]["expr"]
    assert used["DqdDetectionSlow"] == {"detection_duration_seconds_bucket"}
    assert "absent(" in alerts["DqdNoHealthyReplicas"]["expr"] and "up" in used["DqdTargetDown"]
    assert "detection_errors_total" in used["DqdFindingsSpike"]
    assert used["DqdWorkerRestarts"] == {"dqd_worker_restarts_total"}


def test_prometheus_configs() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    prom = compose["services"]["prometheus"]
    mounted = {m.split(":")[1]: m.split(":")[0] for m in prom["volumes"]}
    metrics_port = int(env_of(compose["services"]["dqd"])["METRICS_PORT"])
    for path in (MONITORING / "prometheus.yml", MONITORING / "prometheus-kubernetes.yml"):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
        jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
        assert "dqd" in jobs, "alerts.yml expects job=dqd"
    compose_cfg = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert (DOCKER / mounted["/etc/prometheus/prometheus.yml"]).resolve() == MONITORING / "prometheus.yml"
    assert (DOCKER / mounted["/etc/prometheus/alerts.yml"]).resolve() == MONITORING / "alerts.yml"
    sd = next(j for j in compose_cfg["scrape_configs"] if j["job_name"] == "dqd")["dns_sd_configs"][0]
    assert sd["names"] == ["dqd"] and sd["port"] == metrics_port


def test_grafana_dashboard(known: set[str]) -> None:
    dashboard = json.loads((MONITORING / "grafana" / "dashboard.json").read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    assert len(panels) == len(dashboard["panels"]) and len({p["id"] for p in dashboard["panels"]}) == len(panels)
    assert any(v["type"] == "datasource" and v["name"] == "datasource" for v in dashboard["templating"]["list"])
    exprs = {title: [t["expr"] for t in p["targets"]] for title, p in panels.items()}
    for title, targets in exprs.items():
        assert panels[title]["datasource"]["uid"] == "${datasource}"
        for expr in targets:
            assert not _unknown(metric_names(expr), known), f"{title}: {expr}"
    wanted = {
        "Request rate by RPC": ("dqd_requests_total", "by (rpc)"),
        "p95 detection duration by method": ("histogram_quantile(0.95", "by (le, method)"),
        "Errors by status code": ('code!="OK"', "by (code)"),
        "Findings by field": ("detection_errors_total", "by (field)"),
        "Streams in flight by RPC": ("dqd_streams_in_flight", "by (rpc)"),
        "Records processed rate": ("dqd_records_processed_total", "rate("),
    }
    for title, needles in wanted.items():
        assert title in panels, f"missing panel {title!r}"
        assert all(any(n in e for e in exprs[title]) for n in needles), title
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24


def test_grafana_provisioning() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    grafana = compose["services"]["grafana"]
    mounted = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert (DOCKER / mounted["/etc/grafana/provisioning"]).resolve() == MONITORING / "grafana" / "provisioning"
    dashboards = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/dqd.yml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    (dashboard_mount,) = [target for target, src in mounted.items() if src.endswith("dashboard.json")]
    assert str(Path(dashboard_mount).parent) == folder
    datasources = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090" and ds["isDefault"] is True


def test_compose_command_lines_are_well_formed(compose: Obj) -> None:
    for name, svc in compose["services"].items():
        test = svc.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD-SHELL":
            shlex.split(test[1])
        elif test:
            assert test[0] == "CMD", name
