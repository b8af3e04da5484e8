"""Where does the time of one end-to-end Detect run go? Server side and client side, in numbers.

    .venv/bin/python bench/profile_detect.py [--rows 1000000] [--batch-size 65536] [--passes 2] [--rate 100]
                                             [--json bench/results/profile.json]

Three views of the same catalog and batches as bench/throughput.py (8 fields, validation + pattern):

1. **Stage budget** (in-process, serial, no profiler in the timed loops): seconds per 1M rows of every step a
   batch takes — client: read Parquet, IPC encode, protobuf; server: protobuf, IPC decode, Engine.detect,
   summary counts, IPC encode findings; client: decode findings — next to the transport ceiling (the
   bench's raw grpcio bidi stream) and the measured end-to-end wall time.
2. **Engine breakdown** (cProfile of the server's per-batch path, in-process): Engine.detect split into
   UTF-8 validation, dictionary_encode, each detector (and their per-hit Python message formatting),
   hits -> rows expansion, findings batches.
3. **Sampled profile of a real run** (py-spy, if installed: ``pip install py-spy``): ``dqd serve``
   (API_WORKERS=1) and a client process streaming the Parquet file with ``check_file``, sampled while they
   run; cost centres as shares of wall time, plus per-thread CPU from /proc (gRPC's C-core threads are
   invisible to py-spy).
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import linecache
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from dqd_client import read_batches  # noqa: E402
from dqd_client._models import decode_findings  # noqa: E402
from dqd_client._models import encode_batch as client_encode  # noqa: E402
from dqd_client._proto import detection_pb2 as cpb  # noqa: E402
from dqd_server.engine.cache import VerdictCache  # noqa: E402
from dqd_server.engine.ipc import decode_batch, encode_batch  # noqa: E402
from dqd_server.engine.pipeline import Engine  # noqa: E402
from dqd_server.engine.repository import BUNDLED_RULES  # noqa: E402
from dqd_server.engine.stream import StreamSession  # noqa: E402
from dqd_server.launcher import ServerProcess  # noqa: E402

PER_M = 1e6


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def best_of(n: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ---- 1. stage budget ------------------------------------------------------------------------------

def make_engine(ds: h.Dataset, cache: str) -> tuple[Engine, Any]:
    """An engine like the server's: ``cache`` "off" (ENABLE_CACHE=false), "cold" (fresh VerdictCache) or
    "warm" (a VerdictCache that has seen the file once, as a long-running server has)."""
    engine = Engine.from_repository(BUNDLED_RULES, cache=None if cache == "off" else VerdictCache())
    plan = engine.plan(ds.columns, h.METHODS)
    if cache == "warm":
        first = 0
        for b in ds.batches:
            engine.detect(plan, b, first)
            first += b.num_rows
    return engine, plan


def detect_pass(engine: Engine, plan: Any, batches: list) -> None:
    first = 0
    for b in batches:
        engine.detect(plan, b, first)
        first += b.num_rows


def stage_budget(ds: h.Dataset, engine: Engine, plan: Any, cache: str) -> dict[str, Any]:
    scale = PER_M / ds.rows
    findings = []
    session = StreamSession(engine, plan)
    for b in ds.batches:
        findings.append(session.feed(b).findings)
    findings_ipc = [encode_batch(f) for f in findings]
    requests = [cpb.DetectRequest(arrow_batch=p).SerializeToString() for p in ds.payloads]
    responses = [cpb.DetectResponse(findings=cpb.BatchFindings(arrow_batch=f)).SerializeToString()
                 for f in findings_ipc]
    decoded = [decode_batch(p) for p in ds.payloads]
    cols = list(ds.columns)

    def read() -> None:
        for _ in read_batches(ds.path, cols, batch_size=ds.batch_size):
            pass

    detectors = engine.detectors
    warm = Engine(detectors, cache=VerdictCache())
    detect_pass(warm, plan, decoded)

    def feed(mode: str) -> Callable[[], None]:
        def run() -> None:
            e = warm if mode == "warm" else Engine(detectors, cache=None if mode == "off" else VerdictCache())
            session = StreamSession(e, plan)
            for b in decoded:
                session.feed(b)
        return run

    stages: list[tuple[str, str, Callable[[], Any]]] = [
        ("client", "read Parquet + select/cast to string (dqd_client.read_batches)", read),
        ("client", "IPC encode batch (dqd_client encode_batch)", lambda: [client_encode(b) for b in ds.batches]),
        ("client", "protobuf DetectRequest serialize", lambda: [cpb.DetectRequest(arrow_batch=p).SerializeToString()
                                                                for p in ds.payloads]),
        ("server", "protobuf DetectRequest parse + .arrow_batch", lambda: [cpb.DetectRequest.FromString(r).arrow_batch
                                                                          for r in requests]),
        ("server", "IPC decode batch (engine.ipc.decode_batch)", lambda: [decode_batch(p) for p in ds.payloads]),
        ("server", f"StreamSession.feed = Engine.detect + summary counts, cache {cache}", feed(cache)),
        ("server", "  Engine.detect alone, no verdict cache (ENABLE_CACHE=false)",
         lambda: detect_pass(Engine(detectors, cache=None), plan, decoded)),
        ("server", "  Engine.detect alone, cold VerdictCache (first pass over the file)",
         lambda: detect_pass(Engine(detectors, cache=VerdictCache()), plan, decoded)),
        ("server", "  Engine.detect alone, warm VerdictCache (file seen before)",
         lambda: detect_pass(warm, plan, decoded)),
        ("server", "IPC encode findings (engine.ipc.encode_batch)", lambda: [encode_batch(f) for f in findings]),
        ("server", "protobuf DetectResponse serialize", lambda: [cpb.DetectResponse(findings=cpb.BatchFindings(
            arrow_batch=f)).SerializeToString() for f in findings_ipc]),
        ("client", "protobuf DetectResponse parse", lambda: [cpb.DetectResponse.FromString(r) for r in responses]),
        ("client", "IPC decode findings (dqd_client decode_findings)", lambda: [decode_findings(f)
                                                                              for f in findings_ipc]),
    ]
    rows = []
    for side, name, fn in stages:
        in_sum = not name.startswith("  ")
        secs = best_of(2 if in_sum else 1, fn)  # reference lines once: keeps the script well under 2 min
        rows.append({"side": side, "stage": name, "seconds_per_1M_rows": secs * scale, "in_sum": in_sum})
    totals = {side: sum(r["seconds_per_1M_rows"] for r in rows if r["side"] == side and r["in_sum"])
              for side in ("client", "server")}
    return {"stages": rows, "totals": totals, "findings": sum(f.num_rows for f in findings),
            "findings_ipc_bytes": sum(len(f) for f in findings_ipc)}


# ---- 2. engine breakdown (cProfile) ---------------------------------------------------------------

def _fn(file_end: str, name: str | None = None) -> Callable[[str, int, str], bool]:
    return lambda f, line, n: f.endswith(file_end) and (name is None or n == name)


@contextlib.contextmanager
def named_compute_kernels() -> Iterator[None]:
    """Give every public ``pyarrow.compute`` function its own named wrapper (``pc_<name>``) while profiling.

    pyarrow's generated compute functions all share one code object, so cProfile lumps every kernel into
    ``compute.py:wrapper``; distinct wrappers make ``dictionary_encode``, the regex kernels, ``take`` … show up
    by name. Only this process's module attributes are patched, and they are restored afterwards.
    """
    originals: dict[str, Any] = {}
    for name in dir(pc):
        f = getattr(pc, name)
        if name.startswith("_") or isinstance(f, type) or not callable(f):
            continue
        if getattr(f, "__module__", "") != "pyarrow.compute":
            continue
        ns: dict[str, Any] = {"_f": f}
        exec(f"def pc_{name}(*args, **kwargs):\n    return _f(*args, **kwargs)\n", ns)  # noqa: S102
        originals[name] = f
        setattr(pc, name, ns[f"pc_{name}"])
    try:
        yield
    finally:
        for name, f in originals.items():
            setattr(pc, name, f)


def engine_breakdown(ds: h.Dataset, engine: Engine, plan: Any) -> dict[str, Any]:
    """cProfile of what the server does per message (decode, feed, encode findings) over all batches."""
    scale = PER_M / ds.rows

    def path() -> None:
        session = StreamSession(engine, plan)
        for p in ds.payloads:
            encode_batch(session.feed(decode_batch(p)).findings)

    plain = best_of(1, path)
    prof = cProfile.Profile()
    with named_compute_kernels():
        t = time.perf_counter()
        prof.enable()
        path()
        prof.disable()
        profiled = time.perf_counter() - t
    st = pstats.Stats(prof)
    stats: dict[tuple[str, int, str], tuple] = st.stats  # type: ignore[attr-defined]

    def cum(pred: Callable[[str, int, str], bool]) -> float:
        """Inclusive time of matching functions, counting only outermost calls (no double counting of
        recursion or of matching callers): sum over call edges whose caller does not match."""
        total = 0.0
        for key, (cc, nc, tt, ct, callers) in stats.items():
            if not pred(*key):
                continue
            for caller, edge in callers.items():
                if not pred(*caller):
                    total += edge[3]
        return total

    def edge(callee: Callable[[str, int, str], bool], caller: Callable[[str, int, str], bool]) -> float:
        total = 0.0
        for key, (cc, nc, tt, ct, callers) in stats.items():
            if callee(*key):
                total += sum(e[3] for c, e in callers.items() if caller(*c))
        return total

    def kernel(*names: str) -> Callable[[str, int, str], bool]:
        return lambda f, line, n: f == "<string>" and n.startswith("pc_") and (not names or n[3:] in names
                                                                              or ("regex" in names and "regex" in n))

    def caller_in(file_end: str, *functions: str) -> Callable[[str, int, str], bool]:
        return lambda f, line, n: f.endswith(file_end) and (not functions or n in functions)
    parts = [
        ("IPC decode (decode_batch)", cum(_fn("engine/ipc.py", "decode_batch"))),
        ("UTF-8/offset validation (ipc.validate, full=True)", cum(_fn("engine/ipc.py", "validate"))),
        ("dictionary_encode of each column (called from pipeline.py)",
         edge(kernel("dictionary_encode"), caller_in("engine/pipeline.py"))),
        ("all regex kernels (match/replace/split/extract/count *_regex), wherever called", cum(kernel("regex"))),
        ("validation detector", cum(_fn("engine/validation.py", "detect"))),
        ("  of which: per-hit message formatting (validation.messages)",
         cum(_fn("engine/validation.py", "messages"))),
        ("  of which: regex matching (Values.matches)", cum(_fn("engine/validation.py", "matches"))),
        ("pattern detector", cum(_fn("engine/pattern.py", "detect"))),
        ("  of which: normalise + present mask (pc calls in PatternDetector.detect)",
         edge(kernel(), _fn("engine/pattern.py", "detect"))),
        ("  of which: vocabulary tokens (_check_vocabulary)", cum(_fn("engine/pattern.py", "_check_vocabulary"))),
        ("  of which: per-hit message formatting (_Hits.add)", cum(_fn("engine/pattern.py", "add"))),
        ("  of which: fuzzy matching (rapidfuzz, _Lexicon.near)", cum(_fn("engine/pattern.py", "near"))),
        ("verdict cache (VerdictCache.detect; includes the detector runs on misses)",
         cum(_fn("engine/cache.py", "detect"))),
        ("hits -> rows (findings.rows_of_hits)", cum(_fn("engine/findings.py", "rows_of_hits"))),
        ("findings batch (build_findings + concat_findings)", cum(_fn("engine/findings.py", "build_findings"))
         + cum(_fn("engine/findings.py", "concat_findings"))),
        ("summary counts (stream.py bookkeeping besides detect)",
         cum(lambda f, line, n: f.endswith("engine/stream.py") and n not in ("feed", "__init__"))),
        ("IPC encode findings (encode_batch)", cum(_fn("engine/ipc.py", "encode_batch"))),
        ("failed imports inside pyarrow calls (importlib; see below)",
         cum(lambda f, line, n: n == "_find_and_load")),
    ]
    detect_total = cum(_fn("engine/pipeline.py", "detect"))
    kernels = sorted(((ct, nc, n[3:]) for (f, line, n), (cc, nc, tt, ct, _) in stats.items()
                      if f == "<string>" and n.startswith("pc_")), reverse=True)[:12]
    rows = [{"part": name, "seconds_per_1M_rows": secs * scale, "share_of_path": secs / profiled}
            for name, secs in parts]
    top = sorted(((ct, tt, nc, f"{Path(f).name}:{line}({n})") for (f, line, n), (cc, nc, tt, ct, _) in
                  stats.items()), reverse=True)
    by_self = sorted(((tt, ct, nc, f"{Path(f).name}:{line}({n})") for (f, line, n), (cc, nc, tt, ct, _) in
                      stats.items()), reverse=True)[:15]
    failed = None
    import importlib.util
    if importlib.util.find_spec("dateutil") is None:
        # cProfile inflates the pure-Python import machinery; time a failing import directly instead.
        calls = sum(e[0] for key, (cc, nc, tt, ct, callers) in stats.items() if key[2] == "_find_and_load"
                    for c, e in callers.items() if c[2] != "_find_and_load")

        def fail() -> None:
            for _ in range(200):
                try:
                    import dateutil.relativedelta  # noqa: F401
                except ImportError:
                    pass
        each = best_of(3, fail) / 200
        failed = {"module": "dateutil", "calls": calls, "unprofiled_us_each": each * 1e6,
                  "unprofiled_seconds_per_1M_rows": calls * each * scale}
    return {"failed_imports": failed,
            "path_seconds_per_1M_rows_unprofiled": plain * scale,
            "path_seconds_per_1M_rows_profiled": profiled * scale,
            "profiler_overhead_factor": profiled / plain,
            "engine_detect_seconds_per_1M_rows_profiled": detect_total * scale,
            "parts": rows,
            "top_compute_kernels": [{"kernel": n, "cum_s": ct * scale, "calls": nc, "share_of_path": ct / profiled}
                                    for ct, nc, n in kernels],
            "top_cumulative": [{"function": name, "cum_s": ct * scale, "self_s": tt * scale, "calls": nc}
                               for ct, tt, nc, name in top[:20]],
            "top_self": [{"function": name, "self_s": tt * scale, "cum_s": ct * scale, "calls": nc}
                         for tt, ct, nc, name in by_self]}


# ---- 3. sampled profile of a real end-to-end run ----------------------------------------------------

# (side, test(file, function, source line) -> bool, category); first match from the leaf up decides.
RULES: list[tuple[str, Callable[[str, str, str], bool], str]] = [
    ("ipc", lambda f, fn, src: f.endswith("engine/ipc.py") and fn == "validate", "engine: UTF-8/offset validation"),
    ("ipc", lambda f, fn, src: f.endswith("engine/ipc.py") and fn == "decode_batch", "server: IPC decode"),
    ("ipc", lambda f, fn, src: f.endswith("engine/ipc.py") and fn == "encode_batch", "server: IPC encode findings"),
    ("eng", lambda f, fn, src: f.endswith("engine/validation.py") and fn in ("messages", "shorten", "format_message",
                                                                             "plain"),
     "engine: validation message formatting (per hit)"),
    ("eng", lambda f, fn, src: f.endswith("engine/validation.py"), "engine: validation checks"),
    ("eng", lambda f, fn, src: f.endswith("engine/pattern.py") and fn in ("add", "<listcomp>", "<dictcomp>"),
     "engine: pattern message formatting (per hit)"),
    ("eng", lambda f, fn, src: f.endswith("engine/pattern.py") and fn in ("near", "best_match"),
     "engine: pattern fuzzy matching"),
    ("eng", lambda f, fn, src: f.endswith("engine/pattern.py"), "engine: pattern checks"),
    ("eng", lambda f, fn, src: f.endswith("engine/hits.py"), "engine: hits batches"),
    ("eng", lambda f, fn, src: f.endswith("engine/findings.py"), "engine: hits -> rows, findings batch"),
    ("eng", lambda f, fn, src: f.endswith("engine/cache.py"), "engine: verdict cache"),
    ("eng", lambda f, fn, src: f.endswith("engine/pipeline.py") and "dictionary_encode" in src,
     "engine: dictionary_encode"),
    ("eng", lambda f, fn, src: f.endswith("engine/pipeline.py"), "engine: other (pipeline)"),
    ("srv", lambda f, fn, src: f.endswith("engine/stream.py") and fn == "_count", "server: summary counts"),
    ("srv", lambda f, fn, src: f.endswith("engine/stream.py"), "server: stream session"),
    ("srv", lambda f, fn, src: "dqd_server/metrics.py" in f, "server: metrics"),
    ("srv", lambda f, fn, src: "dqd_server/storage/" in f, "server: storage"),
    ("srv", lambda f, fn, src: "dqd_server/servicers/" in f and "async for" in src,
     "gRPC aio: receive + parse request (servicer loop)"),
    ("srv", lambda f, fn, src: "dqd_server/servicers/" in f and "to_thread" in src, "server: thread hop (to_thread)"),
    ("srv", lambda f, fn, src: "dqd_server/servicers/" in f and ("yield" in src or "DetectResponse" in src
                                                                 or "BatchFindings" in src),
     "gRPC aio: build + send response"),
    ("srv", lambda f, fn, src: "dqd_server/servicers/" in f, "server: servicer (other glue)"),
    ("grpc", lambda f, fn, src: "/grpc/aio/" in f or "/grpc/_cython" in f, "gRPC aio (Python side)"),
    ("grpc", lambda f, fn, src: "/asyncio/" in f, "asyncio event loop"),
    ("grpc", lambda f, fn, src: "concurrent/futures/thread.py" in f, "thread pool (to_thread)"),
    ("cli", lambda f, fn, src: "dqd_client/_io.py" in f, "client: read Parquet + select/cast"),
    ("cli", lambda f, fn, src: "dqd_client/_models.py" in f and fn == "encode_batch", "client: IPC encode"),
    ("cli", lambda f, fn, src: "dqd_client/_models.py" in f, "client: decode findings"),
    ("cli", lambda f, fn, src: "dqd_client/_client.py" in f, "client: stream glue (protobuf)"),
    ("cli", lambda f, fn, src: "/grpc/_channel.py" in f or "/grpc/_common.py" in f, "client: gRPC sync (Python side)"),
    ("cli", lambda f, fn, src: "bench/_harness.py" in f, "client: bench harness"),
]
_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def categorize(stack: list[str]) -> tuple[str, str]:
    """(category, leaf function) of one sampled stack (root first)."""
    leaf = stack[-1] if stack else "?"
    for frame in reversed(stack):
        m = _FRAME.match(frame)
        if not m:
            continue
        fn, file, line = m["fn"], m["file"], int(m["line"] or 0)
        src = linecache.getline(file, line) if line else ""
        for _, test, cat in RULES:
            if test(file, fn, src):
                return cat, _short(leaf)
    short = _short(leaf)
    module = short.rsplit(" (", 1)[-1].rstrip(")").split("/", 1)[0] if " (" in short else short
    return f"other: {module}", short


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m["file"].rsplit("site-packages/", 1)[-1].replace(str(h.ROOT) + "/", "")
    return f"{m['fn']} ({file})"


def parse_raw(path: Path) -> list[tuple[str, list[str], int]]:
    out = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack_text.split(";")
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else ""
        if thread:
            frames = frames[1:]
        out.append((thread, frames, int(count)))
    return out


_THREAD = re.compile(r"^thread \((?P<tid>\d+)\): ?(?P<name>.*)$")


def analyse(path: Path, wall: float, threads: dict[int, dict[str, Any]], exited_cpu: float) -> dict[str, Any]:
    """Cost centres of one process. py-spy's samples say *where* each Python thread was; the thread's CPU
    time from /proc says *how much* it ran, so each thread's samples are weighted by its CPU seconds (py-spy
    may count a thread blocked in a C call as active). Threads that exited before the end of the run (gRPC's
    per-call request thread in the client) share ``exited_cpu`` in proportion to their samples."""
    per_thread: dict[int, Counter[str]] = defaultdict(Counter)
    leaves: Counter[str] = Counter()
    names: dict[int, str] = {}
    for thread, frames, n in parse_raw(path):
        if not frames:
            continue
        m = _THREAD.match(thread)
        tid = int(m["tid"]) if m else -1
        if m:
            names[tid] = m["name"]
        cat, leaf = categorize(frames)
        per_thread[tid][cat] += n
        leaves[leaf] += n
    cpu_by_cat: Counter[str] = Counter()
    gone: Counter[str] = Counter()
    samples = 0
    for tid, cats in per_thread.items():
        total = sum(cats.values())
        samples += total
        if tid not in threads:
            gone.update(cats)
            continue
        for cat, n in cats.items():
            cpu_by_cat[cat] += threads[tid]["cpu_s"] * n / total
    if gone:
        for cat, n in gone.items():
            cpu_by_cat[cat] += exited_cpu * n / sum(gone.values())
    elif exited_cpu > 0.02:
        cpu_by_cat["threads that exited during the run (not sampled)"] += exited_cpu
    for tid, t in threads.items():  # threads py-spy never saw running Python code
        if tid not in per_thread and t["cpu_s"] > 0:
            label = ("Arrow C++ thread pool / other native threads (no Python frames)" if t["name"] == "python"
                     else f"gRPC C-core thread '{t['name']}'" if t["name"] in ("event_engine", "grpc_global_tim",
                                                                              "lifeguard", "default-executo")
                     else f"native thread '{t['name']}'")
            cpu_by_cat[label + " [invisible to py-spy]"] += t["cpu_s"]
        t["py_spy_name"] = names.get(tid, "")
    return {"samples": samples,
            "categories": [{"cost_centre": c, "cpu_s": v, "share_of_wall": v / wall}
                           for c, v in sorted(cpu_by_cat.items(), key=lambda kv: -kv[1])],
            "top_self_by_samples": [{"function": f, "samples": n, "share_of_samples": n / max(samples, 1)}
                                    for f, n in leaves.most_common(15)],
            "exited_threads_cpu_s": exited_cpu}


def thread_table(pid: int, before: dict[int, tuple[str, float, float]],
                 after: dict[int, tuple[str, float, float]]) -> dict[int, dict[str, Any]]:
    out = {}
    for tid, (name, cpu, wait) in after.items():
        _, cpu0, wait0 = before.get(tid, (name, 0.0, 0.0))
        out[tid] = {"name": "main" if tid == pid else name, "cpu_s": cpu - cpu0, "runqueue_wait_s": wait - wait0}
    return out


def sampled_run(ds: h.Dataset, passes: int, rate: int, workdir: Path, native: bool, cache: str) -> dict[str, Any]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    env = {"API_WORKERS": "1", "METRICS_PORT": "0", "DATA_PATH": str(workdir / "data"), "LOG_LEVEL": "WARNING",
           "SHUTDOWN_DELAY": "0", "ENABLE_CACHE": "false" if cache == "off" else "true"}
    srv = ServerProcess(env=env, port=0, startup_timeout=90).start()
    out: dict[str, Any] = {"rate": rate}
    try:
        assert srv.proc is not None
        server_pid = srv.proc.pid
        with h.ClientPool(1, srv.target, ds.path, ds.columns, ds.batch_size) as pool:
            client_pid = pool.pids[0]
            plain = [pool.run([server_pid]) for _ in range(2)]  # first warms up; second is the reference
            out["unprofiled"] = plain[-1]
            spies: dict[str, subprocess.Popen[bytes]] = {}
            files = {"server": workdir / "server.raw", "client": workdir / "client.raw"}
            if Path(pyspy).exists():
                for side, pid in (("server", server_pid), ("client", client_pid)):
                    cmd = [pyspy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--threads",
                           "--full-filenames", "--nonblocking", "-o", str(files[side]), "--duration", "120"]
                    if native:
                        cmd.append("--native")
                    spies[side] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(1.5)  # let py-spy attach
            else:
                out["py_spy"] = "not installed (pip install py-spy): per-thread CPU only"
            thr0 = {p: h.thread_cpu_seconds(p) for p in (server_pid, client_pid)}
            proc0 = {p: h.proc_cpu_seconds(p) for p in (server_pid, client_pid)}
            machine0 = h.machine_cpu_seconds()
            t0 = time.monotonic()
            runs = [pool.run([server_pid]) for _ in range(passes)]
            wall = time.monotonic() - t0
            thr1 = {p: h.thread_cpu_seconds(p) for p in (server_pid, client_pid)}
            proc1 = {p: h.proc_cpu_seconds(p) for p in (server_pid, client_pid)}
            machine1 = h.machine_cpu_seconds()
            for spy in spies.values():
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            for side, spy in spies.items():
                try:
                    _, err = spy.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    _, err = spy.communicate(timeout=10)
                out.setdefault("py_spy_messages", {})[side] = err.decode(errors="replace").strip()[-300:]
        rows = sum(r["rows"] for r in runs)
        out["profiled"] = {"rows": rows, "seconds": wall, "rows_per_s": rows / wall,
                           "runs_rows_per_s": [r["rows_per_s"] for r in runs]}
        out["wall_seconds"] = wall
        ours = sum(proc1[p] - proc0[p] for p in proc0)
        out["machine"] = {"busy_cpu_s": machine1[0] - machine0[0], "steal_s": machine1[1] - machine0[1],
                          "server_plus_client_cpu_s": ours,
                          "others_cpu_s": max(0.0, machine1[0] - machine0[0] - ours)}  # incl. py-spy itself
        for side, pid in (("server", server_pid), ("client", client_pid)):
            threads = thread_table(pid, thr0[pid], thr1[pid])
            live = sum(t["cpu_s"] for t in threads.values())
            exited = max(0.0, (proc1[pid] - proc0[pid]) - live)  # /proc/PID/stat counts dead threads too
            d: dict[str, Any] = {"pid": pid, "cpu_s": live + exited, "exited_threads_cpu_s": exited,
                                 "runqueue_wait_s": sum(t["runqueue_wait_s"] for t in threads.values())}
            if spies:
                d["py_spy"] = analyse(files[side], wall, threads, exited)
            d["threads"] = {str(k): v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]["cpu_s"])
                            if v["cpu_s"] > 0.005}
            out[side] = d
    finally:
        srv.stop()
    return out


def ceiling(ds: h.Dataset) -> float:
    with h.CeilingServer("grpc_sync") as srv, h.grpc_ceiling_channel(srv.port) as channel:
        h.run_grpc_ceiling(channel, ds.payloads)
        return best_of(2, lambda: h.run_grpc_ceiling(channel, ds.payloads))


# ---- report -------------------------------------------------------------------------------------

def _thread_label(t: dict[str, Any]) -> str:
    return t.get("py_spy_name") or t["name"]


def render(report: dict[str, Any]) -> str:
    L: list[str] = []
    cfg = report["config"]
    s = report["sampled"]
    e2e_s = PER_M / s["unprofiled"]["rows_per_s"] if "unprofiled" in s else float("nan")
    ceil_s = report["transport_ceiling_seconds_per_1M_rows"]
    L.append(f"dqd profile — {cfg['rows']:,} rows x {len(cfg['columns'])} fields (validation+pattern), batches of "
             f"{cfg['batch_size']:,}; server verdict cache: {cfg['cache']}; load average at start "
             f"{report['load_average_start'][0]:.2f}")
    L.append("")
    L.append("## 1. Stage budget (in-process, serial, best of 2; seconds per 1M rows)")
    L.append("")
    L.append("| side | stage | s / 1M rows | share of e2e wall |")
    L.append("|---|---|---:|---:|")
    for r in report["stage_budget"]["stages"]:
        L.append(f"| {r['side']} | {r['stage']}{'' if r['in_sum'] else ' — not in the sum'} | "
                 f"{r['seconds_per_1M_rows']:.3f} | {r['seconds_per_1M_rows'] / e2e_s:.1%} |")
    t = report["stage_budget"]["totals"]
    L.append(f"| **server** | sum of server stages | **{t['server']:.3f}** | {t['server'] / e2e_s:.1%} |")
    L.append(f"| **client** | sum of client stages (another process, overlaps the server) | **{t['client']:.3f}** | "
             f"{t['client'] / e2e_s:.1%} |")
    L.append(f"| transport | ceiling: raw grpcio bidi stream, same IPC batches, decode + count | {ceil_s:.3f} | "
             f"{ceil_s / e2e_s:.1%} |")
    L.append(f"| **e2e** | measured wall time, API_WORKERS=1, 1 stream, client reads the file, cache "
             f"{cfg['cache']} | **{e2e_s:.3f}** | 100% |")
    L.append("")
    eb = report["engine_breakdown"]
    L.append(f"## 2. Server path breakdown (cProfile of decode + StreamSession.feed + encode findings: "
             f"{eb['path_seconds_per_1M_rows_unprofiled']:.2f} s / 1M rows unprofiled, "
             f"{eb['path_seconds_per_1M_rows_profiled']:.2f} s profiled)")
    L.append("")
    L.append("| part | s / 1M rows (profiled) | share of path |")
    L.append("|---|---:|---:|")
    for r in eb["parts"]:
        L.append(f"| {r['part']} | {r['seconds_per_1M_rows']:.3f} | {r['share_of_path']:.1%} |")
    if eb.get("top_compute_kernels"):
        L.append("")
        L.append("top pyarrow.compute kernels in the path (cumulative, profiled): " + "; ".join(
            f"{k['kernel']} {k['share_of_path']:.0%} ({k['calls']} calls)" for k in eb["top_compute_kernels"][:8]))
    fi = eb.get("failed_imports")
    if fi:
        L.append("")
        L.append(f"failed imports: {fi['calls']} per {cfg['rows']:,} rows x {fi['unprofiled_us_each']:.0f} µs each = "
                 f"{fi['unprofiled_seconds_per_1M_rows']:.3f} s / 1M rows unprofiled ({fi['module']} is not "
                 "installed; pyarrow retries the import on every untyped Python scalar)")
    if "profiled" in s:
        L.append("")
        L.append(f"## 3. Sampled real run (py-spy {s['rate']} Hz + per-thread CPU from /proc; {cfg['passes']} "
                 f"passes: {s['profiled']['rows_per_s']:,.0f} rows/s while sampled vs "
                 f"{s['unprofiled']['rows_per_s']:,.0f} unsampled; wall {s['wall_seconds']:.2f} s)")
        mc = s.get("machine", {})
        L.append("")
        L.append(f"machine during the sampled run: {mc.get('busy_cpu_s', 0):.2f} CPU-s busy of "
                 f"{s['wall_seconds'] * (os.cpu_count() or 1):.2f} available; server + client "
                 f"{mc.get('server_plus_client_cpu_s', 0):.2f}, everything else (py-spy, other work) "
                 f"{mc.get('others_cpu_s', 0):.2f}, steal {mc.get('steal_s', 0):.2f}")
        for side in ("server", "client"):
            d = s[side]
            wall = s["wall_seconds"]
            L.append("")
            L.append(f"**{side}** (pid {d['pid']}): on CPU {d['cpu_s']:.2f} s = {d['cpu_s'] / wall:.0%} of wall, "
                     f"runnable but waiting for a CPU {d['runqueue_wait_s']:.2f} s (live threads). Threads: " + ", ".join(
                         f"{_thread_label(t)} {t['cpu_s']:.2f} s (+{t['runqueue_wait_s']:.2f} s waiting)"
                         for t in list(d["threads"].values())[:6]))
            spy = d.get("py_spy")
            if not spy:
                continue
            L.append("")
            L.append(f"| {side} cost centre | CPU s | share of wall |")
            L.append("|---|---:|---:|")
            for c in spy["categories"][:16]:
                L.append(f"| {c['cost_centre']} | {c['cpu_s']:.2f} | {c['share_of_wall']:.1%} |")
            L.append(f"| *total on CPU* | {d['cpu_s']:.2f} | {d['cpu_s'] / wall:.1%} |")
            L.append("")
            L.append(f"top leaf functions ({side}, share of py-spy samples): " + "; ".join(
                f"{x['function']} {x['share_of_samples']:.0%}" for x in spy["top_self_by_samples"][:8]))
    L.append("")
    L.append("## Conclusion")
    L.extend(f"- {line}" for line in report["conclusion"])
    return "\n".join(L)


def conclude(report: dict[str, Any]) -> list[str]:
    out = []
    sb, eb, s = report["stage_budget"], report["engine_breakdown"], report["sampled"]
    if "unprofiled" not in s:
        return [f"the end-to-end run failed ({s.get('error')}); see the stage budget and the breakdown above"]
    e2e = PER_M / s["unprofiled"]["rows_per_s"]
    mode = {"off": "no verdict cache", "warm": "warm VerdictCache", "cold": "cold VerdictCache"}[
        report["config"]["cache"]]
    detect = next(r["seconds_per_1M_rows"] for r in sb["stages"] if "Engine.detect alone" in r["stage"]
                  and mode in r["stage"])
    ceil_s = report["transport_ceiling_seconds_per_1M_rows"]
    feed = next(r["seconds_per_1M_rows"] for r in sb["stages"] if r["stage"].startswith("StreamSession.feed"))
    other_server = sb["totals"]["server"] - feed
    out.append(f"end to end {e2e:.2f} s per 1M rows ({PER_M / e2e:,.0f} rows/s); the transport alone moves the same "
               f"batches in {ceil_s:.2f} s ({PER_M / ceil_s:,.0f} rows/s): the gap is {e2e - ceil_s:.2f} s per 1M rows")
    out.append(f"Engine.detect alone (in-process, cache {report['config']['cache']}) costs {detect:.2f} s per 1M rows = {detect / e2e:.0%} of the e2e "
               f"wall time; the server stages besides StreamSession.feed (protobuf, IPC) {other_server:.2f} s "
               f"({other_server / e2e:.0%}); the "
               f"client's stages ({sb['totals']['client']:.2f} s) run in another process, overlapped with the server")
    top = sorted((r for r in eb["parts"] if not r["part"].startswith("  ")), key=lambda r: -r["share_of_path"])[:4]
    out.append("inside the server path (cProfile shares): " + ", ".join(
        f"{r['part']} {r['share_of_path']:.0%}" for r in top))
    fmt = sum(r["share_of_path"] for r in eb["parts"] if "message formatting" in r["part"])
    out.append(f"per-hit Python message formatting (validation.messages + pattern _Hits.add) is {fmt:.0%} of the "
               "server path (cProfile): it grows with the number of flagged distinct values per batch")
    srv, cli = s.get("server"), s.get("client")
    if srv and cli:
        wall = s["wall_seconds"]
        out.append(f"real run: the server was on CPU {srv['cpu_s'] / wall:.0%} of the wall time and runnable-but-"
                   f"waiting {srv['runqueue_wait_s'] / wall:.0%}; the client on CPU {cli['cpu_s'] / wall:.0%}. One "
                   "stream is checked one batch at a time in one to_thread worker, so a single stream keeps at most "
                   "about one core busy with detection")
        spy = srv.get("py_spy")
        if spy:
            cats = {c["cost_centre"]: c["cpu_s"] for c in spy["categories"]}
            eng = sum(v for k, v in cats.items() if k.startswith("engine:"))
            tr = sum(v for k, v in cats.items() if k.startswith(("gRPC", "asyncio", "thread pool", "native thread",
                                                                 "server: servicer", "server: thread hop")))
            ipc = sum(v for k, v in cats.items() if "IPC" in k)
            rest = srv["cpu_s"] - eng - tr - ipc
            out.append(f"real server CPU {srv['cpu_s']:.2f} s over {wall:.2f} s wall: engine {eng:.2f} s "
                       f"({eng / srv['cpu_s']:.0%}), gRPC + asyncio + servicer glue + C-core threads {tr:.2f} s "
                       f"({tr / srv['cpu_s']:.0%}), IPC {ipc:.2f} s, rest {rest:.2f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--error-rate", type=float, default=0.02)
    ap.add_argument("--passes", type=int, default=2, help="end-to-end passes over the file while sampling")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C/C++ frames; slower)")
    ap.add_argument("--cache", choices=("warm", "off"), default="warm",
                    help="server verdict cache: warm (default server config, after a full untimed pass) or off "
                         "(ENABLE_CACHE=false); the in-process parts use the same state")
    ap.add_argument("--json", type=Path, default=h.RESULTS / "profile.json")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    load0 = os.getloadavg()
    with h.temp_workdir() as tmp:
        work = Path(tmp)
        log(f"generating {args.rows:,} rows")
        ds = h.make_dataset(args.rows, args.batch_size, args.seed, args.error_rate, work)
        engine, plan = make_engine(ds, args.cache)
        engine.detect(plan, ds.batches[0])
        log("1. stage budget")
        budget = stage_budget(ds, engine, plan, args.cache)
        log("2. server path breakdown (cProfile)")
        breakdown = engine_breakdown(ds, engine, plan)
        log("transport ceiling")
        ceil_s = ceiling(ds) * PER_M / ds.rows
        log("3. sampled end-to-end run")
        try:
            sampled = sampled_run(ds, args.passes, args.rate, work, args.native, args.cache)
        except Exception as exc:  # noqa: BLE001 - the server is shared work in progress: keep parts 1 and 2
            log(f"sampled run failed: {type(exc).__name__}: {exc}")
            sampled = {"error": f"{type(exc).__name__}: {exc}"}
        report = {"config": {"rows": ds.rows, "batch_size": args.batch_size, "columns": ds.columns,
                             "cache": args.cache,
                             "passes": args.passes, "rate": args.rate, "seed": args.seed,
                             "error_rate": args.error_rate},
                  "machine": h.machine_info(), "load_average_start": load0, "load_average_end": os.getloadavg(),
                  "stage_budget": budget, "engine_breakdown": breakdown,
                  "transport_ceiling_seconds_per_1M_rows": ceil_s, "sampled": sampled}
        report["conclusion"] = conclude(report)
        report["total_seconds"] = round(time.perf_counter() - started, 1)
    print(render(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nJSON: {args.json}  (total {report['total_seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
