"""Dynamic batching shared by every concurrent caller of one model (Triton's dynamic batcher, in-process).

Why: a model runs most efficiently on full batches, but each Detect stream asks for a few values at a time, from its
own worker thread. ``DynamicBatcher.submit`` (thread-safe, blocking) queues a request; one worker thread waits for
the first request, then keeps collecting until ``max_batch_size`` items are queued or ``max_queue_delay`` has
passed since that first request, sorts everything it took by length (length bucketing: similar lengths share a
batch, so padding is small), runs ``run_batch`` on chunks of at most ``max_batch_size`` items and
``max_batch_tokens`` padded tokens, and hands every caller exactly its own results, in its order. A request larger
than a batch is simply split. An exception in ``run_batch`` is raised in every caller whose items were in that
round; the worker keeps serving.

The worker thread is a daemon started on first use and ends after ``idle_exit`` seconds without work, so a batcher
of a model that was unloaded (e.g. after ReloadModels) does not keep a thread or the model alive.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Request(Generic[Item, Result]):
    items: Sequence[Item]
    future: Future = field(default_factory=Future)
    results: list = field(default_factory=list)
    left: int = 0


@dataclass
class BatcherStats:
    """Counters for tests and metrics: how well requests were merged."""

    requests: int = 0
    items: int = 0
    batches: int = 0
    rounds: int = 0
    padded_tokens: int = 0
    real_tokens: int = 0


class DynamicBatcher(Generic[Item, Result]):
    """Queue items from many threads, run them in merged, length-sorted batches on one worker thread."""

    def __init__(self, run_batch: Callable[[list[Item]], Sequence[Result]], *, max_batch_size: int = 64,
                 max_queue_delay: float = 0.002, length: Callable[[Item], int] | None = None,
                 max_batch_tokens: int | None = None, name: str = "dqd-batcher", idle_exit: float = 30.0) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.length = length
        self.max_batch_tokens = max_batch_tokens
        self.name = name
        self.idle_exit = idle_exit
        self.stats = BatcherStats()
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False

    def submit(self, items: Sequence[Item], timeout: float | None = None) -> list[Result]:
        """Results for ``items`` in order (blocks until the worker has run them)."""
        if not len(items):
            return []
        request: _Request = _Request(items, left=len(items), results=[None] * len(items))
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._queue.append(request)
            self.stats.requests += 1
            self.stats.items += len(items)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._worker.start()
            self._cond.notify()
        return request.future.result(timeout)

    def close(self) -> None:
        """Stop accepting work; queued requests still run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ---- worker -----------------------------------------------------------------------------------------

    def _take(self) -> list[_Request] | None:
        """Wait for a first request, then gather until a batch is full or the queue delay has passed."""
        with self._cond:
            idle_since = time.monotonic()
            while not self._queue:
                if self._closed or time.monotonic() - idle_since > self.idle_exit:
                    self._worker = None  # under the lock: the next submit starts a fresh worker
                    return None
                self._cond.wait(timeout=min(1.0, self.idle_exit))
            deadline = time.monotonic() + self.max_queue_delay
            while sum(len(r.items) for r in self._queue) < self.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(timeout=left)
            taken = list(self._queue)
            self._queue.clear()
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            self._run_round(taken)

    def _run_round(self, taken: list[_Request]) -> None:
        self.stats.rounds += 1
        flat = [(r, i) for r in taken for i in range(len(r.items))]
        if self.length is not None:
            flat.sort(key=lambda ri: self.length(ri[0].items[ri[1]]))
        for chunk in self._chunks(flat):
            items = [r.items[i] for r, i in chunk]
            try:
                results = self.run_batch(items)
                if len(results) != len(items):
                    raise RuntimeError(f"{self.name}: run_batch returned {len(results)} results for {len(items)}")
            except BaseException as exc:  # noqa: BLE001 - delivered to the callers, the worker lives on
                for r in {id(r): r for r, _ in chunk}.values():
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            self.stats.batches += 1
            if self.length is not None:
                lengths = [self.length(x) for x in items]
                self.stats.real_tokens += sum(lengths)
                self.stats.padded_tokens += max(lengths) * len(lengths)
            for (r, i), res in zip(chunk, results):
                if r.future.done():
                    continue
                r.results[i] = res
                r.left -= 1
                if r.left == 0:
                    r.future.set_result(r.results)

    def _chunks(self, flat: list) -> list[list]:
        """Consecutive runs of at most max_batch_size items and max_batch_tokens padded tokens."""
        out: list[list] = []
        current: list = []
        widest = 0
        for r, i in flat:
            width = self.length(r.items[i]) if self.length is not None else 0
            full = len(current) >= self.max_batch_size
            too_many_tokens = (self.max_batch_tokens is not None and current
                               and max(widest, width) * (len(current) + 1) > self.max_batch_tokens)
            if current and (full or too_many_tokens):
                out.append(current)
                current, widest = [], 0
            current.append((r, i))
            widest = max(widest, width)
        if current:
            out.append(current)
        return out
