"""ReloadModels: new rule versions serve without a restart; running streams keep theirs; bad files are refused."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

from dqd_server._proto import detection_pb2 as pb
from dqd_server._proto import detection_pb2_grpc
from dqd_server.engine.ipc import decode_batch, encode_batch
from dqd_server.engine.repository import BUNDLED_RULES
from dqd_server.launcher import ServerProcess

NEW_COLOUR = "Chartreuse Fizz"


def colours(*values: str) -> pb.DetectRowsRequest:
    return pb.DetectRowsRequest(columns={"c": "color_name"}, rows=[pb.Row(cells={"c": v}) for v in values])


def add_version(repo: Path, field: str, version: int, edit: str = "") -> None:
    """Copy the field's newest version to ``version`` and append ``edit`` to its known values."""
    src = max((p for p in (repo / field).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    dst = repo / field / str(version)
    shutil.copytree(src, dst)
    if edit:
        with open(dst / "known_values.txt", "a") as f:
            f.write(f"\n{edit}\n")


@pytest.fixture()
def repo_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_RULES, repo)
    with ServerProcess(env={"MODEL_PATH": str(repo), "LOG_LEVEL": "WARNING"}) as srv:
        yield srv, repo


def test_reload_serves_the_new_version_and_keeps_running_streams(repo_server) -> None:  # noqa: ANN001
    srv, repo = repo_server
    with grpc.insecure_channel(srv.target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        assert len(stub.DetectRows(colours(NEW_COLOUR), timeout=10).findings) == 1
        # a stream that started on version 1 ...
        go_on = threading.Event()

        def reqs() -> Iterator[pb.DetectRequest]:
            yield pb.DetectRequest(config=pb.DetectConfig(columns={"c": "color_name"}))
            yield pb.DetectRequest(arrow_batch=encode_batch(pa.record_batch({"c": [NEW_COLOUR]})))
            go_on.wait(20)
            yield pb.DetectRequest(arrow_batch=encode_batch(pa.record_batch({"c": [NEW_COLOUR]})))

        call = stub.Detect(reqs(), timeout=30)
        first = next(call)
        add_version(repo, "color_name", 2, NEW_COLOUR)
        reply = stub.ReloadModels(pb.ReloadModelsRequest(), timeout=30)
        versions = {f.name: {m.method: m.version for m in f.methods} for f in reply.fields}
        assert versions["color_name"]["pattern"] == "2" and versions["material"]["pattern"] == "1"
        go_on.set()
        rest = list(call)
        # ... finishes on version 1: the value stays flagged in both of its batches
        assert decode_batch(first.findings.arrow_batch).num_rows == 1
        assert decode_batch(rest[0].findings.arrow_batch).num_rows == 1
        # new calls get version 2
        assert len(stub.DetectRows(colours(NEW_COLOUR), timeout=10).findings) == 0
        listed = stub.ListFields(pb.ListFieldsRequest(), timeout=10)
        assert {m.version for f in listed.fields if f.name == "color_name" for m in f.methods} == {"2"}


def test_a_bad_repository_is_refused_and_the_old_one_keeps_serving(repo_server) -> None:  # noqa: ANN001
    srv, repo = repo_server
    add_version(repo, "size", 2)
    (repo / "size" / "2" / "field.yaml").write_text("description: broken\nvalidation:\n  - kind: no_such_check\n")
    with grpc.insecure_channel(srv.target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.ReloadModels(pb.ReloadModelsRequest(), timeout=30)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no_such_check" in info.value.details() and "previous versions keep serving" in info.value.details()
        assert len(stub.DetectRows(colours("Black", "Blakc"), timeout=10).findings) == 1
