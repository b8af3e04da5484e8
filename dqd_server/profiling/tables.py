"""Tables as text: read any supported file with every cell as its exact text, and name field types.

Profiling, injection and evaluation compare cells as *text* (``"12.0"`` is not ``"12"``, ``"N/A"`` is not an
empty cell), so CSV/TSV files are read with every column as a string and nothing turned into null.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

_FIELD_OK = re.compile(r"[^a-z0-9_]+")


def read_table(path: str | Path) -> pa.Table:
    """Read CSV/TSV (every column as text, empty stays ``""``), Parquet, Arrow IPC/Feather or JSON lines.

    Non-text columns of typed formats are cast to text; the header is kept as written.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() in (".gz", ".bz2") else path.suffix.lower()
    if suffix.startswith((".csv", ".tsv", ".txt")):
        import pyarrow.csv as pacsv

        delimiter = "\t" if suffix.startswith(".tsv") else ","
        header = _unique(_header(path, delimiter))
        convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in header}, strings_can_be_null=False,
                                       null_values=[], quoted_strings_can_be_null=False)
        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                               read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
                               convert_options=convert)
        return table
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif suffix in (".arrow", ".feather", ".ipc"):
        import pyarrow.feather as feather

        table = feather.read_table(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        import pyarrow.json as pajson

        table = pajson.read_json(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .parquet, .arrow or .jsonl")
    return as_text(table)


def _header(path: Path, delimiter: str) -> list[str]:
    import csv
    import io

    opener = open
    if path.suffix.lower() == ".gz":
        import gzip

        opener = gzip.open  # type: ignore[assignment]
    with opener(path, "rt", encoding="utf-8", newline="") as fh:  # type: ignore[operator]
        first = fh.readline()
    rows = list(csv.reader(io.StringIO(first), delimiter=delimiter))
    if not rows:
        raise ValueError(f"{path}: empty file (no header)")
    return rows[0]


def _unique(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        name = name or f"column_{i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


def as_text(table: pa.Table) -> pa.Table:
    """Every column as ``pa.string()`` (dictionary-decoded, scalars cast); nested columns are refused."""
    cols = []
    for name, col in zip(table.column_names, table.columns):
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if pa.types.is_nested(col.type) or pa.types.is_binary(col.type):
            raise ValueError(f"column {name!r} has type {col.type}; only text and scalar columns can be checked")
        if col.type != pa.string():
            col = pc.cast(col, pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write a text table as CSV (or Parquet/Arrow by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif suffix in (".arrow", ".feather", ".ipc"):
        import pyarrow.feather as feather

        feather.write_feather(table, path)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path, pacsv.WriteOptions(delimiter="\t" if suffix == ".tsv" else ",",
                                                       quoting_style="needed"))


def sanitize(name: str) -> str:
    """A name usable as a field type (``[a-z][a-z0-9_]*``)."""
    text = _FIELD_OK.sub("_", name.strip().lower()).strip("_")
    text = re.sub(r"_{3,}", "__", text)
    if not text or not text[0].isalpha():
        text = "c" + ("_" + text if text else "")
    return text


def field_types(table_name: str, columns: Iterable[str]) -> dict[str, str]:
    """Column -> field type ``<table>__<column>``, sanitized and unique."""
    prefix = sanitize(table_name)
    out: dict[str, str] = {}
    used: set[str] = set()
    for column in columns:
        base = f"{prefix}__{sanitize(column)}"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out[column] = name
    return out


def table_name_of(path: str | Path) -> str:
    """The default table name of a file: its stem (``sales/2024.csv`` -> ``c_2024``, ``shops.csv`` -> ``shops``)."""
    name = Path(path).name
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    return sanitize(Path(name).stem)
