"""Compile a learned table profile into a rules repository the server loads like hand-written rules.

Layout written under ``DIR`` (see ``engine/repository.py`` for the field.yaml format)::

    DIR/<table>__<column>/<version>/field.yaml      # validation + pattern checks, weights, profile metadata
    DIR/<table>__<column>/<version>/known_values.txt
    DIR/dependencies.yaml                           # method "dependency": learned FDs and spills
    DIR/_dependencies/*.csv                          # their mappings / value lists (ignored as field types)
    DIR/profile.json                                 # what was learned, for people (not read by the server)

Re-profiling into the same ``DIR`` adds a new version folder per field type (the newest serves).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from .learn import PLAIN_NUMBER, ColumnProfile, TableProfile, shape_regex

DEPENDENCIES_FILE = "dependencies.yaml"
DATA_DIR = "_dependencies"
DEFAULT_WEIGHTS = {"validation": 1.0, "pattern": 1.0, "dependency": 1.0}

_FILE_SAFE = re.compile(r"^[^#\s](?:.*\S)?$")


def write_profile(profile: TableProfile, out: str | Path) -> dict[str, Path]:
    """Write ``profile`` as a repository under ``out``; returns field type -> field.yaml path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for col in profile.columns:
        folder = out / col.field_type
        versions = [int(d.name) for d in folder.iterdir() if d.is_dir() and d.name.isdigit()] if folder.is_dir() else []
        version_dir = folder / str(max(versions, default=0) + 1)
        version_dir.mkdir(parents=True)
        doc = field_document(profile, col, version_dir)
        path = version_dir / "field.yaml"
        path.write_text(_header(profile, col) + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120),
                        encoding="utf-8")
        written[col.field_type] = path
    _write_dependencies(profile, out)
    (out / "profile.json").write_text(json.dumps(summary(profile), indent=2, default=str), encoding="utf-8")
    return written


def _header(profile: TableProfile, col: ColumnProfile) -> str:
    return (f"# Learned by `dqd profile` from column {col.column!r} of table {profile.name!r} "
            f"({profile.rows:,} rows). Edit freely; re-profiling writes a new version.\n")


def field_document(profile: TableProfile, col: ColumnProfile, folder: Path) -> dict[str, Any]:
    """The field.yaml document of one column (data files are written into ``folder``)."""
    checks: list[dict[str, Any]] = []
    null_form = profile.null_form
    if col.token_list:
        canonical_text = "leaves missing cells empty" if null_form == "" else f"writes missing values as {null_form!r}"
        checks.append({"kind": "null_tokens", "tokens": list(col.token_list), "canonical": null_form,
                       "message": f"'{{value}}' stands for a missing value; this table {canonical_text}"})
    if col.required:
        checks.append({"kind": "required", "confidence": 0.4,
                       "message": f"value is missing; {_esc(col.column)} is filled in "
                                  f"{1 - (col.missing + sum(col.null_tokens.values())) / max(col.rows, 1):.1%} of rows"})
    if col.whitespace_clean:
        checks.append({"kind": "whitespace", "confidence": 0.7})
    if col.kind == "numeric" and col.canonical_form:
        regex = numeric_regex(col)
        decorated = any(f != "#" for f in col.forms)
        code = "UNIT_VARIANT" if decorated and col.canonical_form == "#" else "FORMAT_VARIANT"
        example = f", e.g. '{col.example}'" if col.example else ""
        form = ("a bare number" if col.canonical_form == "#" else "a number" if col.canonical_form == "#~"
                else f"'{col.canonical_form}' (# = a number)")
        checks.append({"kind": "regex", "must_match": regex, "code": code, "confidence": 0.85,
                       "message": f"'{{value}}' is not written like this column's values: {form}{_esc(example)}"})
        if col.number_range and col.canonical_form == "#":
            lo, hi = col.number_range
            checks.append({"kind": "numeric_range", "min": lo, "max": hi, "confidence": 0.7,
                           "message": "'{value}' is outside the column's usual range ({range})"})
    if col.fixed_length:
        checks.append({"kind": "length", "min": col.fixed_length, "max": col.fixed_length, "confidence": 0.6,
                       "message": "'{value}' has {length} characters; this column's values have {range}"})
    if col.allowed:
        entry: dict[str, Any] = {"kind": "allowed_values", "confidence": 0.6,
                                 "message": f"'{{value}}' is not one of the {len(col.allowed)} values of {_esc(col.column)}"}
        entry.update(_values(col.allowed, folder, "allowed_values.txt", "values"))
        checks.append(entry)
    doc: dict[str, Any] = {"description": describe(profile, col)}
    if checks:
        doc["validation"] = checks
    pattern: dict[str, Any] = {}
    if col.known and col.kind == "text":
        known = {"closed": False, "min_similarity": 0.8, "max_distance": 2, "term": f"{col.column} value"}
        known.update(_values(col.known, folder, "known_values.txt", "values"))
        pattern["known_values"] = known
    if col.vocabulary and col.kind == "text":
        vocab = {"case_insensitive": True, "min_similarity": 0.8, "min_token_length": 3,
                 "term": f"word in {col.column}"}
        vocab.update(_values(col.vocabulary, folder, "vocabulary.txt", "words"))
        pattern["vocabulary"] = vocab
    if col.shapes:
        pattern["formats"] = {"regexes": [shape_regex(s) for s, _ in col.shapes]}
    if pattern:
        pattern["confidence"] = {"NEAR_MISS": 0.7, "CASE_MISMATCH": 0.6, "BAD_FORMAT": 0.6, "UNKNOWN_TOKEN": 0.2}
        doc["pattern"] = pattern
    doc["weights"] = dict(DEFAULT_WEIGHTS)
    doc["profile"] = {"table": profile.name, "column": col.column, "position": col.position, "rows": col.rows,
                      "kind": col.kind, "missing": col.missing, "null_tokens": dict(col.null_tokens),
                      "distinct": col.distinct, "canonical_form": col.canonical_form,
                      "shapes": [s for s, _ in col.shapes] if col.shapes else None}
    return doc


def _esc(text: str) -> str:
    """Escape braces so a literal survives ``str.format``."""
    return text.replace("{", "{{").replace("}", "}}")


def _values(values: list[str], folder: Path, name: str, key: str) -> dict[str, Any]:
    """Values in a data file (one per line); those the line format would alter stay inline in the YAML."""
    safe = [v for v in values if _FILE_SAFE.match(v) and "\n" not in v and "\r" not in v]
    unsafe = [v for v in values if not (_FILE_SAFE.match(v) and "\n" not in v and "\r" not in v)]
    out: dict[str, Any] = {}
    if safe:
        (folder / name).write_text("\n".join(safe) + "\n", encoding="utf-8")
        out["file"] = name
    if unsafe:
        out[key] = unsafe
    return out


def numeric_regex(col: ColumnProfile) -> str:
    """RE2 (full match) for the column's canonical written form of a number."""
    if col.canonical_form == "#":
        if col.decimals is None:
            number = PLAIN_NUMBER
        else:
            frac = "" if col.decimals == 0 else rf"(?:\.\d{{1,{col.decimals}}})?"
            exp = r"(?:[eE][+-]?\d{1,3})?" if col.exponent else ""
            number = rf"[+-]?\d+{frac}{exp}"
        return number
    pre, _, suf = (col.canonical_form or "#").partition("#")
    suf = "" if suf == "~" else suf
    number = r"[+-]?(?:\d+(?:[.,]\d+)*|\.\d+)"
    return rf"{_re2_escape(pre)}\s*{number}\s*{_re2_escape(suf)}"


def _re2_escape(text: str) -> str:
    return "".join("\\" + ch if not ch.isalnum() and ord(ch) < 128 and ch != " " else ch for ch in text)


def describe(profile: TableProfile, col: ColumnProfile) -> str:
    what = {"numeric": "numbers", "text": "text", "empty": "always empty"}[col.kind]
    if col.kind == "numeric" and col.canonical_form and col.canonical_form != "#":
        what += f" written '{col.canonical_form}'"
    return (f"Column {col.column!r} of table {profile.name!r}: {what}, {col.distinct:,} distinct values "
            f"(learned from {profile.rows:,} rows by dqd profile)")


def _csv(table: pa.Table, path: Path) -> None:
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="all_valid"))


def _write_dependencies(profile: TableProfile, out: Path) -> None:
    data = out / DATA_DIR
    data.mkdir(exist_ok=True)
    deps, spills = [], []
    for d in profile.dependencies:
        name = f"{d.determinant_type}--{d.dependent_type}.csv"
        _csv(d.mapping, data / name)
        entry = {"determinant": d.determinant_type, "dependent": d.dependent_type,
                 "columns": [d.determinant, d.dependent], "agreement": d.agreement, "groups": d.groups,
                 "rows": d.rows, "violations": d.violations, "mapping": f"{DATA_DIR}/{name}"}
        if d.alternatives is not None and d.alternatives.num_rows:
            alt = f"{d.determinant_type}--{d.dependent_type}.alternatives.csv"
            _csv(d.alternatives, data / alt)
            entry["alternatives"] = f"{DATA_DIR}/{alt}"
        deps.append(entry)
    for s in profile.spills:
        name = f"{s.source_type}.values.csv"
        _csv(pa.table({"value": pa.array(s.values, pa.string())}), data / name)
        spills.append({"source": s.source_type, "host": s.host_type, "columns": [s.source, s.host],
                       "evidence": s.evidence, "missing_rows": s.missing_rows,
                       "missing": list(profile.column(s.source).token_list), "values": f"{DATA_DIR}/{name}"})
    previous = 0
    path = out / DEPENDENCIES_FILE
    if path.is_file():
        try:
            previous = int((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("version", 0))
        except (yaml.YAMLError, ValueError, TypeError, AttributeError):
            previous = 0
    used = {d.determinant_type for d in profile.dependencies} | {d.dependent_type for d in profile.dependencies}
    missing = {c.field_type: list(c.token_list) for c in profile.columns if c.field_type in used}
    doc = {"version": previous + 1, "table": profile.name, "rows": profile.rows, "missing": missing,
           "dependencies": deps, "spills": spills}
    path.write_text("# Cross-column rules learned by `dqd profile` (method \"dependency\").\n"
                    + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")


def summary(profile: TableProfile) -> dict[str, Any]:
    """What was learned, as JSON-friendly data."""
    return {
        "table": profile.name, "rows": profile.rows, "null_form": profile.null_form,
        "columns": [c.to_dict() for c in profile.columns],
        "dependencies": [d.describe() for d in profile.dependencies],
        "spills": [s.describe() for s in profile.spills],
    }
