"""The ml and llm detectors through the engine: semantic errors the rules miss, clean values left alone."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from model_support import FIELDS, catalog_values, new_version_with_threshold, rules_flag, semantic_cases

from dqd_server.engine.cache import VerdictCache
from dqd_server.engine.pipeline import Engine


@pytest.fixture(scope="module")
def engine(tiny_repo: Path) -> Engine:
    return Engine.from_repository(tiny_repo)


@pytest.fixture(scope="module")
def training_values() -> dict[str, list[str]]:
    return catalog_values(4000, seed=1)


@pytest.fixture(scope="module")
def heldout_clean(training_values: dict[str, list[str]]) -> dict[str, list[str]]:
    """Clean values of another catalog that training never saw."""
    other = catalog_values(20000, seed=2, max_values=250)
    return {f: [v for v in other[f] if v not in set(training_values[f])] for f in FIELDS}


def flagged(engine: Engine, method: str, field: str, values: list[str]) -> dict[str, dict]:
    plan = engine.plan({"c": field}, [method])
    out = engine.detect(plan, pa.record_batch({"c": pa.array(values, pa.string())})).to_pylist()
    return {r["value"]: r for r in out}


def test_methods_and_versions_are_listed(engine: Engine) -> None:
    fields = engine.fields()
    for f in FIELDS:
        assert fields[f]["ml"].version.startswith("1+") and fields[f]["llm"].version.startswith("1+")
        assert fields[f]["validation"].version == "1"
    assert "ml" not in fields["ean"] if "ean" in fields else True
    for method in ("ml", "llm"):
        assert engine.detectors[method].context_free("material")
    assert engine.describe("material").startswith("Material composition")


def test_known_and_missing_values_are_never_flagged(engine: Engine, training_values: dict[str, list[str]]) -> None:
    for method in ("ml", "llm"):
        for f in FIELDS:
            values = training_values[f][:100] + [None, "", "   "]
            assert flagged(engine, method, f, values) == {}, (method, f)


def test_ml_names_the_nearest_known_values(engine: Engine) -> None:
    hits = flagged(engine, "ml", "material", ["100% Organic Lettuce", "Machine wash at 30°C"])
    assert set(hits) == {"100% Organic Lettuce", "Machine wash at 30°C"}
    msg = hits["100% Organic Lettuce"]["message"]
    assert msg.startswith("'100% Organic Lettuce' is unlike known material values; nearest: '")
    assert msg.count("(0.") == 3 and "Organic" in msg
    assert hits["100% Organic Lettuce"]["code"] == "SEMANTIC_OUTLIER"
    assert 0.5 <= hits["Machine wash at 30°C"]["confidence"] <= 0.99


def test_llm_names_the_least_likely_words(repo_copy: Path) -> None:
    """Message format (threshold lowered so the tiny model flags the value whatever its quality)."""
    new_version_with_threshold(repo_copy, "category", "llm", -1e9)
    engine = Engine.from_repository(repo_copy)
    hits = flagged(engine, "llm", "category", ["Machine wash at 30°C, Do not tumble dry", "Jeans"])
    assert list(hits) == ["Machine wash at 30°C, Do not tumble dry"], "known values are never scored"
    hit = hits["Machine wash at 30°C, Do not tumble dry"]
    assert hit["code"] == "UNLIKELY_TOKEN"
    assert hit["message"].startswith("'Machine wash at 30°C, Do not tumble dry' is unlikely as category; least "
                                     "likely: '")
    assert hit["message"].count("(p=") == 2 and 0.5 <= hit["confidence"] <= 0.99


def test_semantic_errors_the_rules_miss(engine: Engine, training_values: dict[str, list[str]]) -> None:
    """Cases the rule methods pass (checked in ``semantic_cases``); the model methods must catch many of them."""
    cases = semantic_cases(training_values)
    assert sum(len(v) for v in cases.values()) >= 60
    caught = {}
    for method in ("ml", "llm"):
        for f, values in cases.items():
            assert not rules_flag(f, values)
            caught[(method, f)] = len(flagged(engine, method, f, values)) / len(values)
    print({k: round(v, 2) for k, v in caught.items()})
    # a colour / material / care text in the (open-vocabulary) category column: the kNN method's job; word-order
    # garbles are the masked LM's, which needs real training (test_model_catalog_slow.py, and the report's numbers)
    assert caught[("ml", "category")] >= 0.3


def test_false_positive_rate_on_unseen_clean_values(engine: Engine, heldout_clean: dict[str, list[str]]) -> None:
    rates = {}
    for method in ("ml", "llm"):
        total = hits = 0
        for f, values in heldout_clean.items():
            if not values:
                continue
            hits += len(flagged(engine, method, f, values))
            total += len(values)
        rates[method] = hits / total
    print(f"false-positive rate on {total} unseen clean values: {rates}")
    assert total >= 300
    assert rates["ml"] <= 0.05 and rates["llm"] <= 0.05


def test_concurrent_streams_share_the_batcher(engine: Engine, heldout_clean: dict[str, list[str]]) -> None:
    """Several threads checking at once get the same verdicts as one at a time, through merged batches."""
    fields = ["material", "care_instructions", "category", "color_name"]
    batches = {f: pa.record_batch({"c": pa.array(heldout_clean[f][:40] + ["Dark Blue"], pa.string())}) for f in fields}
    plans = {f: engine.plan({"c": f}, ["ml", "llm"]) for f in fields}
    alone = {f: engine.detect(plans[f], batches[f]).to_pylist() for f in fields}
    results: dict[str, list] = {}
    nets = {id(d.networks[f]) for d in [engine.detectors["llm"]] for f in fields}
    assert len(nets) == 1, "one masked LM serves every field type"
    before = engine.detectors["llm"].networks["material"].batcher.stats.rounds

    def run(f: str) -> None:
        results[f] = engine.detect(plans[f], batches[f]).to_pylist()

    threads = [threading.Thread(target=run, args=(f,)) for f in fields]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == alone
    assert engine.detectors["llm"].networks["material"].batcher.stats.rounds - before <= 2 * len(fields)


def test_a_field_without_a_model_is_refused_by_the_plan(repo_copy: Path) -> None:
    import shutil

    from dqd_server.engine.errors import InvalidInput
    from dqd_server.engine.repository import BUNDLED_RULES

    shutil.copytree(BUNDLED_RULES / "ean", repo_copy / "ean")  # rules, but no model
    engine = Engine.from_repository(repo_copy)
    engine.plan({"c": "ean"}, ["validation"])
    with pytest.raises(InvalidInput, match="has no \\['ml'\\] detector loaded \\(train ml for it with `dqd train"):
        engine.plan({"c": "ean"}, ["ml"])


def test_cached_verdicts_equal_fresh_ones(tiny_repo: Path, heldout_clean: dict[str, list[str]]) -> None:
    cached = Engine.from_repository(tiny_repo, cache=VerdictCache())
    plain = Engine.from_repository(tiny_repo)
    values = heldout_clean["material"][:50] + ["100% Organic Lettuce", "Navy"]
    plan = cached.plan({"c": "material"}, ["ml", "llm"])
    batch = pa.record_batch({"c": pa.array(values, pa.string())})
    first = cached.detect(plan, batch).to_pylist()
    again = cached.detect(plan, batch).to_pylist()
    assert first == again == plain.detect(plan, batch).to_pylist()
    assert cached.cache.hits >= 2 * len(values) - 4
    assert np.isfinite([r["confidence"] for r in first]).all()


def test_the_columns_of_one_batch_share_model_batches(engine: Engine, heldout_clean: dict[str, list[str]]) -> None:
    """The engine starts every column's model call at once, so one batch of several columns is one model round."""
    fields = ["material", "care_instructions", "category", "color_name"]
    batch = pa.record_batch({f: pa.array(heldout_clean[f][:3] + [f"Unseen value {f}"], pa.string()) for f in fields})
    plan = engine.plan({f: f for f in fields}, ["ml"])
    batcher = engine.detectors["ml"].encoders["material"].batcher
    assert all(engine.detectors["ml"].encoders[f].batcher is batcher for f in fields), "one shared encoder"
    sequential = [engine.detect(engine.plan({f: f}, ["ml"]), batch.select([f])).to_pylist() for f in fields]
    delay, batcher.max_queue_delay = batcher.max_queue_delay, 2.0  # a round waits for every column, not just one
    try:
        before = batcher.stats.rounds
        together = engine.detect(plan, batch).to_pylist()
        assert batcher.stats.rounds - before == 1
    finally:
        batcher.max_queue_delay = delay
    def rounded(rows: list[dict]) -> list[dict]:  # batch shapes change the last float bits (see backend tests)
        return sorted(({**r, "confidence": round(r["confidence"], 3)} for r in rows),
                      key=lambda r: (r["row"], r["column"]))

    assert rounded(together) == rounded([r for part in sequential for r in part])
