"""Streaming readers that turn Parquet, CSV/TSV, Arrow IPC and JSON-lines files into string record batches."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ._exceptions import InputError

__all__ = ["DEFAULT_BATCH_SIZE", "FORMATS", "detect_format", "read_batches", "rebatch", "select_columns"]

DEFAULT_BATCH_SIZE = 65_536
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
FORMATS: dict[str, str] = {
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv", ".tsv": "tsv",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow", ".arrows": "arrow",
    ".jsonl": "jsonl", ".ndjson": "jsonl",
}
_CSV_BLOCK_BYTES = 4 << 20


def detect_format(path: str | os.PathLike[str]) -> str:
    """Return "parquet", "csv", "tsv", "arrow" or "jsonl" from the file name, or raise InputError."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED and len(suffixes) > 1:
        fmt = FORMATS.get(suffixes[-2])
        if fmt in ("csv", "tsv"):
            return fmt
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputError(f"unsupported file type {Path(path).name!r}; expected one of: {known} "
                         "(CSV/TSV may also end in .gz, .bz2, .zst or .lz4)")
    return fmt


def select_columns(batch: pa.RecordBatch, columns: Sequence[str], source: str = "input") -> pa.RecordBatch:
    """Keep only ``columns`` (in that order), cast to string; InputError names any missing column."""
    names = batch.schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"column(s) {missing} not found in {source}; available: {names}")
    arrays = [_to_string(batch.column(names.index(c)), c) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def _to_string(array: pa.Array, name: str) -> pa.Array:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type == pa.string():
        return array
    try:
        return array.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        raise InputError(f"column {name!r} of type {array.type} cannot be checked as text: {exc}") from exc


def rebatch(batches: Iterable[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Re-chunk ``batches`` into batches of exactly ``batch_size`` rows (the last may be shorter)."""
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            take = min(batch_size - pending_rows, batch.num_rows - offset)
            pending.append(batch.slice(offset, take))
            pending_rows += take
            offset += take
            if pending_rows == batch_size:
                yield _combine(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield _combine(pending)


def _combine(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    return parts[0] if len(parts) == 1 else pa.concat_batches(parts)


def read_batches(path: str | os.PathLike[str], columns: Sequence[str], *,
                 batch_size: int = DEFAULT_BATCH_SIZE, format: str | None = None) -> Iterator[pa.RecordBatch]:
    """Stream ``path`` as record batches of ≤ ``batch_size`` rows with only ``columns``, all strings.

    Batches hold exactly ``batch_size`` rows but the last, and the file is never loaded whole.
    CSV/TSV (optionally .gz/.bz2/.zst/.lz4): every column is read as text (no type inference, so
    "007" stays "007"); an empty field, quoted or not, arrives as null so the server checks it as
    *missing*, while tokens such as ``N/A``, ``NULL`` or ``-`` arrive as the text they are.
    JSON lines: one object per line; strings stay, null or an absent key is null, numbers and
    booleans become their JSON text (``2.5``, ``true``), nested values their compact JSON; a
    column absent from every line of the first batch is an error (most likely a typo).
    Parquet / Arrow IPC file or stream (.arrow, .feather, .ipc, .arrows): non-string columns are
    cast to string, dictionaries decoded.
    ``format`` overrides the detection from the file name ("parquet", "csv", "tsv", "arrow",
    "jsonl"). Errors (missing file, unknown format, missing column, unreadable content) raise
    :class:`InputError`; the file is opened at once, so a bad path fails before any batch is read.
    """
    columns = list(dict.fromkeys(columns))
    if not columns:
        raise InputError("no columns selected; map at least one column to a field type")
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt not in set(FORMATS.values()):
        raise InputError(f"unsupported format {fmt!r}; expected one of {sorted(set(FORMATS.values()))}")
    if not path.exists():
        raise InputError(f"no such file: {str(path)!r}")
    if not path.is_file():
        raise InputError(f"not a file: {str(path)!r}")
    opener = {"parquet": _parquet, "csv": _csv, "tsv": _csv, "arrow": _arrow, "jsonl": _jsonl}[fmt]
    try:
        source = opener(path, columns, batch_size, fmt)
    except InputError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"cannot read {str(path)!r} as {fmt}: {exc}") from exc
    return _guarded(rebatch(source, batch_size), path, fmt)


def _guarded(batches: Iterator[pa.RecordBatch], path: Path, fmt: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except InputError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(f"cannot read {str(path)!r} as {fmt}: {exc}") from exc


def _parquet(path: Path, columns: list[str], batch_size: int, fmt: str) -> Iterator[pa.RecordBatch]:
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"column(s) {missing} not found in {path.name}; available: {names}")

    def gen() -> Iterator[pa.RecordBatch]:
        with pf:
            for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
                yield select_columns(batch, columns, path.name)
    return gen()


def _csv(path: Path, columns: list[str], batch_size: int, fmt: str) -> Iterator[pa.RecordBatch]:
    delimiter = "\t" if fmt == "tsv" else ","
    parse = pcsv.ParseOptions(delimiter=delimiter)
    # Peek at the header (a first small block) for the column names, then read every column as
    # text so no type inference can fail or turn "007" into 7.
    with pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 20),
                       parse_options=parse) as peek:
        names = peek.schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(f"column(s) {missing} not found in {path.name}; available: {names}")
    convert = pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, include_columns=columns,
                                  strings_can_be_null=True, null_values=[""],
                                  quoted_strings_can_be_null=True)
    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
                           parse_options=parse, convert_options=convert)

    def gen() -> Iterator[pa.RecordBatch]:
        with reader:
            for batch in reader:
                yield select_columns(batch, columns, path.name)
    return gen()


def _arrow(path: Path, columns: list[str], batch_size: int, fmt: str) -> Iterator[pa.RecordBatch]:
    source = pa.memory_map(str(path))
    try:
        reader: ipc.RecordBatchFileReader | ipc.RecordBatchStreamReader = ipc.open_file(source)
        batches: Iterator[pa.RecordBatch] = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        source.seek(0)
        try:
            reader = ipc.open_stream(source)
        except pa.ArrowInvalid as exc:
            source.close()
            raise InputError(f"{path.name} is neither an Arrow IPC file nor an Arrow IPC stream") from exc
        batches = iter(reader)
    names = reader.schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        source.close()
        raise InputError(f"column(s) {missing} not found in {path.name}; available: {names}")

    def gen() -> Iterator[pa.RecordBatch]:
        with source:
            for batch in batches:
                yield select_columns(batch, columns, path.name)
    return gen()


def _json_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _jsonl(path: Path, columns: list[str], batch_size: int, fmt: str) -> Iterator[pa.RecordBatch]:
    handle = path.open("r", encoding="utf-8")
    schema = pa.schema([(c, pa.string()) for c in columns])

    def flush(values: list[list[str | None]]) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([pa.array(v, pa.string()) for v in values], schema=schema)

    def _check_seen(unseen: set[str]) -> None:
        # A key may be left out of some lines (null), but one absent from the whole first
        # batch is far more likely a typo in the column mapping.
        if unseen:
            raise InputError(f"column(s) {sorted(unseen)} not found in {path.name} "
                             f"(no line of the first {batch_size} has them)")

    def gen() -> Iterator[pa.RecordBatch]:
        values: list[list[str | None]] = [[] for _ in columns]
        unseen = set(columns)
        with handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path.name} line {lineno}: invalid JSON: {exc.msg}") from exc
                if not isinstance(obj, dict):
                    raise InputError(f"{path.name} line {lineno}: expected a JSON object, "
                                     f"got {type(obj).__name__}")
                for i, c in enumerate(columns):
                    values[i].append(_json_text(obj.get(c)))
                if unseen:
                    unseen.difference_update(obj)
                if len(values[0]) >= batch_size:
                    _check_seen(unseen)
                    yield flush(values)
                    values = [[] for _ in columns]
            if values[0]:
                _check_seen(unseen)
                yield flush(values)
    return gen()
