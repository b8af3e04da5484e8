"""Method "validation": every check kind flags what it must and nothing else; bundled rules on real values."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from dqd_server.engine import detector
from dqd_server.engine.errors import InvalidInput
from dqd_server.engine.hits import HITS_SCHEMA
from dqd_server.engine.repository import BUNDLED_RULES
from dqd_server.engine.validation import ValidationDetector

WEIRD = [None, "", " ", "\x00", "%", "%%", "% %", "1" * 100_000, "é" * 3000 + "%", "😀", "\u00a0x", "{value}", "{0}",
         "((", "\\", "1e309", "-0", "٣٤", "ＳＳ２４", "0%" * 500, "9" * 13, "\n", "Ω≈ç√"]


def make(tmp_path: Path, checks: str) -> ValidationDetector:
    d = tmp_path / "f" / "1"
    d.mkdir(parents=True, exist_ok=True)
    (d / "field.yaml").write_text("description: test field\nvalidation:\n" + checks, encoding="utf-8")
    return ValidationDetector.from_repository(tmp_path)


def run(det: ValidationDetector, field: str, values: list[str | None]) -> dict[str | None, tuple[str, str]]:
    """value -> (code, message) of its hit; asserts at most one hit per value."""
    hits = det.detect(field, pa.array(values, pa.string()))
    assert hits.schema.equals(HITS_SCHEMA)
    idx = hits.column("index").to_pylist()
    assert len(idx) == len(set(idx)), "one hit per value"
    return {values[i]: (c, m) for i, c, m in zip(idx, hits.column("code").to_pylist(),
                                                    hits.column("message").to_pylist())}


@pytest.fixture(scope="module")
def bundled() -> ValidationDetector:
    return ValidationDetector.from_repository(BUNDLED_RULES)


def test_required(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: required\n")
    got = run(det, "f", ["a", None, "", "  ", "\t", " b "])
    assert {k: v[0] for k, v in got.items()} == {None: "MISSING", "": "MISSING", "  ": "MISSING", "\t": "MISSING"}


def test_whitespace(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: whitespace\n")
    bad = [" a", "a ", "a  b", "\ta", "a\n", "a\u00a0", "a \u00a0b"]
    got = run(det, "f", ["a", "a b", "Light Blue", None, ""] + bad)
    assert set(got) == set(bad) and {c for c, _ in got.values()} == {"WHITESPACE"}
    assert got["\ta"][1] == "'\\ta' has leading, trailing or repeated whitespace"  # control chars escaped


def test_regex_full_match_and_must_not_match(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: regex\n    must_match: '[A-Z]{2}-\\d{6}'\n    must_not_match: '000000'\n"
                         "    code: BAD_ARTICLE\n    message: \"'{value}' is not like {must_match}\"\n")
    got = run(det, "f", ["TS-104233", "TS-1042330", "xTS-104233", "ts-104233", "TS-000000", None, ""])
    assert set(got) == {"TS-1042330", "xTS-104233", "ts-104233", "TS-000000"}
    assert got["ts-104233"] == ("BAD_ARTICLE", "'ts-104233' is not like [A-Z]{2}-\\d{6}")


def test_allowed_values(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: allowed_values\n    values: ['Yes', 'No']\n")
    assert set(run(det, "f", ["Yes", "No", "yes", "Maybe", None, ""])) == {"yes", "Maybe"}
    det = make(tmp_path, "  - kind: allowed_values\n    values: ['Yes', 'No']\n    case_insensitive: true\n")
    assert set(run(det, "f", ["Yes", "NO", "yes", "Maybe"])) == {"Maybe"}


def test_yaml_booleans_need_quotes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quote values"):
        make(tmp_path, "  - kind: allowed_values\n    values: [Yes, No]\n")


def test_allowed_values_from_file(tmp_path: Path) -> None:
    (tmp_path / "f" / "1").mkdir(parents=True)
    (tmp_path / "f" / "1" / "ok.txt").write_text("Red\nBlue\n")
    det = make(tmp_path, "  - kind: allowed_values\n    file: ok.txt\n")
    assert set(run(det, "f", ["Red", "Blue", "Green"])) == {"Green"}


def test_length(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: length\n    min: 2\n    max: 4\n")
    got = run(det, "f", ["ab", "abcd", "a", "abcde", "éééé", "😀😀", None, ""])
    assert set(got) == {"a", "abcde"}
    assert got["a"] == ("BAD_LENGTH", "'a' has 1 characters, expected 2..4")


def test_numeric_range(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: numeric_range\n    min: 0\n    min_exclusive: true\n    max: 100000\n"
                         "    max_exclusive: true\n")
    ok = ["0.01", "29.95", "99999.99", "1", "1e3", ".5", "+3"]
    got = run(det, "f", ok + ["0", "0.00", "-5", "100000", "1e309", "12,50", "abc", "1.2.3", " 5", None, ""])
    assert {k: c for k, (c, _) in got.items()} == {
        "0": "OUT_OF_RANGE", "0.00": "OUT_OF_RANGE", "-5": "OUT_OF_RANGE", "100000": "OUT_OF_RANGE",
        "1e309": "OUT_OF_RANGE", "12,50": "NOT_NUMERIC", "abc": "NOT_NUMERIC", "1.2.3": "NOT_NUMERIC",
        " 5": "NOT_NUMERIC"}
    assert got["0"][1] == "'0' is out of range (> 0 and < 100000)"


def test_year_range(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: year_range\n    min: 2000\n    max: 2035\n")
    got = run(det, "f", ["SS24", "AW00", "Spring/Summer 2024", "Autumn/Winter 2035", "no year", "SS47",
                         "Autumn/Winter 1998", "2036", None, ""])
    assert set(got) == {"SS47", "Autumn/Winter 1998", "2036"}
    assert got["SS47"] == ("OUT_OF_RANGE", "'SS47' has year 2047, expected 2000..2035")


def test_gtin_check_digit(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: gtin_check_digit\n")
    good = ["4006381333931", "96385074", "036000291452", "10012345678902", "8710398520005"]
    bad_digit = ["4006381333932", "96385075", "036000291453", "10012345678900"]
    invalid = ["123", "400638133393111", "4006381333931x", "400638133393 ", "٤٠٠٦٣٨١٣٣٣٩٣١"]
    got = run(det, "f", good + bad_digit + invalid + [None, ""])
    assert {k: c for k, (c, _) in got.items()} == {**{v: "BAD_CHECK_DIGIT" for v in bad_digit},
                                                   **{v: "BAD_GTIN" for v in invalid}}
    assert got["4006381333932"][1] == "'4006381333932' has check digit 2, expected 1"


def test_gtin_lengths_param(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: gtin_check_digit\n    lengths: [13]\n    invalid_code: BAD_EAN\n")
    assert {k: c for k, (c, _) in run(det, "f", ["96385074", "4006381333931"]).items()} == {"96385074": "BAD_EAN"}


def test_composition_sum(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: composition_sum\n")
    good = ["78% Viscose - 22% Nylon", "95% Cotton, 5% Elastane", "100% Wool", "100 % Wool", "Leather",
            "33.3% Cotton, 33.3% Wool, 33.4% Silk", "50,5% Cotton - 49,5% Linen", "60% A 40% B"]
    bad = ["95% Cotton, 15% Elastane", "78% Viscose - 2", "% Cotton", "90% Cotton", "50% A - x% B", "0%"]
    got = run(det, "f", good + bad + [None, ""])
    assert set(got) == set(bad) and {c for c, _ in got.values()} == {"BAD_COMPOSITION"}
    assert got["95% Cotton, 15% Elastane"][1] == "'95% Cotton, 15% Elastane' percentages add up to 110, not 100"


def test_first_failing_check_wins(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: required\n  - kind: whitespace\n  - kind: regex\n    must_match: '\\d+'\n")
    got = run(det, "f", [" 12", "x", None, "12"])
    assert {k: c for k, (c, _) in got.items()} == {" 12": "WHITESPACE", "x": "BAD_FORMAT", None: "MISSING"}


def test_custom_code_message_confidence(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: required\n    code: NO_VALUE\n    message: empty!\n    confidence: 0.3\n")
    hits = det.detect("f", pa.array([None], pa.string()))
    assert hits.to_pylist() == [{"index": 0, "code": "NO_VALUE", "message": "empty!", "confidence": 0.3}]


def test_long_values_are_shortened_in_messages(tmp_path: Path) -> None:
    det = make(tmp_path, "  - kind: length\n    max: 10\n")
    (code, msg), = run(det, "f", ["x" * 10_000]).values()
    assert len(msg) < 150 and "…" in msg


def test_fields_describe_unknown_and_empty(bundled: ValidationDetector) -> None:
    assert bundled.method == "validation"
    assert bundled.fields()["ean"].version == "1" and bundled.fields()["ean"].checks == 3
    assert "EAN" in bundled.describe("ean")
    with pytest.raises(InvalidInput, match="unknown field type 'nope'"):
        bundled.detect("nope", pa.array(["x"]))
    assert bundled.detect("ean", pa.array([], pa.string())).num_rows == 0
    # other string layouts are accepted
    assert bundled.detect("ean", pa.chunked_array([pa.array(["1"], pa.large_string())])).num_rows == 1


def test_registered() -> None:
    assert "validation" in detector.registered_methods()
    assert isinstance(detector.build_detectors(BUNDLED_RULES, ["validation"])["validation"], ValidationDetector)


@pytest.mark.parametrize("field", ["material", "color_name", "category", "size", "season", "care_instructions",
                                   "ean", "article_number", "price"])
def test_never_raises_on_odd_strings(bundled: ValidationDetector, field: str) -> None:
    values = pa.array(list(dict.fromkeys(WEIRD)), pa.string())
    hits = bundled.detect(field, values)
    assert hits.schema.equals(HITS_SCHEMA)
    assert set(hits.column("index").to_pylist()) <= set(range(len(values)))


def test_bundled_rules_accept_correct_values(bundled: ValidationDetector) -> None:
    correct = {
        "material": ["78% Viscose - 22% Nylon", "95% Cotton, 5% Elastane", "100% Organic Cotton",
                     "70% Merino Wool - 30% Polyamide", "60% Cotton, 35% Polyester, 5% Elastane"],
        "season": ["SS24", "AW23", "Spring/Summer 2024", "Autumn/Winter 2023", "SS00", "AW35"],
        "ean": ["4006381333931", "96385074", "8710398520005"],
        "article_number": ["TS-104233", "JN-900001"],
        "price": ["29.95", "0.99", "99999.99", "1299.00"],
        "care_instructions": ["Machine wash at 30°C, Do not tumble dry", "Wassen op 30°C; Niet in de droger",
                              "Iron on low heat. Do not bleach.", "Strijken op lage temperatuur, niet bleken",
                              "Do not wash", "Dry clean only"],
        "size": ["XXS", "4XL", "24", "54", "W28/L30", "38.5", "One Size"],
        "color_name": ["Light Blue", "Navy"],
        "category": ["T-Shirts", "Ankle Boots"],
    }
    for field, values in correct.items():
        assert run(bundled, field, values) == {}, field


def test_bundled_rules_flag_wrong_values(bundled: ValidationDetector) -> None:
    wrong = {
        "material": {"95% Cotton, 15% Elastane": "BAD_COMPOSITION", "Navy": "BAD_FORMAT", "100% C": "BAD_FORMAT"},
        "season": {"SS47": "OUT_OF_RANGE", "Spring/Summer 1998": "OUT_OF_RANGE", "ss24": "BAD_FORMAT"},
        "ean": {"4006381333932": "BAD_CHECK_DIGIT", "400638133393": "BAD_FORMAT", " 4006381333931": "WHITESPACE"},
        "article_number": {"TS-10423": "BAD_FORMAT", "ts-104233": "BAD_FORMAT", "": "MISSING"},
        "price": {"0.00": "OUT_OF_RANGE", "-19.95": "OUT_OF_RANGE", "150000.00": "OUT_OF_RANGE",
                  "19.9": "BAD_FORMAT", "abc": "NOT_NUMERIC"},
        "care_instructions": {"Machine wash at 30°C, Do not tumble d": "TRUNCATED",
                              "Wassen op 30°C, niet": "TRUNCATED"},
    }
    for field, expected in wrong.items():
        assert {k: c for k, (c, _) in run(bundled, field, list(expected)).items()} == expected, field
