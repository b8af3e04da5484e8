"""Method "combined": one verdict per cell from the findings of all other methods.

Each method's finding on a cell is evidence that the cell is wrong, worth ``weight × confidence`` where the
weight is the method's measured F1 on the cell's field type (``weights`` in field.yaml, written by
``dqd evaluate --write-weights``; 1.0 when unmeasured). Evidence from different methods combines like
independent signals (noisy-OR)::

    score(cell) = 1 − Π over methods m (1 − weight(field, m) · confidence_m(cell))

so one reliable method is enough, an unreliable one needs support, and a method that is silent on a cell does
not vote against it (methods look for different kinds of errors). A cell whose score reaches the threshold
(plan thresholds ``combined`` or ``FIELD.combined``, default 0.5) gets one ``combined`` finding: the code and
message of its strongest piece of evidence, the contributing methods and the score as confidence.

It is post-processing of the findings batch (vectorized with numpy: per (cell, method) maxima, a bincount of
log-terms per cell); the engine runs the other methods first (``pipeline.Engine.detect``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .detector import MethodInfo, register
from .errors import InvalidInput
from .findings import FINDINGS_SCHEMA, empty_findings
from .repository import FieldSpec, load_repository

METHOD = "combined"
DEFAULT_THRESHOLD = 0.5
DEFAULT_WEIGHT = 1.0
_MAX_EVIDENCE = 1 - 1e-9


class Combiner:
    """Merges findings of the other methods into one weighted verdict per cell."""

    method = METHOD

    def __init__(self, specs: Mapping[str, FieldSpec]) -> None:
        self._specs = dict(specs)
        self._weights = {(name, m): float(w) for name, s in self._specs.items() for m, w in s.weights.items()}

    @classmethod
    def from_repository(cls, root: Path) -> Combiner:
        return cls(load_repository(root))

    def fields(self) -> Mapping[str, MethodInfo]:
        """Field types with measured/declared weights (any field type may still be combined)."""
        return {name: MethodInfo(s.version, len(s.weights)) for name, s in self._specs.items() if s.weights}

    def describe(self, field: str) -> str:
        if field not in self._specs:
            raise InvalidInput(f"unknown field type {field!r}; known: {sorted(self._specs)}")
        return self._specs[field].description

    def context_free(self, field: str) -> bool:
        return False

    def weight(self, field: str, method: str) -> float:
        return self._weights.get((field, method), DEFAULT_WEIGHT)

    def combine(self, findings: pa.RecordBatch, thresholds: Mapping[str, float] | None = None) -> pa.RecordBatch:
        """``combined`` findings (FINDINGS_SCHEMA) from the flagged findings of the other methods."""
        thresholds = thresholds or {}
        f = findings.filter(pc.and_(pc.not_equal(findings.column("code"), "OK"),
                                    pc.not_equal(findings.column("method"), METHOD))) if findings.num_rows else findings
        if not f.num_rows:
            return empty_findings()
        rows = f.column("row").to_numpy()
        col_enc = pc.dictionary_encode(f.column("column"))
        col = np.asarray(col_enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        meth_enc = pc.dictionary_encode(f.column("method"))
        meth = np.asarray(meth_enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        field_enc = pc.dictionary_encode(f.column("field"))
        fld = np.asarray(field_enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        conf = np.clip(f.column("confidence").to_numpy(), 0.0, 1.0)
        methods = meth_enc.dictionary.to_pylist()
        fields = field_enc.dictionary.to_pylist()
        wtab = np.array([[self.weight(fd, m) for m in methods] for fd in fields], dtype=np.float64)
        evidence = np.clip(wtab[fld, meth] * conf, 0.0, _MAX_EVIDENCE)
        # one cell = (row, column); per (cell, method) the strongest finding
        order = np.lexsort((-evidence, meth, col, rows))
        r, c, m, ev = rows[order], col[order], meth[order], evidence[order]
        new_cm = np.r_[True, (r[1:] != r[:-1]) | (c[1:] != c[:-1]) | (m[1:] != m[:-1])]
        cm = np.flatnonzero(new_cm)
        new_cell = np.r_[True, (r[cm][1:] != r[cm][:-1]) | (c[cm][1:] != c[cm][:-1])]
        cell_of_cm = np.cumsum(new_cell) - 1
        n_cells = int(cell_of_cm[-1]) + 1
        log_keep = np.bincount(cell_of_cm, weights=np.log1p(-ev[cm]), minlength=n_cells)
        score = 1.0 - np.exp(log_keep)
        # the strongest evidence of each cell
        first_cm = cm[np.flatnonzero(new_cell)]
        strongest = np.full(n_cells, -1, dtype=np.int64)
        best = np.full(n_cells, -1.0)
        np.maximum.at(best, cell_of_cm, ev[cm])
        is_best = ev[cm] >= best[cell_of_cm]
        strongest[cell_of_cm[is_best][::-1]] = cm[is_best][::-1]  # first (in order) on ties
        src = order[strongest]
        cell_field = fld[order[first_cm]]
        limit = np.array([thresholds.get(f"{fd}.{METHOD}", thresholds.get(METHOD, DEFAULT_THRESHOLD))
                          for fd in fields], dtype=np.float64)[cell_field]
        flagged = score >= limit - 1e-12
        keep = np.flatnonzero(flagged)
        if not len(keep):
            return empty_findings()
        # which methods contributed to each kept cell (for the message)
        names = np.array(methods, dtype=object)
        contrib: dict[int, list[str]] = {}
        kept = np.zeros(n_cells, dtype=bool)
        kept[keep] = True
        for j in np.flatnonzero(kept[cell_of_cm]):  # one iteration per (kept cell, method)
            contrib.setdefault(int(cell_of_cm[j]), []).append(f"{names[m[cm[j]]]} {ev[cm[j]]:.2f}")
        base = f.take(pa.array(src[keep], pa.int64()))
        msgs = base.column("message").to_pylist()
        out_msgs = [f"{msg} [combined {score[cell]:.2f}: {', '.join(contrib.get(cell, []))}]"
                    for msg, cell in zip(msgs, keep.tolist())]
        return pa.RecordBatch.from_arrays(
            [base.column("row"), base.column("column"), base.column("field"),
             pa.array([METHOD] * len(keep), pa.string()), base.column("code"),
             pa.array(out_msgs, pa.string()), pa.array(score[keep], pa.float64()), base.column("value")],
            schema=FINDINGS_SCHEMA,
        )


register(METHOD, Combiner.from_repository)
