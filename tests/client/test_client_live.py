"""The client against a REAL dqd server started as a subprocess (`python -m dqd_server serve`)."""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dqd_client
from dqd_client import Client, findings_table
from dqd_client._cli import main

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
STARTUP_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"dqd listening on (\S+):(\d+)")

GOOD = ["100% Cotton", "78% Viscose - 22% Nylon"]
BAD = "78% Viscose - 22% Nylonn"


def _pump(stream, lines: queue.Queue[str | None]) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


@pytest.fixture(scope="module")
def live_target() -> Iterator[str]:
    """Start the real server on a free port; fail loudly (never skip) if it cannot start."""
    python = str(PYTHON if PYTHON.exists() else Path(sys.executable))
    proc = subprocess.Popen([python, "-m", "dqd_server", "serve", "--host", "127.0.0.1", "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    stderr_lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stderr, stderr_lines), daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    target, seen = None, []
    while target is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if match := _LISTENING.search(line):
            target = f"{match.group(1)}:{match.group(2)}"
    if target is None:
        proc.kill()
        proc.wait(10)
        err = []
        while not stderr_lines.empty():
            err.append(stderr_lines.get() or "")
        pytest.fail(f"dqd server did not print 'dqd listening on HOST:PORT' within {STARTUP_TIMEOUT_S:.0f} s "
                    f"(exit code {proc.returncode}).\nstdout:\n{''.join(seen)}\nstderr:\n{''.join(err)[-4000:]}",
                    pytrace=False)
    try:
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture()
def client(live_target: str) -> Iterator[Client]:
    with Client(live_target, timeout=30) as c:
        yield c


def test_list_fields(client: Client) -> None:
    fields = client.list_fields()
    assert fields, "the server lists no field types"
    names = [f.name for f in fields]
    assert "material" in names
    for f in fields:
        assert f.methods, f"field {f.name} has no methods"
        assert all(m.method and m.version for m in f.methods)


def test_health(client: Client) -> None:
    assert client.health() == "SERVING"


def test_detect_three_batches(client: Client) -> None:
    batches = [
        pa.record_batch({"material": [GOOD[0], GOOD[1]], "sku": ["a", "b"]}),
        pa.record_batch({"material": [GOOD[1], BAD, GOOD[0]], "sku": ["c", "d", "e"]}),
        pa.record_batch({"material": [BAD, GOOD[0]], "sku": ["f", "g"]}),
    ]
    stream = client.detect(iter(batches), {"material": "material"})
    results = list(stream)
    assert [r.batch_index for r in results] == [0, 1, 2]
    assert [(r.first_row, r.num_rows) for r in results] == [(0, 2), (2, 3), (5, 2)]
    table = findings_table(results)
    assert table.schema == dqd_client.FINDINGS_SCHEMA
    flagged = sorted(set(table.column("row").to_pylist()))
    assert flagged == [3, 5], table.to_pylist()  # rows numbered over the whole stream
    assert set(table.column("value").to_pylist()) == {BAD}
    assert set(table.column("column").to_pylist()) == {"material"}
    assert all(0.0 <= c <= 1.0 for c in table.column("confidence").to_pylist())
    summary = stream.summary
    assert summary is not None
    assert (summary.rows, summary.batches) == (7, 3)
    assert summary.cells_checked >= 7
    assert summary.findings == table.num_rows
    assert sum(c.count for c in summary.counts) == summary.findings


def test_detect_emit_all(client: Client) -> None:
    batch = pa.record_batch({"material": [GOOD[0], BAD]})
    stream = client.detect([batch], {"material": "material"}, emit="all")
    table = findings_table(stream)
    assert set(table.column("row").to_pylist()) == {0, 1}


def test_detect_rows(client: Client) -> None:
    findings, summary = client.detect_rows([{"material": GOOD[0]}, {"material": BAD}, {"material": GOOD[1]}],
                                           {"material": "material"})
    assert {f.row for f in findings} == {1}
    assert all(f.value == BAD and f.column == "material" for f in findings)
    assert summary.rows == 3 and summary.findings == len(findings)


def test_unknown_field_type_is_invalid_argument(client: Client) -> None:
    with pytest.raises(dqd_client.InvalidArgument) as info:
        list(client.detect([pa.record_batch({"material": [GOOD[0]]})], {"material": "no_such_field_type"}))
    assert "no_such_field_type" in info.value.details
    assert "material" in info.value.details, "the message should name the known field types"
    with pytest.raises(dqd_client.InvalidArgument):
        client.detect_rows([{"material": GOOD[0]}], {"material": "no_such_field_type"})


def test_cli_check_csv(live_target: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "products.csv"
    path.write_text("sku,material,price\n" + "".join(
        f'{i},"{BAD if i % 5 == 3 else GOOD[i % 2]}",{i}.99\n' for i in range(50)))
    out = tmp_path / "findings.parquet"
    code = main(["check", str(path), "--target", live_target, "--map", "material=material",
                 "--batch-size", "8", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pq.read_table(out)
    assert table.schema == dqd_client.FINDINGS_SCHEMA
    assert sorted(set(table.column("row").to_pylist())) == [i for i in range(50) if i % 5 == 3]
    assert "material" in captured.out and "rows/s" in captured.out and "cells checked" in captured.out
    assert re.search(r"rows\s+50\b", captured.out), captured.out


def test_slow_input_survives_keepalive_pings(live_target: str) -> None:
    """A silent stream must not be killed by the server's ping policy (GOAWAY too_many_pings)."""
    def slow() -> Iterator[pa.RecordBatch]:
        for _ in range(2):
            yield pa.record_batch({"material": [BAD]})
            time.sleep(4)

    with Client(live_target, options=[("grpc.keepalive_time_ms", 1000)]) as fast_pinger:
        stream = fast_pinger.detect(slow(), {"material": "material"})
        assert [r.batch_index for r in stream] == [0, 1]
    assert stream.summary is not None and stream.summary.rows == 2
