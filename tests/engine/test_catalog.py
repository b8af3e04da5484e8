"""Sample catalog and error injector: clean data passes the bundled rules, injected errors are found."""
from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dqd_server.catalog import CATALOG_COLUMNS, COLUMN_KINDS, ERROR_KINDS, INJECTED_SCHEMA, generate_catalog, \
    inject_errors
from dqd_server.engine.pattern import PatternDetector
from dqd_server.engine.repository import BUNDLED_RULES, load_repository
from dqd_server.engine.validation import ValidationDetector


@pytest.fixture(scope="module")
def detectors() -> list[ValidationDetector | PatternDetector]:
    return [ValidationDetector.from_repository(BUNDLED_RULES), PatternDetector.from_repository(BUNDLED_RULES)]


@pytest.fixture(scope="module")
def catalog() -> pa.Table:
    return generate_catalog(20_000, seed=1)


def flagged_cells(table: pa.Table, detectors: list) -> dict[str, np.ndarray]:
    """Column -> row mask of cells any method flags (detect on distinct values, mapped back with index_in)."""
    out = {}
    for column, field in CATALOG_COLUMNS.items():
        values = table.column(column)
        distinct = pc.unique(values)
        flagged = np.zeros(len(distinct), dtype=bool)
        for det in detectors:
            if field in det.fields():
                flagged[det.detect(field, distinct).column("index").to_numpy()] = True
        out[column] = flagged[pc.index_in(values, value_set=distinct).to_numpy(zero_copy_only=False)]
    return out


def test_catalog_shape_and_columns(catalog: pa.Table) -> None:
    assert catalog.num_rows == 20_000
    assert catalog.column_names == list(CATALOG_COLUMNS)
    assert all(t == pa.string() for t in catalog.schema.types)
    assert set(CATALOG_COLUMNS.values()) <= set(load_repository(BUNDLED_RULES))
    assert catalog.column("ean").null_count == 0 and catalog.column("material").null_count == 0
    assert generate_catalog(0).num_rows == 0


def test_catalog_is_deterministic_and_repetitive(catalog: pa.Table) -> None:
    assert generate_catalog(500, seed=3).equals(generate_catalog(500, seed=3))
    assert not generate_catalog(500, seed=3).equals(generate_catalog(500, seed=4))
    articles = pc.value_counts(catalog.column("article_number")).field("counts").to_numpy()
    assert len(articles) < catalog.num_rows / 5  # products repeat ...
    top = np.sort(articles)[::-1]
    assert top[0] > 20 * np.median(top)  # ... with Zipf-like popularity
    # EANs identify variants: one article and one size per EAN
    pairs = catalog.select(["ean", "article_number", "size"]).group_by("ean").aggregate(
        [("article_number", "count_distinct"), ("size", "count_distinct")])
    assert pc.max(pairs.column("article_number_count_distinct")).as_py() == 1
    assert pc.max(pairs.column("size_count_distinct")).as_py() == 1


def test_clean_catalog_is_not_flagged(catalog: pa.Table, detectors: list) -> None:
    flagged = flagged_cells(catalog, detectors)
    total = sum(int(m.sum()) for m in flagged.values())
    assert total < 0.001 * catalog.num_rows * len(flagged), {c: int(m.sum()) for c, m in flagged.items()}


def test_injected_cells_really_differ(catalog: pa.Table) -> None:
    dirty, injected = inject_errors(catalog, rate=0.02, seed=5)
    assert injected.schema.equals(INJECTED_SCHEMA) and dirty.schema.equals(catalog.schema)
    cells = catalog.num_rows * catalog.num_columns
    assert 0.015 * cells < injected.num_rows < 0.025 * cells
    assert set(injected.column("kind").to_pylist()) == set(ERROR_KINDS)
    for rec in injected.to_pylist():
        assert rec["dirty"] != rec["original"]
        assert catalog.column(rec["column"])[rec["row"]].as_py() == rec["original"]
        assert dirty.column(rec["column"])[rec["row"]].as_py() == rec["dirty"]
        assert rec["kind"] in COLUMN_KINDS[rec["column"]]
    changed = sum(int(pc.sum(pc.invert(pc.fill_null(pc.equal(catalog.column(c), dirty.column(c)), False))).as_py())
                  for c in catalog.column_names)
    assert changed == injected.num_rows  # nothing else changed
    again, _ = inject_errors(catalog, rate=0.02, seed=5)
    assert again.equals(dirty)


def test_injected_errors_are_found(catalog: pa.Table, detectors: list) -> None:
    dirty, injected = inject_errors(catalog, rate=0.02, seed=7)
    flagged = flagged_cells(dirty, detectors)
    rows = injected.column("row").to_numpy()
    cols = injected.column("column").to_pylist()
    kinds = injected.column("kind").to_pylist()
    found = np.array([flagged[c][r] for c, r in zip(cols, rows)])
    recall = {k: float(np.mean(found[[i for i, x in enumerate(kinds) if x == k]])) for k in Counter(kinds)}
    n_flagged = sum(int(m.sum()) for m in flagged.values())
    precision = found.sum() / n_flagged
    print(f"\nrecall {found.mean():.3f}, precision {precision:.3f}, per kind:",
          {k: round(v, 3) for k, v in sorted(recall.items())})
    assert found.mean() >= 0.8
    assert precision >= 0.9
    assert min(recall.values()) >= 0.5, recall


def test_generation_and_injection_are_fast() -> None:
    start = time.perf_counter()
    table = generate_catalog(200_000, seed=2)
    generated = time.perf_counter() - start
    start = time.perf_counter()
    inject_errors(table, rate=0.02, seed=2)
    injected = time.perf_counter() - start
    assert generated < 5 and injected < 5, (generated, injected)
