"""Declarative, reproducible error injection: which errors each field type gets, how often, with a seed.

Rules are YAML (``load_rules``); ``DEFAULT_RULES`` applies a generic set by column kind (text or numeric) to any
table, ``CATALOG_RULES`` the product-catalog kinds of ``dqd_server.catalog``. Format::

    rate: 0.03                   # default share of each column's non-empty cells to corrupt
    defaults:                    # columns without their own entry, by kind (numeric: 90 %+ plain numbers)
      text:    [{kind: typo, weight: 3}, {kind: case}, {kind: missing, tokens: ['', 'N/A']}, ...]
      numeric: [{kind: unit, units: [' oz', '%']}, {kind: number_format}, {kind: scale}, ...]
    fields:                      # per field type or column name
      color_name:
        rate: 0.02               # optional: this column's rate
        errors: [{kind: typo}, {kind: wrong_domain, values: [Cotton, Wool]}]   # or from_column: material

Kinds (``kinds.py``): typo, substitute (``chars``), case, whitespace, truncate (``keep: [lo, hi]``), missing
(``tokens``; null for a null cell), swap (another value of the column), wrong_domain (``values`` or
``from_column``), digits, number_format, unit (``units``), scale (``factors``), and the catalog's check_digit,
percentage, out_of_range, catalog_wrong_domain. ``weight`` (default 1) sets how often a kind is drawn; when a kind
cannot apply to a value (no letters for a typo, …) the others are tried. Every injected cell differs from its
original; the same table, rules and seed give the same result.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from .kinds import KINDS, Context, Skip

INJECTED_SCHEMA = pa.schema([("row", pa.int64()), ("column", pa.string()), ("kind", pa.string()),
                             ("original", pa.string()), ("dirty", pa.string())])

DEFAULT_RULES_YAML = """
rate: 0.03
defaults:
  text:
    - {kind: typo, weight: 3}
    - {kind: substitute, weight: 1}
    - {kind: case, weight: 1}
    - {kind: whitespace, weight: 1}
    - {kind: truncate, weight: 1}
    - {kind: missing, weight: 1, tokens: ['', 'N/A', 'null']}
    - {kind: swap, weight: 1}
  numeric:
    - {kind: digits, weight: 2}
    - {kind: number_format, weight: 1}
    - {kind: unit, weight: 1, units: [' oz', '%', ' kg', ' units']}
    - {kind: scale, weight: 1, factors: [100, 0.01, 1000]}
    - {kind: missing, weight: 1, tokens: ['', 'N/A', 'null']}
    - {kind: whitespace, weight: 1}
"""

CATALOG_RULES_YAML = """
rate: 0.02
defaults:
  text: [typo, case, whitespace, missing, truncate]
  numeric: [whitespace, missing, out_of_range, truncate]
fields:
  article_number: {errors: [case, whitespace, missing, truncate]}
  ean: {errors: [whitespace, missing, check_digit, truncate]}
  category: {errors: [typo, case, whitespace, missing]}
  material: {errors: [typo, case, whitespace, missing, catalog_wrong_domain, percentage, truncate]}
  color_name: {errors: [typo, case, whitespace, missing, catalog_wrong_domain, truncate]}
  size: {errors: [case, whitespace, missing, catalog_wrong_domain, truncate]}
  season: {errors: [typo, case, whitespace, missing, out_of_range]}
  care_instructions: {errors: [typo, whitespace, missing, truncate]}
  price: {errors: [whitespace, missing, out_of_range, truncate]}
"""


@dataclass(frozen=True)
class ErrorRule:
    kind: str
    weight: float
    params: Mapping[str, Any]


@dataclass(frozen=True)
class FieldRules:
    rate: float | None
    errors: tuple[ErrorRule, ...]


@dataclass(frozen=True)
class InjectionRules:
    rate: float
    defaults: Mapping[str, tuple[ErrorRule, ...]]  # "text" / "numeric"
    fields: Mapping[str, FieldRules]

    def for_column(self, column: str, field_type: str, kind: str) -> tuple[float, tuple[ErrorRule, ...]]:
        entry = self.fields.get(field_type) or self.fields.get(column)
        if entry is not None:
            return (entry.rate if entry.rate is not None else self.rate), entry.errors
        return self.rate, self.defaults.get(kind) or self.defaults.get("text", ())


def parse_rules(doc: Any, where: str = "injection rules") -> InjectionRules:
    """Validate a rules document (``ValueError`` says what is wrong and where)."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a mapping with rate, defaults and/or fields")
    unknown = sorted(set(doc) - {"rate", "defaults", "fields"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: defaults, fields, rate")
    rate = _rate(doc.get("rate", 0.03), f"{where}: rate")
    defaults = {str(k): _errors(v, f"{where}: defaults.{k}") for k, v in (doc.get("defaults") or {}).items()}
    fields = {}
    for name, entry in (doc.get("fields") or {}).items():
        w = f"{where}: fields.{name}"
        if isinstance(entry, list):
            entry = {"errors": entry}
        if not isinstance(entry, dict) or "errors" not in entry:
            raise ValueError(f"{w}: expected a mapping with 'errors' (and optional 'rate')")
        fields[str(name)] = FieldRules(_rate(entry["rate"], f"{w}.rate") if "rate" in entry else None,
                                       _errors(entry["errors"], f"{w}.errors"))
    return InjectionRules(rate, defaults, fields)


def _rate(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ValueError(f"{where}: expected a share between 0 and 1, got {v!r}")
    return float(v)


def _errors(v: Any, where: str) -> tuple[ErrorRule, ...]:
    if not isinstance(v, list) or not v:
        raise ValueError(f"{where}: expected a non-empty list of error kinds")
    out = []
    for i, item in enumerate(v):
        if isinstance(item, str):
            item = {"kind": item}
        if not isinstance(item, dict) or "kind" not in item:
            raise ValueError(f"{where}[{i}]: expected a kind name or a mapping with 'kind'")
        kind = item["kind"]
        if kind not in KINDS:
            raise ValueError(f"{where}[{i}]: unknown kind {kind!r}; known: {sorted(KINDS)}")
        weight = item.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ValueError(f"{where}[{i}].weight: expected a positive number, got {weight!r}")
        params = {k: val for k, val in item.items() if k not in ("kind", "weight")}
        out.append(ErrorRule(str(kind), float(weight), params))
    return tuple(out)


def load_rules(path: str | Path | None = None) -> InjectionRules:
    """Rules from a YAML file; ``None`` gives ``DEFAULT_RULES``; ``"catalog"`` the product-catalog set."""
    if path is None:
        return DEFAULT_RULES
    if str(path) == "catalog":
        return CATALOG_RULES
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read injection rules: {exc}") from None
    return parse_rules(doc, str(path))


DEFAULT_RULES = parse_rules(yaml.safe_load(DEFAULT_RULES_YAML), "DEFAULT_RULES")
CATALOG_RULES = parse_rules(yaml.safe_load(CATALOG_RULES_YAML), "CATALOG_RULES")

_PLAIN = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*$"


def column_kind(values: pa.Array) -> str:
    """``numeric`` when 90 %+ of the non-empty values are plain numbers, else ``text``."""
    present = values.filter(pc.and_(pc.is_valid(values), pc.not_equal(pc.utf8_trim_whitespace(values), "")))
    if not len(present):
        return "text"
    share = pc.mean(pc.cast(pc.match_substring_regex(present, _PLAIN), pa.float64())).as_py()
    return "numeric" if share >= 0.9 else "text"


def inject(table: pa.Table, rules: InjectionRules | None = None, *, seed: int = 0, rate: float | None = None,
           columns: Mapping[str, str] | None = None) -> tuple[pa.Table, pa.Table]:
    """Corrupt cells of ``table`` (text columns; others are cast to text) by ``rules``.

    ``columns`` maps column -> field type (default: the column name) for per-field rules; ``rate`` overrides
    every rate. Returns ``(dirty, injected)`` where ``injected`` lists (row, column, kind, original, dirty),
    ordered by row then column. Each column draws from its own random stream (seed, column position), so
    adding a column does not change the others' errors.
    """
    from ..profiling.tables import as_text

    rules = rules or DEFAULT_RULES
    table = as_text(table)
    log: dict[str, list[Any]] = {k: [] for k in INJECTED_SCHEMA.names}
    pools = {name: pc.unique(table.column(name).combine_chunks().drop_null()).to_pylist()
             for name in table.column_names}
    out_columns = []
    for pos, name in enumerate(table.column_names):
        col = table.column(name).combine_chunks()
        kind = column_kind(col)
        col_rate, errors = rules.for_column(name, (columns or {}).get(name, name), kind)
        col_rate = rate if rate is not None else col_rate
        rng = np.random.default_rng([seed, pos])
        r = random.Random(f"{seed}:{pos}")
        present = np.asarray(pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(col), ""), False).to_numpy(
            zero_copy_only=False), dtype=bool)
        rows = np.flatnonzero((rng.random(len(col)) < col_rate) & present)
        if not len(rows) or not errors:
            out_columns.append(col)
            continue
        weights = [e.weight for e in errors]
        originals = col.take(pa.array(rows, pa.int64())).to_pylist()
        keep, dirty = [], []
        for row, original in zip(rows.tolist(), originals):  # one iteration per injected cell
            first = r.choices(range(len(errors)), weights=weights)[0]
            order = [first] + r.sample(range(len(errors)), len(errors))
            for k in order:
                rule = errors[k]
                ctx = Context(name, rule.params, pools[name], pools)
                try:
                    new = KINDS[rule.kind](original, r, ctx)
                except Skip:
                    continue
                if new != original:
                    break
            else:
                continue
            keep.append(row)
            dirty.append(new)
            for key, val in zip(INJECTED_SCHEMA.names, (row, name, rule.kind, original, new)):
                log[key].append(val)
        if keep:
            mask = np.zeros(len(col), dtype=bool)
            mask[keep] = True
            col = pc.replace_with_mask(col, pa.array(mask), pa.array(dirty, pa.string()))
        out_columns.append(col)
    injected = pa.table(log, schema=INJECTED_SCHEMA)
    order = pc.sort_indices(injected, [("row", "ascending"), ("column", "ascending")])
    return pa.table(out_columns, names=table.column_names), injected.take(order)


__all__ = ["CATALOG_RULES", "DEFAULT_RULES", "INJECTED_SCHEMA", "InjectionRules", "column_kind", "inject",
           "load_rules", "parse_rules"]
