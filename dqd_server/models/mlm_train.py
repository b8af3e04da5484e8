"""Fine-tune the masked LM of method ``llm`` on clean values of all field types at once (CPU-friendly).

Starts from the packaged MiniLM encoder with an MLM head tied to its word embeddings (``graphs.new_masked_lm``).
Each training sequence is ``[CLS] field type [SEP] value [SEP]``. The served score is log p(token | the value as
written, token visible), so training teaches exactly that: the loss covers every value token ("dense"), the visible
token is the target where it is right, and where it is wrong the model is taught to give it a low probability.
Per sequence one of:

* ``other_field`` (``other``): the value is replaced by a value of another field type (an EAN as a category) —
  every value token is wrong (unlikelihood loss, -log(1 - p(visible token)));
* ``foreign_word`` (``foreign``): one word is replaced by a word of another field type's values ("100% Navy") —
  its tokens are wrong (unlikelihood), the rest are right;
* ``shuffle``: the words are put in another order — a token that is not the original one at its position is
  wrong (unlikelihood), the others right;
* otherwise token-level noise: of the value tokens ``select`` are picked (at least one), 40 % become [MASK],
  40 % a random value token, 20 % stay — target: the original token.

These mirror the semantic errors the method is calibrated and measured on (``corrupt.py``); without the
whole-value and whole-word negatives the single-pass model learned to copy what it sees (held-out AUC of
category 0.20, price 0.36). Field types are sampled in proportion to the square root of their number of values, so 32
seasons are not drowned by 5,000 EANs. Why it is fast enough on 2 CPU cores: the word embeddings (tied to the
output layer) and the lower transformer layers are frozen (autograd neither keeps their activations nor
backpropagates through them), and batches are length-bucketed (sequences of similar length, little padding).
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .base import Encoded, encode, field_prefix, pad, special_ids
from .graphs import new_masked_lm

log = logging.getLogger("dqd.models")
_WORD = re.compile(r"[^\W\d_]{3,}")  # the words corrupt.py replaces


@dataclass(frozen=True)
class MlmTrainConfig:
    steps: int = 400
    batch_size: int = 32
    lr: float = 5e-4  # 1e-4 left the fresh head and the top layers under-trained in a few hundred steps
    select: float = 0.3
    mask_share: float = 0.4
    random_share: float = 0.4
    other: float = 0.15  # share of sequences whose value is another field type's value
    foreign: float = 0.15  # share of sequences with one word replaced by another field type's word
    swap: float = 0.15  # share of sequences with their words shuffled (teaches word order)
    dense: bool = True  # loss at every value token (unselected ones: predict the visible token)
    train_layers: int = 2  # top transformer layers fine-tuned (the rest, and the word embeddings, stay frozen)
    bucket: int = 16  # batches drawn at once and formed from length-sorted sequences (less padding)
    time_budget: float = 150.0  # seconds; training stops early (and says so) when exceeded
    seed: int = 0


@dataclass(frozen=True)
class MlmTrainReport:
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    stopped_by_budget: bool


class _Corpus:
    """Clean values per field type and what corruptions draw from (other fields' values and words)."""

    def __init__(self, values_by_field: Mapping[str, Sequence[str]]) -> None:
        self.fields = sorted(f for f, v in values_by_field.items() if len(v))
        self.values = {f: list(values_by_field[f]) for f in self.fields}
        self.encs = {f: encode(self.values[f], [field_prefix(f)] * len(self.values[f])) for f in self.fields}
        weights = np.array([math.sqrt(len(self.values[f])) for f in self.fields])
        self.weights = weights / weights.sum()
        own = {f: set(self.values[f]) for f in self.fields}
        words = {f: sorted({m.group() for v in self.values[f] for m in _WORD.finditer(v)}) for f in self.fields}
        self.others = {f: [(g, v) for g in self.fields if g != f for v in self.values[g] if v not in own[f]]
                       for f in self.fields}
        self.other_fields = {f: [g for g in self.fields if g != f and any(v not in own[f] for v in self.values[g])]
                             for f in self.fields}
        self.foreign = {f: sorted({w for g in self.fields if g != f for w in words[g]} - set(words[f]))
                        for f in self.fields}


def fine_tune(values_by_field: Mapping[str, Sequence[str]], config: MlmTrainConfig = MlmTrainConfig()
              ) -> tuple[torch.nn.Module, MlmTrainReport]:
    """Train on ``values_by_field`` (clean values per field type); return the model (eval mode) and a report."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    corpus = _Corpus(values_by_field)
    pool = np.concatenate([e.ids[e.value_mask] for f in corpus.fields for e in corpus.encs[f]])
    special = special_ids()
    pool = pool[~np.isin(pool, list(special.values()))]
    if not len(pool):
        raise ValueError("no value tokens to train the masked LM on")

    model = new_masked_lm()
    layers = model.bert.encoder.layer
    frozen = len(layers) - max(1, min(config.train_layers, len(layers)))
    for module in (model.bert.embeddings, *layers[:frozen]):
        module.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    warmup = max(1, config.steps // 10)
    decay = 1.0 - min(0.9, warmup / config.steps)  # share of the run after the warm-up
    model.train()
    started = time.perf_counter()
    losses: list[float] = []
    queue: list[list[tuple[str, str, Encoded, np.ndarray]]] = []
    step = 0
    for step in range(1, config.steps + 1):
        # linear warm-up, then linear decay to 0 at the last step or at the time budget, whichever comes first
        # (on a loaded machine the budget cuts training short, and a model cut mid-schedule is worse)
        done = max((step - 1) / config.steps, (time.perf_counter() - started) / config.time_budget)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * min(step / warmup, max(0.0, 1.0 - done) / decay)
        if not queue:
            queue = _draw_batches(corpus, rng, config)
        ids, types, mask, labels, wrong = _masked_batch(queue.pop(), rng, pool, special["mask"], config)
        # frozen bottom: no parameter there requires grad, so autograd keeps no activations and stops above it
        hidden = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        right = labels != -100
        logprobs = torch.log_softmax(model.cls(hidden[right | wrong]), dim=-1)
        target = torch.where(right, labels, ids)[right | wrong]
        lp = logprobs.gather(1, target.unsqueeze(1)).squeeze(1)
        is_wrong = wrong[right | wrong]
        # right: -log p(target); wrong: -log(1 - p(visible token)) (unlikelihood)
        per_token = torch.where(is_wrong, -torch.log1p(-lp.exp().clamp(max=1 - 1e-6)), -lp)
        loss = per_token.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.detach().item())
        if step % 50 == 0:
            log.info("mlm step %d/%d loss %.3f (%.0fs)", step, config.steps, np.mean(losses[-50:]),
                     time.perf_counter() - started)
        if time.perf_counter() - started > config.time_budget:
            log.warning("mlm fine-tuning stopped by its time budget after %d of %d steps", step, config.steps)
            break
    model.eval()
    head = losses[: max(1, min(20, len(losses)))]
    tail = losses[-max(1, min(20, len(losses))):]
    report = MlmTrainReport(step, time.perf_counter() - started, float(np.mean(head)), float(np.mean(tail)),
                            step < config.steps)
    return model, report


def _draw_batches(corpus: _Corpus, rng: np.random.Generator, config: MlmTrainConfig
                  ) -> list[list[tuple[str, str, Encoded, np.ndarray]]]:
    """``bucket`` batches: sequences (corrupted or not) sorted by length, cut into batches, in random order.

    Each sequence is (field, kind, encoding as fed, target ids or -1 for a wrong token / -2 for token noise)."""
    n = config.batch_size * max(1, config.bucket)
    picks = rng.choice(len(corpus.fields), size=n, p=corpus.weights)
    rolls = rng.random(n)
    seqs = []
    edits: list[tuple[int, str, str, tuple[int, int] | None]] = []  # (seq, field, new value, wrong char span)
    for j, fi in enumerate(picks):
        f = corpus.fields[fi]
        i = int(rng.integers(len(corpus.values[f])))
        value, enc = corpus.values[f][i], corpus.encs[f][i]
        seqs.append([f, "plain", enc, None])
        r = rolls[j]
        if r < config.other and corpus.other_fields[f]:
            g = corpus.other_fields[f][rng.integers(len(corpus.other_fields[f]))]
            own = set(corpus.values[f])
            for _ in range(10):
                v = corpus.values[g][rng.integers(len(corpus.values[g]))]
                if v not in own:
                    edits.append((j, "other", v, (0, len(v))))
                    break
        elif r < config.other + config.foreign and corpus.foreign[f]:
            words = list(_WORD.finditer(value))
            if words:
                w = words[rng.integers(len(words))]
                new = corpus.foreign[f][rng.integers(len(corpus.foreign[f]))]
                edits.append((j, "foreign", value[: w.start()] + new + value[w.end():],
                              (w.start(), w.start() + len(new))))
        elif r < config.other + config.foreign + config.swap:
            tokens = value.split(" ")
            if len(tokens) >= 2:
                perm = list(rng.permutation(len(tokens)))
                text = " ".join(tokens[k] for k in perm)
                if text != value:
                    edits.append((j, "shuffle", text, None))
    if edits:
        new_encs = encode([e[2] for e in edits], [field_prefix(seqs[e[0]][0]) for e in edits])
        for (j, kind, text, span), enc in zip(edits, new_encs):
            orig = seqs[j][2]
            if kind == "shuffle":
                if len(enc.ids) != len(orig.ids):
                    continue
                moved = enc.value_mask & (enc.ids != orig.ids)  # a token where another one belongs is wrong
                seqs[j] = [seqs[j][0], kind, enc, np.where(moved, -1, np.where(enc.value_mask, enc.ids, -100))]
            else:
                a, b = span  # type: ignore[misc]
                bad = enc.value_mask & (enc.offsets[:, 0] >= a) & (enc.offsets[:, 0] < b)
                seqs[j] = [seqs[j][0], kind, enc, np.where(bad, -1, np.where(enc.value_mask, enc.ids, -100))]
    for s in seqs:
        if s[3] is None:
            s[3] = np.where(s[2].value_mask, -2, -100)
    order = sorted(range(n), key=lambda k: len(seqs[k][2].ids))
    batches = [[tuple(seqs[k]) for k in order[b: b + config.batch_size]] for b in range(0, n, config.batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]  # type: ignore[misc]


def _masked_batch(batch: Sequence, rng: np.random.Generator, pool: np.ndarray, mask_id: int,
                  config: MlmTrainConfig
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, token types, attention mask, CE targets (-100: none) and the wrong-token mask of a batch."""
    ids, mask = pad([s[2].ids for s in batch])
    types, _ = pad([s[2].type_ids for s in batch])
    plan, _ = pad([s[3] for s in batch], value=-100)
    noise = plan == -2  # plain sequences: token-level noise, target the original token
    selected = (rng.random(ids.shape) < config.select) & noise
    for i in np.flatnonzero(~selected.any(axis=1) & noise.any(axis=1)):  # at least one token per value
        selected[i, rng.choice(np.flatnonzero(noise[i]))] = True
    labels = np.where(noise, ids if config.dense else np.where(selected, ids, -100), plan)
    labels = np.where(plan == -1, -100, labels)
    roll = rng.random(ids.shape)
    to_mask = selected & (roll < config.mask_share)
    to_random = selected & (roll >= config.mask_share) & (roll < config.mask_share + config.random_share)
    inputs = ids.copy()
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.choice(pool, size=int(to_random.sum()))
    return (torch.from_numpy(inputs), torch.from_numpy(types), torch.from_numpy(mask), torch.from_numpy(labels),
            torch.from_numpy(plan == -1))
