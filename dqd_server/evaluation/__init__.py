"""``dqd evaluate``: cell-level precision, recall and F1 of detection, per column × method and overall."""
from __future__ import annotations

from .run import Evaluation, evaluate_injected, evaluate_pair, write_weights
from .score import score, truth_from_pair

__all__ = ["Evaluation", "evaluate_injected", "evaluate_pair", "score", "truth_from_pair", "write_weights"]
