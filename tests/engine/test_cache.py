"""The cross-batch verdict cache returns exactly what the detectors would, and calls them less."""
from __future__ import annotations

import pyarrow as pa

from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog, inject_errors
from dqd_server.engine import Engine
from dqd_server.engine.cache import VerdictCache
from dqd_server.engine.hits import make_hits
from dqd_server.engine.repository import BUNDLED_RULES


def _sorted(table: pa.Table) -> list[dict]:
    return table.sort_by([("row", "ascending"), ("column", "ascending"), ("method", "ascending")]).to_pylist()


def test_cached_engine_gives_identical_findings() -> None:
    dirty, _ = inject_errors(generate_catalog(30_000, seed=3), rate=0.03, seed=3)
    cache = VerdictCache()
    plain, cached = Engine.from_repository(BUNDLED_RULES), Engine.from_repository(BUNDLED_RULES, cache=cache)
    plan = plain.plan(CATALOG_COLUMNS)
    for _ in range(2):  # the second pass is answered (almost) wholly from the cache
        out_plain, out_cached = [], []
        for k, batch in enumerate(dirty.to_batches(max_chunksize=7_000)):
            out_plain.append(plain.detect(plan, batch, k * 7_000))
            out_cached.append(cached.detect(plan, batch, k * 7_000))
        assert _sorted(pa.Table.from_batches(out_cached)) == _sorted(pa.Table.from_batches(out_plain))
    assert cache.hits > cache.misses


def test_cache_keys_on_version_and_handles_nulls_and_bounds() -> None:
    cache = VerdictCache(max_values=4)
    calls: list[list] = []

    def run(values: pa.Array) -> pa.RecordBatch:
        calls.append(values.to_pylist())
        bad = [i for i, v in enumerate(values.to_pylist()) if v is None or v.startswith("x")]
        return make_hits(bad, "BAD", "bad", 1.0)

    first = cache.detect(("m", "f", "1"), pa.array(["a", "xb", None]), run)
    again = cache.detect(("m", "f", "1"), pa.array([None, "c", "xb"]), run)
    assert sorted(first.column("index").to_pylist()) == [1, 2]
    assert sorted(again.column("index").to_pylist()) == [0, 2]
    assert calls == [["a", "xb", None], ["c"]]
    cache.detect(("m", "f", "2"), pa.array(["a"]), run)  # a new rules version is checked afresh
    assert calls[-1] == ["a"]
    # max_values=4: two generations of 2. The second call started a new generation ({c}); {a, xb, None} is the
    # previous one. xb is promoted from it, d is new: they start a third generation and {a, None} fall out.
    out = cache.detect(("m", "f", "1"), pa.array(["xb", "d"]), run)
    assert calls[-1] == ["d"] and out.column("index").to_pylist() == [0]
    cache.detect(("m", "f", "1"), pa.array(["a", "c"]), run)  # c: still in the previous generation; a: forgotten
    assert calls[-1] == ["a"]


def test_values_that_keep_coming_stay_cached_like_an_lru() -> None:
    """A value asked for in every batch is never checked twice, however many other values pass through."""
    cache = VerdictCache(max_values=100)
    calls: list[str] = []

    def run(values: pa.Array) -> pa.RecordBatch:
        calls.extend(values.to_pylist())
        bad = [i for i, v in enumerate(values.to_pylist()) if v.startswith("x")]
        return make_hits(bad, "BAD", "bad", 1.0)

    for batch in range(40):
        values = ["xhot", "hot"] + [f"{'x' if i % 3 == 0 else ''}cold-{batch}-{i}" for i in range(20)]
        out = cache.detect(("m", "f", "1"), pa.array(values), run)
        assert sorted(out.column("index").to_pylist()) == [i for i, v in enumerate(values) if v.startswith("x")]
    assert calls.count("xhot") == 1 and calls.count("hot") == 1
    assert len(calls) == 2 + 40 * 20


def test_cache_ttl_expires_verdicts() -> None:
    cache = VerdictCache(ttl=0.0)
    calls: list[list] = []

    def run(values: pa.Array) -> pa.RecordBatch:
        calls.append(values.to_pylist())
        return make_hits([], "BAD", "bad", 1.0)

    cache.detect(("m", "f", "1"), pa.array(["a"]), run)
    cache.detect(("m", "f", "1"), pa.array(["a"]), run)
    assert calls == [["a"], ["a"]]
