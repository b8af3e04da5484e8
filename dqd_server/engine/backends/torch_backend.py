"""PyTorch backend: the fp32 CPU reference, and CUDA in fp16 when a GPU is there.

fp16 on CUDA halves memory traffic and uses tensor cores; the graphs keep their reductions that need range in fp32
(the embedding's normalisation, the masked LM's log-softmax), so only the transformer runs in half precision.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from dqd_server.models.graphs import INPUTS, load_module


class TorchBackend:
    """Runs a graph's torch module; thread-safe (a lock serialises calls, the batcher calls from one thread)."""

    def __init__(self, kind: str, model_dir: Path, *, cuda: bool = False, fp16: bool | None = None) -> None:
        import torch

        self.kind = kind
        self.inputs = INPUTS[kind]
        self.device = torch.device("cuda" if cuda else "cpu")
        half = cuda if fp16 is None else fp16
        self.precision = "fp16" if half else "fp32"
        self.name = f"torch-{self.device.type}-{self.precision}"
        module = load_module(kind, model_dir).to(self.device)
        self.module = module.half() if half else module.float()
        self.max_batch_size = 1 << 16
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device, non_blocking=True)
                    for n in self.inputs]
            out = self.module(*args)
            return out.float().cpu().numpy()
