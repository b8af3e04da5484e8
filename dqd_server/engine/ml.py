"""Method "ml": values unlike the known values of their field type, by nearest neighbours in embedding space.

Every value goes through one shared sentence encoder (the packaged all-MiniLM-L6-v2; one dynamic batch for all
field types and streams, ``models/runtime.py``); per field type, ``<field>/ml/<N>/reference.npz`` holds the clean
reference values, their embeddings and local kNN radii, and the score is the LOF-style ratio of ``models/knn.py``
(not a centroid distance). Values seen in training are known-good and skipped. A value at or above the field's
calibrated threshold gets ``SEMANTIC_OUTLIER`` with its nearest known values as the explanation, e.g.
"'100% Organic Lettuce' is unlike known material values; nearest: '100% Organic Cotton' (0.71), …".

Train with ``dqd train --methods ml`` (``models/train.py``). Importing this module is cheap: torch/onnxruntime
load only when the repository has ml versions.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dqd_server.models.base import field_prefix
from dqd_server.models.knn import KnnIndex
from dqd_server.models.serving import ModelDetector, check_base_model, quote
from dqd_server.models.store import ModelEntry

from .detector import register

if TYPE_CHECKING:
    from dqd_server.models.runtime import Network

SHOWN_NEIGHBOURS = 3


class MlDetector(ModelDetector):
    method = "ml"
    code = "SEMANTIC_OUTLIER"

    def __init__(self, root: Path, entries: Mapping[str, ModelEntry]) -> None:
        self.indexes: dict[str, KnnIndex] = {}
        self.encoders: dict[str, Network] = {}
        super().__init__(root, entries)

    def load(self, field_type: str, entry: ModelEntry) -> Sequence[str]:
        from dqd_server.models.runtime import POOL

        index = KnnIndex.load(entry.artifact("reference.npz"))
        check_base_model(entry)
        encoder_dir = entry.shared("encoder", self.root)
        pin = entry.metadata["encoder"]["sha256"]
        tokenizer = encoder_dir / "tokenizer.json"
        self.indexes[field_type] = index
        self.encoders[field_type] = POOL.get("encoder", encoder_dir, pin,
                                             str(tokenizer) if tokenizer.is_file() else None)
        return index.values.tolist()

    def score(self, field_type: str, texts: list[str]) -> tuple[np.ndarray, Callable[[int], str]]:
        index = self.indexes[field_type]
        found = index.query(self.encoders[field_type].embed(texts))
        term = field_prefix(field_type)

        def explain(i: int) -> str:
            near = ", ".join(f"{quote(str(index.values[j]), 40)} ({s:.2f})"
                             for j, s in zip(found.index[i][:SHOWN_NEIGHBOURS], found.similarity[i]))
            return f"{quote(texts[i])} is unlike known {term} values; nearest: {near}"

        return found.score, explain


def _factory(root: Path) -> MlDetector:
    return MlDetector.from_repository(root)


register("ml", _factory)
