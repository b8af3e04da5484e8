"""Fine-tune the masked LM of method ``llm`` on clean values of all field types at once (CPU-friendly).

Starts from the packaged MiniLM encoder with an MLM head tied to its word embeddings (``graphs.new_masked_lm``).
Each training sequence is ``[CLS] field type [SEP] value [SEP]``. Of the value tokens 30 % are selected (at least
one per value): 40 % of those become [MASK], 40 % a random token drawn from the training values' own tokens (all
field types: a colour word in a material is exactly the kind of error to learn), 20 % stay; in a quarter of the
sequences two value tokens are swapped. The loss covers every value token ("dense"): the original token is the
target everywhere, so at a visible position the model learns p(this token is the original | context) — what makes
the single-pass scoring meaningful, and word order part of it. Field types are sampled in proportion to the square root of their number
of values, so 32 seasons are not drowned by 5,000 EANs. Why it is fast enough on 2 CPU cores: the word embeddings
(tied to the output layer) and the lower transformer layers are frozen (autograd neither keeps their activations nor backpropagates
through them), the vocabulary
head runs only at selected positions, and batches are short.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .base import encode, field_prefix, pad, special_ids
from .graphs import new_masked_lm

log = logging.getLogger("dqd.models")


@dataclass(frozen=True)
class MlmTrainConfig:
    steps: int = 250
    batch_size: int = 32
    lr: float = 1e-4
    select: float = 0.3
    mask_share: float = 0.4
    random_share: float = 0.4
    swap: float = 0.25  # share of sequences with two value tokens swapped (teaches word order)
    dense: bool = True  # loss at every value token (unselected ones: predict the visible token)
    train_layers: int = 2  # top transformer layers fine-tuned (the rest, and the word embeddings, stay frozen)
    time_budget: float = 150.0  # seconds; training stops early (and says so) when exceeded
    seed: int = 0


@dataclass(frozen=True)
class MlmTrainReport:
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    stopped_by_budget: bool


def fine_tune(values_by_field: Mapping[str, Sequence[str]], config: MlmTrainConfig = MlmTrainConfig()
              ) -> tuple[torch.nn.Module, MlmTrainReport]:
    """Train on ``values_by_field`` (clean values per field type); return the model (eval mode) and a report."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    fields = sorted(f for f, v in values_by_field.items() if len(v))
    encs = {f: encode(list(values_by_field[f]), [field_prefix(f)] * len(values_by_field[f])) for f in fields}
    weights = np.array([math.sqrt(len(encs[f])) for f in fields])
    weights /= weights.sum()
    pool = np.concatenate([e.ids[e.value_mask] for f in fields for e in encs[f]])
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
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (config.steps - s) / max(1, config.steps - warmup))))
    model.train()
    started = time.perf_counter()
    losses: list[float] = []
    step = 0
    for step in range(1, config.steps + 1):
        picks = rng.choice(len(fields), size=config.batch_size, p=weights)
        batch = [encs[fields[f]][rng.integers(len(encs[fields[f]]))] for f in picks]
        ids, labels, types, mask = _masked_batch(batch, rng, pool, special["mask"], config)
        # frozen bottom: no parameter there requires grad, so autograd keeps no activations and stops above it
        hidden = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        chosen = labels != -100
        logits = model.cls(hidden[chosen])
        loss = torch.nn.functional.cross_entropy(logits, labels[chosen])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
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


def _masked_batch(batch: Sequence, rng: np.random.Generator, pool: np.ndarray, mask_id: int,
                  config: MlmTrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = pad([e.ids for e in batch])
    types, _ = pad([e.type_ids for e in batch])
    value, _ = pad([e.value_mask.astype(np.int64) for e in batch])
    value = value.astype(bool)
    selected = (rng.random(ids.shape) < config.select) & value
    for i in np.flatnonzero(~selected.any(axis=1) & value.any(axis=1)):  # at least one token per value
        selected[i, rng.choice(np.flatnonzero(value[i]))] = True
    labels = np.where(value if config.dense else selected, ids, -100)
    roll = rng.random(ids.shape)
    to_mask = selected & (roll < config.mask_share)
    to_random = selected & (roll >= config.mask_share) & (roll < config.mask_share + config.random_share)
    inputs = ids.copy()
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.choice(pool, size=int(to_random.sum()))
    for i in np.flatnonzero(rng.random(len(batch)) < config.swap):
        where = np.flatnonzero(value[i])
        if len(where) >= 2:
            a, b = rng.choice(where, size=2, replace=False)
            inputs[i, a], inputs[i, b] = ids[i, b], ids[i, a]
            labels[i, a], labels[i, b] = ids[i, a], ids[i, b]
    return (torch.from_numpy(inputs), torch.from_numpy(labels), torch.from_numpy(types), torch.from_numpy(mask))
