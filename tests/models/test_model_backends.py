"""Backends: parity with the PyTorch fp32 reference, selection by MODEL_DEVICE, TensorRT plan checks.

On a machine without CUDA the GPU tests are skipped (``gpu`` marker); scripts/gpu_check.sh is the full GPU check.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_support import catalog_values

from dqd_server.engine.backends import TOLERANCE, PlanMismatch, open_backend
from dqd_server.models import SHARED_DIR, mlm_score
from dqd_server.models.base import encode, field_prefix, pad

VALUES = ["78% Viscose - 22% Nylon", "Dark Blue", "Machine wash at 30°C, Do not tumble dry", "Sneakers",
          "100% Organic Lettuce", "Wassen op 30°C; Niet in de droger", "W32/L34", "x"]


def encoder_feeds(values: list[str]) -> dict[str, np.ndarray]:
    ids, mask = pad([e.ids for e in encode(values)])
    return {"input_ids": ids, "attention_mask": mask}


def mlm_feeds(field: str, values: list[str]) -> dict[str, np.ndarray]:
    return mlm_score.feeds_of(mlm_score.single_items(encode(values, [field_prefix(field)] * len(values))))


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def dirs(tiny_repo: Path) -> dict[str, Path]:
    return {k: tiny_repo / SHARED_DIR / k / "1" for k in ("encoder", "mlm")}


def test_onnxruntime_matches_torch_fp32(dirs: dict[str, Path]) -> None:
    """Documented tolerance: TOLERANCE['fp32'] (embeddings 1e-4, token log-probabilities 2e-3)."""
    values = VALUES + catalog_values(2000, seed=3, max_values=40)["care_instructions"]
    feeds = {"encoder": encoder_feeds(values), "mlm": mlm_feeds("care_instructions", values)}
    diffs = {}
    for kind, d in dirs.items():
        ref = open_backend(kind, d, device="cpu", backend="torch")
        ort = open_backend(kind, d, device="cpu", backend="onnxruntime")
        assert (ref.name, ort.name) == ("torch-cpu-fp32", "onnxruntime-cpu")
        a, b = ref.run(feeds[kind]), ort.run(feeds[kind])
        valid = feeds[kind]["attention_mask"].astype(bool) if kind == "mlm" else slice(None)
        diffs[kind] = float(np.abs(a[valid] - b[valid]).max())
        assert diffs[kind] <= TOLERANCE["fp32"][kind], (kind, diffs[kind])
    print(f"max |torch fp32 - onnxruntime cpu|: {diffs}")


def test_padding_and_batching_do_not_change_results(dirs: dict[str, Path]) -> None:
    ort = open_backend("encoder", dirs["encoder"], device="cpu", backend="onnxruntime")
    together = ort.run(encoder_feeds(VALUES))
    alone = np.concatenate([ort.run(encoder_feeds([v])) for v in VALUES])
    assert np.abs(together - alone).max() < 1e-4
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_auto_on_cpu_picks_onnxruntime_and_forcing_works(dirs: dict[str, Path]) -> None:
    if cuda():
        pytest.skip("CPU selection test")
    assert open_backend("mlm", dirs["mlm"], device="auto").name == "onnxruntime-cpu"
    assert open_backend("encoder", dirs["encoder"], device="cpu").name == "onnxruntime-cpu"
    assert open_backend("encoder", dirs["encoder"], device="cpu", backend="torch").name == "torch-cpu-fp32"
    with pytest.raises(RuntimeError, match="no usable TensorRT plan"):
        open_backend("encoder", dirs["encoder"], backend="tensorrt")
    with pytest.raises(RuntimeError, match="MODEL_DEVICE=cuda but no CUDA device"):
        open_backend("encoder", dirs["encoder"], device="cuda")
    with pytest.raises(ValueError, match="MODEL_BACKEND='tpu'"):
        open_backend("encoder", dirs["encoder"], backend="tpu")


def test_the_pool_follows_the_model_settings(dirs: dict[str, Path], tmp_path: Path) -> None:
    """MODEL_* settings reach the networks: backend, batch bounds; a change drops loaded networks."""
    from dqd_server.config import Settings
    from dqd_server.models.runtime import NetworkPool, RuntimeOptions

    settings = Settings.from_env({"MODEL_BACKEND": "torch", "MODEL_MAX_BATCH": "7", "MODEL_MAX_DELAY_MS": "0.5",
                                  "MODEL_MAX_TOKENS": "999", "MODEL_DEVICE": "cpu", "MODEL_CACHE_SIZE": "1"})
    pool = NetworkPool(RuntimeOptions.from_settings(settings))
    net = pool.get("encoder", dirs["encoder"], "pin")
    assert net.backend.name == "torch-cpu-fp32"
    from threadpoolctl import threadpool_info

    assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas"), \
        "numpy's BLAS threads would compete with the model backend for the cores"
    assert (net.batcher.max_batch_size, net.batcher.max_batch_tokens, net.batcher.max_queue_delay) == (7, 999, 0.0005)
    assert pool.get("encoder", dirs["encoder"], "pin") is net
    pool.configure(backend="onnxruntime")
    again = pool.get("encoder", dirs["encoder"], "pin")
    assert again is not net and again.backend.name == "onnxruntime-cpu"
    assert again.batcher.max_batch_size == 7, "the other options are kept"


def test_cpu_falls_back_to_torch_without_an_onnx_file(dirs: dict[str, Path], tmp_path: Path) -> None:
    if cuda():
        pytest.skip("CPU selection test")
    bare = tmp_path / "mlm"
    bare.mkdir()
    for name in ("model.safetensors", "config.json"):
        (bare / name).symlink_to(dirs["mlm"] / name)
    assert open_backend("mlm", bare, device="cpu").name == "torch-cpu-fp32"


def test_tensorrt_plans_are_refused_for_another_gpu_or_version() -> None:
    from dqd_server.engine.backends.tensorrt_backend import check_plan

    meta = {"gpu_name": "NVIDIA H200", "tensorrt_version": "10.13.0"}
    check_plan(meta, "NVIDIA H200", "10.13.0")
    with pytest.raises(PlanMismatch, match="built for GPU 'NVIDIA H200'"):
        check_plan(meta, "NVIDIA A100-SXM4-80GB", "10.13.0")
    with pytest.raises(PlanMismatch, match="TensorRT 10.13.0"):
        check_plan(meta, "NVIDIA H200", "10.14.1")


# ---- GPU (skipped here: no CUDA) --------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["encoder", "mlm"])
def test_torch_fp16_cuda_matches_fp32(dirs: dict[str, Path], kind: str) -> None:
    if not cuda():
        pytest.skip("needs a CUDA GPU")
    from dqd_server.engine.backends.torch_backend import TorchBackend

    feeds = encoder_feeds(VALUES) if kind == "encoder" else mlm_feeds("material", VALUES)
    ref = TorchBackend(kind, dirs[kind], cuda=False).run(feeds)
    half = TorchBackend(kind, dirs[kind], cuda=True, fp16=True).run(feeds)
    valid = feeds["attention_mask"].astype(bool) if kind == "mlm" else slice(None)
    assert np.abs(ref[valid] - half[valid]).max() <= TOLERANCE["fp16"][kind]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["encoder", "mlm"])
def test_onnxruntime_cuda_matches_fp32(dirs: dict[str, Path], kind: str) -> None:
    if not cuda():
        pytest.skip("needs a CUDA GPU")
    from dqd_server.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
    from dqd_server.engine.backends.torch_backend import TorchBackend

    gpu = OnnxRuntimeBackend(kind, dirs[kind] / "model.onnx", cuda=True)
    if gpu.name != "onnxruntime-cuda":
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    feeds = encoder_feeds(VALUES) if kind == "encoder" else mlm_feeds("material", VALUES)
    valid = feeds["attention_mask"].astype(bool) if kind == "mlm" else slice(None)
    ref = TorchBackend(kind, dirs[kind], cuda=False).run(feeds)
    assert np.abs(ref[valid] - gpu.run(feeds)[valid]).max() <= TOLERANCE["fp16"][kind]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["encoder", "mlm"])
def test_tensorrt_matches_fp32(dirs: dict[str, Path], kind: str, tmp_path: Path) -> None:
    if not cuda():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("tensorrt")
    import shutil
    import sys

    from dqd_server.engine.backends.tensorrt_backend import TensorRTBackend
    from dqd_server.engine.backends.torch_backend import TorchBackend

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from build_trt_engines import build_plan

    work = tmp_path / kind
    shutil.copytree(dirs[kind], work)
    plan = build_plan(work / "model.onnx", max_batch=32, opt_batch=8, max_seq=64, opt_seq=16)
    feeds = encoder_feeds(VALUES) if kind == "encoder" else mlm_feeds("material", VALUES)
    valid = feeds["attention_mask"].astype(bool) if kind == "mlm" else slice(None)
    ref = TorchBackend(kind, dirs[kind], cuda=False).run(feeds)
    assert np.abs(ref[valid] - TensorRTBackend(kind, plan).run(feeds)[valid]).max() <= TOLERANCE["fp16"][kind]
