"""Shared pieces of the dqd benchmarks: the catalog, the batches, process accounting, client processes,
and the two transport-ceiling servers (plain grpcio bidi stream, Arrow Flight DoExchange echo).

Everything binds 127.0.0.1 only, every wait has a timeout, and every child process is stopped by the
object that started it (by its pid, never by name).
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq

from dqd_client import read_batches
from dqd_client._models import encode_batch as client_encode_batch
from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog, inject_errors

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EXCLUDED_COLUMN = "price"
# The issue asks for 8 fields: the 9 catalog columns but `price` (column name = field type).
COLUMNS: dict[str, str] = {c: f for c, f in CATALOG_COLUMNS.items() if c != EXCLUDED_COLUMN}
# The configuration: validation + pattern. Named explicitly, so a method added to the server's
# defaults later (e.g. a cross-column one) does not silently change what is measured.
METHODS = ["validation", "pattern"]
MAX_MESSAGE = 64 * 1024 * 1024
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
CEILING_SERVICE = "bench.Ceiling"
CEILING_METHOD = f"/{CEILING_SERVICE}/Count"
SPAWN = mp.get_context("spawn")  # never fork a process that has started gRPC threads
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- data ---------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """The generated catalog on disk, plus the same batches decoded (RecordBatch) and encoded (IPC bytes)."""

    path: Path
    rows: int
    batch_size: int
    columns: dict[str, str]
    batches: list[pa.RecordBatch]
    payloads: list[bytes]
    injected_cells: int
    seconds: dict[str, float] = field(default_factory=dict)
    warmup_path: Path | None = None

    @property
    def payload_bytes(self) -> int:
        return sum(len(p) for p in self.payloads)


def make_dataset(rows: int, batch_size: int, seed: int, error_rate: float, workdir: Path) -> Dataset:
    """Generate the catalog once (``inject_errors`` at ``error_rate``), write it as Parquet, then read it back
    exactly as the client does (``dqd_client.read_batches``: 8 mapped columns as strings, ``batch_size`` rows)
    and IPC-encode each batch with the client's encoder. Every measurement uses these same batches."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    clean = generate_catalog(rows, seed)
    seconds["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    dirty, injected = inject_errors(clean, error_rate, seed)
    seconds["inject_errors"] = time.perf_counter() - t
    path = workdir / "catalog.parquet"
    t = time.perf_counter()
    pq.write_table(dirty, path)
    seconds["write_parquet"] = time.perf_counter() - t
    del clean, dirty
    t = time.perf_counter()
    batches = list(read_batches(path, list(COLUMNS), batch_size=batch_size))
    seconds["read_parquet"] = time.perf_counter() - t
    t = time.perf_counter()
    payloads = [client_encode_batch(b) for b in batches]
    seconds["ipc_encode"] = time.perf_counter() - t
    warmup = workdir / "warmup.parquet"  # 200 rows of another seed: warms code paths, barely the verdict cache
    pq.write_table(inject_errors(generate_catalog(200, seed + 1000), error_rate, seed + 1000)[0], warmup)
    return Dataset(path, sum(b.num_rows for b in batches), batch_size, dict(COLUMNS), batches, payloads,
                   injected.num_rows, seconds, warmup)


def temp_workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="dqd-bench-")


# ---- machine and process accounting -------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    import numpy
    return {"cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)), "cpu_model": model,
            "memory_gib": mem_gib, "platform": platform.platform(), "python": sys.version.split()[0],
            "pyarrow": pa.__version__, "grpcio": grpc.__version__, "numpy": numpy.__version__}


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process (all its threads); 0 if it is gone."""
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields_[11]) + int(fields_[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def thread_cpu_seconds(pid: int) -> dict[int, tuple[str, float, float]]:
    """tid -> (thread name, seconds on CPU, seconds runnable but waiting for a CPU) for every thread of
    ``pid``, from /proc/PID/task/TID/schedstat (nanoseconds)."""
    out: dict[int, tuple[str, float, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            on_cpu, waiting = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        out[int(tid)] = (name, int(on_cpu) / 1e9, int(waiting) / 1e9)
    return out


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, all CPUs, from /proc/stat. Busy minus what our
    own processes used = what other work on the machine took during a measurement."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK, steal / CLK_TCK


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _tcp_table() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state hex, inode) of every IPv4/IPv6 TCP socket of this network namespace."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
            rows.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state, inode))
    return rows


def server_sockets(root_pid: int, port: int) -> dict[int, dict[str, int]]:
    """For each process under ``root_pid``: how many LISTEN sockets and accepted (ESTABLISHED) connections
    it holds on ``port``. A worker is a process with a listening socket on the port."""
    table = _tcp_table()
    listen = {inode for lp, _, st, inode in table if lp == port and st == "0A"}
    established = {inode for lp, _, st, inode in table if lp == port and st == "01"}
    out = {}
    for pid in descendants(root_pid):
        inodes = _socket_inodes(pid)
        n_listen, n_conn = len(inodes & listen), len(inodes & established)
        if n_listen or n_conn:
            out[pid] = {"listen": n_listen, "connections": n_conn}
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["rows_per_s"] for r in runs]
    return {"median_rows_per_s": statistics.median(rates), "min_rows_per_s": min(rates),
            "max_rows_per_s": max(rates), "runs": runs}


# ---- dqd client streams in separate processes -----------------------------------------------------

def _client_main(index: int, target: str, path: str, columns: dict[str, str], batch_size: int,
                 timeout: float, commands: Any, results: Any, barrier: Any) -> None:
    """One client process: its own channel (so its own TCP connection), driven by ``commands``."""
    import dqd_client

    client = None

    def connect() -> None:
        nonlocal client
        if client is not None:
            client.close()
        client = dqd_client.Client(target)
        client.health(timeout=timeout)  # opens the connection now, outside the timed part

    try:
        connect()
        results.put(("ready", index, os.getpid()))
        while True:
            try:
                cmd = commands.get(timeout=900)
            except Exception:  # noqa: BLE001 - parent gone quiet: stop
                return
            if cmd == "stop":
                return
            if cmd == "reconnect":
                connect()
                results.put(("ready", index, os.getpid()))
                continue
            # ("run", file): start together with the other streams, read the whole file, count rows
            try:
                barrier.wait(timeout=timeout)
                cpu0, t0 = self_cpu_seconds(), time.monotonic()
                stream = client.check_file(cmd[1] or path, columns, batch_size=batch_size, methods=METHODS,
                                           timeout=timeout)
                rows = sum(r.num_rows for r in stream)
                t1 = time.monotonic()
                summary = stream.summary
                results.put(("done", index, {"rows": rows, "start": t0, "end": t1,
                                             "client_cpu_s": self_cpu_seconds() - cpu0,
                                             "findings": summary.findings if summary else None,
                                             "server_elapsed_s": summary.elapsed_seconds if summary else None}))
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                results.put(("error", index, f"{type(exc).__name__}: {exc}"))
    finally:
        if client is not None:
            client.close()


class ClientPool:
    """``n`` spawned client processes, each with its own channel to ``target``; ``run()`` starts one
    ``check_file`` stream in each at the same moment (a barrier) and returns the combined timing."""

    def __init__(self, n: int, target: str, path: Path, columns: dict[str, str], batch_size: int,
                 timeout: float = 180.0) -> None:
        self.n, self.timeout = n, timeout
        self.results = SPAWN.Queue()
        self.barrier = SPAWN.Barrier(n + 1)
        self.commands = [SPAWN.Queue() for _ in range(n)]
        self.procs = [SPAWN.Process(target=_client_main, daemon=True,
                                    args=(i, target, str(path), columns, batch_size, timeout, self.commands[i],
                                          self.results, self.barrier)) for i in range(n)]
        for p in self.procs:
            p.start()
        self.pids = [0] * n
        self._wait_ready(range(n))

    def _wait_ready(self, indices: Iterable[int]) -> None:
        pending = set(indices)
        deadline = time.monotonic() + self.timeout
        while pending:
            kind, index, payload = self.results.get(timeout=max(0.1, deadline - time.monotonic()))
            if kind == "error":
                raise RuntimeError(f"client {index}: {payload}")
            if kind == "ready":
                self.pids[index] = payload
                pending.discard(index)

    def reconnect(self) -> None:
        for q in self.commands:
            q.put("reconnect")
        self._wait_ready(range(self.n))

    def run(self, server_pids: Sequence[int], path: Path | None = None) -> dict[str, Any]:
        """One stream per client process over ``path`` (default: the pool's file), all released at once."""
        server_cpu0 = sum(proc_cpu_seconds(p) for p in server_pids)
        machine0 = machine_cpu_seconds()
        for q in self.commands:
            q.put(("run", str(path) if path else ""))
        self.barrier.wait(timeout=self.timeout)
        t0 = time.monotonic()
        done: dict[int, dict[str, Any]] = {}
        errors = []
        deadline = t0 + self.timeout + 10
        while len(done) + len(errors) < self.n:
            kind, index, payload = self.results.get(timeout=max(0.1, deadline - time.monotonic()))
            if kind == "done":
                done[index] = payload
            elif kind == "error":
                errors.append(f"client {index}: {payload}")
        if errors:
            raise RuntimeError("; ".join(errors))
        end = max(d["end"] for d in done.values())
        wall = end - min(t0, *(d["start"] for d in done.values()))
        rows = sum(d["rows"] for d in done.values())
        machine1 = machine_cpu_seconds()
        server_cpu = sum(proc_cpu_seconds(p) for p in server_pids) - server_cpu0
        client_cpu = sum(d["client_cpu_s"] for d in done.values())
        return {"rows": rows, "seconds": wall, "rows_per_s": rows / wall, "streams": self.n,
                "per_stream_rows_per_s": [round(d["rows"] / (d["end"] - d["start"])) for d in done.values()],
                "server_cpu_s": server_cpu, "client_cpu_s": client_cpu,
                "others_cpu_s": max(0.0, machine1[0] - machine0[0] - server_cpu - client_cpu),
                "steal_s": machine1[1] - machine0[1],
                "findings": [d["findings"] for d in done.values()]}

    def close(self) -> None:
        for q in self.commands:
            try:
                q.put("stop")
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- transport ceilings -------------------------------------------------------------------------

def _count_rows(payload: bytes) -> int:
    """What the ceiling servers do with each message: decode the Arrow IPC stream, count its rows."""
    return sum(b.num_rows for b in pa.ipc.open_stream(pa.py_buffer(payload)))


def _grpc_sync_main(ready: Any, stop: Any) -> None:
    def count(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for payload in request_iterator:
            yield _count_rows(payload).to_bytes(8, "little")

    handler = grpc.method_handlers_generic_handler(
        CEILING_SERVICE, {"Count": grpc.stream_stream_rpc_method_handler(
            count, request_deserializer=None, response_serializer=None)})  # None: raw bytes both ways
    server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=[handler], options=GRPC_OPTIONS)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.put(port)
    stop.wait(timeout=1800)
    server.stop(0)


def _grpc_aio_main(ready: Any, stop: Any) -> None:
    async def count(request_iterator: Any, context: Any) -> Any:
        async for payload in request_iterator:
            yield _count_rows(payload).to_bytes(8, "little")

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler(
            CEILING_SERVICE, {"Count": grpc.stream_stream_rpc_method_handler(
                count, request_deserializer=None, response_serializer=None)})
        server = grpc.aio.server(handlers=[handler], options=GRPC_OPTIONS)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.put(port)
        await asyncio.to_thread(stop.wait, 1800)
        await server.stop(0)

    asyncio.run(main())


def _flight_main(ready: Any, stop: Any) -> None:
    import pyarrow.flight as flight

    answer_schema = pa.schema([("rows", pa.int64())])

    class Echo(flight.FlightServerBase):
        def do_exchange(self, context: Any, descriptor: Any, reader: Any, writer: Any) -> None:
            writer.begin(answer_schema)
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    return
                if chunk.data is not None:
                    writer.write_batch(pa.record_batch([pa.array([chunk.data.num_rows], pa.int64())],
                                                       schema=answer_schema))

    server = Echo("grpc://127.0.0.1:0")
    ready.put(server.port)
    stop.wait(timeout=1800)
    server.shutdown()


CEILING_SERVERS: dict[str, Callable[[Any, Any], None]] = {
    "grpc_sync": _grpc_sync_main, "grpc_aio": _grpc_aio_main, "flight": _flight_main}


class CeilingServer:
    """A transport-ceiling server in its own (spawned) process: ``with CeilingServer("flight") as s: s.port``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._ready = SPAWN.Queue()
        self._stop = SPAWN.Event()
        self.proc = SPAWN.Process(target=CEILING_SERVERS[kind], args=(self._ready, self._stop), daemon=True)
        self.port = 0

    def __enter__(self) -> CeilingServer:
        self.proc.start()
        self.port = self._ready.get(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)

    @property
    def pid(self) -> int:
        return self.proc.pid or 0


def grpc_ceiling_channel(port: int, timeout: float = 30.0) -> grpc.Channel:
    """One long-lived channel, like the dqd client's: HTTP/2 flow-control windows grow with use (BDP
    probing), so a cold connection is slower for its first tens of MB; warm it up before timing."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=timeout)
    return channel


def run_grpc_ceiling(channel: grpc.Channel, payloads: Sequence[bytes], timeout: float = 120.0) -> int:
    """Stream ``payloads`` over one raw-bytes bidi call; returns the rows the server counted."""
    call = channel.stream_stream(CEILING_METHOD, request_serializer=None, response_deserializer=None)
    return sum(int.from_bytes(a, "little") for a in call(iter(payloads), timeout=timeout))


def flight_client(port: int) -> Any:
    import pyarrow.flight as flight
    client = flight.connect(f"grpc://127.0.0.1:{port}")
    client.wait_for_available(timeout=30)
    return client


def run_flight_ceiling(client: Any, batches: Sequence[pa.RecordBatch], timeout: float = 120.0) -> int:
    """DoExchange: write every batch while a second thread reads the one-row answers; returns rows counted."""
    import pyarrow.flight as flight

    options = flight.FlightCallOptions(timeout=timeout)
    writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(b"count"), options=options)
    counted = [0]
    failure: list[BaseException] = []

    def read() -> None:
        try:
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    return
                counted[0] += chunk.data.column(0)[0].as_py()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failure.append(exc)

    reading = threading.Thread(target=read, daemon=True)
    writer.begin(batches[0].schema)
    reading.start()
    for b in batches:
        writer.write_batch(b)
    writer.done_writing()
    reading.join(timeout)
    writer.close()
    if reading.is_alive():
        raise TimeoutError("Flight answers did not finish in time")
    if failure:
        raise failure[0]
    return counted[0]
