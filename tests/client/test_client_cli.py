"""The dqd-client command line against a real server: exit codes, output, findings files, persisted jobs."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import dqd_client
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from dqd_client._cli import main

from dqd_server.launcher import ServerProcess


@pytest.fixture()
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "products.csv"
    path.write_text('sku,material\n1,100% Cotton\n2,78% Viscose - 22% Nylon\n3,"78% Viscose - 22% Nylonn"\n4,\n')
    return path


@pytest.mark.parametrize(("argv", "message"), [
    ([], "required: COMMAND"),
    (["check", "x.csv"], "--map"),
    (["check", "x.csv", "--map", "material"], "expected COLUMN=FIELD_TYPE"),
    (["check", "x.csv", "--map", "=material"], "expected COLUMN=FIELD_TYPE"),
    (["check", "x.csv", "--map", "a=b", "--threshold", "pattern=high"], "not a number"),
    (["check", "x.csv", "--map", "a=b", "--threshold", "pattern=7"], r"\[0, 1\]"),
    (["check", "x.csv", "--map", "a=b", "--batch-size", "0"], "positive integer"),
    (["check", "x.csv", "--map", "a=b", "--emit", "some"], "invalid choice"),
    (["bogus"], "invalid choice"),
])
def test_usage_errors(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: dqd-client" in err
    assert re.search(message, err), err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["check", "{dir}/missing.csv", "--map", "material=material"], "no such file"),
    (["check", "{dir}/products.xlsx", "--map", "material=material"], "unsupported file type"),
    (["check", "{csv}", "--map", "colour=color_name"], r"\['colour'\] not found in products.csv; available: \['sku', 'material'\]"),
    (["check", "{csv}", "--map", "material=material", "--out", "{dir}/f.json"], "use .parquet or .csv"),
    (["check", "{csv}", "--map", "material=material", "--out", "{dir}/nodir/f.csv"], "output directory does not exist"),
    (["check", "{csv}", "--map", "material=material", "--map", "material=other"], "mapped twice"),
    (["check", "{csv}", "--map", "material=material", "--ca", "{dir}/ca.pem"], "cannot read root certificates"),
])
def test_input_errors_exit_2_without_traceback(capsys, tmp_path: Path, csv_file: Path,
                                               argv: list[str], message: str) -> None:
    (tmp_path / "products.xlsx").write_text("x")
    argv = [a.format(dir=tmp_path, csv=csv_file) for a in argv]
    assert main([*argv, "--target", "127.0.0.1:1", "-q"] if argv[0] == "check" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dqd-client: error: ")
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "f.json").exists()


def test_rpc_error_exit_3(capsys, csv_file: Path) -> None:
    assert main(["check", str(csv_file), "--map", "material=material", "--target", "127.0.0.1:1", "-q"]) == 3
    err = capsys.readouterr().err
    assert "server error UNAVAILABLE" in err and "Traceback" not in err
    assert main(["health", "--target", "127.0.0.1:1", "--timeout", "5"]) == 3
    assert main(["fields", "--target", "127.0.0.1:1", "--timeout", "5"]) == 3


def test_health_and_fields_with_target_from_env(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                server: ServerProcess) -> None:
    monkeypatch.setenv("DQD_TARGET", server.target)
    assert main(["health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert main(["fields"]) == 0
    out = capsys.readouterr().out
    assert re.match(r"field\s+method\s+version\s+checks\s+description\n", out), out
    for name in ("article_number", "care_instructions", "category", "color_name", "ean", "material", "price",
                 "season", "size"):
        assert re.search(rf"^{name}\s+(pattern|validation)\s+\d+\s+\d+\s+\S", out, re.MULTILINE), (name, out)
    assert re.search(r"^material\s+\w+\s+\d+\s+\d+\s+Material composition", out, re.MULTILINE), out
    assert re.search(r"^\s+(pattern|validation)\s+\d+\s+\d+\s*$", out, re.MULTILINE), out  # 2nd method row


@pytest.mark.parametrize("out_name", ["findings.parquet", "findings.csv"])
def test_check_writes_findings_and_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path, csv_file: Path,
                                           server: ServerProcess, out_name: str) -> None:
    out = tmp_path / out_name
    code = main(["check", str(csv_file), "--target", server.target, "--map", "material=material",
                 "--batch-size", "2", "--out", str(out), "--methods", "validation,pattern",
                 "--threshold", "pattern=0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pq.read_table(out) if out.suffix == ".parquet" else pcsv.read_csv(out)
    assert table.column("row").to_pylist() == [2, 3]
    assert table.column("code").to_pylist() == ["NEAR_MISS", "MISSING"]
    assert table.column("message").to_pylist() == [
        "'Nylonn' is not a known material term; did you mean 'Nylon'?", "value is missing"]
    for line in (r"column\s+field\s+method\s+findings", r"material\s+material\s+pattern\s+1",
                 r"material\s+material\s+validation\s+1", r"rows\s+4\n", r"batches\s+2\n",
                 r"cells checked\s+4\n", r"findings\s+2\n", r"rows/s\s+[\d,]+\n", r"job id\s+[0-9a-f]{32}\n"):
        assert re.search(line, captured.out), (line, captured.out)
    assert f"findings written to {out} (2 rows)" in captured.out
    assert "rows" in captured.err  # progress on stderr


def test_check_options_and_fail_on_findings(capsys: pytest.CaptureFixture[str], tmp_path: Path, csv_file: Path,
                                            server: ServerProcess) -> None:
    base = ["check", str(csv_file), "--target", server.target, "--map", "material=material", "-q"]
    assert main([*base, "--fail-on-findings"]) == 1
    # the NEAR_MISS has confidence 0.85: over a 0.9 threshold nothing is flagged
    assert main([*base, "--fail-on-findings", "--methods", "pattern", "--threshold", "pattern=0.9"]) == 0
    assert re.search(r"findings\s+0\n", capsys.readouterr().out)
    out = tmp_path / "all.parquet"
    assert main([*base, "--emit", "all", "--methods", "validation,pattern", "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 8  # every cell, once per method
    assert sorted(c for c in table.column("code").to_pylist() if c != "OK") == ["MISSING", "NEAR_MISS"]


def test_check_a_larger_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path, server: ServerProcess) -> None:
    path = tmp_path / "products.csv"
    good = ["100% Cotton", "78% Viscose - 22% Nylon"]
    path.write_text("sku,material,price\n" + "".join(
        f'{i},"{"78% Viscose - 22% Nylonn" if i % 5 == 3 else good[i % 2]}",{i}.99\n' for i in range(50)))
    out = tmp_path / "findings.parquet"
    code = main(["check", str(path), "--target", server.target, "--map", "material=material",
                 "--map", "price=price", "--batch-size", "8", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pq.read_table(out)
    assert table.schema == dqd_client.FINDINGS_SCHEMA
    assert table.column("row").to_pylist() == [i for i in range(50) if i % 5 == 3]
    assert set(table.column("code").to_pylist()) == {"NEAR_MISS"}
    assert re.search(r"rows\s+50\n", captured.out) and re.search(r"batches\s+7\n", captured.out), captured.out
    assert re.search(r"cells checked\s+100\n", captured.out), captured.out


def test_check_server_invalid_argument_exit_3(capsys: pytest.CaptureFixture[str], csv_file: Path,
                                              server: ServerProcess) -> None:
    code = main(["check", str(csv_file), "--target", server.target, "--map", "material=nope", "-q"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("dqd-client: server error INVALID_ARGUMENT: column 'material': unknown field type 'nope'")
    assert f"[target {server.target}]" in err and "Traceback" not in err


def test_bad_csv_line_mid_stream_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        server: ServerProcess) -> None:
    path = tmp_path / "big.csv"
    line = "1,78% Viscose - 22% Nylonn,some padding to make the file longer than one read block\n"
    with path.open("w") as f:
        f.write("sku,material,pad\n")
        f.write(line * (6 * 1024 * 1024 // len(line)))
        f.write("x,y,z,too many\n")
    out = tmp_path / "f.parquet"
    code = main(["check", str(path), "--target", server.target, "--map", "material=material",
                 "--batch-size", "5000", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "CSV parse error" in err and "Traceback" not in err
    assert "the findings so far" in err
    # what arrived before the error (timing-dependent, maybe nothing) is kept in a readable file
    found = pq.read_table(out)
    assert found.schema.names[:2] == ["row", "column"]
    assert set(found.column("code").to_pylist()) <= {"NEAR_MISS"}


def test_plain_progress_without_tqdm(monkeypatch) -> None:
    import io
    import sys

    from dqd_client._output import Progress
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    buf = io.StringIO()
    progress = Progress(enabled=True, interval=0.0, stream=buf)
    progress.update(1500, 3)
    progress.close()
    assert "1,500 rows" in buf.getvalue() and "rows/s" in buf.getvalue() and "3 findings" in buf.getvalue()


def test_persisted_check_and_job_command(capsys: pytest.CaptureFixture[str], csv_file: Path,
                                         server: ServerProcess) -> None:
    key = f"cli-{uuid.uuid4().hex[:12]}"
    check = ["check", str(csv_file), "--target", server.target, "--map", "material=material", "-q",
             "--job-key", key, "--persist"]
    assert main(check) == 0
    job_id = re.search(r"job id\s+([0-9a-f]{32})\n", capsys.readouterr().out).group(1)

    assert main(["job", job_id, "--target", server.target]) == 0
    out = capsys.readouterr().out
    for line in (rf"job id\s+{job_id}\n", rf"job key\s+{key}\n", r"status\s+COMPLETED\n", r"rows\s+4\n",
                 r"data file\s+products.csv\n", r"error\s+-\n", r"material\s+material\s+pattern\s+1",
                 r"findings\s+2\n"):
        assert re.search(line, out), (line, out)
    findings_file = Path(re.search(r"findings file\s+(\S+)\n", out).group(1))
    assert findings_file.is_relative_to(server.data_path)
    assert pq.read_table(findings_file).column("code").to_pylist() == ["NEAR_MISS", "MISSING"]
    assert main(["job", "--key", key, "--target", server.target]) == 0
    assert capsys.readouterr().out == out

    assert main(check) == 3  # a completed job key is not run again
    assert f"server error ALREADY_EXISTS: job key '{key}' already completed as job {job_id}" in capsys.readouterr().err
    assert main(["job", "--target", server.target]) == 2
    assert "JOB_ID or --key" in capsys.readouterr().err
    assert main(["job", job_id, "--key", key, "--target", server.target]) == 2
    assert "JOB_ID or --key" in capsys.readouterr().err
    assert main(["job", "nope", "--target", server.target]) == 3
    assert "server error NOT_FOUND: no job with id 'nope'" in capsys.readouterr().err
