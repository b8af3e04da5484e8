"""scripts/backup.sh and scripts/restore.sh against real data: a job stored by a real server (SQLite and
PostgreSQL), backed up, wiped, restored, and read back through GetJob by a server started afresh."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from dqd_server._proto import detection_pb2 as pb
from dqd_server._proto import detection_pb2_grpc
from dqd_server.engine.ipc import encode_batch
from dqd_server.engine.repository import BUNDLED_RULES
from dqd_server.launcher import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
BACKUP = ROOT / "scripts" / "backup.sh"
RESTORE = ROOT / "scripts" / "restore.sh"
GOOD = ["100% Cotton", "78% Viscose - 22% Nylon", "95% Cotton - 5% Elastane"]
ROWS, BATCHES, BAD_EVERY = 100, 3, 10


def _requests() -> Iterator[pb.DetectRequest]:
    cfg = pb.DetectConfig(columns={"material": "material"}, persist=True, data_file="shop.csv",
                          job_key=f"backup-{time.time_ns()}")
    yield pb.DetectRequest(config=cfg)
    for _ in range(BATCHES):
        material = [("78% Viscose - 22% Nylonn" if i % BAD_EVERY == 0 else GOOD[i % 3]) for i in range(ROWS)]
        yield pb.DetectRequest(arrow_batch=encode_batch(pa.record_batch({"material": material})))


def _server(data: Path, database_url: str = "") -> ServerProcess:
    env = {"DATA_PATH": str(data), "LOG_LEVEL": "WARNING", "METRICS_ENABLED": "false",
           "SHUTDOWN_DELAY": "0", "SHUTDOWN_GRACE": "2"}
    if database_url:
        env["DATABASE_URL"] = database_url
    return ServerProcess(env=env)


def store_job(data: Path, database_url: str = "") -> tuple[str, str]:
    """Run a persisted Detect on a fresh server; returns (job id, job key)."""
    with _server(data, database_url) as srv, grpc.insecure_channel(srv.target) as ch:
        out = list(detection_pb2_grpc.DetectionServiceStub(ch).Detect(_requests(), timeout=30))
        summary = out[-1].summary
        assert summary.findings == ROWS * BATCHES // BAD_EVERY and summary.job_id
        job = detection_pb2_grpc.DetectionServiceStub(ch).GetJob(pb.GetJobRequest(job_id=summary.job_id), timeout=10)
        return summary.job_id, job.job_key


def read_job(data: Path, job_id: str, job_key: str, database_url: str = "") -> None:
    """A server started afresh on the restored data answers GetJob with the job and its findings."""
    with _server(data, database_url) as srv, grpc.insecure_channel(srv.target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)
        assert job.status == pb.JOB_STATUS_COMPLETED and job.rows == ROWS * BATCHES and job.data_file == "shop.csv"
        assert job.summary.findings == ROWS * BATCHES // BAD_EVERY
        assert stub.GetJob(pb.GetJobRequest(job_key=job_key), timeout=10).job_id == job_id
        findings = pq.read_table(job.findings_path)
        assert findings.num_rows == ROWS * BATCHES // BAD_EVERY
        assert Path(job.findings_path).is_relative_to(data)


def run(script: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a script with ``env`` (DQD_BIN empty: no `dqd config` dump, unless ``env`` names one)."""
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHON": sys.executable, "DQD_BIN": "", **env}
    for name in ("DATABASE_URL", "MODEL_PATH", "CONFIG_DIR", "KEEP_DAYS"):
        if name not in env:
            full.pop(name, None)
    proc = subprocess.run(["bash", str(script), *args], env=full, capture_output=True, text=True, timeout=120,
                          check=False)
    if check:
        assert proc.returncode == 0, f"{script.name} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def backup(dest: Path, **env: str) -> Path:
    proc = run(BACKUP, str(dest), env=env)
    archive = Path(proc.stdout.strip().splitlines()[-1])
    assert archive.parent == dest and archive.name.startswith("dqd-backup-") and archive.is_dir()
    return archive


def manifest(archive: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (archive / "MANIFEST").read_text().splitlines())


def test_sqlite_backup_wipe_restore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    job_id, job_key = store_job(data)
    models = tmp_path / "models"
    shutil.copytree(BUNDLED_RULES, models)

    archive = backup(tmp_path / "backups", DATA_PATH=str(data), MODEL_PATH=str(models),
                     DQD_BIN=str(Path(sys.executable).parent / "dqd"))
    files = manifest(archive)["files"].split()
    assert files == ["database.sqlite3", "results.tar.gz", "models.tar.gz", "dqd-config.txt"]
    settings = (archive / "dqd-config.txt").read_text()
    assert f"DATA_PATH={data}" in settings
    assert manifest(archive)["database_kind"] == "sqlite" and manifest(archive)["data_path"] == str(data)
    sums = (archive / "SHA256SUMS").read_text()
    assert all(f"  {name}\n" in sums for name in ["MANIFEST", *files])
    assert not list((tmp_path / "backups").glob(".*partial"))

    shutil.rmtree(data)
    shutil.rmtree(models)
    run(RESTORE, str(archive), env={"DATA_PATH": str(data), "MODEL_PATH": str(models)})
    assert sorted(p.name for p in models.iterdir()) == sorted(p.name for p in BUNDLED_RULES.iterdir())
    assert not list(data.glob("pre-restore-*")), "nothing was there to move aside"
    read_job(data, job_id, job_key)


def test_restore_refuses_a_damaged_backup_before_changing_anything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = sa.create_engine(f"sqlite:///{data / 'dqd.db'}")
    with db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    db.dispose()
    (data / "results").mkdir()
    (data / "results" / "job.parquet").write_bytes(b"findings")
    archive = backup(tmp_path / "backups", DATA_PATH=str(data))

    target = tmp_path / "target"
    (target / "results").mkdir(parents=True)
    (target / "dqd.db").write_bytes(b"current database")
    before = sorted((p.relative_to(target), p.read_bytes()) for p in target.rglob("*") if p.is_file())

    damaged = tmp_path / "damaged"
    shutil.copytree(archive, damaged)
    blob = bytearray((damaged / "results.tar.gz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (damaged / "results.tar.gz").write_bytes(bytes(blob))
    proc = run(RESTORE, str(damaged), env={"DATA_PATH": str(target)}, check=False)
    assert proc.returncode == 1 and "checksums do not match" in proc.stderr

    (damaged / "results.tar.gz").write_bytes((archive / "results.tar.gz").read_bytes())
    (damaged / "SHA256SUMS").write_text("".join(line for line in (archive / "SHA256SUMS").read_text().splitlines(True)
                                                if "results.tar.gz" not in line))
    proc = run(RESTORE, str(damaged), env={"DATA_PATH": str(target)}, check=False)
    assert proc.returncode == 1 and "not covered by SHA256SUMS" in proc.stderr

    proc = run(RESTORE, str(archive), env={"DATA_PATH": str(target), "DATABASE_URL": "postgresql://x@127.0.0.1/x"},
               check=False)
    assert proc.returncode == 1 and "holds a sqlite database, the target is postgresql" in proc.stderr
    after = sorted((p.relative_to(target), p.read_bytes()) for p in target.rglob("*") if p.is_file())
    assert after == before, "a refused restore changed the target"

    # a good restore moves what it replaces aside instead of deleting it
    run(RESTORE, str(archive), env={"DATA_PATH": str(target)})
    aside = next(target.glob("pre-restore-*"))
    assert (aside / "dqd.db").read_bytes() == b"current database" and (aside / "results").is_dir()
    assert (target / "results" / "job.parquet").read_bytes() == b"findings"


def test_retention_keeps_keep_days(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sa.create_engine(f"sqlite:///{data / 'dqd.db'}").connect().close()
    dest = tmp_path / "backups"
    old, recent, other = dest / "dqd-backup-20200101T000000Z", dest / "dqd-backup-20200102T000000Z", dest / "keep-me"
    for path, days in ((old, 10), (recent, 2), (other, 30)):
        path.mkdir(parents=True)
        stamp = time.time() - days * 86400
        os.utime(path, (stamp, stamp))
    new = backup(dest, DATA_PATH=str(data), KEEP_DAYS="7")
    assert sorted(p.name for p in dest.iterdir()) == sorted([recent.name, other.name, new.name])
    backup(dest, DATA_PATH=str(data), KEEP_DAYS="0")  # 0 keeps everything
    assert len(list(dest.glob("dqd-backup-*"))) == 3


def test_backup_errors(tmp_path: Path) -> None:
    proc = run(BACKUP, str(tmp_path / "b"), env={"DATA_PATH": str(tmp_path / "nothing")}, check=False)
    assert proc.returncode == 1 and "no SQLite database" in proc.stderr
    assert not list((tmp_path / "b").glob("*")), "a failed backup leaves nothing behind"
    assert run(BACKUP, env={}, check=False).returncode == 2
    proc = run(BACKUP, str(tmp_path / "b"), env={"DATABASE_URL": "mysql://x@y/z"}, check=False)
    assert proc.returncode == 1 and "PostgreSQL or SQLite only" in proc.stderr


@pytest.fixture(scope="module")
def pg_tools() -> None:
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        reason = "pg_dump/pg_restore are not installed (apt-get install postgresql-client)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI is set, so the PostgreSQL backup test must run", pytrace=False)
        pytest.skip(reason)


def test_postgresql_backup_restore_into_a_fresh_database(tmp_path: Path, pg_server: Any, pg_tools: None) -> None:
    source = pg_server.new_database()
    data = tmp_path / "data"
    job_id, job_key = store_job(data, source)

    # The SQLAlchemy URL as dqd takes it, with a driver and a password that needs percent-encoding
    # (trust auth ignores it): the script must turn it into libpq's form and keep it out of the manifest.
    url = sa.make_url(source).set(drivername="postgresql+psycopg", password="p@ss:w/rd")
    archive = backup(tmp_path / "backups", DATA_PATH=str(data), DATABASE_URL=url.render_as_string(hide_password=False))
    assert manifest(archive)["database_kind"] == "postgresql"
    assert "p@ss" not in (archive / "MANIFEST").read_text() and "p%40ss" not in (archive / "MANIFEST").read_text()
    assert (archive / "database.pgdump").read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format

    target = pg_server.new_database()
    shutil.rmtree(data)
    run(RESTORE, str(archive), env={"DATA_PATH": str(data), "DATABASE_URL": target})
    read_job(data, job_id, job_key, target)

    # restoring again over the restored database (a roll-back) works too: --clean in one transaction
    run(RESTORE, str(archive), env={"DATA_PATH": str(data), "DATABASE_URL": target})
    engine = sa.create_engine(sa.make_url(target).set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM jobs")).scalars().all() == [job_id]
    engine.dispose()
