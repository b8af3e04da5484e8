"""Per (column, method) finding statistics, gathered batch by batch with Arrow kernels for detection_results."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dqd_server.engine.pipeline import OK_CODE

HISTOGRAM_BINS = 10
MAX_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 200
_EDGES = [round(i / HISTOGRAM_BINS, 6) for i in range(HISTOGRAM_BINS + 1)]
_GROUP = ["column", "field", "method", "code", "bin"]


@dataclass
class PairStats:
    """What the findings of one (column, method) added up to so far (``OK`` rows excluded)."""

    column: str
    method: str
    field: str
    errors: int = 0
    conf_sum: float = 0.0
    conf_min: float = math.inf
    conf_max: float = -math.inf
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    codes: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str | None]] = field(default_factory=dict)

    def confidence_scores(self) -> dict[str, Any]:
        n = self.errors
        return {
            "count": n,
            "mean": self.conf_sum / n if n else None,
            "min": self.conf_min if n else None,
            "max": self.conf_max if n else None,
            "histogram": {"edges": _EDGES, "counts": list(self.histogram)},
        }

    def detailed_results(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "field": self.field,
            "method": self.method,
            "findings_by_code": dict(sorted(self.codes.items())),
            "examples": {code: list(vals) for code, vals in sorted(self.examples.items())},
        }


class FindingStats:
    """Accumulates findings batches; one Python step per group of a batch, never per finding row."""

    def __init__(self, columns: Mapping[str, str], methods: Sequence[str]) -> None:
        self.pairs: dict[tuple[str, str], PairStats] = {
            (col, meth): PairStats(col, meth, ftype) for col, ftype in columns.items() for meth in methods
        }

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.pairs.values())

    def add(self, findings: pa.RecordBatch) -> None:
        table = pa.table(findings.select(["column", "field", "method", "code", "confidence", "value"]))
        table = table.filter(pc.not_equal(table["code"], OK_CODE))
        if table.num_rows == 0:
            return
        conf = table["confidence"].to_numpy()
        bins = np.clip(np.nan_to_num(np.floor(conf * HISTOGRAM_BINS), nan=0.0), 0, HISTOGRAM_BINS - 1)
        table = table.append_column("bin", pa.array(bins.astype(np.int64)))
        grouped = table.group_by(_GROUP, use_threads=False).aggregate(
            [([], "count_all"), ("confidence", "sum"), ("confidence", "min"), ("confidence", "max")]
        )
        cols = [grouped[name].to_pylist() for name in
                [*_GROUP, "count_all", "confidence_sum", "confidence_min", "confidence_max"]]
        wants_examples = False
        for col, fld, meth, code, b, n, total, lo, hi in zip(*cols):
            p = self.pairs.get((col, meth))
            if p is None:
                p = self.pairs[(col, meth)] = PairStats(col, meth, fld)
            p.errors += n
            p.conf_sum += total
            p.conf_min = min(p.conf_min, lo)
            p.conf_max = max(p.conf_max, hi)
            p.histogram[b] += n
            p.codes[code] = p.codes.get(code, 0) + n
            wants_examples = wants_examples or len(p.examples.get(code, ())) < MAX_EXAMPLES
        if wants_examples:
            self._add_examples(table)

    def _add_examples(self, table: pa.Table) -> None:
        """Keep up to MAX_EXAMPLES distinct values per (column, method, code), in order of appearance."""
        keys = ["column", "method", "code"]
        distinct = table.group_by([*keys, "value"], use_threads=False).aggregate([])
        distinct = distinct.sort_by([(k, "ascending") for k in keys])  # stable: keeps appearance order
        n = distinct.num_rows
        change = np.ones(n, dtype=bool)
        if n > 1:
            for k in keys:
                arr = distinct[k]
                change[1:] |= pc.not_equal(arr.slice(1), arr.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(change)
        rank = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
        head = distinct.filter(pa.array(rank < MAX_EXAMPLES))
        for col, meth, code, value in zip(*(head[k].to_pylist() for k in [*keys, "value"])):
            examples = self.pairs[(col, meth)].examples.setdefault(code, [])
            if value is not None and len(value) > MAX_EXAMPLE_CHARS:
                value = value[:MAX_EXAMPLE_CHARS] + "…"
            if len(examples) < MAX_EXAMPLES and value not in examples:
                examples.append(value)

    def counts(self) -> list[dict[str, Any]]:
        """Findings per (column, field, method), as stored in ``jobs.counts``."""
        return [
            {"column": p.column, "field": p.field, "method": p.method, "count": p.errors}
            for p in sorted(self.pairs.values(), key=lambda p: (p.column, p.field, p.method)) if p.errors
        ]


def counts_json(counts: Mapping[tuple[str, str, str], int]) -> list[dict[str, Any]]:
    """``Summary.counts`` as the JSON list stored in ``jobs.counts``."""
    return [
        {"column": col, "field": fld, "method": meth, "count": int(n)}
        for (col, fld, meth), n in sorted(counts.items()) if n
    ]
