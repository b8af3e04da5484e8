"""Method "llm": text a masked language model finds unlikely for its field type, naming the least likely words.

One masked LM (MiniLM + MLM head, fine-tuned by ``dqd train --methods llm`` on the clean values of all field types)
reads ``[CLS] <field type> [SEP] <value> [SEP]`` and gives every token of the value a log-probability and the
entropy of its prediction; a value's score is its worst token (by default -log p of the least likely one;
``models/mlm_score.py``; single-pass scoring by default, true pseudo-log-likelihood when the version's metadata
says ``scoring: pll``). At or above the field's calibrated threshold: ``UNLIKELY_TOKEN``, naming the least likely
words with their probability,
e.g. "'Bleach not do, Dry tumble low' is unlikely as care instructions; least likely: 'not' (p=0.0021), 'do'
(p=0.013)". Values seen in training are known-good and skipped.

The network is shared by all field types (``_models/mlm/<N>``, pinned by sha256 from each ``<field>/llm/<N>``), so
values of every column and stream share one dynamic batch. Importing this module is cheap.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dqd_server.models import mlm_score
from dqd_server.models.base import field_prefix
from dqd_server.models.serving import ModelDetector, quote
from dqd_server.models.store import ModelEntry

from .detector import register

if TYPE_CHECKING:
    from dqd_server.models.runtime import Network


class LlmDetector(ModelDetector):
    method = "llm"
    code = "UNLIKELY_TOKEN"

    def __init__(self, root: Path, entries: Mapping[str, ModelEntry]) -> None:
        self.networks: dict[str, Network] = {}
        super().__init__(root, entries)

    def load(self, field_type: str, entry: ModelEntry) -> Sequence[str]:
        from dqd_server.models.runtime import POOL

        net_dir = entry.shared("model", self.root)
        pin = entry.metadata["model"]["sha256"]
        tokenizer = net_dir / "tokenizer.json"
        self.networks[field_type] = POOL.get("mlm", net_dir, pin, str(tokenizer) if tokenizer.is_file() else None)
        with np.load(entry.artifact("calibration.npz"), allow_pickle=False) as data:
            return data["known_values"].tolist()

    def score(self, field_type: str, texts: list[str]) -> tuple[np.ndarray, Callable[[int], str]]:
        meta = self.entries[field_type].metadata
        scoring, how = meta.get("scoring", "single"), meta.get("score", "min_logprob")
        encs, token_scores = self.networks[field_type].token_logprobs(field_type, texts, scoring)
        term = field_prefix(field_type)

        def explain(i: int) -> str:
            words = mlm_score.least_likely(texts[i], encs[i], token_scores[i], how=how)
            shown = ", ".join(f"{quote(w, 30)} (p={p:.2g})" for w, p in words)
            return f"{quote(texts[i])} is unlikely as {term}; least likely: {shown}"

        return mlm_score.value_scores(token_scores, how), explain


def _factory(root: Path) -> LlmDetector:
    return LlmDetector.from_repository(root)


register("llm", _factory)
