"""What "normal" looks like for one field type, in embedding space: nearest reference values and local density.

Why not a centroid: the values of a field type form many small clusters (compositions of one fibre family, care
texts in two languages, …). Distance to the mean of all of them says little — an earlier system's centroid scored a
typo 0.969 and normal values 0.911–0.987. Instead, like LOF (local outlier factor):

    d_k(q)   = mean cosine distance from q to its k nearest reference values
    r_k(ref) = the same for every reference value, against the other references (leave-one-out, precomputed)
    score(q) = d_k(q) / max(mean of r_k over q's k neighbours, floor)

A value as close to its neighbours as they are to theirs scores about 1; a value far out of the region it is
nearest to scores well above 1. The ratio adapts to dense regions (sizes, colours) and sparse ones (long care
texts) alike; ``floor`` stops near-duplicate regions from turning tiny distances into huge ratios. The threshold
is chosen on held-out clean values and injected errors (``calibrate.py``). Pure numpy; embeddings are L2-normalised
float32, so similarity is a matrix product (chunked to bound memory).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK = 2048


@dataclass(frozen=True)
class Neighbours:
    score: np.ndarray  # float64 [m]
    index: np.ndarray  # int64 [m, k]: positions in the reference
    similarity: np.ndarray  # float32 [m, k]: cosine similarity, most similar first


def top_k(queries: np.ndarray, refs: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(similarities [m, k] descending, indices [m, k]) of the k most similar references per query."""
    k = min(k, len(refs) - (1 if exclude_self else 0))
    sims_out = np.empty((len(queries), k), dtype=np.float32)
    idx_out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), CHUNK):
        sims = queries[start: start + CHUNK] @ refs.T
        if exclude_self:
            rows = np.arange(len(sims))
            sims[rows, rows + start] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1)
        idx_out[start: start + CHUNK] = np.take_along_axis(part, order, axis=1)
        sims_out[start: start + CHUNK] = np.take_along_axis(part_sims, order, axis=1)
    return sims_out, idx_out


class KnnIndex:
    """Reference embeddings of one field type with their local kNN radii."""

    def __init__(self, values: np.ndarray, embeddings: np.ndarray, k: int = 5, radius: np.ndarray | None = None,
                 floor: float | None = None) -> None:
        if len(values) < 2:
            raise ValueError("a kNN reference needs at least 2 values")
        self.values = np.asarray(values)
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.k = max(1, min(k, len(values) - 1))
        if radius is None:
            sims, _ = top_k(self.embeddings, self.embeddings, self.k, exclude_self=True)
            radius = np.clip(1.0 - sims, 0.0, 2.0).mean(axis=1)
        self.radius = np.asarray(radius, dtype=np.float32)
        # floor: a twentieth of the typical radius (and at least 0.01): near-duplicates stay near-duplicates
        self.floor = float(floor if floor is not None else max(0.01, 0.05 * float(np.median(self.radius))))

    def query(self, embeddings: np.ndarray) -> Neighbours:
        sims, idx = top_k(np.asarray(embeddings, dtype=np.float32), self.embeddings, self.k)
        dist = np.clip(1.0 - sims.astype(np.float64), 0.0, 2.0).mean(axis=1)
        local = np.maximum(self.radius[idx].mean(axis=1).astype(np.float64), self.floor)
        return Neighbours(dist / local, idx, sims)

    def save(self, path: Path) -> None:
        np.savez(path, values=self.values.astype(str), embeddings=self.embeddings, radius=self.radius,
                 k=np.int64(self.k), floor=np.float64(self.floor))

    @classmethod
    def load(cls, path: Path) -> KnnIndex:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["values"], data["embeddings"], int(data["k"]), data["radius"], float(data["floor"]))


def cross_fit_scores(values: np.ndarray, embeddings: np.ndarray, k: int, folds: int, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Held-out scores of every reference value, each scored by an index built without its fold.

    Returns (scores [n], fold of each value [n]). Why cross-fitting: small field types (55 colours) have too few
    values to spare a held-out split, and every value then gets an honest "unseen clean value" score.
    """
    n = len(values)
    fold = np.random.default_rng(seed).permutation(n) % max(2, min(folds, n))
    scores = np.empty(n, dtype=np.float64)
    for f in np.unique(fold):
        train = fold != f
        if train.sum() < 2:
            scores[~train] = 1.0
            continue
        index = KnnIndex(values[train], embeddings[train], k)
        scores[~train] = index.query(embeddings[~train]).score
    return scores, fold
