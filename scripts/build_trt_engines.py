#!/usr/bin/env python3
"""Build TensorRT plans for dqd's networks: ONNX -> TensorRT, FP16, dynamic batch/sequence optimisation profile.

    python scripts/build_trt_engines.py --repo MODEL_PATH [--max-batch 256] [--max-seq 128] [--fp32]

For the newest version of every shared network in ``MODEL_PATH/_models/<kind>/<N>/model.onnx`` (``--all``: every
version) this writes ``plans/<GPU>/model.plan`` and ``model.plan.json`` next to it. The JSON records the GPU name and
compute capability, the TensorRT version, the ONNX file's sha256, the precision and the profile; the TensorRT
backend (``dqd_server/engine/backends/tensorrt_backend.py``) refuses a plan whose GPU or TensorRT version differ, and
``MODEL_DEVICE=auto`` picks a plan only when one exists for this GPU. Layers after the network's last matrix
multiply (the masked LM's log-softmax over 30,522 tokens, the embedding's normalisation) are kept in fp32 so FP16
only touches the transformer.

NOT RUN YET: TensorRT cannot be installed where this was written (no GPU). ``scripts/gpu_check.sh`` runs this and
checks the plans' parity against PyTorch fp32 on the first machine with a CUDA GPU. Exit status: 0 plans built,
2 no tensorrt / no CUDA / nothing to build, 1 a build failed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dqd_server.models import SHARED_DIR
from dqd_server.models.base import file_sha256
from dqd_server.models.store import numeric_dirs


def onnx_models(repo: Path, every: bool = False) -> list[Path]:
    """The ONNX files of the shared networks (newest version of each kind unless ``every``)."""
    out = []
    for kind_dir in sorted((repo / SHARED_DIR).glob("*")):
        versions = [d for d in numeric_dirs(kind_dir) if (d / "model.onnx").is_file()]
        out.extend(d / "model.onnx" for d in (versions if every else versions[-1:]))
    return out


def build_plan(onnx: Path, *, max_batch: int = 256, opt_batch: int = 64, max_seq: int = 128, opt_seq: int = 32,
               fp16: bool = True, workspace_gb: float = 4.0) -> Path:
    """Build ``plans/<GPU>/model.plan`` (+ ``.json``) for one ONNX file; returns the plan's path."""
    import tensorrt as trt
    import torch

    from dqd_server.engine.backends import gpu_slug

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx}: TensorRT could not parse the ONNX file: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        _keep_tail_fp32(trt, network)
    profile = builder.create_optimization_profile()
    shapes = {"min": (1, 2), "opt": (opt_batch, opt_seq), "max": (max_batch, max_seq)}
    for i in range(network.num_inputs):
        profile.set_shape(network.get_input(i).name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx}: TensorRT build failed (see the log above)")
    target = onnx.parent / "plans" / gpu_slug()
    target.mkdir(parents=True, exist_ok=True)
    plan = target / "model.plan"
    plan.write_bytes(bytes(serialized))
    props = torch.cuda.get_device_properties(0)
    meta = {"gpu_name": torch.cuda.get_device_name(0), "compute_capability": f"{props.major}.{props.minor}",
            "tensorrt_version": trt.__version__, "onnx": onnx.name, "onnx_sha256": file_sha256(onnx),
            "fp16": fp16, "profile": {k: list(v) for k, v in shapes.items()},
            "inputs": [network.get_input(i).name for i in range(network.num_inputs)],
            "build_seconds": round(time.perf_counter() - started, 1),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds")}
    plan.with_name("model.plan.json").write_text(json.dumps(meta, indent=2) + "\n")
    return plan


def _keep_tail_fp32(trt, network) -> None:
    """Ask for fp32 in every layer after the last matrix multiply (log-softmax / normalisation)."""
    last = max((i for i in range(network.num_layers)
                if network.get_layer(i).type == trt.LayerType.MATRIX_MULTIPLY), default=-1)
    for i in range(last + 1, network.num_layers):
        layer = network.get_layer(i)
        if all(layer.get_output(j).dtype in (trt.float32, trt.float16) for j in range(layer.num_outputs)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, required=True, help="model repository (MODEL_PATH)")
    p.add_argument("--all", action="store_true", help="every version, not only the newest of each network")
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--opt-batch", type=int, default=64)
    p.add_argument("--max-seq", type=int, default=128)
    p.add_argument("--opt-seq", type=int, default=32)
    p.add_argument("--fp32", action="store_true", help="build fp32 plans (default FP16)")
    p.add_argument("--workspace-gb", type=float, default=4.0)
    args = p.parse_args(argv)
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError as exc:
        print(f"build_trt_engines: {exc.name} is not installed (pip install tensorrt on a CUDA machine)",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("build_trt_engines: no CUDA GPU visible; TensorRT plans are built on the GPU that will run them",
              file=sys.stderr)
        return 2
    models = onnx_models(args.repo, args.all)
    if not models:
        print(f"build_trt_engines: no {SHARED_DIR}/*/<N>/model.onnx under {args.repo} (run dqd train first)",
              file=sys.stderr)
        return 2
    status = 0
    for onnx in models:
        try:
            plan = build_plan(onnx, max_batch=args.max_batch, opt_batch=args.opt_batch, max_seq=args.max_seq,
                              opt_seq=args.opt_seq, fp16=not args.fp32, workspace_gb=args.workspace_gb)
            print(f"built {plan} ({json.loads(plan.with_name('model.plan.json').read_text())['build_seconds']}s)")
        except Exception as exc:  # noqa: BLE001 - report every model, then fail
            print(f"FAILED {onnx}: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
