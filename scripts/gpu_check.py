#!/usr/bin/env python3
"""Parity and throughput of every inference backend of the model-based methods — the check for a GPU machine.

    scripts/gpu_check.sh [--repo MODEL_PATH] [--quick] [--json results.json]   (wraps this script: venv, time limit)

Without ``--repo`` it first trains a small repository from the bundled catalog (ml + llm). Then, for both networks
(``encoder``, ``mlm``), it runs every backend available here on the same catalog values: PyTorch fp32 (the
reference; on CUDA when present), ONNX Runtime CPU, and on a CUDA machine PyTorch fp16, ONNX Runtime's CUDA
provider and TensorRT (plans built first with ``build_trt_engines.py`` when tensorrt is installed). It reports the
max |difference| to the reference (must be within ``backends.TOLERANCE``), the rank correlation of the llm value
scores, and throughput in values per second through the real serving path (tokenizer, dynamic batcher, length
bucketing), as a table and as JSON. Exit status 1 when a backend is out of tolerance, else 0 — also on a machine
without a GPU, where it says so and runs the CPU backends only. Budget: well under 8 minutes on an H200 (``--quick``:
smaller data, smaller TensorRT profiles).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np


def _values(n: int) -> dict[str, list[str]]:
    from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog, inject_errors
    from dqd_server.models.train import distinct_values

    table, _ = inject_errors(generate_catalog(max(2000, n * 2), seed=11), rate=0.05, seed=11)
    per = max(50, n // len(CATALOG_COLUMNS))
    return {c: distinct_values([table.column(c).to_pylist()], per, 11) for c in CATALOG_COLUMNS}


def _train(repo: Path, quick: bool) -> None:
    from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog
    from dqd_server.models.train import TrainOptions, distinct_values, train_repository

    table = generate_catalog(5000 if quick else 30000, seed=1)
    values = {c: distinct_values([table.column(c).to_pylist()], 300 if quick else 1000, 0) for c in CATALOG_COLUMNS}
    train_repository(values, ("ml", "llm"), repo, TrainOptions(max_values=1000, mlm_steps=60 if quick else 300,
                                                               errors_per_field=60))


def _candidates(kind: str, model_dir: Path, cuda: bool) -> list[tuple[str, object]]:
    """(label, backend) for every backend that can run here; the first is the fp32 reference."""
    from dqd_server.engine.backends import plan_path
    from dqd_server.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
    from dqd_server.engine.backends.torch_backend import TorchBackend

    out: list[tuple[str, object]] = [("torch-fp32" + ("-cuda" if cuda else "-cpu"),
                                      TorchBackend(kind, model_dir, cuda=cuda, fp16=False))]
    if cuda:
        out.append(("torch-cpu-fp32", TorchBackend(kind, model_dir, cuda=False)))
        out.append(("torch-fp16-cuda", TorchBackend(kind, model_dir, cuda=True, fp16=True)))
    out.append(("onnxruntime-cpu", OnnxRuntimeBackend(kind, model_dir / "model.onnx", cuda=False)))
    if cuda:
        ort_cuda = OnnxRuntimeBackend(kind, model_dir / "model.onnx", cuda=True)
        if ort_cuda.name == "onnxruntime-cuda":
            out.append(("onnxruntime-cuda", ort_cuda))
        plan = plan_path(model_dir)
        if plan is not None:
            from dqd_server.engine.backends.tensorrt_backend import TensorRTBackend

            out.append(("tensorrt-fp16", TensorRTBackend(kind, plan)))
    return out


def _check_network(kind: str, model_dir: Path, values: dict[str, list[str]], cuda: bool, repeat: int) -> list[dict]:
    from dqd_server.engine.backends import TOLERANCE
    from dqd_server.models.runtime import Network

    rows = []
    flat = [(f, v) for f, vs in values.items() for v in vs]
    reference = None
    ref_scores = None
    for label, backend in _candidates(kind, model_dir, cuda):
        net = Network(kind, model_dir, backend, str(model_dir / "tokenizer.json"))
        if label == "torch-cpu-fp32" and cuda:
            sample = flat[:256]  # the CPU reference is slow next to a GPU: parity only, on a sample
        else:
            sample = flat
        def run(s: list[tuple[str, str]], net: Network = net) -> object:
            return net.embed([v for _, v in s]) if kind == "encoder" else _mlm_rows(net, s)

        run(sample[:64])  # warm-up (CUDA context, cuDNN/TensorRT autotuning, ORT allocations)
        started = time.perf_counter()
        for _ in range(repeat):
            out = run(sample)
        seconds = (time.perf_counter() - started) / repeat
        if reference is None:
            reference, ref_scores = out, _scores(out, kind)
        n = len(sample)
        diff = _max_diff(reference, out, kind, n)
        tol = TOLERANCE[backend.precision][kind]
        row = {"network": kind, "backend": label, "precision": backend.precision, "values": n,
               "values_per_s": round(n / seconds, 1), "max_abs_diff": diff, "tolerance": tol, "ok": diff <= tol}
        if kind == "mlm":
            from dqd_server.models.calibrate import spearman

            row["score_spearman"] = round(spearman(ref_scores[:n], _scores(out, kind)), 5)
        rows.append(row)
        net.batcher.close()
    return rows


def _mlm_rows(net, sample: list[tuple[str, str]]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for field in dict.fromkeys(f for f, _ in sample):
        out.extend(net.token_logprobs(field, [v for f, v in sample if f == field])[1])
    return out


def _scores(out, kind: str) -> np.ndarray:
    if kind == "encoder":
        return np.asarray(out)[:, 0]
    from dqd_server.models.mlm_score import value_scores

    return value_scores(out)


def _max_diff(ref, out, kind: str, n: int) -> float:
    if kind == "encoder":
        return float(np.max(np.abs(np.asarray(ref)[:n] - np.asarray(out))))
    return float(max((np.max(np.abs(a - b)) if len(a) else 0.0) for a, b in zip(ref[:n], out)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, help="trained model repository (default: train a small one first)")
    p.add_argument("--quick", action="store_true", help="less data, smaller TensorRT profiles")
    p.add_argument("--values", type=int, help="distinct values per network (default 1000, --quick 300)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    import torch

    from dqd_server.models import SHARED_DIR
    from dqd_server.models.store import numeric_dirs

    cuda = torch.cuda.is_available()
    started = time.perf_counter()
    print(f"GPU: {torch.cuda.get_device_name(0)}" if cuda else
          "no CUDA GPU present: running the CPU backends only (PyTorch fp32, ONNX Runtime CPU)")
    tmp = None
    repo = args.repo
    if repo is None:
        tmp = tempfile.TemporaryDirectory(prefix="dqd-gpu-check-")
        repo = Path(tmp.name) / "repo"
        t = time.perf_counter()
        _train(repo, args.quick)
        print(f"trained a small repository in {time.perf_counter() - t:.0f}s: {repo}")
    if cuda:
        try:
            import tensorrt  # noqa: F401

            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from build_trt_engines import build_plan, onnx_models

            for onnx in onnx_models(repo):
                t = time.perf_counter()
                build_plan(onnx, max_batch=128 if args.quick else 256, max_seq=64 if args.quick else 128,
                           opt_batch=64, opt_seq=24)
                print(f"TensorRT plan for {onnx.parent} built in {time.perf_counter() - t:.0f}s")
        except ImportError:
            print("tensorrt is not installed: skipping the TensorRT backend")
    values = _values(args.values or (300 if args.quick else 1000))
    if cuda:  # the TensorRT profile bounds the sequence length; catalog values are far below it
        values = {f: [v for v in vs if len(v) < 200] for f, vs in values.items()}
    rows: list[dict] = []
    for kind in ("encoder", "mlm"):
        dirs = numeric_dirs(repo / SHARED_DIR / kind)
        if not dirs:
            print(f"no {kind} network in {repo}; skipped")
            continue
        rows.extend(_check_network(kind, dirs[-1], values, cuda, repeat=1 if args.quick else 3))
    print(f"\n{'network':8} {'backend':18} {'prec':5} {'values':>6} {'values/s':>10} {'max|diff|':>10} {'tol':>6} ok")
    for r in rows:
        print(f"{r['network']:8} {r['backend']:18} {r['precision']:5} {r['values']:6d} {r['values_per_s']:10.1f} "
              f"{r['max_abs_diff']:10.2e} {r['tolerance']:6.0e} {'yes' if r['ok'] else 'NO'}"
              + (f"  spearman {r['score_spearman']:.4f}" if "score_spearman" in r else ""))
    result = {"cuda": cuda, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
              "seconds": round(time.perf_counter() - started, 1), "results": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
