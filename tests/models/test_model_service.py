"""The model-based methods through the real service: ``dqd serve`` on a trained repository, the client CLI and
library, ReloadModels while streams run, and a broken new version that must not replace a working one."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from model_support import catalog_values, new_version_with_threshold, rules_flag

from dqd_client import Client
from dqd_client._cli import main as client_main
from dqd_server._proto import detection_pb2, detection_pb2_grpc
from dqd_server.launcher import ServerProcess

# well-formed values the rules pass but that are wrong for their column (checked below with the bundled rules)
WRONG = {"category": ["Navy Blue", "Machine wash at 30°C", "Polyester"],
         "care_instructions": ["Bleach not do. Dry tumble low. Iron do not.", "Tumble do not. Dry bleach low."]}


@pytest.fixture
def served(repo_copy: Path) -> Iterator[ServerProcess]:
    with ServerProcess(env={"MODEL_PATH": str(repo_copy), "LOG_LEVEL": "WARNING"}, startup_timeout=120) as srv:
        yield srv


def _reload(srv: ServerProcess) -> detection_pb2.ReloadModelsResponse:
    with grpc.insecure_channel(srv.target) as ch:
        return detection_pb2_grpc.DetectionServiceStub(ch).ReloadModels(detection_pb2.ReloadModelsRequest(),
                                                                        timeout=120)


def _versions(srv: ServerProcess, method: str) -> dict[str, str]:
    with Client(srv.target) as client:
        return {f.name: m.version for f in client.list_fields() for m in f.methods if m.method == method}


def test_client_cli_finds_semantic_errors_the_rules_pass(served: ServerProcess, tmp_path: Path, capsys) -> None:
    training_values = catalog_values(4000, seed=1)  # what the tiny repository was trained on (conftest)
    for field, values in WRONG.items():
        assert not rules_flag(field, values), f"the rules already flag some of {values}"
    known = {f: training_values[f][:4] for f in WRONG}  # known clean values: never flagged
    categories = WRONG["category"] + known["category"]
    cares = WRONG["care_instructions"] + known["care_instructions"] + WRONG["care_instructions"][:1]
    rows = [{"category": c, "care_instructions": k} for c, k in zip(categories, cares)]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "findings.csv"
    code = client_main(["check", str(data), "--target", served.target, "--map", "category=category",
                        "--map", "care_instructions=care_instructions", "--methods", "ml,llm", "--out", str(out),
                        "--quiet"])
    assert code == 0, capsys.readouterr()
    import pyarrow.csv as pv

    found = pv.read_csv(out).to_pylist()
    flagged = {(r["column"], r["value"]) for r in found}
    wrong = {(c, v) for c, vs in WRONG.items() for v in vs}
    assert len(flagged & wrong) >= 3, f"ml/llm found {flagged & wrong} of {wrong}"  # the tiny model is weak
    assert not {(c, v) for c, v in flagged if v in known.get(c, [])}, "known clean values are never flagged"
    ml = [r for r in found if r["method"] == "ml"]
    assert ml and all(r["code"] == "SEMANTIC_OUTLIER" and "nearest:" in r["message"] for r in ml)


def test_reload_while_a_stream_runs(served: ServerProcess, repo_copy: Path) -> None:
    """A stream keeps the versions it started with; ReloadModels swaps in a complete new engine for later streams;
    health stays SERVING throughout."""
    values = ["Dark Blue", "Merino Wool", "Jeans"]  # "Jeans" is a known category
    v1 = _versions(served, "ml")["category"]
    batch = pa.record_batch({"c": pa.array(values, pa.string())})
    second = threading.Event()

    def batches() -> Iterator[pa.RecordBatch]:
        yield batch
        assert second.wait(60)
        yield batch

    with Client(served.target) as client, grpc.insecure_channel(served.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        stream = client.detect(batches(), {"c": "category"}, methods=["ml"], emit="all", timeout=120)
        first = next(stream)
        v2 = new_version_with_threshold(repo_copy, "category", "ml", -1e9)  # flags every unknown value
        assert _reload(served) and _versions(served, "ml")["category"] == v2 != v1
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        second.set()
        rest = list(stream)
        assert len(rest) == 1 and stream.summary.batches == 2
        before = first.findings.to_pylist()
        after = rest[0].findings.to_pylist()
        assert [(r["value"], r["confidence"]) for r in before] == [(r["value"], r["confidence"]) for r in after], \
            "the running stream kept its version"
        fresh = list(client.detect([batch], {"c": "category"}, methods=["ml"]))
        assert {r["value"] for r in fresh[0].findings.to_pylist()} == {"Dark Blue", "Merino Wool"}


def test_a_broken_new_version_is_refused_and_the_old_one_keeps_serving(served: ServerProcess,
                                                                       repo_copy: Path) -> None:
    before = _versions(served, "llm")
    version = new_version_with_threshold(repo_copy, "material", "llm", 1.0)
    folder = repo_copy / "material" / "llm" / version.split("+")[0]
    (folder / "calibration.npz").write_bytes(b"not a numpy file")
    with pytest.raises(grpc.RpcError) as err:
        _reload(served)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "material" in err.value.details() and "calibration.npz" in err.value.details()
    assert _versions(served, "llm") == before, "the old versions still serve"
    with Client(served.target) as client:
        assert client.health() == "SERVING"


def test_health_answers_while_a_model_is_busy(served: ServerProcess) -> None:
    """Inference runs in worker threads, off the event loop: health checks are answered during a long model stream."""
    values = [f"{n}% Cotton, {100 - n}% Unobtainium {i}" for i in range(60) for n in range(5, 95, 3)]
    table = pa.table({"m": pa.array(values, pa.string())})
    done = threading.Event()
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            with Client(served.target) as client:
                for _ in client.check_table(table, {"m": "material"}, methods=["ml", "llm"], batch_size=600):
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=stream)
    worker.start()
    answered_while_busy = 0
    with grpc.insecure_channel(served.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while not done.is_set():
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            answered_while_busy += not done.is_set()
            done.wait(0.2)
    worker.join(60)
    assert not errors, errors
    assert answered_while_busy >= 3, "the stream ended before health was checked during it"
