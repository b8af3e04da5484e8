"""Cell-level scores of findings against the truth: precision, recall, F1 and confusion counts per method,
per column × method and overall, plus a precision–recall curve per method.

A cell is (row, column). A method flags a cell when it has at least one finding there (code other than ``OK``);
its confidence on the cell is the highest of those findings. The overall verdict is method ``combined`` when it
ran, otherwise the union of all methods.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COMBINED = "combined"
CURVE_POINTS = 200


def truth_from_pair(dirty: pa.Table, clean: pa.Table) -> pa.Table:
    """Cells whose text differs between ``dirty`` and ``clean`` (columns aligned by position; nulls count as
    empty text). Returns ``row`` (int64) and ``column`` (the dirty table's column name)."""
    if dirty.num_rows != clean.num_rows:
        raise ValueError(f"the dirty table has {dirty.num_rows} rows, the clean one {clean.num_rows}; "
                         "they must be the same table row by row")
    if dirty.num_columns != clean.num_columns:
        raise ValueError(f"the dirty table has {dirty.num_columns} columns, the clean one {clean.num_columns}; "
                         "columns are aligned by position")
    rows, cols = [], []
    for i, name in enumerate(dirty.column_names):
        d = pc.fill_null(dirty.column(i).cast(pa.string()), "")
        c = pc.fill_null(clean.column(i).cast(pa.string()), "")
        diff = np.flatnonzero(np.asarray(pc.not_equal(d, c).to_numpy(), dtype=bool))
        rows.append(diff.astype(np.int64))
        cols.append(np.full(len(diff), name, dtype=object))
    return pa.table({"row": pa.array(np.concatenate(rows) if rows else [], pa.int64()),
                     "column": pa.array(np.concatenate(cols) if cols else [], pa.string())})


def _keys(rows: np.ndarray, columns: pa.Array | pa.ChunkedArray, names: Sequence[str]) -> np.ndarray:
    idx = pc.index_in(columns, value_set=pa.array(list(names), pa.string()))
    col = np.asarray(pc.fill_null(idx, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    ok = col >= 0
    return rows[ok].astype(np.int64) * len(names) + col[ok]


def prf(tp: int, fp: int, fn: int, cells: int | None = None) -> dict[str, Any]:
    precision = tp / (tp + fp) if tp + fp else (1.0 if not fn else 0.0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out: dict[str, Any] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                           "tp": int(tp), "fp": int(fp), "fn": int(fn)}
    if cells is not None:
        out["tn"] = int(cells - tp - fp - fn)
    return out


def _cells_with_confidence(findings: pa.Table, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct flagged cell keys and the highest confidence on each."""
    if not findings.num_rows:
        return np.empty(0, np.int64), np.empty(0)
    keys = _keys(findings.column("row").to_numpy(), findings.column("column"), names)
    conf = findings.column("confidence").to_numpy()
    idx = pc.index_in(findings.column("column"), value_set=pa.array(list(names), pa.string()))
    conf = conf[np.asarray(pc.fill_null(idx, -1).to_numpy(zero_copy_only=False)) >= 0]
    order = np.lexsort((-conf, keys))
    keys, conf = keys[order], conf[order]
    first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.empty(0, bool)
    return keys[first], conf[first]


def curve(keys: np.ndarray, conf: np.ndarray, truth: np.ndarray) -> list[dict[str, float]]:
    """Precision and recall when keeping cells with confidence >= threshold, for each threshold."""
    if not len(keys) or not len(truth):
        return []
    order = np.argsort(-conf, kind="stable")
    hit = np.isin(keys[order], truth)
    tp = np.cumsum(hit)
    n = np.arange(1, len(order) + 1)
    c = conf[order]
    last = np.r_[c[1:] != c[:-1], True]  # one point per distinct threshold
    pts = np.flatnonzero(last)
    if len(pts) > CURVE_POINTS:
        pts = pts[np.unique(np.linspace(0, len(pts) - 1, CURVE_POINTS).astype(int))]
    return [{"threshold": round(float(c[i]), 4), "precision": round(float(tp[i] / n[i]), 4),
             "recall": round(float(tp[i] / len(truth)), 4)} for i in pts]


def score(findings: pa.Table, truth: pa.Table, names: Sequence[str], n_rows: int,
          methods: Sequence[str] | None = None) -> dict[str, Any]:
    """Scores of ``findings`` against ``truth`` (row, column) over a table of ``n_rows`` × ``names``."""
    names = list(names)
    if findings.num_rows:
        findings = findings.filter(pc.not_equal(findings.column("code"), "OK"))
    truth_keys = np.unique(_keys(truth.column("row").to_numpy(), truth.column("column"), names))
    cells = n_rows * len(names)
    present = sorted(set(findings.column("method").to_pylist())) if findings.num_rows else []
    methods = list(methods) if methods else present
    per_method: dict[str, Any] = {}
    per_column: dict[str, dict[str, Any]] = {n: {"errors": 0, "methods": {}} for n in names}
    col_of_truth = truth_keys % len(names) if names else truth_keys
    for i, n in enumerate(names):
        per_column[n]["errors"] = int((col_of_truth == i).sum())
    curves: dict[str, Any] = {}
    flagged_by: dict[str, np.ndarray] = {}
    for m in methods:
        sub = findings.filter(pc.equal(findings.column("method"), m)) if findings.num_rows else findings
        keys, conf = _cells_with_confidence(sub, names)
        flagged_by[m] = keys
        per_method[m] = _scores(keys, truth_keys, cells)
        per_method[m]["flagged"] = int(len(keys))
        curves[m] = curve(keys, conf, truth_keys)
        for i, n in enumerate(names):
            mine = keys[keys % len(names) == i]
            truth_i = truth_keys[col_of_truth == i]
            per_column[n]["methods"][m] = _scores(mine, truth_i, n_rows)
    verdict = COMBINED if COMBINED in flagged_by else "union"
    if verdict == "union":
        parts = [k for m, k in flagged_by.items()]
        overall_keys = np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
    else:
        overall_keys = flagged_by[COMBINED]
    union_parts = [k for m, k in flagged_by.items() if m != COMBINED]
    union = np.unique(np.concatenate(union_parts)) if union_parts else np.empty(0, np.int64)
    overall = _scores(overall_keys, truth_keys, cells)
    overall.update({"verdict": verdict, "flagged": int(len(overall_keys))})
    for i, n in enumerate(names):
        per_column[n]["overall"] = _scores(overall_keys[overall_keys % len(names) == i],
                                           truth_keys[col_of_truth == i], n_rows)
    return {
        "overall": overall,
        "union": {**_scores(union, truth_keys, cells), "flagged": int(len(union))},
        "table": {"rows": n_rows, "columns": len(names), "cells": cells, "errors": int(len(truth_keys)),
                  "error_rate": round(len(truth_keys) / cells, 4) if cells else 0.0},
        "methods": per_method,
        "columns": per_column,
        "curves": curves,
    }


def _scores(found: np.ndarray, truth: np.ndarray, cells: int) -> dict[str, Any]:
    tp = len(np.intersect1d(found, truth))
    return prf(tp, len(found) - tp, len(truth) - tp, cells)


def recall_by_kind(findings: pa.Table, injected: pa.Table, names: Sequence[str],
                   method: str | None = None) -> dict[str, float]:
    """Share of injected cells of each kind that were flagged (by ``method``, or by any method)."""
    if findings.num_rows:
        findings = findings.filter(pc.not_equal(findings.column("code"), "OK"))
        if method:
            findings = findings.filter(pc.equal(findings.column("method"), method))
    found = np.unique(_keys(findings.column("row").to_numpy(), findings.column("column"), names)) \
        if findings.num_rows else np.empty(0, np.int64)
    keys = _keys(injected.column("row").to_numpy(), injected.column("column"), names)
    hit = np.isin(keys, found)
    kinds = np.asarray(injected.column("kind").to_pylist(), dtype=object)
    return {str(k): round(float(hit[kinds == k].mean()), 4) for k in sorted(set(kinds.tolist()))}
