"""The streaming file readers of dqd_client._io on small files of every supported format."""
from __future__ import annotations

import gzip
import json
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from dqd_client import InputError, read_batches
from dqd_client._io import detect_format, rebatch

N = 1000
BATCH = 128


def _table() -> pa.Table:
    return pa.table({
        "id": pa.array(range(N), pa.int64()),
        "material": pa.array([None if i % 10 == 0 else f"{i}% Cotton" for i in range(N)], pa.string()),
        "colour": pa.array([f"c{i}" for i in range(N)], pa.string()),
        "price": pa.array([i * 0.5 for i in range(N)], pa.float64()),
    })


def _check(batches, columns: list[str], expected: pa.Table) -> None:
    assert isinstance(batches, types.GeneratorType)
    got = list(batches)
    sizes = [b.num_rows for b in got]
    assert all(s == BATCH for s in sizes[:-1]) and 0 < sizes[-1] <= BATCH
    assert sum(sizes) == N
    for b in got:
        assert b.schema.names == columns
        assert all(t == pa.string() for t in b.schema.types)
    table = pa.Table.from_batches(got)
    for c in columns:
        assert table.column(c).to_pylist() == expected.column(c).cast(pa.string()).to_pylist()


@pytest.mark.parametrize("name", ["data.parquet", "data.arrow", "data.feather", "data.ipc", "data.arrows"])
def test_columnar_formats(tmp_path: Path, name: str) -> None:
    table = _table()
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(table, path, row_group_size=300)
    elif name.endswith(".feather"):
        feather.write_feather(table, path, chunksize=77)
    elif name.endswith(".arrows") or name.endswith(".ipc"):
        with pa.ipc.new_stream(path, table.schema) as w:  # IPC *stream* format
            w.write_table(table, max_chunksize=90)
    else:
        with pa.ipc.new_file(path, table.schema) as w:
            w.write_table(table, max_chunksize=500)
    _check(read_batches(path, ["material", "price"], batch_size=BATCH), ["material", "price"], table)


def test_dictionary_column_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"m": pa.array(["a", "b", "a"]).dictionary_encode()}), path)
    (batch,) = read_batches(path, ["m"])
    assert batch.column(0).type == pa.string() and batch.column(0).to_pylist() == ["a", "b", "a"]


def _csv_text(sep: str = ",") -> str:
    lines = [sep.join(["id", "material", "code", "note"])]
    for i in range(N):
        material = "" if i % 10 == 0 else ("N/A" if i % 10 == 1 else f'"{i}% Cotton{sep} soft"')
        lines.append(sep.join([str(i), material, "007", "x"]))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("name", "sep"), [("d.csv", ","), ("d.tsv", "\t"), ("d.csv.gz", ",")])
def test_csv(tmp_path: Path, name: str, sep: str) -> None:
    path = tmp_path / name
    text = _csv_text(sep)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    got = list(read_batches(path, ["material", "code"], batch_size=BATCH))
    assert [b.num_rows for b in got][:-1] == [BATCH] * (len(got) - 1) and sum(b.num_rows for b in got) == N
    table = pa.Table.from_batches(got)
    assert table.schema.names == ["material", "code"]
    material = table.column("material").to_pylist()
    assert material[0] is None            # empty field -> null (missing)
    assert material[1] == "N/A"           # N/A-style tokens stay text
    assert material[2] == f"2% Cotton{sep} soft"
    assert set(table.column("code").to_pylist()) == {"007"}  # all text: no inference to 7


def test_csv_quoted_empty_is_null_too(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('a,b\n"",x\n,y\nNULL,z\n')
    (batch,) = read_batches(path, ["a"])
    assert batch.column(0).to_pylist() == [None, None, "NULL"]


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"material": None if i % 10 == 0 else f"{i}% Cotton", "other": i} for i in range(N)]
    rows[3] = {"other": 3}            # key left out -> null
    rows[4]["material"] = 2.5         # number -> its JSON text
    rows[5]["material"] = True
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    got = list(read_batches(path, ["material"], batch_size=BATCH))
    assert all(b.num_rows == BATCH for b in got[:-1]) and sum(b.num_rows for b in got) == N
    values = pa.Table.from_batches(got).column("material").to_pylist()
    assert values[:6] == [None, "1% Cotton", "2% Cotton", None, "2.5", "true"]
    assert got[0].schema.names == ["material"]


def test_jsonl_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.ndjson"
    path.write_text('{"a": "x"}\n{"a": \n')
    with pytest.raises(InputError, match="line 2: invalid JSON"):
        list(read_batches(path, ["a"]))
    path.write_text('{"a": "x"}\n')
    with pytest.raises(InputError, match=r"\['typo'\] not found"):
        list(read_batches(path, ["typo"]))


def test_only_mapped_columns_and_order(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(_table(), path)
    (first, *_) = read_batches(path, ["colour", "material", "colour"], batch_size=N)
    assert first.schema.names == ["colour", "material"]


@pytest.mark.parametrize("name", ["d.parquet", "d.csv", "d.arrow", "d.jsonl"])
def test_missing_column_is_clear(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    table = pa.table({"material": ["a"]})
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    elif name.endswith(".csv"):
        path.write_text("material\na\n")
    elif name.endswith(".arrow"):
        feather.write_feather(table, path)
    else:
        path.write_text('{"material": "a"}\n')
    with pytest.raises(InputError, match=r"colour.*not found"):
        list(read_batches(path, ["colour"]))


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_batches(tmp_path / "missing.csv", ["a"])
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"unsupported file type 'd.xlsx'.*\.parquet"):
        read_batches(tmp_path / "d.xlsx", ["a"])
    with pytest.raises(InputError, match="unsupported file type"):
        read_batches(tmp_path / "noext", ["a"])
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="not a file"):
        read_batches(tmp_path / "dir.csv", ["a"])
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(InputError, match="cannot read .* as parquet"):
        read_batches(bad, ["a"])
    bad_arrow = tmp_path / "bad.arrow"
    bad_arrow.write_text("not arrow at all")
    with pytest.raises(InputError, match="neither an Arrow IPC file nor"):
        read_batches(bad_arrow, ["a"])
    with pytest.raises(InputError, match="batch_size"):
        read_batches(bad, ["a"], batch_size=0)
    with pytest.raises(InputError, match="no columns"):
        read_batches(bad, [])


def test_format_override_and_detection(tmp_path: Path) -> None:
    assert detect_format("x.PARQUET") == "parquet"
    assert detect_format("x.csv.zst") == "csv"
    path = tmp_path / "data.txt"
    path.write_text("a\nv\n")
    (batch,) = read_batches(path, ["a"], format="csv")
    assert batch.column(0).to_pylist() == ["v"]


def test_rebatch() -> None:
    parts = [pa.record_batch({"a": list(range(n))}) for n in (3, 0, 7, 1, 10)]
    out = list(rebatch(parts, 4))
    assert [b.num_rows for b in out] == [4, 4, 4, 4, 4, 1]
    assert sum((b.column(0).to_pylist() for b in out), []) == sum((p.column(0).to_pylist() for p in parts), [])
