"""TensorRT backend: runs a plan built by ``scripts/build_trt_engines.py`` (FP16, dynamic batch/sequence profile).

A plan only works on the GPU model and TensorRT version it was built with; ``model.plan.json`` next to it records
both (and the profile), and this backend refuses (``PlanMismatch``) a plan whose metadata does not match, rather
than failing later or silently computing garbage. Inputs and outputs live in torch CUDA tensors (TensorRT 10
``set_tensor_address`` / ``execute_async_v3`` API). Batches larger than the profile's maximum are split.

NOT RUN ON A GPU YET: written against the TensorRT 10 Python API without a GPU to test on; ``scripts/gpu_check.sh``
is the end-to-end check (build, parity against PyTorch fp32, throughput) for the first session with a CUDA device.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from dqd_server.models import GRAPH_INPUTS as INPUTS
from dqd_server.models import GRAPH_OUTPUTS as OUTPUTS

from . import PlanMismatch


def plan_metadata(plan: Path) -> dict:
    meta_file = plan.with_name(plan.name + ".json")
    if not meta_file.is_file():
        raise PlanMismatch(f"{plan}: no {meta_file.name} (rebuild with scripts/build_trt_engines.py)")
    return json.loads(meta_file.read_text())


def check_plan(meta: dict, gpu_name: str, trt_version: str) -> None:
    """Raise PlanMismatch unless the plan was built for this GPU and TensorRT version."""
    if meta.get("gpu_name") != gpu_name:
        raise PlanMismatch(f"plan built for GPU {meta.get('gpu_name')!r}, this is {gpu_name!r}")
    if meta.get("tensorrt_version") != trt_version:
        raise PlanMismatch(f"plan built with TensorRT {meta.get('tensorrt_version')}, this is {trt_version}")


class TensorRTBackend:
    def __init__(self, kind: str, plan: Path) -> None:
        import tensorrt as trt
        import torch

        self.meta = plan_metadata(plan)
        check_plan(self.meta, torch.cuda.get_device_name(0), trt.__version__)
        self.kind = kind
        self.inputs = INPUTS[kind]
        self.output = OUTPUTS[kind]
        self.name = "tensorrt"
        self.precision = "fp16" if self.meta.get("fp16", True) else "fp32"
        self.max_batch_size = int(self.meta["profile"]["max"][0])
        self.max_seq = int(self.meta["profile"]["max"][1])
        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise PlanMismatch(f"{plan}: TensorRT could not deserialize the plan")
        self.context = self.engine.create_execution_context()
        self._dtypes = {n: self._torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in (*self.inputs, self.output)}
        self.stream = torch.cuda.Stream()
        self._lock = threading.Lock()

    @staticmethod
    def _torch_dtype(trt, dtype):
        import torch

        return {trt.int64: torch.int64, trt.int32: torch.int32, trt.float32: torch.float32,
                trt.float16: torch.float16}[dtype]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = len(feeds["input_ids"])
        if feeds["input_ids"].shape[1] > self.max_seq:
            raise ValueError(f"sequence of {feeds['input_ids'].shape[1]} tokens exceeds the plan's {self.max_seq}")
        if n > self.max_batch_size:
            parts = [self.run({k: v[i: i + self.max_batch_size] for k, v in feeds.items()})
                     for i in range(0, n, self.max_batch_size)]
            return np.concatenate(parts)
        torch = self._torch
        with self._lock, torch.cuda.stream(self.stream):
            bound = []
            for name in self.inputs:
                t = torch.from_numpy(np.ascontiguousarray(feeds[name])).to("cuda", self._dtypes[name])
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
                bound.append(t)
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=self._dtypes[self.output],
                              device="cuda")
            self.context.set_tensor_address(self.output, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self.stream.synchronize()
            return out.float().cpu().numpy()
