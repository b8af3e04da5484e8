"""How the ``llm`` method turns masked-LM outputs into per-token and per-value scores (numpy only).

Two scorings, both from the same ``mlm`` graph (per position: log-probability of the target token and the entropy
of the predicted distribution):

* ``pll`` — true masked pseudo-log-likelihood: for a value of L tokens, L copies, each with one value token
  replaced by [MASK]; token i's score is log p(x_i | everything else). L forward passes per value.
* ``single`` — one unmasked pass; token i's score is log p(x_i | the value as written, x_i visible). Cheap (one pass),
  and meaningful because dqd's fine-tuning (``mlm_train.py``) trains exactly this quantity: a visible token that
  belongs is the target, one that does not (another field type's value, a foreign word, a word out of order) is
  pushed down.

A value's score is its worst token — one wrong word is enough to make a value wrong — by one of two measures
(``AGGREGATES``; the trained version's metadata says which): ``min_logprob`` (default): -log p of its least likely
token; ``max_excess``: the largest surprisal minus the entropy of the prediction at that position (discounts
tokens that are unpredictable by nature, like the digits of an EAN). Measured on the catalog (400 fine-tuning
steps; ``evaluate`` on a catalog of another seed, AUC clean vs semantic errors over the 5 field types with unseen
clean values): single-pass min_logprob 0.99, PLL 0.90, Spearman(single, PLL) 0.83 — the single pass is what the
model was trained for, so it beats the PLL it approximates (before this training: 0.61 / 0.67 / 0.26). Held-out
AUC over all 9 field types, single-pass: min_logprob 0.97, max_excess 0.83 — so the default is min_logprob.
``dqd_server.models.evaluate`` measures the rank correlation of the two scorings and their speed; the scoring a
model serves is recorded in its metadata (``scoring``).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .base import Encoded

Item = tuple[np.ndarray, np.ndarray, np.ndarray]  # (input ids, token type ids, target ids), one sequence
SCORINGS = ("single", "pll")
_WORD = re.compile(r"\w+|[^\w\s]")


def item_length(item: Item) -> int:
    return len(item[0])


def single_items(encs: Sequence[Encoded]) -> list[Item]:
    return [(e.ids, e.type_ids, e.ids) for e in encs]


def pll_items(encs: Sequence[Encoded], mask_id: int) -> tuple[list[Item], list[tuple[int, int]]]:
    """One item per value token with that token masked; owners[j] = (value index, token position)."""
    items: list[Item] = []
    owners: list[tuple[int, int]] = []
    for v, e in enumerate(encs):
        for pos in np.flatnonzero(e.value_mask):
            ids = e.ids.copy()
            ids[pos] = mask_id
            items.append((ids, e.type_ids, e.ids))
            owners.append((v, int(pos)))
    return items, owners


def collect_single(encs: Sequence[Encoded], rows: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per value: [L, 2] (log-probability, entropy) of its value tokens (from one row per value)."""
    return [np.asarray(r[: len(e.ids)], dtype=np.float64)[e.value_mask] for e, r in zip(encs, rows)]


def collect_pll(encs: Sequence[Encoded], owners: Sequence[tuple[int, int]], rows: Sequence[np.ndarray]
                ) -> list[np.ndarray]:
    out = [np.zeros((len(e.ids), 2), dtype=np.float64) for e in encs]
    for (v, pos), r in zip(owners, rows):
        out[v][pos] = r[pos]
    return [o[e.value_mask] for o, e in zip(out, encs)]


def run_items(run_batch, items: Sequence[Item], batch_size: int = 64) -> list[np.ndarray]:
    """Run items through ``run_batch`` in length-sorted batches (no batcher: training and evaluation)."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    rows: list[np.ndarray | None] = [None] * len(items)
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        for i, r in zip(chunk, run_batch([items[i] for i in chunk])):
            rows[i] = r
    return rows  # type: ignore[return-value]


def feeds_of(items: Sequence[Item]) -> dict[str, np.ndarray]:
    """Pad a batch of items into the ``mlm`` graph's inputs."""
    width = max(len(it[0]) for it in items)
    feeds = {name: np.zeros((len(items), width), dtype=np.int64)
             for name in ("input_ids", "attention_mask", "token_type_ids", "target_ids")}
    for i, (ids, types, targets) in enumerate(items):
        n = len(ids)
        feeds["input_ids"][i, :n] = ids
        feeds["attention_mask"][i, :n] = 1
        feeds["token_type_ids"][i, :n] = types
        feeds["target_ids"][i, :n] = targets
    return feeds


def excess(token_scores: np.ndarray) -> np.ndarray:
    """Per token: surprisal minus the prediction's entropy (see module doc)."""
    return -token_scores[:, 0] - token_scores[:, 1]


AGGREGATES = ("min_logprob", "max_excess")


def token_badness(token_scores: np.ndarray, how: str = "min_logprob") -> np.ndarray:
    """Per token, larger = more wrong: excess surprisal, or plain surprisal (-log p)."""
    if how == "max_excess":
        return excess(token_scores)
    if how == "min_logprob":
        return -token_scores[:, 0]
    raise ValueError(f"unknown value score {how!r}; use one of {AGGREGATES}")


def value_scores(token_scores: Sequence[np.ndarray], how: str = "min_logprob") -> np.ndarray:
    """Each value's worst token (0 for a value without tokens)."""
    return np.array([float(token_badness(t, how).max()) if len(t) else 0.0 for t in token_scores], dtype=np.float64)


def least_likely(value: str, enc: Encoded, token_scores: np.ndarray, n: int = 2, how: str = "min_logprob"
                 ) -> list[tuple[str, float]]:
    """The ``n`` worst words of ``value``, each with the probability of its worst token."""
    spans = enc.offsets[enc.value_mask]
    best: dict[tuple[int, int], tuple[float, float]] = {}
    words = [(m.start(), m.end()) for m in _WORD.finditer(value)]
    for (a, b), ex, lp in zip(spans, token_badness(token_scores, how), token_scores[:, 0]):
        word = next(((s, e) for s, e in words if s <= a < e), (int(a), int(b)))
        if word not in best or ex > best[word][0]:
            best[word] = (float(ex), float(lp))
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:n]
    return [(value[s:e], float(np.exp(lp))) for (s, e), (_, lp) in ranked]
