"""Rules repository: layout, versions, bundled rules, and clear errors for malformed rule files."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dqd_server.engine.repository import (BUNDLED_RULES, CHECK_KINDS, CheckSpec, FieldSpec, load_repository,
                                          validate_regex)

BUNDLED_FIELDS = {"material", "color_name", "category", "size", "season", "care_instructions", "ean",
                  "article_number", "price"}


def write(root: Path, field: str, version: str, text: str, **files: str) -> Path:
    d = root / field / version
    d.mkdir(parents=True, exist_ok=True)
    (d / "field.yaml").write_text(text, encoding="utf-8")
    for name, content in files.items():
        (d / name.replace("_txt", ".txt")).write_text(content, encoding="utf-8")
    return d / "field.yaml"


def load_error(tmp_path: Path, text: str, **files: str) -> str:
    path = write(tmp_path, "thing", "1", text, **files)
    with pytest.raises(ValueError) as exc:
        load_repository(tmp_path)
    assert str(path) in str(exc.value), "the error names the file"
    return str(exc.value)


def test_bundled_rules_load() -> None:
    specs = load_repository(BUNDLED_RULES)
    assert BUNDLED_FIELDS <= set(specs)
    for name, spec in specs.items():
        assert isinstance(spec, FieldSpec) and spec.name == name and spec.version == "1"
        assert spec.description and spec.path.name == "field.yaml"
        assert spec.validation or spec.pattern
    kinds = {c.kind for s in specs.values() for c in s.validation}
    assert kinds >= {"required", "whitespace", "regex", "length", "numeric_range", "year_range",
                     "gtin_check_digit", "composition_sum"}
    assert len(specs["color_name"].pattern.known_values.values) >= 40
    assert len(specs["category"].pattern.known_values.values) >= 45
    assert len(specs["material"].pattern.vocabulary.words) >= 60
    assert {"Light Blue", "Dark Grey", "Off White", "Navy"} <= set(specs["color_name"].pattern.known_values.values)


def test_highest_numeric_version_serves(tmp_path: Path) -> None:
    for v in ("1", "2", "10"):
        write(tmp_path, "thing", v, f"description: version {v}\n")
    (tmp_path / "thing" / "latest").mkdir()  # non-numeric folders are ignored
    (tmp_path / "README.md").write_text("not a field")
    (tmp_path / ".hidden").mkdir()
    spec = load_repository(tmp_path)["thing"]
    assert spec.version == "10" and spec.description == "version 10"
    assert spec.validation == () and spec.pattern is None


def test_specs_are_plain_frozen_data(tmp_path: Path) -> None:
    write(tmp_path, "thing", "1", "description: d\nvalidation:\n  - kind: length\n    max: 3\n")
    spec = load_repository(tmp_path)["thing"]
    check = spec.validation[0]
    assert check == CheckSpec("BAD_LENGTH", "length", CHECK_KINDS["length"][1], 0.8, check.params)
    assert check.params["max"] == 3 and check.params["min"] is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.version = "2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        check.params["max"] = 4  # type: ignore[index]


def test_known_values_from_list_and_file(tmp_path: Path) -> None:
    write(tmp_path, "thing", "1", "description: d\npattern:\n  known_values:\n    values: [A, B]\n    file: kv.txt\n",
          kv_txt="# comment\n\nC\n  D  \nA\n")
    write(tmp_path, "other", "1", "description: d\npattern:\n  known_values: [X, Y]\n")
    specs = load_repository(tmp_path)
    assert specs["thing"].pattern.known_values.values == ("A", "B", "C", "D")
    assert specs["other"].pattern.known_values.values == ("X", "Y") and specs["other"].pattern.parts == 1


def test_missing_root_and_missing_version(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        load_repository(tmp_path / "nope")
    (tmp_path / "thing").mkdir()
    with pytest.raises(ValueError, match="no numeric version folder"):
        load_repository(tmp_path)


def test_bad_field_folder_name(tmp_path: Path) -> None:
    write(tmp_path, "Bad-Name", "1", "description: d\n")
    with pytest.raises(ValueError, match="Bad-Name"):
        load_repository(tmp_path)


def test_missing_field_yaml(tmp_path: Path) -> None:
    (tmp_path / "thing" / "1").mkdir(parents=True)
    with pytest.raises(ValueError, match="missing field.yaml"):
        load_repository(tmp_path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("description: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("validation: []\n", "missing key 'description'"),
        ("description: d\ncolour: red\n", "unknown key(s) ['colour']"),
        ("description: d\nvalidation: {kind: required}\n", "'validation' must be a list"),
        ("description: d\nvalidation:\n  - code: X\n", "with a 'kind'"),
        ("description: d\nvalidation:\n  - kind: spellcheck\n", "unknown check kind 'spellcheck'"),
        ("description: d\nvalidation:\n  - kind: regex\n    must_match: '(('\n", "bad regular expression"),
        ("description: d\nvalidation:\n  - kind: regex\n", "needs 'must_match' and/or 'must_not_match'"),
        ("description: d\nvalidation:\n  - kind: regex\n    must_match: a\n    mustmatch: b\n", "['mustmatch']"),
        ("description: d\nvalidation:\n  - kind: length\n", "needs 'min' and/or 'max'"),
        ("description: d\nvalidation:\n  - kind: length\n    min: 5\n    max: 2\n", "greater than max"),
        ("description: d\nvalidation:\n  - kind: numeric_range\n    min: zero\n", "expected a number"),
        ("description: d\nvalidation:\n  - kind: required\n    confidence: 1.5\n", "outside 0.0..1.0"),
        ("description: d\nvalidation:\n  - kind: required\n    code: missing\n", "UPPER_SNAKE_CASE"),
        ("description: d\nvalidation:\n  - kind: required\n    message: '{nope}'\n", "bad message template"),
        ("description: d\nvalidation:\n  - kind: year_range\n    min: 2000\n    pattern: '(\\d{4})'\n",
         "group named year"),
        ("description: d\nvalidation:\n  - kind: year_range\n    min: 2000\n    pattern: '(?P<year>\\d{4})|(x)'\n",
         "unnamed groups"),
        ("description: d\nvalidation:\n  - kind: gtin_check_digit\n    lengths: [13, x]\n", "lengths"),
        ("description: d\nvalidation:\n  - kind: allowed_values\n", "needs 'values' or 'file'"),
        ("description: d\nvalidation:\n  - kind: allowed_values\n    file: nowhere.txt\n", "data file not found"),
        ("description: d\npattern: {}\n", "needs at least one of"),
        ("description: d\npattern:\n  known: [a]\n", "unknown key(s) ['known']"),
        ("description: d\npattern:\n  known_values: {closed: true}\n", "needs 'values' or 'file'"),
        ("description: d\npattern:\n  known_values: [a]\n  confidence: {NEAR: 0.5}\n", "['NEAR']"),
        ("description: d\npattern:\n  vocabulary:\n    words: [a]\n    split_pattern: '['\n", "bad regular"),
        ("description: d\npattern:\n  formats:\n    regexes: ['a)']\n", "bad regular expression"),
        ("description: d\npattern:\n  formats: {}\n", "needs 'signatures' and/or 'regexes'"),
        ("description: d\npattern:\n  rarity:\n    max_share: 2\n", "outside"),
    ],
)
def test_malformed_files_give_clear_errors(tmp_path: Path, text: str, needle: str) -> None:
    assert needle in load_error(tmp_path, text)


def test_unknown_kind_error_lists_known_kinds(tmp_path: Path) -> None:
    msg = load_error(tmp_path, "description: d\nvalidation:\n  - kind: required\n  - kind: bogus\n")
    assert "validation[1]" in msg and "gtin_check_digit" in msg


def test_validate_regex() -> None:
    assert validate_regex(r"^\d{4}$") is None
    assert validate_regex(r"\pL+") is None
    assert validate_regex("((") and validate_regex("(?<!x)y")  # RE2 has no lookbehind
