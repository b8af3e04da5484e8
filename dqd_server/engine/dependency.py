r"""Method "dependency": cells that break a dependency between columns, learned by ``dqd profile``.

Reads ``dependencies.yaml`` at the repository root (absent: the method checks nothing)::

    version: 3                        # bumps on every re-profile
    table: shops
    missing: {shops__state: ['n/a', 'null', ...]}   # optional: spellings of "no value" per field type
    dependencies:                     # functional dependencies determinant -> dependent (field types)
      - determinant: shops__zip
        dependent: shops__city
        columns: [zip, city]   # informative
        agreement: 0.947              # share of the profiled rows that agreed with their group's majority
        mapping: _dependencies/shops__zip--shops__city.csv
                                      # key,expected,support,total[,runner_up,runner_up_value]: per determinant
                                      # value its majority dependent value, the rows with it, the group's rows
        alternatives: _dependencies/shops__zip--shops__city.alternatives.csv
                                      # optional key,value,rows: minority pairs seen in 2+ rows (legitimate)
    spills:                           # a value of `source` written at the end of `host` while source is empty
      - source: shops__state
        host: shops__city
        values: _dependencies/shops__state.values.csv   # column "value": the source's frequent values
        missing: ['n/a', ...]         # optional: spellings of "no value" in the source

Per batch, for every dependency whose two field types are mapped: rows whose determinant value was learned get
the learned majority as expected value; determinant values the profile never saw are grouped within the batch
(groups of 3+ rows with a clear majority). A row whose dependent cell differs from the expected value is a
finding on the dependent cell, code ``DEPENDENCY_CONFLICT`` (``MISSING_DEPENDENT`` when empty), whose message
names the determinant cell, the expected value and its support. A pair the profile saw in 2+ rows is a
legitimate alternative, not a conflict (``Springfield`` is in IL and MA; errors rarely repeat identically).
A conflict is dropped when another dependency confirms the cell (its determinant's learned majority is exactly
the cell's value): the row is a consistent other entity, not a broken one. Spills flag both cells
(``MERGED_VALUE`` on the host, ``MISPLACED_VALUE`` on the empty source). At most one finding per cell (the most
confident). Everything is vectorized over rows (Arrow ``index_in``, numpy); Python only formats the messages of
the flagged cells.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import yaml

from .detector import TABLE_HITS_SCHEMA, MethodInfo, register
from .errors import InvalidInput
from .repository import FieldSpec, load_repository

DEPENDENCIES_FILE = "dependencies.yaml"
DEFAULT_MISSING = ("n/a", "na", "n.a.", "n.a", "#n/a", "null", "(null)", "<null>", "none", "nil", "nan", "-", "--",
                   "?", "empty", "missing", "unknown", "not available", "undefined")  # when a field has no list
SPLIT_RUNNER_UP = 0.1  # a runner-up value this common in its group (and in 2+ rows) is a legitimate second value
CLEARLY_ODD = 3  # a determinant in this many more of the row's conflicts than the dependent is the one to blame
BATCH_MIN_GROUP = 3  # determinant values unknown to the profile: judged within the batch from this many rows
_SEPARATORS = r"[\s,;/|]+"
_MAX_SHOWN = 60


@dataclass(frozen=True)
class FunctionalDependency:
    determinant: str
    dependent: str
    agreement: float
    keys: pa.Array  # determinant values
    expected: pa.Array  # their majority dependent value
    support: np.ndarray
    total: np.ndarray
    runner_up: np.ndarray
    runner_up_value: pa.Array  # "" when none
    alternatives: pa.Array  # "key\x1fvalue" of legitimate minority pairs


@dataclass(frozen=True)
class SpillRule:
    source: str
    host: str
    values: pa.Array
    missing: tuple[str, ...]


@dataclass(frozen=True)
class DependencyRules:
    version: str
    missing: Mapping[str, tuple[str, ...]]
    dependencies: tuple[FunctionalDependency, ...]
    spills: tuple[SpillRule, ...]

    @classmethod
    def empty(cls) -> DependencyRules:
        return cls("0", {}, (), ())


def load_rules(root: Path) -> DependencyRules:
    """Read ``root/dependencies.yaml`` (an absent file means no rules); ``ValueError`` names what is wrong."""
    path = Path(root) / DEPENDENCIES_FILE
    if not path.is_file():
        return DependencyRules.empty()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping with 'dependencies' and/or 'spills'")
    missing = {str(k): _tokens(v, path, f"missing.{k}") for k, v in (doc.get("missing") or {}).items()}
    deps = tuple(_dependency(d, i, path) for i, d in enumerate(doc.get("dependencies") or []))
    spills = tuple(_spill(s, i, path, missing) for i, s in enumerate(doc.get("spills") or []))
    return DependencyRules(str(doc.get("version", 1)), missing, deps, spills)


def _tokens(v: Any, path: Path, where: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
        raise ValueError(f"{path}: {where}: expected a list of strings")
    return tuple(t.strip().lower() for t in v)


def _read_csv(path: Path, types: Mapping[str, pa.DataType], optional: bool = False) -> pa.Table:
    if not path.is_file():
        raise ValueError(f"{path}: data file not found")
    try:
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                              convert_options=pacsv.ConvertOptions(column_types=dict(types), strings_can_be_null=False,
                                                                   null_values=[], include_columns=list(types),
                                                                   include_missing_columns=optional))
    except (pa.ArrowInvalid, KeyError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}; expected columns {list(types)}") from None


def _need(entry: Any, keys: tuple[str, ...], path: Path, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: {where}: expected a mapping")
    absent = [k for k in keys if k not in entry]
    if absent:
        raise ValueError(f"{path}: {where}: missing key(s) {absent}")
    return entry


def _dependency(entry: Any, i: int, path: Path) -> FunctionalDependency:
    where = f"dependencies[{i}]"
    e = _need(entry, ("determinant", "dependent", "mapping"), path, where)
    mapping = path.parent / str(e["mapping"])
    t = _read_csv(mapping, {"key": pa.string(), "expected": pa.string(), "support": pa.int64(), "total": pa.int64()})
    extra = _read_csv(mapping, {"runner_up": pa.int64(), "runner_up_value": pa.string()}, optional=True)
    runner = pc.fill_null(extra.column("runner_up"), 0).to_numpy()
    second = pc.fill_null(extra.column("runner_up_value"), "").combine_chunks()
    alternatives = pa.array([], pa.string())
    if e.get("alternatives"):
        alt = _read_csv(path.parent / str(e["alternatives"]), {"key": pa.string(), "value": pa.string()})
        alternatives = pair_keys(alt.column("key").combine_chunks(), alt.column("value").combine_chunks())
    return FunctionalDependency(str(e["determinant"]), str(e["dependent"]), float(e.get("agreement", 1.0)),
                                t.column("key").combine_chunks(), t.column("expected").combine_chunks(),
                                t.column("support").to_numpy(), t.column("total").to_numpy(),
                                runner, second, alternatives)


def pair_keys(a: pa.Array, b: pa.Array) -> pa.Array:
    """One string per (a, b) pair, for set lookups of pairs."""
    return pc.binary_join_element_wise(pc.fill_null(a, ""), pc.fill_null(b, ""), "\x1f")


def _spill(entry: Any, i: int, path: Path, missing: Mapping[str, tuple[str, ...]]) -> SpillRule:
    e = _need(entry, ("source", "host", "values"), path, f"spills[{i}]")
    t = _read_csv(path.parent / str(e["values"]), {"value": pa.string()})
    tokens = _tokens(e["missing"], path, f"spills[{i}].missing") if "missing" in e else missing.get(
        str(e["source"]), DEFAULT_MISSING)
    return SpillRule(str(e["source"]), str(e["host"]), t.column("value").combine_chunks(), tokens)


# ---- helpers --------------------------------------------------------------------------------------------------

def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _text(batch: pa.RecordBatch, column: str) -> pa.Array:
    from .pipeline import column_as_strings  # pipeline imports the registry; import late to stay acyclic

    return column_as_strings(batch, column)


def missing_mask(values: pa.Array, tokens: tuple[str, ...]) -> np.ndarray:
    trimmed = pc.utf8_trim_whitespace(values)
    out = ~np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    out |= _np_bool(pc.equal(trimmed, ""))
    if tokens:
        out |= _np_bool(pc.is_in(pc.utf8_lower(trimmed), value_set=pa.array(list(tokens), pa.string())))
    return out


def _show(values: list[str | None]) -> list[str]:
    out = []
    for v in values:
        v = "" if v is None else v
        out.append(v if len(v) <= _MAX_SHOWN else v[: _MAX_SHOWN - 1] + "…")
    return out


def _hits(rows: np.ndarray, column: str, code: str | list[str], messages: list[str],
          confidence: np.ndarray) -> pa.RecordBatch:
    n = len(rows)
    codes = pa.array([code] * n if isinstance(code, str) else code, pa.string())
    return pa.RecordBatch.from_arrays([pa.array(rows, pa.int64()), pa.array([column] * n, pa.string()), codes,
                                       pa.array(messages, pa.string()), pa.array(confidence, pa.float64())],
                                      schema=TABLE_HITS_SCHEMA)


def empty_table_hits() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=TABLE_HITS_SCHEMA)


def strongest_per_cell(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    """Concatenate hits and keep the most confident one per (row, column), ordered by row."""
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return empty_table_hits()
    t = pa.Table.from_batches(parts, schema=TABLE_HITS_SCHEMA).combine_chunks()
    rows = t.column("row").to_numpy()
    col = np.asarray(pc.dictionary_encode(t.column("column")).combine_chunks().indices.to_numpy(), dtype=np.int64)
    conf = t.column("confidence").to_numpy()
    order = np.lexsort((-conf, col, rows))
    keep = np.r_[True, (rows[order][1:] != rows[order][:-1]) | (col[order][1:] != col[order][:-1])]
    out = t.take(pa.array(order[keep], pa.int64())).combine_chunks().to_batches()
    return out[0] if out else empty_table_hits()


# ---- the detector -----------------------------------------------------------------------------------------------

class DependencyDetector:
    """Cross-column checks from learned functional dependencies and spills (a ``TableDetector``)."""

    method = "dependency"

    def __init__(self, rules: DependencyRules, specs: Mapping[str, FieldSpec] | None = None) -> None:
        self.rules = rules
        self._specs = dict(specs or {})
        checks: dict[str, int] = {}
        for d in rules.dependencies:
            checks[d.dependent] = checks.get(d.dependent, 0) + 1
        for s in rules.spills:
            for ft in (s.source, s.host):
                checks[ft] = checks.get(ft, 0) + 1
        self._checks = checks

    @classmethod
    def from_repository(cls, root: Path) -> DependencyDetector:
        rules = load_rules(root)
        specs = load_repository(root) if rules.dependencies or rules.spills else {}
        return cls(rules, specs)

    def fields(self) -> Mapping[str, MethodInfo]:
        return {ft: MethodInfo(self.rules.version, n) for ft, n in sorted(self._checks.items())}

    def describe(self, field: str) -> str:
        if field in self._specs:
            return self._specs[field].description
        if field in self._checks:
            return f"{field}: checked against learned dependencies"
        raise InvalidInput(f"unknown field type {field!r} for method dependency")

    def context_free(self, field: str) -> bool:
        return False

    def detect_table(self, batch: pa.RecordBatch, columns: Mapping[str, str]) -> pa.RecordBatch:
        if not batch.num_rows or not (self.rules.dependencies or self.rules.spills):
            return empty_table_hits()
        by_type: dict[str, list[str]] = {}
        for column, ft in columns.items():
            by_type.setdefault(ft, []).append(column)
        parts: list[pa.RecordBatch] = []
        texts: dict[str, pa.Array] = {}

        def text(column: str) -> pa.Array:
            if column not in texts:
                texts[column] = _text(batch, column)
            return texts[column]

        missing: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

        def missing_of(column: str, tokens: tuple[str, ...]) -> np.ndarray:
            if (column, tokens) not in missing:
                missing[(column, tokens)] = missing_mask(text(column), tokens)
            return missing[(column, tokens)]

        confirmed: dict[str, np.ndarray] = {}
        conflicts: list[Conflicts] = []
        for dep in self.rules.dependencies:
            for col_a in by_type.get(dep.determinant, ()):
                for col_b in by_type.get(dep.dependent, ()):
                    if col_a != col_b:
                        found, ok = self._check_fd(dep, col_a, col_b, text(col_a), text(col_b), missing_of)
                        conflicts.extend(found)
                        confirmed[col_b] = confirmed.get(col_b, np.zeros(batch.num_rows, dtype=bool)) | ok
        for spill in self.rules.spills:
            for col_b in by_type.get(spill.source, ()):
                for col_a in by_type.get(spill.host, ()):
                    if col_a != col_b:
                        parts.extend(_check_spill(spill, col_b, col_a, text(col_b), text(col_a)))
        parts.extend(_blame(conflicts, confirmed, list(columns), parts))
        return strongest_per_cell(parts)

    def _check_fd(self, dep: FunctionalDependency, col_a: str, col_b: str, a: pa.Array, b: pa.Array,
                  missing_of: Callable[[str, tuple[str, ...]], np.ndarray]) -> tuple[list[Conflicts], np.ndarray]:
        """Rows that break ``dep`` and the rows whose ``col_b`` value ``dep`` confirms."""
        a_missing = missing_of(col_a, self.rules.missing.get(dep.determinant, DEFAULT_MISSING))
        b_missing = missing_of(col_b, self.rules.missing.get(dep.dependent, DEFAULT_MISSING))
        b_norm = pc.if_else(pa.array(b_missing), "", pc.fill_null(b, ""))
        out: list[Conflicts] = []
        confirmed = np.zeros(len(a), dtype=bool)
        # 1. against the learned mapping
        pos = pc.index_in(a, value_set=dep.keys)
        known = _np_bool(pc.is_valid(pos)) & ~a_missing
        rows = np.flatnonzero(known)
        if len(rows):
            p = np.asarray(pos.to_numpy(zero_copy_only=False)[rows], dtype=np.int64)
            take_p = pa.array(p, pa.int64())
            expected = dep.expected.take(take_p)
            actual = b_norm.take(pa.array(rows, pa.int64()))
            differs = _np_bool(pc.not_equal(actual, expected))
            support, total = dep.support[p], dep.total[p]
            legit_second = np.zeros(len(rows), dtype=bool)
            if len(dep.alternatives):
                pairs = pair_keys(a.take(pa.array(rows, pa.int64())), actual)
                legit_second = _np_bool(pc.is_in(pairs, value_set=dep.alternatives))
            confirmed[rows[~differs & (support >= 2)]] = True
            sel = np.flatnonzero(differs & ~legit_second & (support >= 2))
            if len(sel):
                out.append(Conflicts(col_a, col_b, a, b, b_missing, rows[sel], expected.take(pa.array(sel, pa.int64())),
                                     support[sel], total[sel], "rows"))
        # 2. determinant values the profile never saw: their majority within this batch
        fresh = np.flatnonzero(~known & ~a_missing)
        if len(fresh) >= BATCH_MIN_GROUP:
            out.extend(_within_batch(col_a, col_b, a, b, b_norm, b_missing, fresh))
        return out, confirmed


@dataclass
class Conflicts:
    """Rows of one batch whose ``col_b`` differs from what their ``col_a`` value determines."""

    col_a: str
    col_b: str
    a: pa.Array
    b: pa.Array
    b_missing: np.ndarray
    rows: np.ndarray
    expected: pa.Array
    support: np.ndarray
    total: np.ndarray
    where: str
    factor: float = 1.0

    @property
    def confidence(self) -> np.ndarray:
        return self.factor * self.support / (self.total + 1.0)


def _blame(conflicts: list[Conflicts], confirmed: Mapping[str, np.ndarray], names: list[str],
           evidence: list[pa.RecordBatch] = ()) -> list[pa.RecordBatch]:
    """Turn conflicts into hits on the cell to blame.

    A conflict whose dependent cell another dependency confirms is dropped (a consistent other entity). The
    dependent cell is blamed — except in a mutual conflict (A -> B and B -> A both broken in the row, as with
    a code and its name): then the cell that takes part in more of the row's *other* conflicts (dropped ones
    included) is the odd one out (a wrong ``measure`` code also breaks measure -> condition; the right name
    breaks nothing else), and on a tie both are flagged; and a determinant cell in ``CLEARLY_ODD`` more of the
    row's conflicts than the dependent is blamed instead of it (a shared price "determining" five columns
    of another article: one finding on the price, not five).
    """
    kept: list[tuple[Conflicts, np.ndarray]] = []
    index = {n: i for i, n in enumerate(names)}
    width = len(names)
    vetoed_a = []  # a vetoed conflict still says its determinant cell disagrees with the row
    for c in conflicts:
        ok = ~confirmed[c.col_b][c.rows] if c.col_b in confirmed else np.ones(len(c.rows), bool)
        vetoed_a.append(c.rows[~ok] * width + index[c.col_a])
        if ok.any():
            kept.append((c, np.flatnonzero(ok)))
    if not kept:
        return []
    keys_a = [c.rows[sel] * width + index[c.col_a] for c, sel in kept]
    keys_b = [c.rows[sel] * width + index[c.col_b] for c, sel in kept]
    other = [h.column("row").to_numpy() * width + np.array([index[c] for c in h.column("column").to_pylist()],
                                                             dtype=np.int64) for h in evidence if h.num_rows]
    uniq, counts = np.unique(np.concatenate(keys_a + keys_b + vetoed_a + other), return_counts=True)
    edges = np.unique(np.concatenate([c.rows[sel] * width * width + index[c.col_a] * width + index[c.col_b]
                                      for c, sel in kept]))

    def involvement(keys: np.ndarray) -> np.ndarray:
        return counts[np.searchsorted(uniq, keys)]

    out = []
    for (c, sel), ka, kb in zip(kept, keys_a, keys_b):
        rows_ = c.rows[sel]
        mutual = np.isin(rows_ * width * width + index[c.col_b] * width + index[c.col_a], edges)
        inv_a, inv_b = involvement(ka), involvement(kb)
        blame_a = (mutual & (inv_a > inv_b)) | (inv_a >= inv_b + CLEARLY_ODD)
        rows = c.rows[sel]
        take = pa.array(rows, pa.int64())
        a_vals, b_vals = _show(c.a.take(take).to_pylist()), _show(c.b.take(take).to_pylist())
        exp = _show(c.expected.take(pa.array(sel, pa.int64())).to_pylist())
        empty = c.b_missing[rows]
        conf = c.confidence[sel]
        sup, tot = c.support[sel].tolist(), c.total[sel].tolist()
        b_msgs, b_codes, a_msgs = [], [], []
        for av, bv, ev, s, t, e in zip(a_vals, b_vals, exp, sup, tot, empty.tolist()):
            rule = f"{c.col_a} '{av}' → {c.col_b} '{ev}' in {s} of {t} {c.where}"
            if e:
                b_codes.append("MISSING_DEPENDENT")
                shown = f"'{bv}'" if bv.strip() else "empty"
                b_msgs.append(f"{c.col_b} is {shown} but {rule}")
            else:
                b_codes.append("DEPENDENCY_CONFLICT")
                b_msgs.append(f"{c.col_b} '{bv}' conflicts with {rule}")
            a_msgs.append(f"{c.col_a} '{av}' is the odd one out in this row: {c.col_b} is '{bv}' here, but {rule}")
        ib, ia = np.flatnonzero(~blame_a), np.flatnonzero(blame_a)
        if len(ib):
            out.append(_hits(rows[ib], c.col_b, [b_codes[i] for i in ib], [b_msgs[i] for i in ib], conf[ib]))
        if len(ia):
            out.append(_hits(rows[ia], c.col_a, "DEPENDENCY_CONFLICT", [a_msgs[i] for i in ia], conf[ia]))
    return out


def _within_batch(col_a: str, col_b: str, a: pa.Array, b: pa.Array, b_norm: pa.Array, b_missing: np.ndarray,
                  rows: np.ndarray) -> list[Conflicts]:
    take = pa.array(rows, pa.int64())
    ea = pc.dictionary_encode(a.take(take))
    eb = pc.dictionary_encode(b_norm.take(take))
    ac = np.asarray(ea.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    bc = np.asarray(eb.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    nb = len(eb.dictionary)
    keys, counts = np.unique(ac * nb + bc, return_counts=True)
    ka, kb = keys // nb, keys % nb
    order = np.lexsort((-counts, ka))
    ka, kb, counts = ka[order], kb[order], counts[order]
    starts = np.flatnonzero(np.r_[True, ka[1:] != ka[:-1]])
    total = np.add.reduceat(counts, starts)
    nxt = starts + 1
    runner = np.where(np.r_[starts[1:], len(ka)] > nxt, counts[np.minimum(nxt, len(ka) - 1)], 0)
    maj_of = np.full(len(ea.dictionary), -1, dtype=np.int64)
    sup_of = np.zeros(len(ea.dictionary), dtype=np.int64)
    tot_of = np.zeros(len(ea.dictionary), dtype=np.int64)
    good = (total >= BATCH_MIN_GROUP) & (counts[starts] * 2 > total) & ~(
        (runner >= 2) & (runner >= SPLIT_RUNNER_UP * total))
    empty_code = pc.index_in(pa.array([""], pa.string()), value_set=eb.dictionary)[0].as_py()
    if empty_code is not None:
        good &= kb[starts] != empty_code
    maj_of[ka[starts][good]] = kb[starts][good]
    sup_of[ka[starts][good]] = counts[starts][good]
    tot_of[ka[starts][good]] = total[good]
    expected_code = maj_of[ac]
    sel = np.flatnonzero((expected_code >= 0) & (bc != expected_code))
    if not len(sel):
        return []
    expected = eb.dictionary.take(pa.array(expected_code[sel], pa.int64()))
    return [Conflicts(col_a, col_b, a, b, b_missing, rows[sel], expected, sup_of[ac[sel]], tot_of[ac[sel]],
                      "rows of this batch", factor=0.9)]


def _check_spill(spill: SpillRule, col_b: str, col_a: str, b: pa.Array, a: pa.Array) -> list[pa.RecordBatch]:
    b_missing = missing_mask(b, spill.missing)
    rows = np.flatnonzero(b_missing)
    if not len(rows):
        return []
    host = pc.utf8_trim_whitespace(a.take(pa.array(rows, pa.int64())))
    one = pc.struct_field(pc.extract_regex(host, rf"^.*\S{_SEPARATORS}(?P<t>[^\s,;/|]+)$"), "t")
    two = pc.struct_field(pc.extract_regex(host, rf"^.*\S{_SEPARATORS}(?P<t>[^\s,;/|]+\s[^\s,;/|]+)$"), "t")
    in_two = _np_bool(pc.is_in(two, value_set=spill.values))
    in_one = _np_bool(pc.is_in(one, value_set=spill.values))
    hit = in_one | in_two
    sel = np.flatnonzero(hit)
    if not len(sel):
        return []
    token = pc.if_else(pa.array(in_two[sel]), two.take(pa.array(sel, pa.int64())), one.take(pa.array(sel, pa.int64())))
    tokens = _show(token.to_pylist())
    hosts = _show(host.take(pa.array(sel, pa.int64())).to_pylist())
    r = rows[sel]
    conf = np.full(len(r), 0.85)
    merged = [f"{col_a} '{h}' ends with '{t}', a value of {col_b}, while {col_b} is empty" for h, t in zip(hosts, tokens)]
    misplaced = [f"{col_b} is empty; its value '{t}' seems to sit at the end of {col_a} '{h}'"
                 for h, t in zip(hosts, tokens)]
    return [_hits(r, col_a, "MERGED_VALUE", merged, conf), _hits(r, col_b, "MISPLACED_VALUE", misplaced, conf)]


register("dependency", DependencyDetector.from_repository)
