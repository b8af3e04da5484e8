"""The dynamic batcher: merged batches across threads, order, splitting, length bucketing, errors, idle exit."""
from __future__ import annotations

import threading
import time

import pytest

from dqd_server.engine.batcher import DynamicBatcher


def echo_batches(log: list[list]) -> callable:
    def run(items: list) -> list:
        log.append(list(items))
        return [x * 10 if isinstance(x, int) else len(x) for x in items]
    return run


def test_results_come_back_in_order_and_big_requests_are_split() -> None:
    log: list[list] = []
    b = DynamicBatcher(echo_batches(log), max_batch_size=4, max_queue_delay=0.0)
    assert b.submit(list(range(10))) == [x * 10 for x in range(10)]
    assert [len(x) for x in log] == [4, 4, 2]
    assert b.submit([]) == []


def test_concurrent_callers_share_batches() -> None:
    log: list[list] = []
    gate = threading.Event()

    def slow(items: list) -> list:
        gate.wait(5)  # the first batch blocks until every caller has queued
        log.append(list(items))
        return [x * 10 for x in items]

    b = DynamicBatcher(slow, max_batch_size=64, max_queue_delay=0.05)
    results: dict[int, list] = {}

    def call(k: int) -> None:
        results[k] = b.submit([k * 100 + i for i in range(3)])

    threads = [threading.Thread(target=call, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(10)
    assert results == {k: [(k * 100 + i) * 10 for i in range(3)] for k in range(8)}
    assert b.stats.requests == 8 and b.stats.items == 24
    assert b.stats.batches < 8, "requests of different threads must be merged into shared batches"


def test_length_bucketing_cuts_padding() -> None:
    texts = ["x" * n for n in (1, 50, 2, 49, 3, 48, 4, 47)]
    sorted_b = DynamicBatcher(echo_batches([]), max_batch_size=2, max_queue_delay=0.0, length=len)
    assert sorted_b.submit(texts) == [len(t) for t in texts]
    # sorted: (1,2) (3,4) (47,48) (49,50) -> 2+4+48+50 = 104 padded tokens for 204 real ones... per batch max*2
    assert sorted_b.stats.padded_tokens == 2 * (2 + 4 + 48 + 50)
    assert sorted_b.stats.real_tokens == sum(len(t) for t in texts)


def test_max_batch_tokens_bounds_padded_size() -> None:
    log: list[list] = []
    b = DynamicBatcher(echo_batches(log), max_batch_size=100, max_queue_delay=0.0, length=len, max_batch_tokens=100)
    b.submit(["x" * 30] * 7)
    assert [len(x) for x in log] == [3, 3, 1]


def test_an_error_reaches_the_caller_and_the_worker_survives() -> None:
    def run(items: list) -> list:
        if "boom" in items:
            raise ValueError("bad batch")
        return items

    b = DynamicBatcher(run, max_batch_size=8, max_queue_delay=0.0)
    with pytest.raises(ValueError, match="bad batch"):
        b.submit(["boom", "a"])
    assert b.submit(["ok"]) == ["ok"]


def test_wrong_result_count_is_an_error() -> None:
    b = DynamicBatcher(lambda items: items[:-1], max_batch_size=8, max_queue_delay=0.0)
    with pytest.raises(RuntimeError, match="returned 1 results for 2"):
        b.submit([1, 2])


def test_a_lone_request_waits_at_most_about_the_queue_delay() -> None:
    b = DynamicBatcher(lambda items: items, max_batch_size=1000, max_queue_delay=0.05)
    started = time.perf_counter()
    assert b.submit([1]) == [1]
    assert time.perf_counter() - started < 1.0


def test_the_worker_exits_when_idle_and_restarts_on_demand() -> None:
    b = DynamicBatcher(lambda items: items, max_batch_size=4, max_queue_delay=0.0, idle_exit=0.05)
    assert b.submit([1]) == [1]
    first = b._worker
    deadline = time.monotonic() + 5
    while first is not None and first.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first is None or not first.is_alive()
    assert b.submit([2]) == [2]


def test_closed_batcher_refuses_work() -> None:
    b = DynamicBatcher(lambda items: items)
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit([1])
