"""Method "pattern": known values, token vocabularies, format signatures and rarity, on tmp and bundled rules."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dqd_server.engine import detector
from dqd_server.engine.errors import InvalidInput
from dqd_server.engine.hits import HITS_SCHEMA
from dqd_server.engine.pattern import PatternDetector, signature
from dqd_server.engine.repository import BUNDLED_RULES
from dqd_server.engine.validation import ValidationDetector

WEIRD = [None, "", " ", "\x00", "%", "1" * 100_000, "é" * 3000, "😀", "\u00a0x", "{value}", "{token}", "((", "\\",
         "-", "٣٤", "ＳＳ２４", "a" * 5000 + " b", "\n", "Ω≈ç√", "ǅ", "'"]


def make(tmp_path: Path, pattern: str, **files: str) -> PatternDetector:
    d = tmp_path / "f" / "1"
    d.mkdir(parents=True, exist_ok=True)
    (d / "field.yaml").write_text("description: test field\npattern:\n" + pattern, encoding="utf-8")
    for name, text in files.items():
        (d / name).write_text(text, encoding="utf-8")
    return PatternDetector.from_repository(tmp_path)


def run(det: PatternDetector, field: str, values: list[str | None]) -> dict[str | None, tuple[str, str]]:
    hits = det.detect(field, pa.array(values, pa.string()))
    assert hits.schema.equals(HITS_SCHEMA)
    idx = hits.column("index").to_pylist()
    assert len(idx) == len(set(idx)), "one hit per value"
    return {values[i]: (c, m) for i, c, m in zip(idx, hits.column("code").to_pylist(),
                                                    hits.column("message").to_pylist())}


def codes(got: dict[str | None, tuple[str, str]]) -> dict[str | None, str]:
    return {k: c for k, (c, _) in got.items()}


@pytest.fixture(scope="module")
def bundled() -> PatternDetector:
    return PatternDetector.from_repository(BUNDLED_RULES)


COLOURS = "  known_values:\n    values: [Black, White, Light Blue, Navy, Dark Grey]\n    term: colour\n"


def test_known_values_closed(tmp_path: Path) -> None:
    det = make(tmp_path, COLOURS + "    min_similarity: 0.75\n")
    got = run(det, "f", ["Black", "Light Blue", " Navy ", "Light  Blue", "black", "LIGHT BLUE", "Blakc", "Nvy",
                         "Ligth Blue", "Purple", "Cotton", None, "", "  "])
    assert codes(got) == {"black": "CASE_MISMATCH", "LIGHT BLUE": "CASE_MISMATCH", "Blakc": "NEAR_MISS",
                          "Nvy": "NEAR_MISS", "Ligth Blue": "NEAR_MISS", "Purple": "UNKNOWN_VALUE",
                          "Cotton": "UNKNOWN_VALUE"}
    assert got["black"][1] == "'black' differs only in case from the known colour 'Black'"
    assert got["Blakc"][1] == "'Blakc' is not a known colour; did you mean 'Black'?"
    assert got["Purple"][1] == "'Purple' is not a known colour"


def test_known_values_confidence_order(tmp_path: Path) -> None:
    det = make(tmp_path, COLOURS)
    hits = det.detect("f", pa.array(["Blakc", "Purple"], pa.string())).to_pylist()
    conf = {h["code"]: h["confidence"] for h in hits}
    assert conf["NEAR_MISS"] > conf["UNKNOWN_VALUE"]


def test_known_values_open_reports_only_near_misses(tmp_path: Path) -> None:
    det = make(tmp_path, "  known_values:\n    file: cats.txt\n    closed: false\n    min_similarity: 0.75\n"
                         "    term: category\n", **{"cats.txt": "T-Shirts\nJeans\nDresses\nSweaters\nJackets\n"})
    got = run(det, "f", ["Jeans", "Jenas", "jeans", "Swaeters", "Jackts", "Rain Ponchos", "Kimonos"])
    assert codes(got) == {"Jenas": "NEAR_MISS", "jeans": "CASE_MISMATCH", "Swaeters": "NEAR_MISS",
                          "Jackts": "NEAR_MISS"}
    assert got["Swaeters"][1] == "'Swaeters' is not a known category; did you mean 'Sweaters'?"


def test_confidence_override(tmp_path: Path) -> None:
    det = make(tmp_path, COLOURS + "  confidence: {UNKNOWN_VALUE: 0.42}\n")
    assert det.detect("f", pa.array(["Purple"])).column("confidence").to_pylist() == [0.42]


MATERIAL = ("  vocabulary:\n    words: [Viscose, Nylon, Cotton, Elastane, Organic, Polyamide]\n"
            "    case_insensitive: false\n    min_similarity: 0.7\n    term: material term\n")


def test_vocabulary_near_miss_case_and_unknown(tmp_path: Path) -> None:
    det = make(tmp_path, MATERIAL)
    got = run(det, "f", ["78% Viscose - 22% Nylon", "78% Viscose - 22% Nylonn", "95% cotton, 5% Elastane",
                         "95% Cotton, 5% Qwerty", "100% Organic Coton", "95% Cottn, 5% Xyzzy", "100%", None, ""])
    assert codes(got) == {"78% Viscose - 22% Nylonn": "NEAR_MISS", "95% cotton, 5% Elastane": "CASE_MISMATCH",
                          "95% Cotton, 5% Qwerty": "UNKNOWN_TOKEN", "100% Organic Coton": "NEAR_MISS",
                          "95% Cottn, 5% Xyzzy": "NEAR_MISS"}  # the most specific token wins
    assert got["78% Viscose - 22% Nylonn"][1] == "'Nylonn' is not a known material term; did you mean 'Nylon'?"
    assert got["95% cotton, 5% Elastane"][1] == "'cotton' should be written 'Cotton'"
    assert got["95% Cotton, 5% Qwerty"][1] == "'Qwerty' is not a known material term"


def test_vocabulary_case_insensitive_and_short_tokens(tmp_path: Path) -> None:
    det = make(tmp_path, "  vocabulary:\n    words: [machine, wash, at, do, not, tumble, dry, non-chlorine]\n"
                         "    min_similarity: 0.7\n    min_token_length: 2\n")
    got = run(det, "f", ["Machine wash at 30°C", "DO NOT TUMBLE DRY", "Non-Chlorine", "Machine wahs at 30°C",
                         "x"])
    assert codes(got) == {"Machine wahs at 30°C": "NEAR_MISS"}


def test_formats(tmp_path: Path) -> None:
    det = make(tmp_path, "  formats:\n    signatures: ['AA-999999']\n    regexes: ['\\d{13}']\n")
    got = run(det, "f", ["TS-104233", "4006381333931", " TS-104233", "TS-10423", "ts-104233", "TS–104233", None])
    assert codes(got) == {"TS-10423": "BAD_FORMAT", "ts-104233": "BAD_FORMAT", "TS–104233": "BAD_FORMAT"}
    assert got["ts-104233"][1] == ("'ts-104233' has the format 'aa-999999', expected 'AA-999999' or the "
                                   "configured patterns")


def test_signature() -> None:
    sig = signature(pa.array(["TS-104233", "Spring/Summer 2024", "Ærø 3½", None, "", "ǅx"]))
    assert sig.to_pylist() == ["AA-999999", "Aaaaaa/Aaaaaa 9999", "Aaa 9½", None, "", "aa"]


def test_rarity(tmp_path: Path) -> None:
    det = make(tmp_path, "  rarity:\n    min_values: 100\n    max_share: 0.02\n")
    common = [f"{n:013d}" for n in range(200)]
    odd = ["123456789012", "12-34"]
    got = run(det, "f", common + odd + [None])
    assert codes(got) == {"123456789012": "RARE_FORMAT", "12-34": "RARE_FORMAT"}
    assert "(1 of 202 distinct values)" in got["12-34"][1]
    assert max(h["confidence"] for h in det.detect("f", pa.array(common + odd)).to_pylist()) <= 0.5
    assert run(det, "f", common[:50] + odd) == {}  # too few distinct values to judge


def test_rarity_skips_values_flagged_otherwise(tmp_path: Path) -> None:
    det = make(tmp_path, "  formats:\n    signatures: ['9999']\n  rarity:\n    min_values: 10\n    max_share: 0.2\n")
    got = run(det, "f", [f"{n:04d}" for n in range(20)] + ["12a4"])
    assert codes(got) == {"12a4": "BAD_FORMAT"}


def test_fields_describe_unknown(bundled: PatternDetector) -> None:
    assert bundled.method == "pattern"
    fields = bundled.fields()
    assert {"material", "color_name", "category", "size", "season", "care_instructions", "ean",
            "article_number"} <= set(fields)
    assert fields["price"].checks == 0 and fields["material"].checks == 1  # price has no pattern section
    assert bundled.detect("price", pa.array(["abc"])).num_rows == 0
    assert bundled.describe("size").startswith("Size label")
    with pytest.raises(InvalidInput):
        bundled.detect("nope", pa.array(["x"]))
    assert bundled.detect("color_name", pa.array([], pa.string())).num_rows == 0
    assert bundled.detect("color_name", pa.array(["Nvay"]).dictionary_encode()).num_rows == 1


def test_registered() -> None:
    assert "pattern" in detector.registered_methods()


@pytest.mark.parametrize("field", ["material", "color_name", "category", "size", "season", "care_instructions",
                                   "ean", "article_number"])
def test_never_raises_on_odd_strings(bundled: PatternDetector, field: str) -> None:
    values = list(dict.fromkeys(WEIRD)) + [f"{n:013d}" for n in range(300)]  # enough values for rarity
    hits = bundled.detect(field, pa.array(values, pa.string()))
    assert hits.schema.equals(HITS_SCHEMA)
    assert all(0 <= i < len(values) for i in hits.column("index").to_pylist())


def test_material_example_across_both_methods(bundled: PatternDetector) -> None:
    validation = ValidationDetector.from_repository(BUNDLED_RULES)
    values = pa.array(["78% Viscose - 22% Nylon", "78% Viscose - 22% Nylonn"])
    hits = [h for det in (validation, bundled) for h in det.detect("material", values).to_pylist()]
    assert [(h["index"], h["code"], h["message"]) for h in hits] == [
        (1, "NEAR_MISS", "'Nylonn' is not a known material term; did you mean 'Nylon'?")]


def test_care_text_english_and_dutch_not_flagged(bundled: PatternDetector) -> None:
    validation = ValidationDetector.from_repository(BUNDLED_RULES)
    texts = ["Machine wash at 30°C", "Wassen op 30°C", "Do not tumble dry", "Niet in de droger",
             "Iron on low heat", "Strijken op lage temperatuur", "Do not bleach", "Niet bleken",
             "Machine wash at 30°C, Do not tumble dry, Iron on low heat, Do not bleach",
             "Wassen op 30°C; Niet in de droger; Strijken op lage temperatuur; Niet bleken",
             "Machine wash at 40°C. Do not bleach. Dry flat.", "Wassen op 40°C, niet bleken, liggend drogen",
             "Hand wash only; Do not dry clean", "Alleen handwas. Niet chemisch reinigen."]
    for det in (validation, bundled):
        assert det.detect("care_instructions", pa.array(texts)).num_rows == 0, det.method
    got = run(bundled, "care_instructions", ["Machine wahs at 30°C", "Niet in de drogr", "Do not tumble dry xq"])
    assert codes(got) == {"Machine wahs at 30°C": "NEAR_MISS", "Niet in de drogr": "NEAR_MISS",
                          "Do not tumble dry xq": "UNKNOWN_TOKEN"}


def test_bundled_known_values(bundled: PatternDetector) -> None:
    assert run(bundled, "color_name", ["Light Blue", "Dark Grey", "Off White", "Navy", "Black"]) == {}
    assert codes(run(bundled, "color_name", ["Ligth Blue", "navy", "Cotton"])) == {
        "Ligth Blue": "NEAR_MISS", "navy": "CASE_MISMATCH", "Cotton": "UNKNOWN_VALUE"}
    sizes = ["XXS", "XS", "S", "M", "L", "XL", "XXL", "3XL", "4XL", "24", "38", "54", "W28/L30", "W40/L36",
             "35", "35.5", "47.5", "48", "One Size"]
    assert run(bundled, "size", sizes) == {}
    assert codes(run(bundled, "size", ["xl", "one size", "56", "W28/L3"])) == {
        "xl": "CASE_MISMATCH", "one size": "CASE_MISMATCH", "56": "UNKNOWN_VALUE", "W28/L3": "NEAR_MISS"}
    assert run(bundled, "category", ["T-Shirts", "Jeans", "Dresses", "Sweaters", "Jackets", "Rain Ponchos"]) == {}
    assert run(bundled, "season", ["SS24", "AW23", "Spring/Summer 2024", "Autumn/Winter 2023"]) == {}
    assert codes(run(bundled, "season", ["ss24", "Sprng/Summer 2024"])) == {"ss24": "BAD_FORMAT",
                                                                            "Sprng/Summer 2024": "BAD_FORMAT"}


@pytest.mark.parametrize("values", [
    ["Ab-12", None, "", "xyz 9!", "TS-104233"],   # ASCII: buffer lookup fast path
    ["ÄB1", "Größe 42", None, "x"],               # non-ASCII: RE2 path
])
def test_signature_fast_path_matches_regex_path(values: list) -> None:
    arr = pa.array(values, pa.string())
    for part in (arr, arr.slice(1), arr.slice(2, 2)):
        regex = pc.replace_substring_regex(part, r"\p{Nd}", "9")
        regex = pc.replace_substring_regex(regex, r"\p{Lu}", "A")
        regex = pc.replace_substring_regex(regex, r"[\p{Ll}\p{Lt}\p{Lm}\p{Lo}]", "a")
        assert signature(part).to_pylist() == regex.to_pylist()
