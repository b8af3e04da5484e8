"""Discover dependencies between columns from a (dirty) table's majority.

* **Functional dependencies** A -> B ("zip determines city"): A holds on the table when, over the rows
  whose A value repeats, at least ``MIN_AGREEMENT`` of the rows carry their A-group's majority B. A must not be
  (near-)unique (then every A "determines" everything) and B must be neither (near-)unique nor (near-)constant;
  and the agreement must be far above chance (the same measure with B shuffled: small groups agree by luck).
  For every A value with a clear majority the learned mapping keeps the expected B, its support (rows with it),
  the group's rows and the runner-up's rows, so a batch can be checked against the whole table, not itself.
* **Spills**: a value of column B written into column A while B is left empty (``city = "Springfield IL"``,
  ``state = ""``). Learned when rows with an empty B end in one of B's frequent values far more often than rows
  with B present do.

Everything is vectorized: columns are dictionary-encoded once; each pair is one ``np.unique`` over int64 keys.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.dependency import missing_mask
from .learn import ColumnProfile, TableProfile

MIN_AGREEMENT = 0.9  # share of rows (in repeated A groups) that agree with their group's majority B
MAX_DISAGREEMENT_VS_CHANCE = 0.25  # disagreement at most this share of the disagreement with B shuffled
MIN_REPEATED_SHARE = 0.3  # rows in repeated A groups, as a share of rows with A present
MAX_B_UNIQUE = 0.9  # B with more distinct values than this share of its present rows is an identifier
MAX_B_TOP_SHARE = 0.95  # B this constant carries no information
MIN_GROUP_MAJORITY = 0.5  # an A value's majority B is learned when it holds more than this share of its rows
MIN_ALTERNATIVE_ROWS = 2  # a minority B seen this often with its A (and this share of the group) is a
MIN_ALTERNATIVE_SHARE = 0.05  # legitimate second mapping, not an error

TAIL_SEPARATORS = r"[\s,;/|]+"


@dataclass
class Dependency:
    determinant: str  # column A
    dependent: str  # column B
    determinant_type: str
    dependent_type: str
    agreement: float
    groups: int  # A values seen in at least two rows
    rows: int  # rows in those groups
    violations: int  # rows (in those groups) that disagree with their group's majority
    mapping: pa.Table  # key (A), expected (B), support, total, runner_up, runner_up_value
    alternatives: pa.Table | None = None  # key (A), value (B), rows: minority pairs seen in 2+ rows

    def describe(self) -> str:
        return (f"{self.determinant} -> {self.dependent}: {self.agreement:.1%} of {self.rows} rows agree "
                f"({self.groups} groups, {self.violations} rows disagree)")


@dataclass
class Spill:
    source: str  # column B whose value is misplaced (left empty)
    host: str  # column A that holds it at its end
    source_type: str
    host_type: str
    evidence: int  # rows with B empty and A ending in a B value
    missing_rows: int  # rows with B empty
    values: list[str]  # B's frequent values

    def describe(self) -> str:
        return (f"{self.source} -> {self.host}: {self.evidence} of {self.missing_rows} rows with an empty "
                f"{self.source} have one of its values at the end of {self.host}")


@dataclass
class _Encoded:
    profile: ColumnProfile
    values: pa.Array  # the column's text
    codes: np.ndarray  # per row: index into ``distinct``; missing rows -> ``missing_code``
    distinct: pa.Array
    missing: np.ndarray
    n_codes: int  # distinct codes including the missing code

    @property
    def missing_code(self) -> int:
        return self.n_codes - 1


def _encode(values: pa.Array, profile: ColumnProfile) -> _Encoded:
    missing = missing_mask(values, tuple(profile.token_list))
    enc = pc.dictionary_encode(pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), values))
    codes = np.asarray(pc.fill_null(enc.indices, len(enc.dictionary)).to_numpy(zero_copy_only=False),
                       dtype=np.int64)
    return _Encoded(profile, values, codes, enc.dictionary, missing, len(enc.dictionary) + 1)


def _determinant_ok(e: _Encoded) -> bool:
    present = ~e.missing
    n = int(present.sum())
    if n < 10 or e.n_codes - 1 < 2:
        return False
    sizes = np.bincount(e.codes[present], minlength=e.n_codes)
    repeated = sizes[sizes >= 2].sum()
    return repeated >= max(10, MIN_REPEATED_SHARE * n) and int((sizes >= 2).sum()) >= 3


def _dependent_ok(e: _Encoded) -> bool:
    present = ~e.missing
    n = int(present.sum())
    if n < 10:
        return False
    sizes = np.bincount(e.codes[present], minlength=e.n_codes)
    return (e.n_codes - 1) <= MAX_B_UNIQUE * n and sizes.max() < MAX_B_TOP_SHARE * len(e.codes) and e.n_codes > 2


def group_majorities(a: np.ndarray, b: np.ndarray, nb: int) -> tuple[np.ndarray, ...]:
    """Per A code (present rows only): majority B code, its rows, the group's rows, the runner-up's rows and
    the runner-up's B code (-1 when none).

    Returns ``(a_codes, majority_b, support, total, runner_up, runner_up_b)``, one entry per distinct A code.
    """
    keys, counts = np.unique(a * nb + b, return_counts=True)
    ka, kb = keys // nb, keys % nb
    order = np.lexsort((-counts, ka))  # by A, most frequent B first
    ka, kb, counts = ka[order], kb[order], counts[order]
    first = np.r_[True, ka[1:] != ka[:-1]]
    starts = np.flatnonzero(first)
    total = np.add.reduceat(counts, starts)
    second_pos = starts + 1
    has_second = np.r_[starts[1:], len(ka)] > second_pos
    runner = np.where(has_second, counts[np.minimum(second_pos, len(ka) - 1)], 0)
    runner_b = np.where(has_second, kb[np.minimum(second_pos, len(ka) - 1)], -1)
    return ka[starts], kb[starts], counts[starts], total, runner, runner_b


def discover(table: pa.Table, profile: TableProfile) -> list[Dependency]:
    """Functional dependencies that hold on the majority of ``table`` (text columns, as profiled)."""
    enc = [_encode(table.column(c.column).combine_chunks(), c) for c in profile.columns]
    found: list[Dependency] = []
    for ea in enc:
        if ea.profile.kind == "empty" or not _determinant_ok(ea):
            continue
        rows_a = np.flatnonzero(~ea.missing)
        for eb in enc:
            if eb is ea or eb.profile.kind == "empty" or not _dependent_ok(eb):
                continue
            dep = _check_pair(ea, eb, rows_a)
            if dep is not None:
                found.append(dep)
    return found


def _check_pair(ea: _Encoded, eb: _Encoded, rows_a: np.ndarray) -> Dependency | None:
    a, b = ea.codes[rows_a], eb.codes[rows_a]
    keys_a, maj_b, support, total, runner, runner_b = group_majorities(a, b, eb.n_codes)
    rep = total >= 2
    rows = int(total[rep].sum())
    if rows == 0:
        return None
    agree = int(support[rep].sum())
    agreement = agree / rows
    if agreement < MIN_AGREEMENT:
        return None
    # A -> B must say more than "B is mostly one value": the groups must not all share one majority
    if len(np.unique(maj_b[rep])) < 2:
        return None
    shuffled = np.random.default_rng(0).permutation(b)
    _, _, s_sup, s_tot, _, _ = group_majorities(a, shuffled, eb.n_codes)
    s_rep = s_tot >= 2
    chance = int(s_sup[s_rep].sum()) / max(int(s_tot[s_rep].sum()), 1)
    if 1 - agreement > MAX_DISAGREEMENT_VS_CHANCE * (1 - chance):
        return None
    learn = rep & (support > MIN_GROUP_MAJORITY * total) & (maj_b != eb.missing_code)
    idx = np.flatnonzero(learn)
    rb = runner_b[idx]
    is_missing = (rb < 0) | (rb >= len(eb.distinct))
    second = eb.distinct.take(pa.array(np.where(is_missing, 0, rb), pa.int64())) if len(eb.distinct) else \
        pa.nulls(len(idx), pa.string())
    second = pc.if_else(pa.array(is_missing), "", pc.fill_null(second, ""))
    mapping = pa.table({
        "key": ea.distinct.take(pa.array(keys_a[idx], pa.int64())),
        "expected": eb.distinct.take(pa.array(maj_b[idx], pa.int64())),
        "support": pa.array(support[idx], pa.int64()),
        "total": pa.array(total[idx], pa.int64()),
        "runner_up": pa.array(runner[idx], pa.int64()),
        "runner_up_value": second,
    })
    # minority values seen in 2+ rows and 5 %+ of a group are a legitimate second mapping (homonyms, a
    # shop's second city), not errors: errors rarely repeat identically within one group
    keys, counts = np.unique(a * eb.n_codes + b, return_counts=True)
    ka, kb = keys // eb.n_codes, keys % eb.n_codes
    maj_of = np.full(ea.n_codes, -1, dtype=np.int64)
    maj_of[keys_a] = maj_b
    group_total = np.zeros(ea.n_codes, dtype=np.int64)
    group_total[keys_a] = total
    alt = ((counts >= MIN_ALTERNATIVE_ROWS) & (counts >= MIN_ALTERNATIVE_SHARE * group_total[ka])
           & (kb != maj_of[ka]) & (kb != eb.missing_code))
    alternatives = pa.table({
        "key": ea.distinct.take(pa.array(ka[alt], pa.int64())),
        "value": eb.distinct.take(pa.array(kb[alt], pa.int64())),
        "rows": pa.array(counts[alt], pa.int64()),
    })
    return Dependency(ea.profile.column, eb.profile.column, ea.profile.field_type, eb.profile.field_type,
                      round(agreement, 4), int(rep.sum()), rows, rows - agree, mapping, alternatives)


def tails(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The last one and last two whitespace/punctuation-separated tokens of each value (null when none)."""
    one = pc.struct_field(pc.extract_regex(values, rf"^.*\S{TAIL_SEPARATORS}(?P<t>[^\s,;/|]+)$"), "t")
    two = pc.struct_field(pc.extract_regex(values, rf"^.*\S{TAIL_SEPARATORS}(?P<t>[^\s,;/|]+\s[^\s,;/|]+)$"), "t")
    return one, two


def ends_with_value(values: pa.Array, domain: pa.Array) -> np.ndarray:
    """Which values end (after a separator) with one of ``domain``'s values."""
    return _Tails.of(values).ends_with(domain)


@dataclass
class _Tails:
    """The tails of a column's distinct values, computed once (regexes run per distinct value, not per row)."""

    indices: np.ndarray
    one: pa.Array
    two: pa.Array

    @classmethod
    def of(cls, values: pa.Array) -> _Tails:
        enc = pc.dictionary_encode(values, null_encoding="encode")
        one, two = tails(pc.utf8_trim_whitespace(enc.dictionary))
        idx = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        return cls(idx, one, two)

    def ends_with(self, domain: pa.Array) -> np.ndarray:
        hit = pc.or_(pc.fill_null(pc.is_in(self.one, value_set=domain), False),
                     pc.fill_null(pc.is_in(self.two, value_set=domain), False))
        return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)[self.indices]


def discover_spills(table: pa.Table, profile: TableProfile) -> list[Spill]:
    """Columns whose value, when they are empty, tends to sit at the end of another column."""
    found: list[Spill] = []
    cache: dict[str, _Tails] = {}
    for cb in profile.columns:
        if cb.kind != "text" or cb.missing + sum(cb.null_tokens.values()) < 2 or cb.distinct < 2:
            continue
        vb = table.column(cb.column).combine_chunks()
        missing_b = missing_mask(vb, tuple(cb.token_list))
        present = vb.filter(pa.array(~missing_b))
        vc = pc.value_counts(present)
        frequent = vc.field("values").filter(pc.greater_equal(vc.field("counts"), 2))
        if len(frequent) < 2 or pc.max(pc.utf8_length(frequent)).as_py() > 40:
            continue
        n_missing, n_present = int(missing_b.sum()), int((~missing_b).sum())
        for ca in profile.columns:
            if ca is cb or ca.kind != "text":
                continue
            if ca.column not in cache:
                cache[ca.column] = _Tails.of(table.column(ca.column).combine_chunks())
            ends = cache[ca.column].ends_with(frequent)
            m_null = int((ends & missing_b).sum())
            m_present = int((ends & ~missing_b).sum())
            rate_null = m_null / n_missing
            rate_present = m_present / max(n_present, 1)
            if m_null >= 2 and rate_null >= 0.3 and rate_null >= 10 * rate_present:
                found.append(Spill(cb.column, ca.column, cb.field_type, ca.field_type, m_null, n_missing,
                                   frequent.to_pylist()))
    return found
