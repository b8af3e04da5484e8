"""Loaded networks, shared by every detector, engine and stream of the process.

A ``Network`` is one graph (``encoder`` or ``mlm``) on one backend behind one ``DynamicBatcher``, so values of all
field types and all concurrent streams go through the same batches. Networks are kept in a process-wide LRU pool
keyed by (kind, folder, pinned sha256, runtime options), sized by ``MODEL_CACHE_SIZE``: ReloadModels re-creates the detectors,
but a network whose files did not change is reused instead of loaded again, and a changed one gets a new key.

How networks are served is one ``RuntimeOptions`` (the ``MODEL_*`` settings of ``dqd_server.config``: device,
forced backend, batch size, queue delay, padded tokens per batch, ONNX Runtime threads, pool size). The server
configures the pool from its settings at start-up; other users (benchmarks, ``evaluate``) get the same options
read from the environment by ``Settings`` on first use, so there is one parser of those variables.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dqd_server.engine.backends import Backend, open_backend
from dqd_server.engine.batcher import DynamicBatcher

from . import mlm_score
from .base import Encoded, encode, field_prefix, pad, special_ids


@dataclass(frozen=True)
class RuntimeOptions:
    """How networks run and batch; 0 means "the default for the device" (64 values / 8192 padded tokens per batch
    on a CPU, 256 / 65536 on a GPU: a CPU gains little from bigger batches and pays for their padding)."""

    device: str = "auto"  # MODEL_DEVICE: auto, cpu or cuda
    backend: str = ""  # MODEL_BACKEND: force torch, onnxruntime or tensorrt ("" = chosen by device)
    max_batch: int = 0  # MODEL_MAX_BATCH
    max_delay_ms: float = 2.0  # MODEL_MAX_DELAY_MS: how long a batch waits for more values after the first
    max_tokens: int = 0  # MODEL_MAX_TOKENS
    threads: int = 0  # MODEL_THREADS: ONNX Runtime intra-op threads (0: all cores)
    pool_size: int = 10  # MODEL_CACHE_SIZE: networks kept loaded

    @classmethod
    def from_settings(cls, settings: Any) -> RuntimeOptions:
        return cls(device=settings.model_device, backend=settings.model_backend, max_batch=settings.model_max_batch,
                   max_delay_ms=settings.model_max_delay_ms, max_tokens=settings.model_max_tokens,
                   threads=settings.model_threads, pool_size=settings.model_cache_size)

    @classmethod
    def from_env(cls) -> RuntimeOptions:
        from dqd_server.config import Settings

        return cls.from_settings(Settings.from_env())


class Network:
    """One graph on one backend with its dynamic batcher."""

    def __init__(self, kind: str, model_dir: Path, backend: Backend, tokenizer: str | None = None,
                 options: RuntimeOptions = RuntimeOptions()) -> None:
        self.kind = kind
        self.model_dir = model_dir
        self.backend = backend
        self.tokenizer = tokenizer
        gpu = "cuda" in backend.name or backend.name == "tensorrt"
        max_batch = min(options.max_batch or (256 if gpu else 64), backend.max_batch_size)
        max_tokens = options.max_tokens or (65536 if gpu else 8192)
        delay = options.max_delay_ms / 1000.0
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
    """Process-wide LRU of loaded networks (``RuntimeOptions.pool_size`` of them)."""

    def __init__(self, options: RuntimeOptions | None = None) -> None:
        self._options = options
        self._items: OrderedDict[tuple, Network] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}

    @property
    def options(self) -> RuntimeOptions:
        if self._options is None:
            self._options = RuntimeOptions.from_env()
        return self._options

    def configure(self, options: RuntimeOptions | None = None, **changes: Any) -> None:
        """Serve with ``options`` (and/or ``changes`` to the current ones) from now on; loaded networks are dropped
        when anything changed (streams using them finish on them)."""
        new = replace(options or self.options, **changes)
        with self._lock:
            if new != self._options:
                self._options = new
                self._items.clear()

    def capacity(self) -> int:
        return max(1, self.options.pool_size)

    def get(self, kind: str, model_dir: Path, pin: str, tokenizer: str | None = None) -> Network:
        options = self.options
        key = (kind, str(Path(model_dir).resolve()), pin, options)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one thread loads a network; the others wait for it instead of loading it again
            with self._lock:
                if key in self._items:
                    return self._items[key]
            _limit_blas_threads()
            backend = open_backend(kind, Path(model_dir), device=options.device, backend=options.backend or None,
                                   threads=options.threads)
            net = Network(kind, Path(model_dir), backend, tokenizer, options)
            with self._lock:
                self._items[key] = net
                self._loading.pop(key, None)
                while len(self._items) > self.capacity():
                    self._items.popitem(last=False)  # its batcher thread ends when idle; in-flight users finish
            return net

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _limit_blas_threads() -> None:
    """Give numpy's BLAS one thread once a network is loaded. dqd's own matrix products (the kNN query: a few
    hundred values against at most a few thousand references) are small, and BLAS threads that spin after a
    product take the cores the inference backend needs: measured on 2 cores, 17 % less model throughput."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


POOL = NetworkPool()
