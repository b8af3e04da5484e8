"""The dqd-client command line: argument and input errors (exit 2), RPC errors (3), and a full check."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from dqd_client._cli import main


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


def test_target_from_env(monkeypatch, capsys, fake_server) -> None:
    monkeypatch.setenv("DQD_TARGET", fake_server.target)
    monkeypatch.setenv("DQD_API_KEY", "k1")
    assert main(["health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert fake_server.servicer.metadata == []  # health is not the DetectionService
    assert main(["fields"]) == 0
    out = capsys.readouterr().out
    assert "field" in out and "material" in out and "validation" in out
    assert fake_server.servicer.metadata[-1]["x-api-key"] == "k1"


@pytest.mark.parametrize("out_name", ["findings.parquet", "findings.csv"])
def test_check_writes_findings_and_summary(capsys, tmp_path: Path, csv_file: Path, fake_server,
                                           out_name: str) -> None:
    out = tmp_path / out_name
    code = main(["check", str(csv_file), "--target", fake_server.target, "--map", "material=material",
                 "--batch-size", "2", "--out", str(out), "--methods", "validation",
                 "--threshold", "validation=0.5", "--job-key", "j1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pq.read_table(out) if out.suffix == ".parquet" else pcsv.read_csv(out)
    assert table.column("row").to_pylist() == [2, 3]
    assert "findings" in captured.out and "rows/s" in captured.out and "fake-job" in captured.out
    assert "material" in captured.out and f"findings written to {out}" in captured.out
    assert "rows" in captured.err  # progress on stderr
    assert main(["check", str(csv_file), "--target", fake_server.target, "--map", "material=material",
                 "-q", "--fail-on-findings"]) == 1


def test_check_server_invalid_argument_exit_3(capsys, csv_file: Path, fake_server) -> None:
    code = main(["check", str(csv_file), "--target", fake_server.target, "--map", "material=nope", "-q"])
    err = capsys.readouterr().err
    assert code == 3
    assert "INVALID_ARGUMENT" in err and "unknown field type" in err and "Traceback" not in err


def test_bad_csv_line_mid_stream_exit_2(capsys, tmp_path: Path, fake_server) -> None:
    path = tmp_path / "big.csv"
    line = "1,78% Viscose - 22% Nylonn,some padding to make the file longer than one read block\n"
    with path.open("w") as f:
        f.write("sku,material,pad\n")
        f.write(line * (6 * 1024 * 1024 // len(line)))
        f.write("x,y,z,too many\n")
    out = tmp_path / "f.parquet"
    code = main(["check", str(path), "--target", fake_server.target, "--map", "material=material",
                 "--batch-size", "5000", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "CSV parse error" in err and "Traceback" not in err
    assert "the findings so far" in err
    # what arrived before the error (timing-dependent, maybe nothing) is kept in a readable file
    assert pq.read_table(out).schema.names[:2] == ["row", "column"]


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


def test_job_command(capsys, fake_server) -> None:
    assert main(["job", "fake-job", "--target", fake_server.target]) == 0
    out = capsys.readouterr().out
    assert "COMPLETED" in out and "/jobs/fake-job.parquet" in out
    assert main(["job", "--key", "k1", "--target", fake_server.target]) == 0
    assert main(["job", "--target", fake_server.target]) == 2
    assert "JOB_ID or --key" in capsys.readouterr().err
    assert main(["job", "nope", "--target", fake_server.target]) == 3
    assert "server error NOT_FOUND" in capsys.readouterr().err
