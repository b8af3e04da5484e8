"""Method "validation": deterministic rule checks (required, regex, ranges, check digits, …) per field type."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .detector import MethodInfo, register
from .errors import InvalidInput
from .hits import EMPTY, concat_hits, empty_hits, make_hits
from .repository import CheckSpec, FieldSpec, full_match, load_repository

_WHITESPACE = r"^[\s\p{Z}]|[\s\p{Z}]$|[\s\p{Z}]{2}"
_NUMBER = full_match(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")
_PERCENT_TAIL = r"(?P<n>\d{1,6}(?:[.,]\d{1,6})?)\s*$"
_MAX_MESSAGE_VALUE = 80


@dataclass
class Failure:
    """Values failing a check: a mask over the distinct values, plus per-value message extras."""

    mask: np.ndarray
    code: str
    message: str
    confidence: float
    extras: Mapping[str, np.ndarray] | None = None


class Values:
    """The distinct values of one call, with the derived arrays checks share (computed once)."""

    def __init__(self, values: pa.Array) -> None:
        self.arr = values
        self.n = len(values)
        self.valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        self.present = self.valid & mask(pc.not_equal(values, EMPTY))
        self._lower: pa.Array | None = None

    @property
    def lower(self) -> pa.Array:
        if self._lower is None:
            self._lower = pc.utf8_lower(self.arr)
        return self._lower

    def matches(self, pattern: str) -> np.ndarray:
        return mask(pc.match_substring_regex(self.arr, pattern))


def mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as a numpy mask, nulls as False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def as_strings(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Accept string-like arrays of any layout; return a plain ``pa.string()`` array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values if values.type == pa.string() else values.cast(pa.string())


def range_text(lo: float | None, hi: float | None, lo_excl: bool = False, hi_excl: bool = False) -> str:
    def num(x: float) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    if lo is not None and hi is not None and not lo_excl and not hi_excl:
        return f"{num(lo)}..{num(hi)}"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_excl else '>='} {num(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_excl else '<='} {num(hi)}")
    return " and ".join(parts)


def in_range(x: np.ndarray, lo: float | None, hi: float | None, lo_excl: bool = False,
             hi_excl: bool = False) -> np.ndarray:
    ok = np.ones(len(x), dtype=bool)
    with np.errstate(invalid="ignore"):
        if lo is not None:
            ok &= (x > lo) if lo_excl else (x >= lo)
        if hi is not None:
            ok &= (x < hi) if hi_excl else (x <= hi)
    return ok


def scatter(n: int, where: np.ndarray, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
    out = np.full(n, fill, dtype=np.float64)
    out[where] = values
    return out


def to_float(arr: pa.Array) -> np.ndarray:
    """Cast strings already known to look numeric; anything unparsable becomes NaN (never raises)."""
    try:
        return np.array(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.full(len(arr), np.nan)


# ---- checks: each takes (Values, CheckSpec) and returns its failures -------------------------------

def check_required(v: Values, c: CheckSpec) -> list[Failure]:
    blank = ~v.valid | ~mask(pc.not_equal(pc.utf8_trim_whitespace(v.arr), EMPTY))
    return [Failure(blank, c.code, c.message, c.confidence)]


def check_whitespace(v: Values, c: CheckSpec) -> list[Failure]:
    return [Failure(v.present & v.matches(_WHITESPACE), c.code, c.message, c.confidence)]


def check_regex(v: Values, c: CheckSpec) -> list[Failure]:
    bad = np.zeros(v.n, dtype=bool)
    if c.params.get("must_match") is not None:
        bad |= ~v.matches(full_match(c.params["must_match"]))
    if c.params.get("must_not_match") is not None:
        bad |= v.matches(c.params["must_not_match"])
    return [Failure(v.present & bad, c.code, c.message, c.confidence)]


def check_allowed_values(v: Values, c: CheckSpec) -> list[Failure]:
    allowed = list(c.params["values"])
    if c.params.get("case_insensitive"):
        ok = mask(pc.is_in(v.lower, value_set=pa.array([a.lower() for a in allowed], pa.string())))
    else:
        ok = mask(pc.is_in(v.arr, value_set=pa.array(allowed, pa.string())))
    return [Failure(v.present & ~ok, c.code, c.message, c.confidence)]


def check_length(v: Values, c: CheckSpec) -> list[Failure]:
    length = np.asarray(pc.fill_null(pc.utf8_length(v.arr), 0).to_numpy(zero_copy_only=False), dtype=np.float64)
    lo, hi = c.params["min"], c.params["max"]
    bad = v.present & ~in_range(length, lo, hi)
    return [Failure(bad, c.code, c.message, c.confidence,
                    {"length": length.astype(np.int64), "range": np.full(v.n, range_text(lo, hi), dtype=object)})]


def check_numeric_range(v: Values, c: CheckSpec) -> list[Failure]:
    p = c.params
    numeric = v.present & v.matches(_NUMBER)
    idx = np.flatnonzero(numeric)
    x = scatter(v.n, idx, to_float(v.arr.take(pa.array(idx, pa.int64()))))
    lo, hi, lo_x, hi_x = p["min"], p["max"], bool(p.get("min_exclusive")), bool(p.get("max_exclusive"))
    out_of_range = numeric & ~in_range(x, lo, hi, lo_x, hi_x)
    text = range_text(lo, hi, lo_x, hi_x)
    return [
        Failure(v.present & ~numeric, p.get("not_numeric_code", "NOT_NUMERIC"),
                p.get("not_numeric_message", "'{value}' is not a number"), c.confidence),
        Failure(out_of_range, c.code, c.message, c.confidence, {"range": np.full(v.n, text, dtype=object)}),
    ]


def check_year_range(v: Values, c: CheckSpec) -> list[Failure]:
    p = c.params
    year_text = pc.struct_field(pc.extract_regex(v.arr, p["pattern"]), "year")
    has = v.present & mask(pc.match_substring_regex(year_text, r"^\d{1,9}$"))
    idx = np.flatnonzero(has)
    digits = year_text.take(pa.array(idx, pa.int64()))
    years = to_float(digits)
    two = np.asarray(pc.equal(pc.utf8_length(digits), 2).to_numpy(zero_copy_only=False), dtype=bool)
    years[two] += p["two_digit_base"]
    year = scatter(v.n, idx, years)
    bad = has & ~in_range(year, p["min"], p["max"])
    text = range_text(p["min"], p["max"])
    return [Failure(bad, c.code, c.message, c.confidence,
                    {"year": np.nan_to_num(year).astype(np.int64), "range": np.full(v.n, text, dtype=object)})]


def check_gtin(v: Values, c: CheckSpec) -> list[Failure]:
    p = c.params
    digits = v.present & v.matches(r"^[0-9]+$")
    length = np.asarray(pc.fill_null(pc.binary_length(v.arr), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    well_formed = digits & np.isin(length, p["lengths"])
    actual = np.full(v.n, -1, dtype=np.int64)
    expected = np.full(v.n, -1, dtype=np.int64)
    for n_digits in p["lengths"]:
        idx = np.flatnonzero(well_formed & (length == n_digits))
        if not idx.size:
            continue
        d = digit_matrix(v.arr.take(pa.array(idx, pa.int64())), n_digits)
        weights = np.where(np.arange(n_digits - 1)[::-1] % 2 == 0, 3, 1)  # 3 next to the check digit
        total = d[:, :-1] @ weights
        expected[idx] = (10 - total % 10) % 10
        actual[idx] = d[:, -1]
    invalid_msg = p.get("invalid_message", "'{value}' is not a GTIN of " + "/".join(map(str, p["lengths"])) + " digits")
    return [
        Failure(v.present & ~well_formed, p.get("invalid_code", "BAD_GTIN"), invalid_msg, c.confidence),
        Failure(well_formed & (actual != expected), c.code, c.message, c.confidence,
                {"actual": actual, "expected": expected}),
    ]


def digit_matrix(arr: pa.Array, width: int) -> np.ndarray:
    """Digits of equal-length ASCII digit strings as an (n, width) int matrix, straight from the buffer."""
    arr = pc.cast(arr, pa.binary())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    return data.reshape(len(arr), width).astype(np.int64) - 48


def check_composition_sum(v: Values, c: CheckSpec) -> list[Failure]:
    p = c.params
    pieces = pc.split_pattern(v.arr, "%")  # "78% Viscose - 22% Nylon" -> ["78", " Viscose - 22", " Nylon"]
    counts = np.asarray(pc.fill_null(pc.list_value_length(pieces), 0).to_numpy(zero_copy_only=False), np.int64)
    flat = pc.list_flatten(pieces)
    parents = np.asarray(pc.list_parent_indices(pieces).to_numpy(zero_copy_only=False), dtype=np.int64)
    is_last = np.zeros(len(flat), dtype=bool)
    ends = np.cumsum(counts[counts > 0]) - 1
    is_last[ends] = True
    before_pct = np.flatnonzero(~is_last)  # every piece but the last is followed by a "%"
    number = pc.struct_field(pc.extract_regex(flat.take(pa.array(before_pct, pa.int64())), _PERCENT_TAIL), "n")
    pct = to_float(pc.replace_substring(pc.fill_null(number, "nan"), ",", "."))
    owner = parents[before_pct]
    total = np.bincount(owner, weights=np.nan_to_num(pct, nan=0.0), minlength=v.n)[: v.n]
    malformed = np.bincount(owner, weights=np.isnan(pct), minlength=v.n)[: v.n] > 0
    has_pct = counts > 1
    bad = v.present & has_pct & (malformed | (np.abs(total - p["total"]) > p["tolerance"]))
    return [Failure(bad, c.code, c.message, c.confidence, {"sum": np.round(total, 2)})]


def check_null_tokens(v: Values, c: CheckSpec) -> list[Failure]:
    """A spelling of "no value" that is not the table's own (``N/A`` where missing cells are left empty)."""
    canonical = c.params.get("canonical", "")
    trimmed = pc.utf8_trim_whitespace(v.arr)
    token = mask(pc.is_in(pc.utf8_lower(trimmed), value_set=pa.array(list(c.params["tokens"]), pa.string())))
    bad = v.valid & token & ~mask(pc.equal(trimmed, canonical))
    if canonical:
        bad |= v.valid & mask(pc.equal(trimmed, EMPTY))
    return [Failure(bad, c.code, c.message, c.confidence)]


CHECKS: dict[str, Callable[[Values, CheckSpec], list[Failure]]] = {
    "required": check_required,
    "whitespace": check_whitespace,
    "regex": check_regex,
    "allowed_values": check_allowed_values,
    "length": check_length,
    "numeric_range": check_numeric_range,
    "year_range": check_year_range,
    "gtin_check_digit": check_gtin,
    "composition_sum": check_composition_sum,
    "null_tokens": check_null_tokens,
}


_CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {9: "\\t", 10: "\\n", 13: "\\r", 127: "\\x7f"}


def shorten(value: str | None) -> str:
    """A value as shown inside a message: control characters escaped, at most 80 characters."""
    if value is None:
        return "null"
    value = value[: _MAX_MESSAGE_VALUE * 4].translate(_CONTROL)
    return value if len(value) <= _MAX_MESSAGE_VALUE else value[: _MAX_MESSAGE_VALUE - 1] + "…"


def format_message(template: str, fields: Mapping[str, Any]) -> str:
    """Format a message template; never raises (falls back to the raw template)."""
    try:
        return template.format_map(fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        return template


def plain(x: Any) -> Any:
    """numpy scalar -> Python; integral floats print without ".0"."""
    x = x.item() if isinstance(x, np.generic) else x
    return int(x) if isinstance(x, float) and x.is_integer() else x


def messages(values: pa.Array, idx: np.ndarray, f: Failure, params: Mapping[str, Any]) -> list[str]:
    """One formatted message per hit (hits are few; values are many)."""
    texts = values.take(pa.array(idx, pa.int64())).to_pylist()
    out = []
    for i, text in zip(idx.tolist(), texts):
        fields = dict(params)
        if f.extras:
            fields.update({k: plain(a[i]) for k, a in f.extras.items()})
        fields["value"] = shorten(text)
        out.append(format_message(f.message, fields))
    return out


class ValidationDetector:
    """Runs each field type's ``validation`` checks; a value gets at most one hit (first failed check)."""

    method = "validation"

    def __init__(self, specs: Mapping[str, FieldSpec]) -> None:
        self._specs = dict(specs)

    @classmethod
    def from_repository(cls, root: Path) -> ValidationDetector:
        return cls(load_repository(root))

    def fields(self) -> Mapping[str, MethodInfo]:
        """Every field type of the repository; ``checks`` is 0 where it has no ``validation`` section."""
        return {name: MethodInfo(s.version, len(s.validation)) for name, s in self._specs.items()}

    def describe(self, field: str) -> str:
        return self._spec(field).description

    def _spec(self, field: str) -> FieldSpec:
        try:
            return self._specs[field]
        except KeyError:
            raise InvalidInput(f"unknown field type {field!r}; known: {sorted(self._specs)}") from None

    def context_free(self, field: str) -> bool:
        return True  # every check looks at one value only

    def detect(self, field: str, values: pa.StringArray) -> pa.RecordBatch:
        spec = self._spec(field)
        values = as_strings(values)
        if not len(values) or not spec.validation:
            return empty_hits()
        v = Values(values)
        claimed = np.zeros(v.n, dtype=bool)
        parts = []
        for check in spec.validation:
            failures = CHECKS[check.kind](v, check)
            newly = np.zeros(v.n, dtype=bool)
            for f in failures:
                hit = f.mask & ~claimed & ~newly
                idx = np.flatnonzero(hit)
                if idx.size:
                    parts.append(make_hits(idx, f.code, messages(values, idx, f, check.params), f.confidence))
                    newly |= hit
            claimed |= newly
        return concat_hits(parts)


register("validation", ValidationDetector.from_repository)
