"""Profiling: column profiles and dependencies learned from a dirty table's majority, compiled to a repository
the engine serves like hand-written rules; dependency findings name the conflicting cells."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from dqd_server.engine import Engine, InvalidInput, StreamSession
from dqd_server.engine.repository import load_repository
from dqd_server.profiling.learn import profile_table, shape
from dqd_server.profiling.tables import field_types, read_table, sanitize
from dqd_server.profiling.write import write_profile
from dqd_server.tools_cli import main as tools_main

ZIPS = {"10001": ("New York", "NY"), "60601": ("Chicago", "IL"), "94103": ("San Francisco", "CA"),
        "98101": ("Seattle", "WA"), "02108": ("Boston", "MA")}
BAD_CITY_ROW = 17  # "Chicgo" where zip 60601 says Chicago
TOKEN_ROW = 23  # "N/A" in a table whose missing cells are empty


def shops(n: int = 400) -> pa.Table:
    """A small table with known dependencies (zip -> city -> state) and a dirty minority."""
    r = random.Random(0)
    zips = list(ZIPS)
    rows = []
    for i in range(n):
        z = zips[i % len(zips)]
        city, state = ZIPS[z]
        rows.append({"shop_id": f"S-{1000 + i}", "zip": z, "city": city, "state": state,
                     "price": f"{r.randint(10, 99)}.{r.randint(0, 99):02d}", "rating": str(r.randint(1, 5)),
                     "weight": f"{r.randint(1, 9)}.5", "note": "" if i % 4 else "fragile"})
    rows[BAD_CITY_ROW].update(zip="60601", city="Chicgo", state="IL")  # a typo that breaks zip -> city
    rows[TOKEN_ROW]["rating"] = "N/A"  # a disguised missing value
    rows[31]["price"] = "12.50 EUR"  # a unit where the column holds bare numbers
    rows[44]["state"] = "XX"  # breaks city -> state and zip -> state
    return pa.Table.from_pylist(rows)


def test_field_type_names_are_sanitized_and_unique() -> None:
    assert sanitize("Beer-Name ") == "beer_name"
    assert sanitize("1st") == "c_1st"
    assert field_types("My Table", ["a b", "a-b", "ZIP"]) == {"a b": "my_table__a_b", "a-b": "my_table__a_b_2",
                                                             "ZIP": "my_table__zip"}


def test_shapes_generalize_letters_and_digits() -> None:
    got = shape(pa.array(["San Diego", "12.0 oz.", "0.05%", "N/A", "AB-123"])).to_pylist()
    assert got == ["Aa Aa", "9.9 a.", "9.9%", "A/A", "A-9"]


def test_column_profiles_learn_from_the_majority() -> None:
    p = profile_table(shops(), "shops")
    assert p.null_form == ""  # the table leaves missing cells empty
    rating, price, state, zip_ = (p.column(c) for c in ("rating", "price", "state", "zip"))
    assert rating.kind == "numeric" and rating.null_tokens == {"N/A": 1} and "n/a" in rating.token_list
    assert sorted(rating.allowed or []) == ["1", "2", "3", "4", "5"]
    assert price.kind == "numeric" and price.canonical_form == "#" and price.forms["#EUR"] == 1
    assert state.allowed is not None and "XX" not in state.allowed  # the dirty minority is not learned
    assert p.column("shop_id").fixed_length == 6 and zip_.fixed_length is None  # 5 distinct zips: too few to say
    assert "na" not in state.token_list  # "NA" looks like a state code here: a real value, not a missing one


def test_dependencies_are_discovered_with_support() -> None:
    p = profile_table(shops(), "shops")
    deps = {(d.determinant, d.dependent): d for d in p.dependencies}
    assert ("zip", "city") in deps and ("zip", "state") in deps and ("city", "state") in deps
    zc = deps[("zip", "city")]
    assert zc.violations == 1 and zc.agreement > 0.99
    mapping = {k: (e, s, t) for k, e, s, t in zip(*(zc.mapping.column(c).to_pylist()
                                                     for c in ("key", "expected", "support", "total")))}
    assert mapping["60601"] == ("Chicago", 80, 81)
    # identifiers and free numbers determine nothing
    assert not any(d.determinant in ("shop_id", "price") for d in p.dependencies)


def test_profile_compiles_to_a_repository_the_engine_serves(tmp_path: Path) -> None:
    p = profile_table(shops(), "shops")
    written = write_profile(p, tmp_path)
    assert set(written) == set(p.field_types.values())
    assert (tmp_path / "dependencies.yaml").is_file() and (tmp_path / "profile.json").is_file()
    specs = load_repository(tmp_path)
    assert specs["shops__rating"].validation[0].kind == "null_tokens"
    engine = Engine.from_repository(tmp_path)
    fields = engine.fields()
    assert {"validation", "pattern", "dependency", "combined"} <= set(fields["shops__city"])
    assert "dependency" not in fields["shops__shop_id"]  # only dependents are listed for the method
    # a second profile adds a version; the newest serves
    write_profile(p, tmp_path)
    assert load_repository(tmp_path)["shops__city"].version == "2"


def detect(repo: Path, table: pa.Table, columns: dict[str, str], methods: list[str], size: int = 64) -> pa.Table:
    engine = Engine.from_repository(repo)
    session = StreamSession(engine, engine.plan(columns, methods))
    return pa.Table.from_batches([session.feed(b).findings for b in table.to_batches(max_chunksize=size)])


def test_dependency_findings_name_the_conflicting_cells(tmp_path: Path) -> None:
    table = shops()
    p = profile_table(table, "shops")
    write_profile(p, tmp_path)
    found = detect(tmp_path, table, p.field_types, ["dependency"]).to_pylist()
    cells = {(f["row"], f["column"]) for f in found}
    assert cells == {(BAD_CITY_ROW, "city"), (44, "state")}  # nothing else in 400 rows
    city = next(f for f in found if f["row"] == BAD_CITY_ROW)
    assert city["field"] == "shops__city" and city["method"] == "dependency" and city["value"] == "Chicgo"
    assert city["code"] == "DEPENDENCY_CONFLICT"
    assert "'Chicgo'" in city["message"] and "'Chicago' in 80 of 81 rows" in city["message"]
    assert "zip '60601'" in city["message"] or "state 'IL'" in city["message"]
    assert 0.9 < city["confidence"] < 1


def test_batches_are_checked_against_the_learned_mapping_not_themselves(tmp_path: Path) -> None:
    p = profile_table(shops(), "shops")
    write_profile(p, tmp_path)
    # a two-row batch where the wrong city is the majority of the batch: still flagged by the profile
    batch = pa.table({"zip": ["60601", "60601"], "city": ["Chicgo", "Chicgo"], "state": ["IL", "IL"]})
    found = detect(tmp_path, batch, {"zip": "shops__zip", "city": "shops__city", "state": "shops__state"},
                   ["dependency"])
    assert sorted(found.column("row").to_pylist()) == [0, 1]
    assert set(found.column("column").to_pylist()) == {"city"}


def test_validation_and_pattern_from_the_profile(tmp_path: Path) -> None:
    table = shops()
    p = profile_table(table, "shops")
    write_profile(p, tmp_path)
    found = detect(tmp_path, table, p.field_types, ["validation", "pattern"]).to_pylist()
    by_cell = {(f["row"], f["column"]): f for f in found}
    assert by_cell[(TOKEN_ROW, "rating")]["code"] == "NULL_TOKEN"
    assert by_cell[(31, "price")]["code"] == "UNIT_VARIANT"
    assert by_cell[(44, "state")]["code"] == "NOT_ALLOWED"
    assert by_cell[(BAD_CITY_ROW, "city")]["code"] == "NEAR_MISS"
    assert len(by_cell) == 4, sorted(by_cell)


def test_spills_flag_both_cells(tmp_path: Path) -> None:
    rows = [{"city": c, "state": s} for c, s in [("Portland", "OR"), ("Denver", "CO"), ("Austin", "TX")] * 30]
    for i in (5, 40, 77):
        rows[i] = {"city": rows[i]["city"] + " " + rows[i]["state"], "state": ""}
    table = pa.Table.from_pylist(rows)
    p = profile_table(table, "t")
    assert [(s.source, s.host, s.evidence) for s in p.spills] == [("state", "city", 3)]
    write_profile(p, tmp_path)
    found = detect(tmp_path, table, p.field_types, ["dependency"]).to_pylist()
    assert {(f["row"], f["column"], f["code"]) for f in found} >= {
        (5, "city", "MERGED_VALUE"), (5, "state", "MISPLACED_VALUE"), (40, "city", "MERGED_VALUE")}
    assert not [f for f in found if f["row"] not in (5, 40, 77)]


def test_homonyms_seen_twice_are_legitimate_not_conflicts(tmp_path: Path) -> None:
    rows = [{"city": "Portland", "state": "OR"}] * 40 + [{"city": "Portland", "state": "ME"}] * 6 + \
           [{"city": "Austin", "state": "TX"}] * 20 + [{"city": "Denver", "state": "CO"}] * 30 + \
           [{"city": "Denver", "state": "C0"}]
    table = pa.Table.from_pylist(rows)
    p = profile_table(table, "t")
    write_profile(p, tmp_path)
    found = detect(tmp_path, table, p.field_types, ["dependency"])
    assert found.column("row").to_pylist() == [96]  # the typo, not the six rows of Portland, ME


def test_profile_cli_writes_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "shops.csv"
    import pyarrow.csv as pacsv

    pacsv.write_csv(shops(), data)
    assert tools_main(["profile", "--data", str(data), "--out", str(tmp_path / "repo")]) == 0
    out = capsys.readouterr().out
    assert "shops__city" in out and "zip -> city" in out and "dqd serve --rules" in out
    assert read_table(data).column("note").to_pylist()[1] == ""  # CSV cells stay text, empty stays empty
    assert tools_main(["profile", "--data", str(data), "--out", str(tmp_path / "repo"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["table"] == "shops" and len(doc["columns"]) == 8
    assert tools_main(["profile", "--data", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "r")]) == 2


def test_unknown_methods_and_field_types_still_refused(tmp_path: Path) -> None:
    write_profile(profile_table(shops(), "shops"), tmp_path)
    engine = Engine.from_repository(tmp_path)
    with pytest.raises(InvalidInput, match="unknown field type 'nope'"):
        engine.plan({"c": "nope"}, ["dependency"])
    plan = engine.plan({"c": "shops__shop_id"}, ["dependency"])  # a field no dependency covers: checked by none
    assert engine.detect(plan, pa.record_batch({"c": ["S-1"]})).num_rows == 0
