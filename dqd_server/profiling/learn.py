"""Learn a profile of every column of a table from the table itself — from its majority, never from every value.

A column profile says what the column's values usually look like: how missing values are spelled, whether it
holds numbers (and in which written form: bare, with a unit, with decimals), its allowed values when it has few,
its frequent values (so a rare near-spelling is a likely typo), its letter/digit shapes, lengths and numeric
range. Everything is computed with Arrow/numpy over the column (values are dictionary-encoded once), and the
rules are chosen so that a dirty minority cannot teach them: a form, shape or value is accepted only when enough
rows share it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .tables import as_text, field_types

# Spellings of "no value" (compared trimmed and case-insensitively).
NULL_TOKENS = ("n/a", "na", "n.a.", "n.a", "#n/a", "null", "(null)", "<null>", "none", "nil", "nan", "-", "--",
               "?", "empty", "missing", "unknown", "not available", "undefined", "#value!", "#ref!")

PLAIN_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
# a number with an optional currency-like symbol prefix ("$", "€") and/or a suffix without digits ("oz.", "%")
_DECORATED = (r"^(?P<pre>[^\w\s+\-.,]{1,2})?\s*(?P<num>[+-]?(?:\d+(?:[.,]\d+)*|\.\d+))\s*"
              r"(?P<suf>[^\d\s][^\d]{0,23})?$")
MAX_FORMS = 8  # a quantity column writes its numbers in a few forms; codes and addresses have many
_LETTER_LOWER = r"[\p{Ll}\p{Lt}\p{Lm}\p{Lo}]"

# learning thresholds (shares are of the column's present values unless said otherwise)
NUMERIC_SHARE = 0.95  # numbers (bare or decorated) among present values for a numeric column
DOMINANT_FORM = 0.95  # one written form (affix) this common is the column's canonical form
MAX_WHITESPACE_SHARE = 0.02  # learn "no stray whitespace" when at most this share has it
REQUIRED_NULL_SHARE = 0.01  # learn "required" (low confidence) when at most this share is missing
LOW_CARDINALITY = 64  # at most this many distinct values, each seen ~20 times on average: a closed list
MAX_KNOWN = 5000  # the most frequent values are enough to recognise a misspelling (bounds near-miss cost)
LONG_TEXT = 40  # median length above which a column is free text: words are checked, not whole values
WORD_SPLIT = r"[^\pL]+"
MIN_WORD_ROWS = 3
MIN_KNOWN_COUNT = 2  # a value seen this often is "known"; a one-off value a typo away from one is suspect
SHAPE_MIN_SHARE = 0.005
SHAPE_COVERAGE = 0.98
MAX_SHAPES = 8


@dataclass
class ColumnProfile:
    """What one column of the profiled table looks like (plain data; ``write`` compiles it to rules)."""

    column: str
    field_type: str
    position: int
    rows: int
    missing: int  # null, empty or blank cells
    null_tokens: dict[str, int]  # disguised missing values seen ("N/A": 12)
    token_list: list[str]  # spellings treated as missing in this column (the shape of real values excluded)
    distinct: int  # distinct present values
    kind: str  # "empty", "numeric" or "text"
    forms: dict[str, int] = field(default_factory=dict)  # numeric: written form -> rows ("#", "#oz.", "#%";
    # "#~" a number with decimal commas or digit grouping)
    canonical_form: str | None = None  # numeric: the form values should have ("#" = a bare number)
    decimals: int | None = None  # numeric, bare form: at most this many decimals
    exponent: bool = False
    number_range: tuple[float, float] | None = None
    example: str | None = None  # a typical value in the canonical form
    whitespace_clean: bool = False
    required: bool = False
    fixed_length: int | None = None
    allowed: list[str] | None = None  # closed list (low-cardinality columns)
    known: list[str] | None = None  # frequent values, for near-miss / case checks
    vocabulary: list[str] | None = None  # long text: frequent words, for misspelled-word checks
    shapes: list[tuple[str, int]] | None = None  # accepted letter/digit shapes and their rows
    top_values: list[tuple[str, int]] = field(default_factory=list)

    @property
    def present(self) -> int:
        return self.rows - self.missing - sum(self.null_tokens.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["known"] = len(self.known) if self.known is not None else None
        d["vocabulary"] = len(self.vocabulary) if self.vocabulary is not None else None
        return d


@dataclass
class TableProfile:
    name: str
    rows: int
    columns: list[ColumnProfile]
    null_form: str  # how this table spells a missing value ("" = an empty cell)
    dependencies: list[Any] = field(default_factory=list)  # dependencies.Dependency
    spills: list[Any] = field(default_factory=list)  # dependencies.Spill

    def column(self, name: str) -> ColumnProfile:
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)

    @property
    def field_types(self) -> dict[str, str]:
        return {c.column: c.field_type for c in self.columns}


# ---- vectorized helpers ----------------------------------------------------------------------------------------

def shape(values: pa.Array) -> pa.Array:
    """Generalized letter/digit shape: runs of upper-case letters -> ``A``, other letters -> ``a``, digits -> ``9``,
    whitespace -> one space, anything else kept (``"San Diego"`` -> ``"Aa Aa"``, ``"12.0 oz."`` -> ``"9.9 a."``)."""
    s = pc.replace_substring_regex(values, r"\p{Nd}+", "9")
    s = pc.replace_substring_regex(s, r"\p{Lu}", "A")
    s = pc.replace_substring_regex(s, _LETTER_LOWER, "a")
    s = pc.replace_substring_regex(s, r"A+", "A")
    s = pc.replace_substring_regex(s, r"a+", "a")
    return pc.replace_substring_regex(s, r"\s+", " ")


def shape_regex(sh: str) -> str:
    """An RE2 pattern matching exactly the values of a generalized shape."""
    out = []
    for ch in sh:
        if ch == "A":
            out.append(r"\p{Lu}+")
        elif ch == "a":
            out.append(_LETTER_LOWER + "+")
        elif ch == "9":
            out.append(r"\p{Nd}+")
        elif ch == " ":
            out.append(" ")
        elif ch.isalnum():
            out.append(ch)
        else:
            out.append("\\" + ch if ord(ch) < 128 else ch)
    return "".join(out)


def _np(arr: pa.Array | pa.ChunkedArray, dtype: Any = None) -> np.ndarray:
    out = arr.to_numpy(zero_copy_only=False)
    return np.asarray(out, dtype=dtype) if dtype is not None else out


def _mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return _np(pc.fill_null(arr, False), bool)


def _weighted_counts(keys: pa.Array, weights: np.ndarray) -> list[tuple[str, int]]:
    """Distinct keys with the summed weights of their rows, most common first."""
    enc = pc.dictionary_encode(keys)
    idx = _np(enc.indices, np.int64)
    counts = np.bincount(idx, weights=weights, minlength=len(enc.dictionary)).astype(np.int64)
    order = np.argsort(-counts, kind="stable")
    names = enc.dictionary.to_pylist()
    return [(names[i], int(counts[i])) for i in order if counts[i] > 0]


def _quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    pos = np.searchsorted(cw, q * cw[-1], side="left")
    return float(x[order][min(pos, len(x) - 1)])


# ---- one column -------------------------------------------------------------------------------------------------

def profile_column(column: str, field_type: str, position: int, values: pa.Array | pa.ChunkedArray) -> ColumnProfile:
    """Learn the profile of one text column (distinct values with their counts do all the work)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    enc = pc.dictionary_encode(values, null_encoding="encode")
    distinct = enc.dictionary.cast(pa.string())
    counts = np.bincount(_np(enc.indices, np.int64), minlength=len(distinct)).astype(np.float64)
    trimmed = pc.utf8_trim_whitespace(distinct)
    missing_v = ~_mask(pc.is_valid(distinct)) | _mask(pc.equal(trimmed, ""))
    lower = pc.utf8_lower(trimmed)
    token_v = ~missing_v & _mask(pc.is_in(lower, value_set=pa.array(NULL_TOKENS, pa.string())))
    real_v = ~missing_v & ~token_v
    present_rows = counts[real_v].sum()
    prof = ColumnProfile(column=column, field_type=field_type, position=position, rows=n,
                         missing=int(counts[missing_v].sum()), null_tokens={}, token_list=[],
                         distinct=int(real_v.sum()), kind="empty")
    # shapes of the real values (weighted by rows): what the column's values look like
    shapes = shape(pc.fill_null(distinct, ""))
    real_idx = np.flatnonzero(real_v)
    real_shapes = shapes.take(pa.array(real_idx, pa.int64()))
    shape_counts = _weighted_counts(real_shapes, counts[real_idx]) if len(real_idx) else []
    common_shapes = {s for s, c in shape_counts if present_rows and c >= 0.05 * present_rows}
    prof.token_list = _token_list(common_shapes)
    in_list = ~missing_v & _mask(pc.is_in(lower, value_set=pa.array(prof.token_list, pa.string())))
    token_v &= in_list
    real_v = ~missing_v & ~token_v
    real_idx = np.flatnonzero(real_v)
    real_shapes = shapes.take(pa.array(real_idx, pa.int64()))
    present_rows = counts[real_idx].sum()
    prof.distinct = len(real_idx)
    prof.null_tokens = {v: int(c) for v, c in zip(distinct.take(pa.array(np.flatnonzero(token_v), pa.int64()))
                                                  .to_pylist(), counts[token_v])}
    prof.missing = int(counts[missing_v].sum())
    if not len(real_idx):
        return prof
    real = distinct.take(pa.array(real_idx, pa.int64()))
    w = counts[real_idx]
    order = np.argsort(-w, kind="stable")
    real_list = real.to_pylist()
    prof.top_values = [(real_list[i], int(w[i])) for i in order[:10]]
    prof.required = n >= 20 and (prof.missing + sum(prof.null_tokens.values())) <= REQUIRED_NULL_SHARE * n
    ws = _mask(pc.match_substring_regex(real, r"^[\s\p{Z}]|[\s\p{Z}]$|[\s\p{Z}]{2}"))
    prof.whitespace_clean = bool(w[ws].sum() <= MAX_WHITESPACE_SHARE * present_rows)
    _learn_numbers(prof, real, w, present_rows)
    if prof.kind != "numeric":
        prof.kind = "text"
        _learn_shapes(prof, real_shapes, w, present_rows)
    _learn_lengths(prof, real, w, present_rows)
    _learn_values(prof, real_list, w, order, present_rows)
    return prof


_TOKEN_SHAPES: dict[str, set[str]] = {}


def _token_list(common_shapes: set[str]) -> list[str]:
    """Null spellings for a column: a token shaped like the column's real values (``NA`` among state codes) is
    a real value there, not a missing one."""
    if not _TOKEN_SHAPES:
        variants = sorted({v for tok in NULL_TOKENS for v in (tok, tok.upper(), tok.title())})
        for v, sh in zip(variants, shape(pa.array(variants, pa.string())).to_pylist()):
            _TOKEN_SHAPES.setdefault(v.lower(), set()).add(sh)
    return [tok for tok in NULL_TOKENS if not _TOKEN_SHAPES[tok] & common_shapes]


def _learn_numbers(prof: ColumnProfile, real: pa.Array, w: np.ndarray, present_rows: float) -> None:
    parts = pc.extract_regex(pc.utf8_trim_whitespace(real), _DECORATED)
    is_num = _mask(pc.is_valid(parts))
    if w[is_num].sum() < NUMERIC_SHARE * present_rows:
        return
    plain = _mask(pc.match_substring_regex(real, f"^(?:{PLAIN_NUMBER})$"))
    pre = pc.fill_null(pc.struct_field(parts, "pre"), "")
    suf = pc.utf8_trim_whitespace(pc.fill_null(pc.struct_field(parts, "suf"), ""))
    form = pc.binary_join_element_wise(pre, pa.scalar("#"), suf, "")
    form = pc.if_else(pc.equal(form, "#"), "#~", form)  # "12,5", "1.200,00": a number, not written plainly
    form = pc.if_else(pa.array(plain), "#", pc.fill_null(form, "?"))
    idx = np.flatnonzero(is_num | plain)
    forms = _weighted_counts(form.take(pa.array(idx, pa.int64())), w[idx])
    if sum(c for _, c in forms[:MAX_FORMS]) < NUMERIC_SHARE * present_rows:
        return
    prof.kind = "numeric"
    prof.forms = dict(forms[:20])
    top_form, top_rows = forms[0]
    prof.canonical_form = top_form if top_rows >= DOMINANT_FORM * present_rows else "#"
    canon = _mask(pc.equal(form, prof.canonical_form)) & (is_num | plain)
    if prof.canonical_form == "#":
        canon &= plain
    cidx = np.flatnonzero(canon)
    if len(cidx):
        prof.example = real.take(pa.array([cidx[np.argmax(w[cidx])]], pa.int64()))[0].as_py()
    if prof.canonical_form != "#" or not len(cidx):
        return
    text = real.take(pa.array(cidx, pa.int64()))
    cw = w[cidx]
    dec = _np(pc.fill_null(pc.utf8_length(pc.struct_field(pc.extract_regex(
        text, r"^[^.eE]*(?:\.(?P<d>\d*))?"), "d")), 0), np.int64)
    p995 = int(_quantile(dec.astype(np.float64), cw, 0.995))
    prof.decimals = p995 + 1 if p995 > 0 else 0
    prof.exponent = bool(cw[_mask(pc.match_substring_regex(text, "[eE]"))].sum() >= 0.01 * cw.sum())
    x = _np(pc.cast(text, pa.float64()), np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 5:
        return
    q01, q99 = _quantile(x[ok], cw[ok], 0.01), _quantile(x[ok], cw[ok], 0.99)
    spread = max(q99 - q01, abs(q99) * 0.1, 1e-9)
    lo, hi = q01 - spread, q99 + spread
    if x[ok].min() >= 0:
        lo = max(lo, 0.0)
    prof.number_range = (_round(lo), _round(hi))


def _round(x: float) -> float:
    if x == 0 or not math.isfinite(x):
        return 0.0
    digits = 3 - int(math.floor(math.log10(abs(x))))
    return float(round(x, max(digits, 0))) if digits > 0 else float(round(x))


def _learn_shapes(prof: ColumnProfile, shapes: pa.Array, w: np.ndarray, present_rows: float) -> None:
    counts = _weighted_counts(shapes, w)
    if not counts or not any(ch == "9" or not (ch.isalpha() or ch == " ") for ch in counts[0][0]):
        return  # words (names, places) have a long tail of shapes; formats are for codes, numbers, dates
    accepted = [(s, c) for s, c in counts if c >= max(3, SHAPE_MIN_SHARE * present_rows)]
    covered = sum(c for _, c in accepted)
    if accepted and len(accepted) <= MAX_SHAPES and covered >= SHAPE_COVERAGE * present_rows and len(counts) > 1:
        prof.shapes = accepted


def _learn_lengths(prof: ColumnProfile, real: pa.Array, w: np.ndarray, present_rows: float) -> None:
    lengths = _np(pc.utf8_length(real), np.int64)
    by_len = np.bincount(lengths, weights=w)
    top = int(np.argmax(by_len))
    if by_len[top] >= 0.98 * present_rows and prof.distinct >= 10 and top > 0:
        prof.fixed_length = top


def _learn_values(prof: ColumnProfile, values: list[str], w: np.ndarray, order: np.ndarray,
                  present_rows: float) -> None:
    d = prof.distinct
    if d >= 2 and d <= LOW_CARDINALITY and present_rows >= 20 * d:
        floor = max(2, math.ceil(0.0005 * present_rows))
        allowed = [values[i] for i in order if w[i] >= floor]
        outside = present_rows - sum(w[i] for i in order if w[i] >= floor)
        if outside <= 0.01 * present_rows:
            prof.allowed = allowed
    if d < 3 or present_rows < 2 * d:
        return
    lengths = np.array([len(values[i]) for i in order], dtype=np.float64)
    if _quantile(lengths, w[order], 0.5) > LONG_TEXT:
        _learn_vocabulary(prof, values, w)
        return
    known = [values[i] for i in order[:MAX_KNOWN] if w[i] >= MIN_KNOWN_COUNT]
    if len(known) >= 2:
        prof.known = known


def _learn_vocabulary(prof: ColumnProfile, values: list[str], w: np.ndarray) -> None:
    """Words of a long-text column seen in at least ``MIN_WORD_ROWS`` rows."""
    lists = pc.split_pattern_regex(pa.array(values, pa.string()), WORD_SPLIT)
    tokens = pc.list_flatten(lists)
    owner = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = np.asarray(pc.greater_equal(pc.utf8_length(tokens), 2).to_numpy(zero_copy_only=False), dtype=bool)
    if not keep.any():
        return
    tokens, owner = tokens.filter(pa.array(keep)), owner[keep]
    counts = _weighted_counts(pc.utf8_lower(tokens), w[owner])
    words = [t for t, c in counts[:MAX_KNOWN * 4] if c >= MIN_WORD_ROWS]
    if len(words) >= 5:
        prof.vocabulary = words


# ---- the table --------------------------------------------------------------------------------------------------

def profile_table(table: pa.Table, name: str, *, dependencies: bool = True) -> TableProfile:
    """Profile every column of ``table`` (read as text) and, unless disabled, discover dependencies."""
    table = as_text(table)
    types = field_types(name, table.column_names)
    columns = [profile_column(c, types[c], i, table.column(c)) for i, c in enumerate(table.column_names)]
    profile = TableProfile(name=name, rows=table.num_rows, columns=columns, null_form=_null_form(columns))
    if dependencies:
        from .dependencies import discover, discover_spills

        profile.dependencies = discover(table, profile)
        profile.spills = discover_spills(table, profile)
    return profile


def _null_form(columns: list[ColumnProfile]) -> str:
    """How the table spells a missing value: each column with missing values votes for its most common spelling
    (an empty cell or a token); ties go to the empty cell."""
    votes: dict[str, int] = {}
    for c in columns:
        spellings = dict(c.null_tokens)
        if c.missing:
            spellings[""] = c.missing
        if spellings:
            best = max(sorted(spellings), key=lambda s: (spellings[s], s == ""))
            votes[best] = votes.get(best, 0) + 1
    if not votes:
        return ""
    return max(sorted(votes), key=lambda s: (votes[s], s == ""))
