"""dqd throughput benchmark: in-process engine, end to end through Detect, and transport ceilings, in one run.

    .venv/bin/python bench/throughput.py [--rows 1000000] [--batch-size 65536] [--workers 2] [--repeats 3]
                                         [--json bench/results/throughput.json]

One generated catalog (``dqd_server.catalog.generate_catalog`` + ``inject_errors`` at 2 %, fixed seed), written
as Parquet; 8 mapped columns = the 9 catalog columns but ``price`` (column name = field type); methods
validation + pattern (the server default). Every measurement runs ``--repeats`` times; the table shows the
median (min..max) rows/s. See bench/README.md for what each line means and how to read the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402
from dqd_server.engine.cache import VerdictCache  # noqa: E402
from dqd_server.engine.ipc import decode_batch, encode_batch  # noqa: E402
from dqd_server.engine.pipeline import Engine  # noqa: E402
from dqd_server.engine.repository import BUNDLED_RULES  # noqa: E402
from dqd_server.engine.stream import StreamSession  # noqa: E402
from dqd_server.launcher import ServerProcess  # noqa: E402

WORKERS_MODULE = h.ROOT / "dqd_server" / "workers.py"

DESCRIPTIONS = {
    "a_engine_nocache": "(a) in-process Engine.detect, no verdict cache",
    "a_engine_cache_cold": "(a) in-process Engine.detect, fresh VerdictCache (first pass)",
    "a_engine_cache_warm": "(a) in-process Engine.detect, warm VerdictCache (second pass)",
    "a_servicer_path": "(a') in-process IPC decode + StreamSession.feed + IPC encode findings, no cache",
    "client_read_encode": "(client) read Parquet + select/cast + IPC encode, no network",
    "b_e2e_1worker_nocache": "(b) Detect end to end, API_WORKERS=1, ENABLE_CACHE=false, 1 client stream",
    "b_e2e_1worker_cold": "(b) Detect end to end, API_WORKERS=1, default cache, fresh server per run, 1 stream",
    "b_e2e_1worker": "(b) Detect end to end, API_WORKERS=1, default cache warm (same server), 1 stream",
    "b_e2e_1worker_Nstreams": "(b) Detect end to end, API_WORKERS=1, cache warm, N concurrent client streams",
    "b_e2e_Nworkers": "(b) Detect end to end, API_WORKERS=N, cache warm, N concurrent client streams",
    "c1_grpc_bidi": "(c1) ceiling: grpcio bidi stream (sync server), decode IPC + answer row count",
    "c1_grpc_bidi_aio": "(c1') ceiling: same over a grpc.aio server (dqd's server flavour)",
    "c2_flight_exchange": "(c2) ceiling: Arrow Flight DoExchange echo, one-row answer per batch",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(rows: int, fn: Callable[[], Any], server_pid: int | None = None) -> dict[str, Any]:
    """Run ``fn`` once; rows/s, this process's CPU, the server process's CPU (if any) and what the rest of
    the machine used meanwhile (``others_cpu_s``: other people's work shows up in the numbers)."""
    s0 = h.proc_cpu_seconds(server_pid) if server_pid else 0.0
    m0, c0, t0 = h.machine_cpu_seconds(), h.self_cpu_seconds(), time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    own, m1 = h.self_cpu_seconds() - c0, h.machine_cpu_seconds()
    run = {"rows": rows, "seconds": dt, "rows_per_s": rows / dt, "bench_process_cpu_s": own}
    if server_pid:
        run["server_cpu_s"] = h.proc_cpu_seconds(server_pid) - s0
    run["others_cpu_s"] = max(0.0, m1[0] - m0[0] - own - run.get("server_cpu_s", 0.0))
    run["steal_s"] = m1[1] - m0[1]
    return run


# ---- (a) in-process -------------------------------------------------------------------------------

def detect_all(engine: Engine, plan: Any, batches: list) -> int:
    first = 0
    findings = 0
    for b in batches:
        findings += engine.detect(plan, b, first).num_rows
        first += b.num_rows
    return findings


def servicer_path(engine: Engine, plan: Any, payloads: list[bytes]) -> None:
    """What the server does per message, without gRPC: decode, StreamSession.feed, encode the findings."""
    session = StreamSession(engine, plan, max_batch_rows=1_000_000)
    for p in payloads:
        result = session.feed(decode_batch(p))
        encode_batch(result.findings)
    session.finish()


def measure_in_process(ds: h.Dataset, repeats: int, results: dict[str, Any]) -> None:
    rows = ds.rows
    engine = Engine.from_repository(BUNDLED_RULES)
    plan = engine.plan(ds.columns, h.METHODS)
    findings = detect_all(engine, plan, ds.batches[:1])  # import/first-call costs out of the timing
    runs = []
    for _ in range(repeats):
        runs.append(timed(rows, lambda: detect_all(engine, plan, ds.batches)))
    findings = detect_all(engine, plan, ds.batches)
    results["a_engine_nocache"] = {**h.summarize(runs), "findings": findings}
    log(f"a_engine_nocache {results['a_engine_nocache']['median_rows_per_s']:,.0f} rows/s")

    cold, warm, stats = [], [], []
    for _ in range(repeats):
        cached = Engine.from_repository(BUNDLED_RULES, cache=VerdictCache())
        cplan = cached.plan(ds.columns, h.METHODS)
        cold.append(timed(rows, lambda: detect_all(cached, cplan, ds.batches)))
        warm.append(timed(rows, lambda: detect_all(cached, cplan, ds.batches)))
        stats.append({"cache_hits": cached.cache.hits, "cache_misses": cached.cache.misses})
    results["a_engine_cache_cold"] = {**h.summarize(cold), "cache": stats[-1]}
    results["a_engine_cache_warm"] = h.summarize(warm)
    log(f"a_engine_cache cold {results['a_engine_cache_cold']['median_rows_per_s']:,.0f} / warm "
        f"{results['a_engine_cache_warm']['median_rows_per_s']:,.0f} rows/s")

    runs = [timed(rows, lambda: servicer_path(engine, plan, ds.payloads)) for _ in range(repeats)]
    results["a_servicer_path"] = h.summarize(runs)

    from dqd_client import read_batches
    from dqd_client._models import encode_batch as client_encode

    def read_encode() -> None:
        for b in read_batches(ds.path, list(ds.columns), batch_size=ds.batch_size):
            client_encode(b)
    runs = [timed(rows, read_encode) for _ in range(repeats)]
    results["client_read_encode"] = h.summarize(runs)
    log(f"a_servicer_path {results['a_servicer_path']['median_rows_per_s']:,.0f}, client_read_encode "
        f"{results['client_read_encode']['median_rows_per_s']:,.0f} rows/s")


# ---- (b) end to end -------------------------------------------------------------------------------

def start_server(workers: int, datadir: Path, extra: dict[str, str] | None = None) -> ServerProcess:
    env = {"API_WORKERS": str(workers), "METRICS_PORT": "0", "DATA_PATH": str(datadir), "LOG_LEVEL": "WARNING",
           "SHUTDOWN_DELAY": "0", **(extra or {})}
    return ServerProcess(env=env, port=0, startup_timeout=90).start()


def worker_pids(srv: ServerProcess) -> tuple[list[int], dict[int, dict[str, int]]]:
    assert srv.proc is not None
    sockets = h.server_sockets(srv.proc.pid, srv.port)
    return sorted(p for p, s in sockets.items() if s["listen"]), sockets


def measure_e2e(ds: h.Dataset, name: str, workers: int, streams: int, repeats: int, datadir: Path,
                results: dict[str, Any], *, cache: str = "warm") -> None:
    """``cache``: "warm" — one server for all repeats, after an untimed full pass (the server's verdict cache
    has seen the file: a long-running server re-checking similar data); "cold" — a fresh server per repeat,
    warmed up with a 200-row catalog of another seed only (the cache meets the file for the first time);
    "off" — ENABLE_CACHE=false, like the engine without cache."""
    info: dict[str, Any] = {"api_workers": workers, "client_streams": streams, "server_cache": cache,
                            "each_stream": "checks the whole file (check_file, client reads Parquet)",
                            "client": "one spawned process per stream, one channel (TCP connection) each"}
    extra = {"ENABLE_CACHE": "false"} if cache == "off" else {"ENABLE_CACHE": "true"}
    runs: list[dict[str, Any]] = []
    try:
        for i in range(repeats if cache == "cold" else 1):
            runs += _server_session(ds, name, workers, streams, 1 if cache == "cold" else repeats, datadir, extra,
                                    full_warmup=cache != "cold", info=info)
        results[name] = {**h.summarize(runs), **info, "available": True}
    except Unavailable as exc:
        results[name] = {"available": False, "reason": str(exc), **info}
        log(f"{name}: unavailable: {exc}")
    except Exception as exc:  # noqa: BLE001 - keep the other measurements; the reason goes in the report
        results[name] = {"available": False, "reason": f"failed: {type(exc).__name__}: {str(exc)[:600]}", **info}
        log(f"{name}: failed: {exc}")


def _server_session(ds: h.Dataset, name: str, workers: int, streams: int, repeats: int, datadir: Path,
                    extra: dict[str, str], *, full_warmup: bool, info: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        srv = start_server(workers, datadir, extra)
    except RuntimeError as exc:  # e.g. API_WORKERS=N refused or a worker failed to start
        raise Unavailable(f"server did not start: {str(exc)[-600:]}") from None
    try:
        assert srv.proc is not None
        listeners, _ = worker_pids(srv)
        all_pids = h.descendants(srv.proc.pid)
        info["server_processes"] = len(all_pids)
        info["listening_processes"] = len(listeners)
        if workers > 1 and len(listeners) < workers:
            raise Unavailable(f"API_WORKERS={workers} started {len(listeners)} process(es) listening on the "
                              f"port ({len(all_pids)} process(es) in the server tree): no multi-worker support")
        with h.ClientPool(streams, srv.target, ds.path, ds.columns, ds.batch_size) as pool:
            spread = _spread(srv, listeners)
            attempts = 1
            # SO_REUSEPORT spreads connections by a hash of the 4-tuple; with N streams on N workers a
            # collision is likely. Reconnect (new ephemeral ports) a few times to measure N busy workers.
            while workers > 1 and streams >= workers and min(spread.values()) == 0 and attempts < 12:
                pool.reconnect()
                spread = _spread(srv, listeners)
                attempts += 1
            info["connections_per_worker"] = list(spread.values())
            info["connect_attempts"] = attempts
            # warm-up, untimed: code paths, regex caches, allocator (and, for "warm", the verdict cache)
            pool.run(all_pids, None if full_warmup else ds.warmup_path)
            runs = []
            for i in range(repeats):
                run = pool.run(h.descendants(srv.proc.pid))
                runs.append(run)
                log(f"{name} run: {run['rows_per_s']:,.0f} rows/s ({run['rows']:,} rows, {run['seconds']:.2f}s, "
                    f"server cpu {run['server_cpu_s']:.2f}s, client cpu {run['client_cpu_s']:.2f}s)")
            return runs
    except Exception:
        info["server_output_tail"] = "".join(srv.output[-20:])
        raise
    finally:
        info["server_exit_code"] = srv.stop()


class Unavailable(Exception):
    pass


def _spread(srv: ServerProcess, listeners: list[int]) -> dict[int, int]:
    _, sockets = worker_pids(srv)
    return {pid: sockets.get(pid, {}).get("connections", 0) for pid in listeners}


# ---- (c) transport ceilings ---------------------------------------------------------------------

def measure_ceilings(ds: h.Dataset, repeats: int, results: dict[str, Any]) -> None:
    for name, kind in (("c1_grpc_bidi", "grpc_sync"), ("c1_grpc_bidi_aio", "grpc_aio")):
        with h.CeilingServer(kind) as srv, h.grpc_ceiling_channel(srv.port) as channel:
            h.run_grpc_ceiling(channel, ds.payloads)  # warm-up pass on the same connection, untimed
            runs = []
            for _ in range(repeats):
                runs.append(timed(ds.rows, lambda: _check(h.run_grpc_ceiling(channel, ds.payloads), ds.rows),
                                  srv.pid))
        results[name] = {**h.summarize(runs), "message_bytes_total": ds.payload_bytes}
        log(f"{name} {results[name]['median_rows_per_s']:,.0f} rows/s")
    with h.CeilingServer("flight") as srv:
        client = h.flight_client(srv.port)
        h.run_flight_ceiling(client, ds.batches)  # warm-up pass, untimed
        runs = []
        for _ in range(repeats):
            runs.append(timed(ds.rows, lambda: _check(h.run_flight_ceiling(client, ds.batches), ds.rows), srv.pid))
        client.close()
    results["c2_flight_exchange"] = h.summarize(runs)
    log(f"c2_flight_exchange {results['c2_flight_exchange']['median_rows_per_s']:,.0f} rows/s")


def _check(counted: int, expected: int) -> None:
    if counted != expected:
        raise RuntimeError(f"ceiling server counted {counted} rows, expected {expected}")


# ---- (d) ratios and the report ----------------------------------------------------------------------

def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    def med(name: str) -> float | None:
        r = results.get(name)
        return r.get("median_rows_per_s") if r and r.get("available", True) else None

    out: dict[str, float | None] = {}
    for b in ("b_e2e_1worker_nocache", "b_e2e_1worker_cold", "b_e2e_1worker", "b_e2e_1worker_Nstreams",
              "b_e2e_Nworkers"):
        for other in ("a_engine_nocache", "a_engine_cache_cold", "a_engine_cache_warm", "a_servicer_path",
                      "c1_grpc_bidi", "c1_grpc_bidi_aio", "c2_flight_exchange"):
            x, y = med(b), med(other)
            out[f"{b} / {other}"] = round(x / y, 3) if x and y else None
    for a in ("a_engine_nocache", "a_engine_cache_cold", "a_engine_cache_warm"):
        x, y = med(a), med("c1_grpc_bidi")
        out[f"{a} / c1_grpc_bidi"] = round(x / y, 3) if x and y else None
    return out


def _one_line(reason: str) -> str:
    """A table-sized reason: the first line, plus the last line that names an error (tracebacks)."""
    lines = [x.strip() for x in reason.splitlines() if x.strip()]
    if len(lines) <= 1:
        return (lines or [""])[0][:300].replace("|", "/")
    errors = [x for x in lines if "Error" in x or "error" in x]
    text = lines[0].split(":", 1)[0] + ": " + (errors[-1] if errors else lines[-1])
    return text[:300].replace("|", "/")


def _fmt(x: float | None) -> str:
    return f"{x:,.0f}" if x is not None else "n/a"


def table(results: dict[str, Any], rat: dict[str, float | None], rows: int, workers: int) -> str:
    """Markdown. "other load": the most the rest of the machine used during any run of the line, as a share
    of all CPUs (0 % = we had the machine to ourselves)."""
    ncpu = os.cpu_count() or 1
    lines = ["| measurement | what | median rows/s | min .. max rows/s | server CPU s / 1M rows | "
             "client CPU s / 1M rows | other load |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, what in DESCRIPTIONS.items():
        r = results.get(name)
        if r is None:
            continue
        what = what.replace("N concurrent", f"{workers} concurrent").replace("API_WORKERS=N",
                                                                             f"API_WORKERS={workers}")
        if not r.get("available", True):
            lines.append(f"| `{name}` | {what} | n/a | {_one_line(r.get('reason', 'unavailable'))} | | | |")
            continue
        runs = r["runs"]
        per_m = 1e6 / runs[0]["rows"]

        def cpu(key: str) -> str:
            vals = [run[key] for run in runs if key in run]
            return f"{sorted(vals)[len(vals) // 2] * per_m:.2f}" if vals else ""
        client_key = "client_cpu_s" if "client_cpu_s" in runs[0] else "bench_process_cpu_s"
        others = max(run.get("others_cpu_s", 0.0) / (run["seconds"] * ncpu) for run in runs)
        lines.append(f"| `{name}` | {what} | {_fmt(r['median_rows_per_s'])} | {_fmt(r['min_rows_per_s'])} .. "
                     f"{_fmt(r['max_rows_per_s'])} | {cpu('server_cpu_s')} | {cpu(client_key)} | {others:.0%} |")
    lines += ["", "| ratio (medians) | value |", "|---|---:|"]
    keep = ("b_e2e_1worker_nocache / a_engine_nocache", "b_e2e_1worker_cold / a_engine_cache_cold",
            "b_e2e_1worker / a_engine_cache_warm", "b_e2e_1worker_nocache / a_servicer_path",
            "b_e2e_1worker_nocache / c1_grpc_bidi", "b_e2e_1worker_nocache / c2_flight_exchange",
            "b_e2e_1worker_cold / c1_grpc_bidi", "b_e2e_1worker / c1_grpc_bidi", "b_e2e_1worker / c1_grpc_bidi_aio",
            "b_e2e_1worker / c2_flight_exchange", "b_e2e_1worker_Nstreams / a_engine_cache_warm",
            "b_e2e_Nworkers / a_engine_cache_warm", "b_e2e_Nworkers / c1_grpc_bidi",
            "b_e2e_Nworkers / c2_flight_exchange", "a_engine_nocache / c1_grpc_bidi",
            "a_engine_cache_warm / c1_grpc_bidi")
    for k in keep:
        v = rat.get(k)
        lines.append(f"| {k.replace('_Nworkers', f'_{workers}workers').replace('_Nstreams', f'_{workers}streams')}"
                     f" | {'n/a' if v is None else f'{v:.3f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--workers", type=int, default=2, help="N for the multi-worker / multi-stream runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--error-rate", type=float, default=0.02)
    ap.add_argument("--json", type=Path, default=h.RESULTS / "throughput.json")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    load0 = os.getloadavg()
    results: dict[str, Any] = {}
    with h.temp_workdir() as tmp:
        work = Path(tmp)
        log(f"generating {args.rows:,} rows (seed {args.seed}, {args.error_rate:.0%} injected errors)")
        ds = h.make_dataset(args.rows, args.batch_size, args.seed, args.error_rate, work)
        log(f"catalog: {ds.rows:,} rows, {len(ds.batches)} batches, parquet {ds.path.stat().st_size / 1e6:.1f} MB, "
            f"IPC {ds.payload_bytes / 1e6:.1f} MB; {ds.seconds}")
        if "a" not in skip:
            measure_in_process(ds, args.repeats, results)
        if "c" not in skip:
            measure_ceilings(ds, args.repeats, results)
        if "b" not in skip:
            measure_e2e(ds, "b_e2e_1worker_nocache", 1, 1, args.repeats, work / "data", results, cache="off")
            measure_e2e(ds, "b_e2e_1worker_cold", 1, 1, args.repeats, work / "data", results, cache="cold")
            measure_e2e(ds, "b_e2e_1worker", 1, 1, args.repeats, work / "data", results)
            if args.workers > 1:
                measure_e2e(ds, "b_e2e_1worker_Nstreams", 1, args.workers, args.repeats, work / "data", results)
                if WORKERS_MODULE.exists():
                    measure_e2e(ds, "b_e2e_Nworkers", args.workers, args.workers, args.repeats, work / "data",
                                results)
                else:
                    results["b_e2e_Nworkers"] = {
                        "available": False, "api_workers": args.workers,
                        "reason": f"{WORKERS_MODULE.relative_to(h.ROOT)} does not exist: API_WORKERS={args.workers} "
                                  "would still start one process"}
        rat = ratios(results)
        report = {
            "config": {"rows": ds.rows, "batch_size": args.batch_size, "batches": len(ds.batches),
                       "workers": args.workers, "repeats": args.repeats, "seed": args.seed,
                       "error_rate": args.error_rate, "injected_cells": ds.injected_cells,
                       "columns": ds.columns, "excluded_column": h.EXCLUDED_COLUMN,
                       "methods": h.METHODS, "parquet_bytes": ds.path.stat().st_size,
                       "ipc_bytes": ds.payload_bytes, "setup_seconds": ds.seconds,
                       "server_env": {"METRICS_PORT": "0", "LOG_LEVEL": "WARNING",
                                      "DATA_PATH": "(temp dir)"}},
            "machine": h.machine_info(),
            "results": {k: {"description": DESCRIPTIONS.get(k, ""), **v} for k, v in results.items()},
            "ratios": rat,
            "load_average": {"start": load0, "end": os.getloadavg()},
            "total_seconds": round(time.perf_counter() - started, 1),
        }
    text = table(results, rat, ds.rows, args.workers)
    m = report["machine"]
    print(f"dqd throughput — {ds.rows:,} rows x {len(ds.columns)} fields (validation+pattern), batches of "
          f"{args.batch_size:,}, median of {args.repeats}; {m['cpu_count']} CPUs, Python {m['python']}, "
          f"pyarrow {m['pyarrow']}, grpcio {m['grpcio']}; load average {load0[0]:.2f} at start, "
          f"{report['load_average']['end'][0]:.2f} at end\n")
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nJSON: {args.json}  (total {report['total_seconds']}s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
