"""The findings table: its schema, and the expansion of per-distinct-value hits back to rows."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

FINDINGS_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),  # 0-based index over the whole stream
        pa.field("column", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("confidence", pa.float64(), nullable=False),
        pa.field("value", pa.string()),  # the cell as text; null for a missing cell
    ]
)


def empty_findings() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=FINDINGS_SCHEMA)


def rows_of_hits(indices: np.ndarray, hit_index: np.ndarray, n_distinct: int) -> tuple[np.ndarray, np.ndarray]:
    """Map hits on distinct values to the rows holding those values, without a loop.

    ``indices`` gives each row's position in the distinct values; ``hit_index`` each hit's.
    Returns ``(rows, hit_pos)``: for every (row, hit) pair, the row and the hit's position,
    ordered by row.
    """
    if len(hit_index) == 0 or len(indices) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    hit_order = np.argsort(hit_index, kind="stable")
    per_value = np.bincount(hit_index, minlength=n_distinct)
    first_hit = np.cumsum(per_value) - per_value
    rows = np.flatnonzero(per_value[indices] > 0)
    value_of_row = indices[rows]
    reps = per_value[value_of_row]
    rows = np.repeat(rows, reps)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(reps) - reps, reps)
    hit_pos = hit_order[np.repeat(first_hit[value_of_row], reps) + within]
    return rows.astype(np.int64), hit_pos.astype(np.int64)


def build_findings(
    *,
    rows: np.ndarray,
    hit_pos: np.ndarray,
    hits: pa.RecordBatch,
    distinct: pa.Array,
    column: str,
    field: str,
    method: str,
    first_row: int,
) -> pa.RecordBatch:
    """Assemble findings rows for one (column, method) from expanded hits."""
    n = len(rows)
    take = pa.array(hit_pos)
    value_idx = hits.column("index").take(take)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(rows + first_row, pa.int64()),
            pa.repeat(pa.scalar(column, pa.string()), n),
            pa.repeat(pa.scalar(field, pa.string()), n),
            pa.repeat(pa.scalar(method, pa.string()), n),
            hits.column("code").take(take),
            hits.column("message").take(take),
            hits.column("confidence").take(take),
            distinct.take(value_idx).cast(pa.string()),
        ],
        schema=FINDINGS_SCHEMA,
    )


def concat_findings(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    """Concatenate findings of several columns/methods into one batch ordered by row (stable)."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return empty_findings()
    table = pa.Table.from_batches(parts, schema=FINDINGS_SCHEMA).combine_chunks()
    if len(parts) > 1:
        order = np.argsort(table.column("row").to_numpy(), kind="stable")
        table = table.take(pa.array(order))
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else empty_findings()
