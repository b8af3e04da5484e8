"""CLI output helpers: incremental findings writers, progress reporting and plain-text tables."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from ._exceptions import InputError
from ._models import FINDINGS_SCHEMA

__all__ = ["FindingsWriter", "Progress", "format_table"]

_OUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class FindingsWriter:
    """Writes findings batches to a Parquet or CSV file as they arrive (schema: FINDINGS_SCHEMA)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rows = 0
        fmt = self.check_path(self.path)
        try:
            if fmt == "parquet":
                self._writer: Any = pq.ParquetWriter(self.path, FINDINGS_SCHEMA)
            else:
                self._writer = pcsv.CSVWriter(str(self.path), FINDINGS_SCHEMA)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot write {str(self.path)!r}: {exc}") from exc

    @staticmethod
    def check_path(path: str | os.PathLike[str]) -> str:
        """Return "parquet" or "csv" for ``path``, or raise InputError (nothing is created)."""
        path = Path(path)
        fmt = _OUT_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise InputError(f"unsupported output file {path.name!r}; use .parquet or .csv")
        if not path.parent.is_dir():
            raise InputError(f"output directory does not exist: {str(path.parent)!r}")
        if path.is_dir():
            raise InputError(f"output path is a directory: {str(path)!r}")
        return fmt

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.rows += batch.num_rows

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> FindingsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Progress:
    """Rows done and rows/s on stderr: a tqdm bar when tqdm is installed, else a periodic line."""

    def __init__(self, total: int | None = None, *, enabled: bool = True, interval: float = 2.0,
                 stream: IO[str] | None = None) -> None:
        self.rows = 0
        self.findings = 0
        self._stream = stream or sys.stderr
        self._start = self._last = time.monotonic()
        self._interval = interval
        self._enabled = enabled
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, unit=" rows", unit_scale=True, file=self._stream,
                                 dynamic_ncols=True, desc="dqd")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def update(self, rows: int, findings: int = 0) -> None:
        self.rows += rows
        self.findings += findings
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(rows)
            self._bar.set_postfix(findings=self.findings, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._line()

    def _line(self) -> None:
        rate = self.rows / self.elapsed if self.elapsed > 0 else 0.0
        print(f"dqd: {self.rows:,} rows, {rate:,.0f} rows/s, {self.findings:,} findings",
              file=self._stream, flush=True)

    def close(self) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._line()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned text columns (numbers right-aligned) separated by two spaces."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
