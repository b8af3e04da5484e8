"""What a detector returns: findings on the *distinct* values of a column, as an Arrow batch.

A detector never sees rows. The engine dictionary-encodes each column, hands the detector the
distinct values once, and expands the hits back to rows (see ``findings.expand``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

# A typed empty string: comparing with a plain "" makes pyarrow infer a type (and try to import dateutil) per call.
EMPTY = pa.scalar("", pa.string())

HITS_SCHEMA = pa.schema(
    [
        pa.field("index", pa.int64(), nullable=False),  # position in the distinct-values array
        pa.field("code", pa.string(), nullable=False),  # stable reason code, e.g. "NOT_ALLOWED"
        pa.field("message", pa.string(), nullable=False),
        pa.field("confidence", pa.float64(), nullable=False),  # 0..1 that the cell is wrong
    ]
)


def make_hits(
    index: np.ndarray | Sequence[int],
    code: str | pa.Array | Sequence[str],
    message: str | pa.Array | Sequence[str],
    confidence: float | np.ndarray | Sequence[float],
) -> pa.RecordBatch:
    """Build a hits batch; scalar code/message/confidence are broadcast to every index."""
    idx = np.asarray(index, dtype=np.int64)
    n = len(idx)

    def _strings(v: str | pa.Array | Sequence[str]) -> pa.Array:
        if isinstance(v, str):
            return pa.array([v] * n, pa.string()) if n else pa.array([], pa.string())
        return pa.array(v, pa.string()) if not isinstance(v, pa.Array) else v.cast(pa.string())

    conf = np.full(n, confidence, dtype=np.float64) if np.isscalar(confidence) else np.asarray(
        confidence, dtype=np.float64
    )
    return pa.RecordBatch.from_arrays(
        [pa.array(idx), _strings(code), _strings(message), pa.array(conf)], schema=HITS_SCHEMA
    )


def empty_hits() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=HITS_SCHEMA)


def concat_hits(parts: Sequence[pa.RecordBatch]) -> pa.RecordBatch:
    """Concatenate hits batches (an empty list gives an empty batch)."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return empty_hits()
    if len(parts) == 1:
        return parts[0]
    return pa.Table.from_batches(parts, schema=HITS_SCHEMA).combine_chunks().to_batches()[0]
