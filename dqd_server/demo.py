"""``dqd demo``: a generated catalog with injected errors, streamed through a real server and client."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .catalog import CATALOG_COLUMNS, generate_catalog, inject_errors
from .launcher import ServerProcess


def cell_keys(rows: pa.Array, columns: pa.Array, names: list[str]) -> np.ndarray:
    """Unique int64 keys of (row, column) cells, for set arithmetic between findings and truth."""
    col_idx = pc.index_in(columns, value_set=pa.array(names)).to_numpy(zero_copy_only=False)
    return np.unique(rows.to_numpy(zero_copy_only=False).astype(np.int64) * len(names) + col_idx)


def score(findings: pa.Table, injected: pa.Table, names: list[str]) -> dict[str, float]:
    """Cell-level precision, recall and F1 of findings against injected cells."""
    found = cell_keys(findings.column("row").combine_chunks(), findings.column("column").combine_chunks(), names)
    truth = cell_keys(injected.column("row").combine_chunks(), injected.column("column").combine_chunks(), names)
    tp = len(np.intersect1d(found, truth, assume_unique=True))
    precision = tp / len(found) if len(found) else 1.0
    recall = tp / len(truth) if len(truth) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"flagged_cells": len(found), "injected_cells": len(truth), "true_positives": tp,
            "precision": precision, "recall": recall, "f1": f1}


def recall_by_kind(findings: pa.Table, injected: pa.Table, names: list[str]) -> dict[str, float]:
    found = cell_keys(findings.column("row").combine_chunks(), findings.column("column").combine_chunks(), names)
    keys = (injected.column("row").to_numpy().astype(np.int64) * len(names)
            + pc.index_in(injected.column("column"), value_set=pa.array(names)).to_numpy(zero_copy_only=False))
    hit = np.isin(keys, found)
    kinds = injected.column("kind").to_numpy(zero_copy_only=False)
    return {str(k): float(hit[kinds == k].mean()) for k in sorted(set(kinds))}


def run_demo(*, rows: int, error_rate: float, batch_size: int, seed: int, target: str | None) -> int:
    from dqd_client import Client, findings_table  # the demo uses the real client library

    print(f"generating a catalog of {rows:,} rows × {len(CATALOG_COLUMNS)} fields, "
          f"injecting errors into {error_rate:.1%} of cells …")
    clean = generate_catalog(rows, seed=seed)
    dirty, injected = inject_errors(clean, rate=error_rate, seed=seed)
    names = list(CATALOG_COLUMNS)
    with _server(target) as address, Client(address) as client:
        print(f"streaming to dqd at {address} in batches of {batch_size:,} rows …")
        started = time.perf_counter()
        stream = client.detect(_batches(dirty, batch_size), CATALOG_COLUMNS)
        findings = findings_table(stream)
        elapsed = time.perf_counter() - started
        summary = stream.summary
    _print_summary(summary, findings, elapsed)
    s = score(findings, injected, names)
    print(f"\nagainst the injected cells: precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
          f"F1 {s['f1']:.3f}  ({s['true_positives']:,} of {s['injected_cells']:,} injected cells found, "
          f"{s['flagged_cells']:,} cells flagged)")
    print("recall by kind of injected error: " + ", ".join(
        f"{k} {v:.2f}" for k, v in recall_by_kind(findings, injected, names).items()))
    return 0


def _batches(table: pa.Table, size: int) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches(max_chunksize=size)


@contextlib.contextmanager
def _server(target: str | None) -> Iterator[str]:
    if target:
        yield target
        return
    with ServerProcess() as srv:
        yield srv.target


def _print_summary(summary, findings: pa.Table, elapsed: float) -> None:  # noqa: ANN001 - client Summary
    print(f"\n{summary.rows:,} rows, {summary.cells_checked:,} cells checked, {summary.findings:,} findings "
          f"in {elapsed:.2f}s ({summary.rows / elapsed:,.0f} rows/s end to end, client included)")
    if not findings.num_rows:
        return
    counts = findings.group_by(["column", "method"]).aggregate([([], "count_all")]).sort_by("column")
    print(f"\n{'column':<20}{'method':<12}{'findings':>10}")
    for col, meth, n in zip(*(counts.column(c).to_pylist() for c in ("column", "method", "count_all"))):
        print(f"{col:<20}{meth:<12}{n:>10,}")
