"""Train the model-based methods from clean values and publish versioned entries into a model repository.

``train_repository(values_by_field, methods, out)``:

* ``ml``: embeds the distinct clean values of every field type with the base encoder (one shared network; the
  encoder's ONNX export is written once per base model to ``_models/encoder/<N>``), scores each value against the
  others by 5-fold cross-fitting (``knn.cross_fit_scores``), scores injected semantic errors (``corrupt.py``),
  picks the threshold (``calibrate.py``) and writes ``<field>/ml/<N>/reference.npz`` + ``metadata.json``.
* ``llm``: holds out 20 % of every field type's values, fine-tunes one masked LM on the rest of all field types
  (``mlm_train.py``), saves it with its ONNX export to ``_models/mlm/<N>``, scores the held-out values and the
  injected errors, and writes ``<field>/llm/<N>/calibration.npz`` + ``metadata.json`` pinning that network.

Field types without a rules version in ``out`` get one (copied from the bundled rules when dqd has the field type,
else a minimal ``field.yaml``), so ``out`` serves as MODEL_PATH as it is.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import SHARED_DIR, mlm_score
from .base import BASE_MODEL_NAME, base_model_dir, base_model_sha256, encode, field_prefix, file_sha256, special_ids
from .calibrate import calibrate
from .corrupt import semantic_errors
from .knn import KnnIndex, cross_fit_scores
from .store import dqd_version, find_shared, now_iso, numeric_dirs, publish, shared_folder

log = logging.getLogger("dqd.models")


@dataclass(frozen=True)
class TrainOptions:
    max_values: int = 2000  # distinct values per field type (a seeded sample when there are more)
    k: int = 10  # neighbours of the ml method (k=10 had the best held-out AUC on the catalog, see report)
    folds: int = 5
    max_fpr: float = 0.01  # held-out clean values a threshold may flag
    min_auc: float = 0.6  # below this held-out AUC a version is published inactive (it would only add noise)
    errors_per_field: int = 150  # injected semantic errors per field type for calibration
    mlm_steps: int = 400  # ~0.3 s a step on 2 cores (length-bucketed batches): ~2 min
    mlm_batch_size: int = 32
    mlm_train_layers: int = 2
    mlm_time_budget: float = 150.0
    scoring: str = "single"  # llm: "single" (one pass) or "pll" (one pass per token)
    value_score: str = "min_logprob"  # llm: "min_logprob" or "max_excess" (mlm_score.AGGREGATES; measured: report)
    heldout_share: float = 0.2
    seed: int = 0


@dataclass
class TrainReport:
    out: Path
    seconds: dict[str, float] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)  # one summary per published version

    def add(self, path: Path, meta: dict) -> None:
        self.entries.append({"path": str(path), "field_type": meta["field_type"], "method": meta["method"],
                             "active": meta.get("active", True),
                             **{k: meta["heldout"][k] for k in ("fpr", "recall", "precision_at_2pct", "auc")}})


def _timed(report: TrainReport, name: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        return fn()
    finally:
        report.seconds[name] = round(report.seconds.get(name, 0.0) + time.perf_counter() - started, 2)


def distinct_values(columns: Sequence[Sequence[str | None]], max_values: int, seed: int) -> list[str]:
    """Distinct non-blank values of the columns of one field type (sorted; a seeded sample if too many)."""
    values = sorted({v for col in columns for v in col if v is not None and v.strip()})
    if len(values) > max_values:
        keep = np.random.default_rng(seed).choice(len(values), size=max_values, replace=False)
        values = [values[i] for i in sorted(keep)]
    return values


def data_sha256(values: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(values).encode("utf-8", "surrogatepass")).hexdigest()


def train_repository(values_by_field: Mapping[str, Sequence[str]], methods: Sequence[str], out: Path,
                     options: TrainOptions = TrainOptions()) -> TrainReport:
    """Train ``methods`` on clean distinct ``values_by_field`` and publish new versions under ``out``."""
    out = Path(out)
    report = TrainReport(out)
    values = {f: list(v) for f, v in sorted(values_by_field.items()) if len(v) >= 2}
    skipped = sorted(set(values_by_field) - set(values))
    if skipped:
        log.warning("not enough distinct values to train %s", skipped)
    for f in values:
        ensure_rules(out, f)
    errors = semantic_errors(values, options.errors_per_field, options.seed)
    if "ml" in methods:
        _timed(report, "ml", lambda: _train_ml(values, errors, out, options, report))
    if "llm" in methods:
        _timed(report, "llm", lambda: _train_llm(values, errors, out, options, report))
    return report


def _common_meta(method: str, field_type: str, values: Sequence[str], options: TrainOptions, out: Path
                 ) -> dict[str, Any]:
    return {"format": 1, "method": method, "field_type": field_type, "created_at": now_iso(),
            "dqd_version": dqd_version(), "base_model": {"name": BASE_MODEL_NAME, "sha256": base_model_sha256()},
            "tokenizer": {"kind": "tokenizers (fast, WordPiece, uncased)",
                          "sha256": file_sha256(base_model_dir() / "tokenizer.json")},
            "data": {"distinct_values": len(values), "sha256": data_sha256(values)},
            "options": asdict(options), "description": _description(field_type, out)}


# ---- ml ---------------------------------------------------------------------------------------------------------

def ensure_encoder(out: Path) -> tuple[Path, dict[str, Any]]:
    """The shared encoder export for this base model (reused if present): folder and its metadata reference."""
    sha = base_model_sha256()
    folder = find_shared(out, "encoder", "base_sha256", sha)
    if folder is None:
        from .graphs import export_onnx, load_encoder

        def build(tmp: Path) -> dict[str, Any]:
            check = export_onnx(load_encoder(), "encoder", tmp / "model.onnx")
            shutil.copy(base_model_dir() / "tokenizer.json", tmp / "tokenizer.json")
            return {"kind": "encoder", "base_model": BASE_MODEL_NAME, "base_sha256": sha, "created_at": now_iso(),
                    "inputs": ["input_ids", "attention_mask"], "output": "sentence_embedding", **check}

        folder = publish(shared_folder(out, "encoder"), build)
    return folder, {"path": str(folder.relative_to(out)), "file": "model.onnx",
                    "sha256": file_sha256(folder / "model.onnx")}


def _embed_torch(texts: Sequence[str]) -> np.ndarray:
    """Embeddings with the PyTorch fp32 reference (training runs once; no batcher needed)."""
    import torch

    from .base import pad
    from .graphs import load_encoder

    model = load_encoder()
    encs = encode(texts)
    order = np.argsort([len(e.ids) for e in encs], kind="stable")
    out = np.zeros((len(texts), 384), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), 128):
            chunk = order[start: start + 128]
            ids, mask = pad([encs[i].ids for i in chunk])
            out[chunk] = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out


def _train_ml(values: Mapping[str, list[str]], errors: Mapping[str, list[tuple[str, str]]], out: Path,
              options: TrainOptions, report: TrainReport) -> None:
    _encoder_dir, encoder_ref = _timed(report, "ml_export", lambda: ensure_encoder(out))
    texts = sorted({v for vs in values.values() for v in vs} | {v for es in errors.values() for _, v in es})
    emb = _timed(report, "ml_embed", lambda: _embed_torch(texts))
    row = {t: i for i, t in enumerate(texts)}
    for f, vs in values.items():
        ref_values = np.array(vs)
        ref_emb = emb[[row[v] for v in vs]]
        clean, fold = cross_fit_scores(ref_values, ref_emb, options.k, options.folds, options.seed)
        kinds = [k for k, _ in errors[f]]
        err_emb = emb[[row[v] for _, v in errors[f]]]
        # each injected error is scored like an unseen value: against the index without one fold
        err_fold = np.arange(len(kinds)) % max(2, min(options.folds, len(vs)))
        err_scores = np.empty(len(kinds))
        for g in np.unique(err_fold):
            train = fold != g
            if train.sum() < 2:
                train = np.ones(len(vs), dtype=bool)
            err_scores[err_fold == g] = KnnIndex(ref_values[train], ref_emb[train], options.k).query(
                err_emb[err_fold == g]).score
        cal = calibrate(clean, err_scores, kinds, options.max_fpr)
        index = KnnIndex(ref_values, ref_emb, options.k)

        def build(tmp: Path, index: KnnIndex = index, f: str = f, vs: list[str] = vs, cal=cal) -> dict[str, Any]:
            index.save(tmp / "reference.npz")
            meta = _common_meta("ml", f, vs, options, out)
            meta.update({"encoder": encoder_ref, "score": "knn_lof_ratio", "k": index.k, "floor": index.floor,
                         "threshold": cal.threshold, "confidence_scale": cal.scale, "heldout": cal.to_dict(),
                         "active": cal.auc >= options.min_auc})
            return meta

        path = publish(out / f / "ml", build)
        report.add(path, _read_meta(path))
        log.info("ml %s: %d values, threshold %.3f, held-out fpr %.3f recall %.3f", f, len(vs), cal.threshold,
                 cal.fpr, cal.recall)


# ---- llm --------------------------------------------------------------------------------------------------------

def _train_llm(values: Mapping[str, list[str]], errors: Mapping[str, list[tuple[str, str]]], out: Path,
               options: TrainOptions, report: TrainReport) -> None:
    import torch

    from .graphs import TokenLogProb, export_onnx
    from .mlm_train import MlmTrainConfig, fine_tune

    rng = np.random.default_rng(options.seed)
    train: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    for f, vs in values.items():
        perm = rng.permutation(len(vs))
        n_held = max(1, round(len(vs) * options.heldout_share))
        held[f] = [vs[i] for i in sorted(perm[:n_held])]
        train[f] = [vs[i] for i in sorted(perm[n_held:])]
    config = MlmTrainConfig(steps=options.mlm_steps, batch_size=options.mlm_batch_size,
                            train_layers=options.mlm_train_layers, time_budget=options.mlm_time_budget,
                            seed=options.seed)
    model, train_report = _timed(report, "llm_train", lambda: fine_tune(train, config))
    scorer = TokenLogProb(model).eval()

    def build_network(tmp: Path) -> dict[str, Any]:
        model.save_pretrained(str(tmp), safe_serialization=True)
        shutil.copy(base_model_dir() / "tokenizer.json", tmp / "tokenizer.json")
        check = export_onnx(scorer, "mlm", tmp / "model.onnx")
        return {"kind": "mlm", "base_model": BASE_MODEL_NAME, "base_sha256": base_model_sha256(),
                "created_at": now_iso(), "inputs": ["input_ids", "attention_mask", "token_type_ids", "target_ids"],
                "output": "token_scores", "training": asdict(train_report), "config": asdict(config),
                "data_sha256": data_sha256([f"{f}\t{v}" for f in sorted(train) for v in train[f]]), **check}

    net_dir = _timed(report, "llm_export", lambda: publish(shared_folder(out, "mlm"), build_network))
    net_ref = {"path": str(net_dir.relative_to(out)), "file": "model.safetensors",
               "sha256": file_sha256(net_dir / "model.safetensors"),
               "onnx_sha256": file_sha256(net_dir / "model.onnx")}

    def run(items: list[mlm_score.Item]) -> list[np.ndarray]:
        feeds = mlm_score.feeds_of(items)
        with torch.inference_mode():
            got = scorer(*(torch.from_numpy(feeds[n]) for n in ("input_ids", "attention_mask", "token_type_ids",
                                                                 "target_ids"))).numpy()
        return [got[i, : len(it[0])] for i, it in enumerate(items)]

    started = time.perf_counter()
    for f, vs in values.items():
        kinds = [k for k, _ in errors[f]]
        texts = held[f] + [v for _, v in errors[f]]
        scores = score_values(run, f, texts, options.scoring, options.value_score)
        cal = calibrate(scores[: len(held[f])], scores[len(held[f]):], kinds, options.max_fpr)

        def build(tmp: Path, f: str = f, vs: list[str] = vs, cal=cal, scores: np.ndarray = scores
                  ) -> dict[str, Any]:
            np.savez(tmp / "calibration.npz", known_values=np.array(vs, dtype=str),
                     heldout_scores=scores[: len(held[f])], error_scores=scores[len(held[f]):])
            meta = _common_meta("llm", f, vs, options, out)
            meta.update({"model": net_ref, "scoring": options.scoring, "score": options.value_score,
                         "prefix": field_prefix(f), "threshold": cal.threshold, "confidence_scale": cal.scale,
                         "heldout": cal.to_dict(), "training": asdict(train_report),
                         "active": cal.auc >= options.min_auc})
            return meta

        path = publish(out / f / "llm", build)
        report.add(path, _read_meta(path))
        log.info("llm %s: threshold %.2f, held-out fpr %.3f recall %.3f", f, cal.threshold, cal.fpr, cal.recall)
    report.seconds["llm_calibrate"] = round(time.perf_counter() - started, 2)


def score_values(run: Callable[[list[mlm_score.Item]], list[np.ndarray]], field_type: str, values: Sequence[str],
                 scoring: str, how: str = "min_logprob") -> np.ndarray:
    """Value scores (``mlm_score.value_scores``) with ``run`` as the mlm graph, no batcher."""
    encs = encode(list(values), [field_prefix(field_type)] * len(values))
    if scoring == "pll":
        items, owners = mlm_score.pll_items(encs, special_ids()["mask"])
        tokens = mlm_score.collect_pll(encs, owners, mlm_score.run_items(run, items))
    else:
        tokens = mlm_score.collect_single(encs, mlm_score.run_items(run, mlm_score.single_items(encs)))
    return mlm_score.value_scores(tokens, how)


# ---- helpers ----------------------------------------------------------------------------------------------------

def _read_meta(path: Path) -> dict[str, Any]:
    import json

    return json.loads((path / "metadata.json").read_text())


def _description(field_type: str, out: Path | None = None) -> str:
    """The field type's rules description: from the repository trained into, else dqd's bundled rules."""
    from dqd_server.engine.repository import BUNDLED_RULES

    for root in ((out,) if out is not None else ()) + (BUNDLED_RULES,):
        dirs = numeric_dirs(Path(root) / field_type)
        if dirs:
            import yaml

            try:
                return str(yaml.safe_load((dirs[-1] / "field.yaml").read_text()).get("description", "")).strip()
            except Exception:  # noqa: BLE001 - a description is a nicety
                return ""
    return f"{field_prefix(field_type)} (model-based)"


def ensure_rules(out: Path, field_type: str) -> None:
    """Give ``field_type`` a rules version in ``out`` if it has none, so the repository loads as a whole."""
    if numeric_dirs(out / field_type):
        return
    from dqd_server.engine.repository import BUNDLED_RULES

    bundled = numeric_dirs(Path(BUNDLED_RULES) / field_type)
    if bundled:
        shutil.copytree(bundled[-1], out / field_type / bundled[-1].name)
        return
    target = out / field_type / "1"
    target.mkdir(parents=True, exist_ok=True)
    import json

    (target / "field.yaml").write_text(f"description: {json.dumps(_description(field_type))}\n", encoding="utf-8")


__all__ = ["SHARED_DIR", "TrainOptions", "TrainReport", "distinct_values", "train_repository"]
