"""Thresholds from held-out clean values and injected errors, and the score -> confidence mapping.

The threshold bounds the false-positive rate: it is the (1 - max_fpr) quantile of the held-out clean scores (the
"higher" value, so at most max_fpr of them reach it). Why FPR and not F1: in real catalogs errors are rare (~1-2 %),
so a threshold that is F1-optimal on a balanced calibration mix would flood users with false alarms. The injected
errors measure what that threshold catches (recall) and the precision it would have at a given error prevalence.

Confidence (0..1 that the cell is wrong) for a score s at or above threshold t::

    confidence = 1 - 0.5 * exp(-(s - t) / scale)      (0.5 at the threshold, capped at 0.99)

with ``scale`` the distance from t to the median score of the injected errors, so a typical error gets ~0.82.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Calibration:
    threshold: float
    scale: float
    clean: int  # held-out clean values scored
    errors: int  # injected errors scored
    fpr: float  # share of held-out clean values at or above the threshold
    recall: float  # share of injected errors at or above the threshold
    precision: float  # on the calibration mix itself
    precision_at_2pct: float  # estimated for a column where 2 % of the values are wrong
    recall_by_kind: dict[str, float] = field(default_factory=dict)
    auc: float = 0.0  # probability that an injected error outscores a clean value

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def calibrate(clean: np.ndarray, errors: np.ndarray, kinds: Sequence[str] = (), max_fpr: float = 0.01
              ) -> Calibration:
    """Pick the threshold on ``clean`` (held-out clean scores) and measure it on ``errors`` (injected)."""
    clean = np.asarray(clean, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if not len(clean):
        raise ValueError("calibration needs held-out clean values")
    threshold = float(np.quantile(clean, 1.0 - max_fpr, method="higher"))
    threshold = float(np.nextafter(threshold, np.inf))  # strictly above the clean value it came from
    fpr = float((clean >= threshold).mean())
    caught = errors >= threshold
    recall = float(caught.mean()) if len(errors) else 0.0
    tp, fp = int(caught.sum()), int((clean >= threshold).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    prev = 0.02
    p2 = recall * prev / (recall * prev + fpr * (1 - prev)) if recall * prev + fpr * (1 - prev) > 0 else 1.0
    median_err = float(np.median(errors)) if len(errors) else threshold * 2
    scale = max(median_err - threshold, 0.1 * abs(threshold), 1e-3)
    by_kind = {}
    if len(kinds):
        k = np.asarray(kinds)
        by_kind = {str(name): float(caught[k == name].mean()) for name in sorted(set(kinds))}
    return Calibration(threshold, scale, len(clean), len(errors), fpr, recall, precision, p2, by_kind,
                       auc(clean, errors))


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = x.argsort(kind="mergesort")
    out = np.empty(len(x))
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    out[order] = np.repeat(first + (counts - 1) / 2.0 + 1, counts)
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no scipy needed)."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def auc(clean: np.ndarray, errors: np.ndarray) -> float:
    """Rank AUC (Mann-Whitney): P(error score > clean score), ties count half."""
    if not len(clean) or not len(errors):
        return 0.0
    r_err = ranks(np.concatenate([clean, errors]))[len(clean):].sum()
    n1, n2 = len(errors), len(clean)
    return float((r_err - n1 * (n1 + 1) / 2) / (n1 * n2))


def confidence(scores: np.ndarray, threshold: float, scale: float) -> np.ndarray:
    """0.5 at the threshold, rising towards 0.99 (see module doc); values below the threshold get 0."""
    s = np.asarray(scores, dtype=np.float64)
    conf = 1.0 - 0.5 * np.exp(-(s - threshold) / scale)
    return np.where(s >= threshold, np.clip(conf, 0.5, 0.99), 0.0)
