"""Method "pattern": values and words that look wrong next to a field's vocabulary and formats (near misses, shapes)."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz.distance import OSA
from rapidfuzz.process import cdist, cpdist

from .detector import MethodInfo, register
from .errors import InvalidInput
from .hits import EMPTY, concat_hits, empty_hits, make_hits
from .repository import (PATTERN_CODES, FieldSpec, FormatsSpec, KnownValuesSpec, PatternSpec, RaritySpec,
                         VocabularySpec, load_repository)
from .validation import as_strings, format_message, mask, shorten

_DIGITS = re.compile(r"\d")
_EPS = 1e-6  # rapidfuzz turns a similarity cutoff into a distance one; keep exact ties (0.8 == 0.8) in
_CHUNK = 4096  # query rows per cdist call (bounds the score matrix)
_NONE, _UNKNOWN, _CASE, _NEAR = 0, 1, 2, 3  # token status, also the preference when picking one per value


def _ascii_shape_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint8)
    table[ord("A"): ord("Z") + 1] = ord("A")
    table[ord("a"): ord("z") + 1] = ord("a")
    table[ord("0"): ord("9") + 1] = ord("9")
    return table


_ASCII_SHAPE = _ascii_shape_table()


def signature(values: pa.Array) -> pa.Array:
    """Shape of each value: upper-case letter -> A, other letter -> a, digit -> 9, everything else kept."""
    if pa.types.is_string(values.type) and pc.all(pc.string_is_ascii(values)).as_py() is not False:
        # ASCII fast path: one table lookup over the data buffer; the offsets stay valid
        validity, offsets, data = values.buffers()
        shaped = pa.py_buffer(_ASCII_SHAPE[np.frombuffer(data, dtype=np.uint8)]) if data is not None else None
        return pa.StringArray.from_buffers(len(values), offsets, shaped, validity, values.null_count,
                                           values.offset)
    sig = pc.replace_substring_regex(values, r"\p{Nd}", "9")
    sig = pc.replace_substring_regex(sig, r"\p{Lu}", "A")
    return pc.replace_substring_regex(sig, r"[\p{Ll}\p{Lt}\p{Lm}\p{Lo}]", "a")


def best_match(queries: pa.Array, choices: Sequence[str], cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Index and normalized OSA similarity of each query's closest choice (score 0 when below ``cutoff``)."""
    n = len(queries)
    best = np.zeros(n, dtype=np.int64)
    score = np.zeros(n, dtype=np.float64)
    if not n or not choices:
        return best, score
    # similarity <= shorter/longer length, so queries much longer than every choice can never reach cutoff
    longest = max(len(c) for c in choices)
    qlen = np.asarray(pc.fill_null(pc.utf8_length(queries), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    feasible = np.flatnonzero(qlen <= longest / max(cutoff, 1e-3))
    for start in range(0, len(feasible), _CHUNK):
        rows = feasible[start: start + _CHUNK]
        q = queries.take(pa.array(rows, pa.int64())).to_pylist()
        m = cdist(q, choices, scorer=OSA.normalized_similarity, score_cutoff=max(cutoff - _EPS, 0.0),
                  dtype=np.float32)
        best[rows] = m.argmax(axis=1)
        score[rows] = m.max(axis=1)
    return best, score


def _take(arr: pa.Array, idx: np.ndarray) -> pa.Array:
    return arr.take(pa.array(idx, pa.int64()))


@dataclass
class _Lexicon:
    """A word list prepared for exact, case-folded and fuzzy lookup."""

    words: pa.Array  # original spellings, distinct
    lower_keys: pa.Array  # distinct lower-case spellings
    lower_first: np.ndarray  # lower_keys[i] -> index in words of its first spelling
    lower_list: list[str]

    @classmethod
    def of(cls, words: Sequence[str]) -> _Lexicon:
        arr = pa.array(list(dict.fromkeys(words)), pa.string())
        lower = pc.utf8_lower(arr)
        keys = pc.unique(lower)
        first = np.asarray(pc.index_in(keys, value_set=lower).to_numpy(zero_copy_only=False), dtype=np.int64)
        return cls(arr, keys, first, keys.to_pylist())

    def case_match(self, lower: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Which lower-cased queries exist in any case, and the index (in words) of that spelling."""
        pos = pc.index_in(lower, value_set=self.lower_keys)
        found = mask(pc.is_valid(pos))
        where = np.asarray(pc.fill_null(pos, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        return found, self.lower_first[where]

    def near(self, lower: pa.Array, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """Which lower-cased queries are near misses, and the index (in words) of the suggestion."""
        best, score = best_match(lower, self.lower_list, cutoff)
        return (score >= cutoff - _EPS) & (score > 0), self.lower_first[best]


@dataclass
class _Field:
    spec: PatternSpec
    known: _Lexicon | None
    vocab: _Lexicon | None

    def conf(self, code: str) -> float:
        return self.spec.confidence.get(code, PATTERN_CODES[code])


class _Hits:
    """Collects hits for one call and which values already have one."""

    def __init__(self, values: pa.Array, field: _Field) -> None:
        self.values, self.field = values, field
        self.claimed = np.zeros(len(values), dtype=bool)
        self.parts: list[pa.RecordBatch] = []

    def add(self, idx: np.ndarray, code: str, template: str, **columns: Sequence[str] | np.ndarray) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        if not idx.size:
            return
        texts = _take(self.values, idx).to_pylist()
        cols = {k: (list(v) if not isinstance(v, list) else v) for k, v in columns.items()}
        msgs = [format_message(template, {"value": shorten(t), **{k: c[j] for k, c in cols.items()}})
                for j, t in enumerate(texts)]
        self.parts.append(make_hits(idx, code, msgs, self.field.conf(code)))
        self.claimed[idx] = True


class PatternDetector:
    """Checks values against known values, token vocabularies and format signatures (one hit per value)."""

    method = "pattern"

    def __init__(self, specs: Mapping[str, FieldSpec]) -> None:
        self._specs = dict(specs)
        self._fields: dict[str, _Field] = {}
        for name, s in self._specs.items():
            if s.pattern is None:
                continue
            known = _Lexicon.of(s.pattern.known_values.values) if s.pattern.known_values else None
            vocab = _vocabulary(s.pattern.vocabulary) if s.pattern.vocabulary else None
            self._fields[name] = _Field(s.pattern, known, vocab)

    @classmethod
    def from_repository(cls, root: Path) -> PatternDetector:
        return cls(load_repository(root))

    def fields(self) -> Mapping[str, MethodInfo]:
        """Every field type of the repository; ``checks`` is 0 where it has no ``pattern`` section."""
        return {name: MethodInfo(s.version, self._fields[name].spec.parts if name in self._fields else 0)
                for name, s in self._specs.items()}

    def describe(self, field: str) -> str:
        if field not in self._specs:
            raise InvalidInput(f"unknown field type {field!r}; known: {sorted(self._specs)}")
        return self._specs[field].description

    def context_free(self, field: str) -> bool:
        """Rarity compares a value with the others of the call; everything else is per value."""
        state = self._fields.get(field)
        return state is None or state.spec.rarity is None

    def detect(self, field: str, values: pa.StringArray) -> pa.RecordBatch:
        """Hits for the distinct ``values``; rarity (if enabled) is measured over these distinct values."""
        if field not in self._specs:
            raise InvalidInput(f"unknown field type {field!r}; known: {sorted(self._specs)}")
        f = self._fields.get(field)
        values = as_strings(values)
        if f is None or not len(values):
            return empty_hits()
        norm = pc.replace_substring_regex(pc.utf8_trim_whitespace(values), r"[\s\p{Z}]+", " ")
        present = mask(pc.is_valid(norm)) & mask(pc.not_equal(norm, EMPTY))
        hits = _Hits(values, f)
        spec = f.spec
        if spec.known_values and f.known:
            _check_known(hits, spec.known_values, f.known, norm, present)
        if spec.vocabulary and f.vocab:
            _check_vocabulary(hits, spec.vocabulary, f.vocab, norm, present)
        sig = signature(norm) if spec.formats or spec.rarity else None
        if spec.formats and sig is not None:
            _check_formats(hits, spec.formats, norm, sig, present)
        if spec.rarity and sig is not None:
            _check_rarity(hits, spec.rarity, sig, present)
        return concat_hits(hits.parts)


def _vocabulary(spec: VocabularySpec) -> _Lexicon:
    """Vocabulary entries are split into tokens exactly like values are."""
    tokens = pc.list_flatten(pc.split_pattern_regex(pa.array(spec.words, pa.string()), spec.split_pattern))
    tokens = tokens.filter(pc.greater(pc.utf8_length(tokens), 0))
    return _Lexicon.of(tokens.to_pylist())


def _check_known(hits: _Hits, spec: KnownValuesSpec, lex: _Lexicon, norm: pa.Array, present: np.ndarray) -> None:
    exact = mask(pc.is_in(norm, value_set=lex.words))
    idx = np.flatnonzero(present & ~exact & ~hits.claimed)
    if not idx.size:
        return
    lower = pc.utf8_lower(_take(norm, idx))
    case, spelling = lex.case_match(lower)
    words = lex.words
    hits.add(idx[case], "CASE_MISMATCH", "'{value}' differs only in case from the known {term} '{suggestion}'",
             term=[spec.term] * int(case.sum()), suggestion=_take(words, spelling[case]).to_pylist())
    rest = np.flatnonzero(~case)
    near, suggestion = lex.near(_take(lower, rest), spec.min_similarity)
    if spec.max_distance is not None and near.any():
        ni = np.flatnonzero(near)
        queries = _take(lower, rest[ni]).to_pylist()
        targets = pc.utf8_lower(_take(lex.words, suggestion[ni])).to_pylist()
        far = cpdist(queries, targets, scorer=OSA.distance, dtype=np.int32) > spec.max_distance
        # values that differ only in their digits are different numbers, not misspellings
        digits_only = np.array([_DIGITS.sub("0", q) == _DIGITS.sub("0", t) for q, t in zip(queries, targets)],
                               dtype=bool)
        near[ni[far | digits_only]] = False
    hits.add(idx[rest[near]], "NEAR_MISS", "'{value}' is not a known {term}; did you mean '{suggestion}'?",
             term=[spec.term] * int(near.sum()), suggestion=_take(words, suggestion[near]).to_pylist())
    if spec.closed:
        far = idx[rest[~near]]
        hits.add(far, "UNKNOWN_VALUE", "'{value}' is not a known {term}", term=[spec.term] * len(far))


def _check_vocabulary(hits: _Hits, spec: VocabularySpec, lex: _Lexicon, norm: pa.Array,
                      present: np.ndarray) -> None:
    idx = np.flatnonzero(present & ~hits.claimed)
    if not idx.size:
        return
    lists = pc.split_pattern_regex(_take(norm, idx), spec.split_pattern)
    tokens = pc.list_flatten(lists)
    owner = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = mask(pc.greater_equal(pc.utf8_length(tokens), spec.min_token_length))
    if not keep.any():
        return
    tokens, owner = tokens.filter(pa.array(keep)), owner[keep]
    # classify each distinct token once
    key = pc.utf8_lower(tokens) if spec.case_insensitive else tokens
    uniq = pc.unique(key)
    of_token = np.asarray(pc.index_in(key, value_set=uniq).to_numpy(zero_copy_only=False), dtype=np.int64)
    status = np.zeros(len(uniq), dtype=np.int64)
    suggestion = np.zeros(len(uniq), dtype=np.int64)
    known = mask(pc.is_in(uniq, value_set=lex.lower_keys if spec.case_insensitive else lex.words))
    lower = pc.utf8_lower(uniq)
    case, spelling = lex.case_match(lower)
    if not spec.case_insensitive:
        is_case = ~known & case
        status[is_case], suggestion[is_case] = _CASE, spelling[is_case]
        known |= case
    todo = np.flatnonzero(~known)
    near, near_sugg = lex.near(_take(lower, todo), spec.min_similarity)
    status[todo] = np.where(near, _NEAR, _UNKNOWN)
    suggestion[todo] = near_sugg
    # per value: the most specific flagged token, first in the value on ties
    tok_status = status[of_token]
    flagged = np.flatnonzero(tok_status > _NONE)
    if not flagged.size:
        return
    order = flagged[np.lexsort((flagged, -tok_status[flagged], owner[flagged]))]
    first = np.r_[True, owner[order][1:] != owner[order][:-1]]
    chosen = order[first]
    texts = _take(tokens, chosen).to_pylist()
    sugg = _take(lex.words, suggestion[of_token[chosen]]).to_pylist()
    kinds = tok_status[chosen]
    templates = {
        _NEAR: ("NEAR_MISS", "'{token}' is not a known {term}; did you mean '{suggestion}'?"),
        _CASE: ("CASE_MISMATCH", "'{token}' should be written '{suggestion}'"),
        _UNKNOWN: ("UNKNOWN_TOKEN", "'{token}' is not a known {term}"),
    }
    for kind, (code, template) in templates.items():
        sel = np.flatnonzero(kinds == kind)
        hits.add(idx[owner[chosen[sel]]], code, template, token=[shorten(texts[i]) for i in sel],
                 suggestion=[sugg[i] for i in sel], term=[spec.term] * len(sel))


def _check_formats(hits: _Hits, spec: FormatsSpec, norm: pa.Array, sig: pa.Array, present: np.ndarray) -> None:
    ok = mask(pc.is_in(sig, value_set=pa.array(list(spec.signatures), pa.string())))
    for regex in spec.regexes:
        ok |= mask(pc.match_substring_regex(norm, regex))
    idx = np.flatnonzero(present & ~ok & ~hits.claimed)
    expected = ", ".join(f"'{s}'" for s in spec.signatures) or "the configured patterns"
    if spec.regexes and spec.signatures:
        expected += " or the configured patterns"
    hits.add(idx, "BAD_FORMAT", "'{value}' has the format '{signature}', expected {expected}",
             signature=_take(sig, idx).to_pylist(), expected=[expected] * len(idx))


def _check_rarity(hits: _Hits, spec: RaritySpec, sig: pa.Array, present: np.ndarray) -> None:
    total = int(present.sum())
    if total < spec.min_values:
        return
    codes = pc.dictionary_encode(sig).indices
    group = np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    counts = np.bincount(group[present], minlength=int(group.max()) + 1)
    safe = np.maximum(group, 0)
    rare = present & (counts[safe] < spec.max_share * total)
    idx = np.flatnonzero(rare & ~hits.claimed)
    hits.add(idx, "RARE_FORMAT", "'{value}' has the rare format '{signature}' ({count} of {total} distinct values)",
             signature=[shorten(s) for s in _take(sig, idx).to_pylist()],
             count=counts[safe[idx]].tolist(), total=[total] * len(idx))


register("pattern", PatternDetector.from_repository)
