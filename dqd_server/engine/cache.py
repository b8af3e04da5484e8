"""Verdicts remembered across batches and streams, so a value seen before is not checked again.

Keyed by (method, field type, version): a new rules or model version never returns old verdicts.
Vectorized: one ``index_in`` of a batch's distinct values against the remembered ones, no Python
loop per value. Only detectors whose verdict on a value does not depend on the other values of
the call (``Detector.context_free``) are cached.

Bounded like an LRU, at batch granularity (two generations, as in a generational/2Q cache): each
key remembers at most ``max_values`` values, half in the current generation and half in the previous
one. A value found in the previous generation is promoted to the current one; when the current one
is full it becomes the previous one and the old previous one is dropped. So values that keep coming
stay, and values not seen for two generations are checked afresh — without a per-value LRU list.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .hits import HITS_SCHEMA, concat_hits, empty_hits

Key = tuple[str, str, str]  # (method, field type, version)


@dataclass(frozen=True)
class _Generation:
    values: pa.Array  # remembered distinct values (at most one null)
    hits: pa.RecordBatch  # index -> position in ``values``
    born: float  # time.monotonic() when this generation started


@dataclass(frozen=True)
class _State:
    current: _Generation
    previous: _Generation | None = None


class VerdictCache:
    """Thread-safe and bounded: at most ``max_values`` values per key (see the module doc); a generation
    older than ``ttl`` seconds is dropped."""

    def __init__(self, max_values: int = 250_000, ttl: float = 3600.0) -> None:
        self.max_values = max_values
        self.ttl = ttl
        self._entries: dict[Key, _State] = {}
        self._lock = threading.Lock()
        self.hits = 0  # values answered from the cache
        self.misses = 0  # values the detector had to check

    def detect(self, key: Key, values: pa.Array,
               run: Callable[[pa.Array], pa.RecordBatch]) -> pa.RecordBatch:
        """Hits for ``values`` (distinct), running ``run`` only on values not remembered."""
        state = self._live(self._entries.get(key))
        if state is None:
            fresh = run(values)
            self._store(key, None, values, fresh)
            self.misses += len(values)
            return fresh
        parts, rest = _lookup(state.current, values, np.arange(len(values)))
        add_values: list[pa.Array] = []
        add_hits: list[pa.RecordBatch] = []
        if len(rest) and state.previous is not None:  # promote what the previous generation knows
            found, rest_after = _lookup(state.previous, values, rest)
            promoted = np.setdiff1d(rest, rest_after, assume_unique=True)
            if len(promoted):
                parts += found
                add_values.append(values.take(pa.array(promoted, pa.int64())))
                add_hits.append(_reindex(found[0], np.searchsorted(promoted, found[0].column("index").to_numpy()))
                                if found else empty_hits())
            rest = rest_after
        if len(rest):
            new_values = values.take(pa.array(rest, pa.int64()))
            fresh = run(new_values)
            parts.append(_reindex(fresh, rest[fresh.column("index").to_numpy()]))
            add_values.append(new_values)
            add_hits.append(fresh)
        self.hits += len(values) - len(rest)
        self.misses += len(rest)
        if add_values:
            self._store(key, state, *_concat(add_values, add_hits))
        return concat_hits(parts)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _live(self, state: _State | None) -> _State | None:
        now = time.monotonic()
        if state is None or now - state.current.born > self.ttl:
            return None
        if state.previous is not None and now - state.previous.born > self.ttl:
            return _State(state.current)
        return state

    def _store(self, key: Key, old: _State | None, new_values: pa.Array, new_hits: pa.RecordBatch) -> None:
        capacity = max(1, self.max_values // 2)  # per generation
        with self._lock:
            current = self._entries.get(key)
            if old is not None and current is not old:  # another thread stored first; as good as ours
                return
            now = time.monotonic()
            if old is None:
                self._entries[key] = _State(_Generation(new_values, new_hits, now))
            elif len(old.current.values) + len(new_values) > capacity:  # current becomes previous
                self._entries[key] = _State(_Generation(new_values, new_hits, now), old.current)
            else:
                values, hits = _concat([old.current.values, new_values], [old.current.hits, new_hits])
                self._entries[key] = _State(_Generation(values, hits, old.current.born), old.previous)


def _lookup(generation: _Generation, values: pa.Array, among: np.ndarray) -> tuple[list[pa.RecordBatch], np.ndarray]:
    """Hits (indexed into ``values``) of the values at positions ``among`` that ``generation`` remembers, and the
    positions it does not know (ascending)."""
    probe = values if len(among) == len(values) else values.take(pa.array(among, pa.int64()))
    pos = pc.index_in(probe, value_set=generation.values, skip_nulls=False)
    known = np.asarray(pc.is_valid(pos).to_numpy(zero_copy_only=False), dtype=bool)
    unknown = among[~known]
    if not generation.hits.num_rows or not known.any():
        return [], unknown
    to_value = np.full(len(generation.values), -1, dtype=np.int64)
    known_idx = np.flatnonzero(known)
    to_value[pos.to_numpy(zero_copy_only=False)[known_idx].astype(np.int64)] = among[known_idx]
    mapped = to_value[generation.hits.column("index").to_numpy()]
    keep = mapped >= 0
    return [_reindex(generation.hits.filter(pa.array(keep)), mapped[keep])], unknown


def _concat(values: list[pa.Array], hits: list[pa.RecordBatch]) -> tuple[pa.Array, pa.RecordBatch]:
    """One generation's values and hits from parts (each part's hit indices are local to its values)."""
    offsets = np.cumsum([0] + [len(v) for v in values[:-1]])
    shifted = [_reindex(h, h.column("index").to_numpy() + off) for h, off in zip(hits, offsets) if h.num_rows]
    joined = pa.concat_arrays([v.cast(values[0].type) for v in values]) if len(values) > 1 else values[0]
    return joined, concat_hits(shifted) if shifted else empty_hits()


def _reindex(hits: pa.RecordBatch, index: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(index, pa.int64()), *hits.columns[1:]], schema=HITS_SCHEMA)
