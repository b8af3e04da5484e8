"""Inference backends for the model-based methods: PyTorch, ONNX Runtime and TensorRT behind one interface.

Every backend runs one of the two graphs of ``dqd_server.models.graphs`` (``encoder`` or ``mlm``) on padded numpy
int64 inputs and returns a float32 numpy array — the same numbers as the PyTorch fp32 module within
``TOLERANCE`` (tested for ONNX Runtime on CPU; see below for GPUs).

Choice (``MODEL_DEVICE``, ``open_backend``):

* ``auto``: TensorRT when a plan built for this GPU and TensorRT version exists (``scripts/build_trt_engines.py``),
  else PyTorch on CUDA in fp16, else ONNX Runtime with its CUDA provider (onnxruntime-gpu without torch CUDA),
  else ONNX Runtime on the CPU, else PyTorch on the CPU.
* ``cpu``: ONNX Runtime on the CPU (PyTorch CPU when onnxruntime or the ONNX file is missing).
* ``cuda``: TensorRT plan if present, else PyTorch CUDA fp16; an error when there is no CUDA device.
* ``MODEL_BACKEND=torch|onnxruntime|tensorrt`` forces a backend (benchmarks, parity checks).

The server passes these from its ``Settings`` (``models/runtime.py: RuntimeOptions``); nothing here reads the
environment.

What has NOT been run on a GPU (no GPU was available where this was written): the TensorRT backend and plan
builder, PyTorch CUDA fp16, ONNX Runtime's CUDA provider. Their code paths and tolerances are prepared and
``scripts/gpu_check.sh`` verifies them end to end on a CUDA machine; tests for them are marked ``gpu``.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger("dqd.models")

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("torch", "onnxruntime", "tensorrt")
# Max |difference| to PyTorch fp32, per graph output. Embeddings are unit vectors (cosine scale); token
# log-probabilities are natural logs. fp32 backends (ONNX Runtime CPU) stay orders of magnitude below these;
# the fp16 bounds are what gpu_check.py asserts for torch-fp16 / ORT-CUDA / TensorRT (unverified on a GPU here).
TOLERANCE = {"fp32": {"encoder": 1e-4, "mlm": 2e-3}, "fp16": {"encoder": 1e-2, "mlm": 0.15}}


@runtime_checkable
class Backend(Protocol):
    """Runs one graph; ``run`` is called from one thread at a time (the model's batcher worker)."""

    name: str  # e.g. "onnxruntime-cpu", "torch-cuda-fp16", "tensorrt"
    precision: str  # "fp32" or "fp16"
    max_batch_size: int  # largest batch this backend accepts (TensorRT: the plan's profile)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ...


class PlanMismatch(RuntimeError):
    """A TensorRT plan was built for another GPU or TensorRT version; it must be rebuilt, not used."""


def cuda_available() -> bool:
    """True when torch sees a CUDA device (torch is only imported if installed)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def ort_cuda_available() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def gpu_slug() -> str:
    """Folder name for this GPU's TensorRT plans, e.g. ``NVIDIA_H200``."""
    import torch

    name = torch.cuda.get_device_name(0)
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def plan_path(model_dir: Path) -> Path | None:
    """This GPU's TensorRT plan of the graph in ``model_dir``, if one was built."""
    if not cuda_available():
        return None
    path = model_dir / "plans" / gpu_slug() / "model.plan"
    return path if path.is_file() else None


def open_backend(kind: str, model_dir: Path, *, device: str = "auto", backend: str | None = None,
                 threads: int = 0) -> Backend:
    """The backend for graph ``kind`` whose files are in ``model_dir`` (``model.onnx``, plans, torch weights);
    ``threads`` bounds ONNX Runtime's intra-op pool (0: all cores)."""
    device = (device or "auto").strip().lower()
    if device not in DEVICES:
        raise ValueError(f"MODEL_DEVICE={device!r}: use one of {DEVICES}")
    backend = (backend or "").strip().lower() or None
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"MODEL_BACKEND={backend!r}: use one of {BACKENDS}")
    onnx_file = model_dir / "model.onnx"
    has_ort = importlib.util.find_spec("onnxruntime") is not None and onnx_file.is_file()
    has_torch = importlib.util.find_spec("torch") is not None
    if device == "cuda" and not cuda_available() and not (backend == "onnxruntime" and ort_cuda_available()):
        raise RuntimeError("MODEL_DEVICE=cuda but no CUDA device is visible to torch")
    use_gpu = device == "cuda" or (device == "auto" and (cuda_available() or (not has_torch and ort_cuda_available())))

    if backend == "tensorrt" or (backend is None and use_gpu):
        plan = plan_path(model_dir) if has_torch else None
        if plan is not None and importlib.util.find_spec("tensorrt") is not None:
            from .tensorrt_backend import TensorRTBackend

            try:
                return TensorRTBackend(kind, plan)
            except PlanMismatch as exc:
                if backend == "tensorrt":
                    raise
                log.warning("not using TensorRT plan %s: %s", plan, exc)
        elif backend == "tensorrt":
            raise RuntimeError(f"no usable TensorRT plan for this GPU under {model_dir / 'plans'} "
                               "(build one with scripts/build_trt_engines.py) or tensorrt is not installed")
    if backend == "onnxruntime" or (backend is None and (not use_gpu or not has_torch) and has_ort):
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(kind, onnx_file, cuda=use_gpu and ort_cuda_available(), threads=threads)
    if not has_torch:
        raise ImportError(f"no backend for {model_dir}: install onnxruntime (and keep model.onnx) or torch")
    from .torch_backend import TorchBackend

    return TorchBackend(kind, model_dir, cuda=use_gpu and cuda_available())
