"""kNN/LOF scoring and calibration (numpy only): why not a centroid, thresholds, confidences."""
from __future__ import annotations

import numpy as np
import pytest

from dqd_server.models.calibrate import auc, calibrate, confidence
from dqd_server.models.knn import KnnIndex, cross_fit_scores, top_k


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def two_clusters(n: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.array([1.0, 0.0, 0.0, 0.0])
    b = np.array([0.0, 1.0, 0.0, 0.0])
    pts = np.r_[a + 0.05 * rng.standard_normal((n, 4)), b + 0.05 * rng.standard_normal((n, 4))]
    return unit(pts)


def test_top_k_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    refs, queries = unit(rng.standard_normal((300, 8))), unit(rng.standard_normal((20, 8)))
    sims, idx = top_k(queries, refs, 4)
    brute = np.argsort(-(queries @ refs.T), axis=1)[:, :4]
    assert (idx == brute).all()
    assert np.allclose(sims, np.take_along_axis(queries @ refs.T, brute, axis=1))
    _, self_idx = top_k(refs, refs, 1, exclude_self=True)
    assert (self_idx[:, 0] != np.arange(300)).all()


def test_a_value_between_two_clusters_is_an_outlier_although_it_is_near_the_centroid() -> None:
    """The failure of the earlier centroid scorer: the midpoint of two kinds of normal is closest to the centroid."""
    refs = two_clusters()
    index = KnnIndex(np.array([f"v{i}" for i in range(len(refs))]), refs, k=5)
    inlier = unit(np.array([[1.0, 0.02, 0.01, 0.0]]))
    between = unit(np.array([[1.0, 1.0, 0.0, 0.0]]))
    scores = index.query(np.r_[inlier, between]).score
    assert scores[0] < 2.0 and scores[1] > 5.0 * scores[0]
    centroid = unit(refs.mean(axis=0, keepdims=True))
    assert (between @ centroid.T).item() > (inlier @ centroid.T).item(), "the centroid would call the outlier normal"


def test_local_density_adapts_to_tight_and_loose_regions() -> None:
    rng = np.random.default_rng(2)
    tight = np.array([1.0, 0, 0, 0, 0, 0]) + 0.1 * rng.standard_normal((200, 6))
    loose = np.array([0, 0, 0, 1.0, 0, 0]) + 0.4 * rng.standard_normal((200, 6))
    refs = unit(np.r_[tight, loose])
    index = KnnIndex(np.arange(400).astype(str), refs, k=5)
    # the same absolute distance is unusual next to the tight cluster and normal inside the loose one
    near_tight = unit(np.array([[1.0, 0, 0.6, 0, 0, 0]]))
    near_loose = unit(np.array([[0, 0, 0.6, 1.0, 0, 0]]))
    s = index.query(np.r_[near_tight, near_loose]).score
    assert s[0] > 3 * s[1]


def test_save_and_load_round_trip(tmp_path) -> None:
    refs = two_clusters(10)
    index = KnnIndex(np.array([f"value {i}" for i in range(20)]), refs, k=3)
    index.save(tmp_path / "ref.npz")
    again = KnnIndex.load(tmp_path / "ref.npz")
    assert again.k == 3 and again.floor == pytest.approx(index.floor)
    assert (again.values == index.values).all()
    q = unit(np.random.default_rng(3).standard_normal((5, 4)))
    assert np.allclose(again.query(q).score, index.query(q).score)


def test_cross_fitting_scores_every_value_without_its_own_fold() -> None:
    refs = two_clusters(30)
    scores, fold = cross_fit_scores(np.arange(60).astype(str), refs, k=3, folds=5, seed=0)
    assert scores.shape == (60,) and set(fold) == set(range(5))
    assert np.all(scores > 0), "a value never scores against itself"
    assert np.median(scores) < 2.0


def test_threshold_bounds_the_false_positive_rate_and_measures_recall() -> None:
    rng = np.random.default_rng(4)
    clean, errors = rng.normal(1.0, 0.2, 1000), rng.normal(3.0, 0.5, 200)
    cal = calibrate(clean, errors, ["a"] * 100 + ["b"] * 100, max_fpr=0.01)
    assert cal.fpr <= 0.01 and (clean >= cal.threshold).mean() == pytest.approx(cal.fpr)
    assert cal.recall > 0.9 and set(cal.recall_by_kind) == {"a", "b"}
    assert 0.99 < cal.auc <= 1.0
    assert auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
    assert auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5


def test_confidence_is_half_at_the_threshold_and_grows() -> None:
    conf = confidence(np.array([0.5, 1.0, 1.5, 10.0]), threshold=1.0, scale=0.5)
    assert conf[0] == 0.0 and conf[1] == pytest.approx(0.5)
    assert conf[1] < conf[2] < conf[3] <= 0.99
