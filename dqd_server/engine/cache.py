"""Verdicts remembered across batches and streams, so a value seen before is not checked again.

Keyed by (method, field type, rules version): a new rules version never returns old verdicts.
Vectorized: one ``index_in`` of a batch's distinct values against the remembered ones, no Python
loop per value. Only detectors whose verdict on a value does not depend on the other values of
the call (``Detector.context_free``) are cached.
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
class _Entry:
    values: pa.Array  # remembered distinct values (at most one null)
    hits: pa.RecordBatch  # index -> position in ``values``
    born: float  # time.monotonic() when this key started afresh


class VerdictCache:
    """Thread-safe and bounded: a key whose values would exceed ``max_values``, or that is older than
    ``ttl`` seconds, starts afresh (cheap, no LRU walk)."""

    def __init__(self, max_values: int = 250_000, ttl: float = 3600.0) -> None:
        self.max_values = max_values
        self.ttl = ttl
        self._entries: dict[Key, _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0  # values answered from the cache
        self.misses = 0  # values the detector had to check

    def detect(self, key: Key, values: pa.Array,
               run: Callable[[pa.Array], pa.RecordBatch]) -> pa.RecordBatch:
        """Hits for ``values`` (distinct), running ``run`` only on values not seen before."""
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry.born > self.ttl:
            entry = None
        if entry is None:
            fresh = run(values)
            self._store(key, None, values, fresh)
            self.misses += len(values)
            return fresh
        pos = pc.index_in(values, value_set=entry.values, skip_nulls=False)
        known = np.asarray(pc.is_valid(pos).to_numpy(zero_copy_only=False), dtype=bool)
        new_idx = np.flatnonzero(~known)
        parts = [self._cached(entry, pos, known)]
        if len(new_idx):
            new_values = values.take(pa.array(new_idx, pa.int64()))
            fresh = run(new_values)
            self._store(key, entry, new_values, fresh)
            parts.append(_reindex(fresh, new_idx[fresh.column("index").to_numpy()]))
        self.hits += int(known.sum())
        self.misses += len(new_idx)
        return concat_hits(parts)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @staticmethod
    def _cached(entry: _Entry, pos: pa.Array, known: np.ndarray) -> pa.RecordBatch:
        if not entry.hits.num_rows or not known.any():
            return empty_hits()
        to_value = np.full(len(entry.values), -1, dtype=np.int64)
        known_idx = np.flatnonzero(known)
        to_value[pos.to_numpy(zero_copy_only=False)[known_idx].astype(np.int64)] = known_idx
        mapped = to_value[entry.hits.column("index").to_numpy()]
        keep = mapped >= 0
        return _reindex(entry.hits.filter(pa.array(keep)), mapped[keep])

    def _store(self, key: Key, old: _Entry | None, new_values: pa.Array, new_hits: pa.RecordBatch) -> None:
        with self._lock:
            current = self._entries.get(key)
            if old is not None and current is not old:  # another thread stored first; as good as ours
                return
            if old is None or len(old.values) + len(new_values) > self.max_values:
                self._entries[key] = _Entry(new_values, new_hits, time.monotonic())
                return
            offset = len(old.values)
            shifted = _reindex(new_hits, new_hits.column("index").to_numpy() + offset)
            self._entries[key] = _Entry(pa.concat_arrays([old.values, new_values.cast(old.values.type)]),
                                        concat_hits([old.hits, shifted]), old.born)


def _reindex(hits: pa.RecordBatch, index: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(index, pa.int64()), *hits.columns[1:]], schema=HITS_SCHEMA)
