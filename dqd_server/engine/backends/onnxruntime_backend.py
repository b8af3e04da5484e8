"""ONNX Runtime backend: runs dqd's own ONNX export (``model.onnx`` next to the weights), CPU or CUDA provider.

Why it is the CPU default: no torch needed to serve, full graph optimisations, and it releases the GIL while it
runs. Threads: ONNX Runtime's intra-op pool uses the machine's cores (``MODEL_THREADS`` bounds it), and one
batch runs at a time (the batcher's worker), so concurrent streams do not oversubscribe the CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dqd_server.models import GRAPH_INPUTS as INPUTS


class OnnxRuntimeBackend:
    def __init__(self, kind: str, onnx_file: Path, *, cuda: bool = False, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(onnx_file), sess_options=options, providers=providers)
        active = self.session.get_providers()[0]
        self.name = "onnxruntime-cuda" if active == "CUDAExecutionProvider" else "onnxruntime-cpu"
        self.precision = "fp32"
        self.kind = kind
        self.inputs = INPUTS[kind]
        self.max_batch_size = 1 << 16

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run(None, {n: np.ascontiguousarray(feeds[n], dtype=np.int64) for n in self.inputs})[0]
        return np.asarray(out, dtype=np.float32)
