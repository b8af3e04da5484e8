"""Bounded soak/load test on loopback: N concurrent Detect streams for a fixed time against a real server.

    python bench/soak.py [--streams 16] [--seconds 60] [--batch-rows 5000] [--workers 1] [--target HOST:PORT]
                         [--json bench/results/soak.json]

Each stream sends catalog batches (generated once, with injected errors) in lock-step and times each
batch's round trip (send -> findings back). Reports throughput (rows/s), p50/p99 batch latency and
failures (target: zero). Starts its own server on a free loopback port unless --target is given; only
loopback addresses; every loop stops at the deadline.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from dqd_server._proto import detection_pb2 as pb
from dqd_server._proto import detection_pb2_grpc
from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog, inject_errors
from dqd_server.engine.ipc import encode_batch
from dqd_server.launcher import ServerProcess


def one_stream(target: str, payloads: list[tuple[bytes, int]], deadline: float, out: dict) -> None:
    """Lock-step: send a batch, wait for its findings, record the round trip; until the deadline."""
    answered: queue.Queue[float] = queue.Queue()
    sent_at: list[float] = []

    def requests() -> Iterator[pb.DetectRequest]:
        yield pb.DetectRequest(config=pb.DetectConfig(columns=CATALOG_COLUMNS))
        k = 0
        while time.monotonic() < deadline:
            payload, _ = payloads[k % len(payloads)]
            sent_at.append(time.perf_counter())
            yield pb.DetectRequest(arrow_batch=payload)
            answered.get(timeout=60)
            k += 1

    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20),
                                                ("grpc.max_receive_message_length", 64 << 20)]) as ch:
        try:
            for resp in detection_pb2_grpc.DetectionServiceStub(ch).Detect(requests(), timeout=deadline - time.monotonic() + 60):
                if resp.WhichOneof("payload") == "findings":
                    out["latencies"].append(time.perf_counter() - sent_at[resp.findings.batch_index])
                    out["rows"] += resp.findings.num_rows
                    answered.put(time.perf_counter())
        except grpc.RpcError as err:
            out["failures"].append(f"{err.code().name}: {err.details()}")
        except Exception as exc:  # noqa: BLE001 - a soak counts every failure
            out["failures"].append(repr(exc))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--batch-rows", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1, help="API_WORKERS of the server this script starts")
    ap.add_argument("--target", help="an already running server (loopback) instead of starting one")
    ap.add_argument("--json", type=Path, default=Path("bench/results/soak.json"))
    args = ap.parse_args(argv)
    if args.target and not args.target.startswith(("127.", "localhost", "[::1]")):
        ap.error("--target must be a loopback address")

    dirty, _ = inject_errors(generate_catalog(50_000, seed=11), rate=0.02, seed=11)
    payloads = [(encode_batch(b.select(list(CATALOG_COLUMNS))), b.num_rows)
                for b in dirty.to_batches(max_chunksize=args.batch_rows)]
    server = None if args.target else ServerProcess(env={"API_WORKERS": str(args.workers), "LOG_LEVEL": "WARNING"}).start()
    target = args.target or server.target
    results = [{"latencies": [], "rows": 0, "failures": []} for _ in range(args.streams)]
    try:
        started = time.monotonic()
        deadline = started + args.seconds
        threads = [threading.Thread(target=one_stream, args=(target, payloads, deadline, r)) for r in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 120)
        wall = time.monotonic() - started
    finally:
        if server is not None:
            server.stop()
    lat = sorted(x for r in results for x in r["latencies"])
    rows = sum(r["rows"] for r in results)
    failures = [f for r in results for f in r["failures"]]
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    report = {
        "config": {"streams": args.streams, "seconds": args.seconds, "batch_rows": args.batch_rows,
                   "workers": args.workers, "fields": len(CATALOG_COLUMNS)},
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "rows": rows, "batches": len(lat), "wall_seconds": wall, "rows_per_second": rows / wall,
        "latency_p50_ms": q[49] * 1000, "latency_p99_ms": q[98] * 1000, "failures": len(failures),
        "failure_samples": failures[:5],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"| streams | seconds | rows/s | batches | p50 ms | p99 ms | failures |\n|---:|---:|---:|---:|---:|---:|---:|\n"
          f"| {args.streams} | {wall:.0f} | {rows / wall:,.0f} | {len(lat):,} | {q[49] * 1000:.1f} | "
          f"{q[98] * 1000:.1f} | {len(failures)} |")
    print(f"JSON: {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
