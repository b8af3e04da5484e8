"""The bounded soak script runs end to end (briefly) and reports zero failures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_soak_script_short_run(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--streams", "4", "--seconds", "3",
                          "--batch-rows", "2000", "--json", str(out)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["failures"] == 0 and report["batches"] > 4 and report["rows_per_second"] > 0
    assert report["latency_p99_ms"] >= report["latency_p50_ms"] > 0
