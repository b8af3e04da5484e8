"""scripts/gpu_check.sh and scripts/build_trt_engines.py on a machine without a GPU (the GPU run is theirs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_gpu_check_on_cpu_runs_the_cpu_backends_and_exits_0(tiny_repo: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this test is the CPU path; on a GPU run the script itself")
    out = subprocess.run([str(SCRIPTS / "gpu_check.sh"), "--repo", str(tiny_repo), "--quick", "--values", "60",
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHON": sys.executable}, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no CUDA GPU present" in out.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    backends = {(r["network"], r["backend"]) for r in result["results"]}
    assert backends == {(n, b) for n in ("encoder", "mlm") for b in ("torch-fp32-cpu", "onnxruntime-cpu")}
    assert all(r["ok"] and r["values_per_s"] > 0 for r in result["results"])
    assert "values/s" in out.stdout


def test_build_trt_engines_explains_what_is_missing(tiny_repo: Path) -> None:
    out = run(str(SCRIPTS / "build_trt_engines.py"), "--repo", str(tiny_repo), timeout=120)
    assert out.returncode == 2
    assert "tensorrt is not installed" in out.stderr or "no CUDA GPU visible" in out.stderr
