"""``dqd demo``: a generated catalog with injected errors, streamed through a real server and client.

``--semantic RATE`` also plants errors that only the model-based methods can see (``inject_semantic``), and
``--write FILE`` writes the dirty catalog and its injected cells instead of checking it, for ``dqd-client check``.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .catalog import CATALOG_COLUMNS, INJECTED_SCHEMA, generate_catalog, inject_errors
from .launcher import ServerProcess

# descriptive columns: where a wrong-but-well-formed value is possible (identifiers and prices are left to rules)
SEMANTIC_COLUMNS = ("material", "color_name", "category", "size", "season", "care_instructions")


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


def inject_semantic(table: pa.Table, injected: pa.Table, clean: pa.Table, rate: float, seed: int
                    ) -> tuple[pa.Table, pa.Table]:
    """Replace about ``rate`` of the descriptive cells (not already injected) by well-formed but wrong values made
    from the ``clean`` table's values (``models.corrupt``: a value of another field, a word from another field, the words
    shuffled); the log's kinds are ``semantic_<kind>``. Returns (table, injected + these cells)."""
    from .models.corrupt import semantic_errors

    columns = [c for c in SEMANTIC_COLUMNS if c in table.column_names]
    values = {c: sorted({v for v in clean.column(c).to_pylist() if v and v.strip()})[:3000] for c in columns}
    errors = semantic_errors(values, per_field=400, seed=seed)
    rng = np.random.default_rng(seed + 1)
    log: dict[str, list] = {k: [] for k in INJECTED_SCHEMA.names}
    taken = {c: set(injected.filter(pc.equal(injected.column("column"), c)).column("row").to_pylist())
             for c in columns}
    for c in columns:
        if not errors.get(c):
            continue
        cells = table.column(c).to_pylist()
        for row in np.flatnonzero(rng.random(len(cells)) < rate).tolist():
            if row in taken[c] or not cells[row]:
                continue
            kind, wrong = errors[c][int(rng.integers(len(errors[c])))]
            for key, val in zip(INJECTED_SCHEMA.names, (row, c, f"semantic_{kind}", cells[row], wrong)):
                log[key].append(val)
            cells[row] = wrong
        table = table.set_column(table.schema.get_field_index(c), c, pa.array(cells, pa.string()))
    return table, pa.concat_tables([injected, pa.table(log, schema=INJECTED_SCHEMA)])


def write_demo(path: str, table: pa.Table, injected: pa.Table) -> None:
    """The dirty catalog (CSV unless the name ends in .parquet) and ``<path>.injected.csv`` beside it."""
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        pv.write_csv(table, path)
    pv.write_csv(injected.sort_by([("row", "ascending"), ("column", "ascending")]), f"{path}.injected.csv")
    print(f"wrote {table.num_rows:,} rows to {path} and the {injected.num_rows:,} injected cells to "
          f"{path}.injected.csv")


def run_demo(*, rows: int, error_rate: float, batch_size: int, seed: int, target: str | None,
             semantic: float = 0.0, write: str | None = None, methods: list[str] | None = None) -> int:
    from dqd_client import Client, findings_table  # the demo uses the real client library

    print(f"generating a catalog of {rows:,} rows × {len(CATALOG_COLUMNS)} fields, "
          f"injecting errors into {error_rate:.1%} of cells …")
    clean = generate_catalog(rows, seed=seed)
    dirty, injected = inject_errors(clean, rate=error_rate, seed=seed)
    if semantic:
        dirty, injected = inject_semantic(dirty, injected, clean, semantic, seed)
    if write:
        write_demo(write, dirty, injected)
        return 0
    names = list(CATALOG_COLUMNS)
    with _server(target) as address, Client(address) as client:
        print(f"streaming to dqd at {address} in batches of {batch_size:,} rows …")
        started = time.perf_counter()
        stream = client.detect(_batches(dirty, batch_size), CATALOG_COLUMNS, methods=methods)
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
    _print_recall_by_method(findings, injected, names)
    return 0


def _print_recall_by_method(findings: pa.Table, injected: pa.Table, names: list[str]) -> None:
    """Recall of each method on each kind of injected error: which method finds what."""
    methods = sorted(set(findings.column("method").to_pylist()))
    if len(methods) < 2:
        return
    by = {m: recall_by_kind(findings.filter(pc.equal(findings.column("method"), m)), injected, names)
          for m in methods}
    kinds = sorted(set(injected.column("kind").to_pylist()))
    print(f"\n{'recall of':<28}" + "".join(f"{m:>11}" for m in methods))
    for k in kinds:
        print(f"{k:<28}" + "".join(f"{by[m].get(k, 0.0):>11.2f}" for m in methods))


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
