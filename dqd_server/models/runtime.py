"""Loaded networks, shared by every detector, engine and stream of the process.

A ``Network`` is one graph (``encoder`` or ``mlm``) on one backend behind one ``DynamicBatcher``, so values of all
field types and all concurrent streams go through the same batches. Networks are kept in a process-wide LRU pool
keyed by (kind, folder, pinned sha256, device), sized by ``MODEL_CACHE_SIZE``: ReloadModels re-creates the detectors,
but a network whose files did not change is reused instead of loaded again, and a changed one gets a new key.

Batching settings (environment, read when a network is loaded): ``DQD_MODEL_MAX_BATCH`` (items per batch; default
64 on CPU, 256 on GPU), ``DQD_MODEL_MAX_DELAY_MS`` (queue delay; default 2 ms), ``DQD_MODEL_MAX_TOKENS`` (padded
tokens per batch; default 8192 CPU / 65536 GPU).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dqd_server.engine.backends import Backend, model_device, open_backend
from dqd_server.engine.batcher import DynamicBatcher

from . import mlm_score
from .base import Encoded, encode, field_prefix, pad, special_ids


class Network:
    """One graph on one backend with its dynamic batcher."""

    def __init__(self, kind: str, model_dir: Path, backend: Backend, tokenizer: str | None = None) -> None:
        self.kind = kind
        self.model_dir = model_dir
        self.backend = backend
        self.tokenizer = tokenizer
        gpu = "cuda" in backend.name or backend.name == "tensorrt"
        max_batch = min(int(os.environ.get("DQD_MODEL_MAX_BATCH", "256" if gpu else "64")), backend.max_batch_size)
        max_tokens = int(os.environ.get("DQD_MODEL_MAX_TOKENS", "65536" if gpu else "8192"))
        delay = float(os.environ.get("DQD_MODEL_MAX_DELAY_MS", "2")) / 1000.0
        run = self._run_encoder if kind == "encoder" else self._run_mlm
        length = len if kind == "encoder" else mlm_score.item_length
        self.batcher: DynamicBatcher = DynamicBatcher(run, max_batch_size=max_batch, max_queue_delay=delay,
                                                      length=length, max_batch_tokens=max_tokens,
                                                      name=f"dqd-{kind}-batcher")

    # run_batch functions (worker thread) ------------------------------------------------------------------
    def _run_encoder(self, items: list[np.ndarray]) -> np.ndarray:
        ids, mask = pad(items)
        return self.backend.run({"input_ids": ids, "attention_mask": mask})

    def _run_mlm(self, items: list[mlm_score.Item]) -> list[np.ndarray]:
        out = self.backend.run(mlm_score.feeds_of(items))
        return [out[i, : len(it[0])] for i, it in enumerate(items)]

    # public API (any thread) -----------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings [n, d] of ``texts`` (encoder)."""
        if not len(texts):
            return np.zeros((0, 384), dtype=np.float32)
        encs = encode(texts, tokenizer_path=self.tokenizer)
        return np.stack(self.batcher.submit([e.ids for e in encs])).astype(np.float32)

    def token_logprobs(self, field_type: str, values: Sequence[str], scoring: str = "single"
                       ) -> tuple[list[Encoded], list[np.ndarray]]:
        """Per value: its encoding and [L, 2] (log-probability, prediction entropy) of its tokens (masked LM)."""
        encs = encode(values, [field_prefix(field_type)] * len(values), tokenizer_path=self.tokenizer)
        if scoring == "pll":
            items, owners = mlm_score.pll_items(encs, special_ids(self.tokenizer)["mask"])
            return encs, mlm_score.collect_pll(encs, owners, self.batcher.submit(items))
        if scoring != "single":
            raise ValueError(f"unknown scoring {scoring!r}; use one of {mlm_score.SCORINGS}")
        return encs, mlm_score.collect_single(encs, self.batcher.submit(mlm_score.single_items(encs)))


class NetworkPool:
    """Process-wide LRU of loaded networks (``MODEL_CACHE_SIZE`` of them)."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Network] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}

    def capacity(self) -> int:
        return self.size or max(1, int(os.environ.get("MODEL_CACHE_SIZE", "10") or 10))

    def get(self, kind: str, model_dir: Path, pin: str, tokenizer: str | None = None,
            backend: str | None = None) -> Network:
        key = (kind, str(Path(model_dir).resolve()), pin, model_device(), backend or os.environ.get("DQD_MODEL_BACKEND"))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one thread loads a network; the others wait for it instead of loading it again
            with self._lock:
                if key in self._items:
                    return self._items[key]
            net = Network(kind, Path(model_dir), open_backend(kind, Path(model_dir), backend=backend), tokenizer)
            with self._lock:
                self._items[key] = net
                self._loading.pop(key, None)
                while len(self._items) > self.capacity():
                    self._items.popitem(last=False)  # its batcher thread ends when idle; in-flight users finish
            return net

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


POOL = NetworkPool()
