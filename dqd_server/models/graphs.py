"""The two networks dqd runs, as torch modules with exactly the inputs and outputs every backend serves.

* ``encoder``: ``(input_ids, attention_mask) -> sentence_embedding [B, 384]`` — MiniLM, mean pooling over the real
  tokens, L2-normalised (what all-MiniLM-L6-v2 is trained for), so a dot product is a cosine similarity.
* ``mlm``: ``(input_ids, attention_mask, token_type_ids, target_ids) -> token_scores [B, T, 2]`` — at every
  position the masked LM's log-probability of ``target_ids`` and the entropy of its predicted distribution. Both
  are reduced inside the graph, so a backend returns B×T×2 floats instead of B×T×30522 logits (the transfer would
  dominate, on a GPU even more than on a CPU).

The same modules are exported to ONNX (``export_onnx``: ``torch.onnx.export`` with dynamic batch and sequence
axes), from which ONNX Runtime runs and TensorRT plans are built; the PyTorch fp32 module is the reference every
backend is compared against. Imports torch: only import this module when a model is trained or loaded.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import GRAPH_INPUTS, GRAPH_OUTPUTS
from .base import base_model_dir, offline

log = logging.getLogger("dqd.models")

INPUTS = GRAPH_INPUTS
OUTPUTS = GRAPH_OUTPUTS
OPSET = 18


class MeanPoolEncoder(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation (the sentence-transformers recipe)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-6)
        pooled = pooled.float()  # normalise in fp32 (fp16 backends round only the encoder)
        return pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)


class TokenLogProb(nn.Module):
    """Masked LM returning (log p(target_ids[b, t] | input), entropy of p) per position (in fp32)."""

    def __init__(self, mlm: nn.Module) -> None:
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                target_ids: torch.Tensor) -> torch.Tensor:
        logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        target = torch.gather(logprobs, 2, target_ids.unsqueeze(-1)).squeeze(-1)
        entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
        return torch.stack([target, entropy], dim=-1)


def _quiet_transformers() -> None:
    offline()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_encoder(model_dir: Path | None = None) -> MeanPoolEncoder:
    """The base encoder in eval mode, fp32, on the CPU (callers move it)."""
    _quiet_transformers()
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(model_dir or base_model_dir()), add_pooling_layer=False)
    return MeanPoolEncoder(bert).eval()


def new_masked_lm() -> nn.Module:
    """``BertForMaskedLM`` initialised from the base encoder's weights, head tied to the word embeddings.

    The checkpoint has no MLM head; the head's transform starts as the identity (instead of random) so the
    tied decoder initially reads the encoder's own token space and fine-tuning converges in few CPU steps.
    """
    _quiet_transformers()
    from transformers import BertForMaskedLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BertForMaskedLM.from_pretrained(str(base_model_dir()))
    transform = model.cls.predictions.transform
    with torch.no_grad():
        transform.dense.weight.copy_(torch.eye(transform.dense.weight.shape[0]))
        transform.dense.bias.zero_()
        model.cls.predictions.bias.zero_()
    model.tie_weights()
    return model


def load_masked_lm(model_dir: Path) -> TokenLogProb:
    """A fine-tuned masked LM saved by ``save_pretrained`` (model.safetensors + config.json), eval mode."""
    _quiet_transformers()
    from transformers import BertForMaskedLM

    return TokenLogProb(BertForMaskedLM.from_pretrained(str(model_dir))).eval()


def load_module(kind: str, model_dir: Path | None) -> nn.Module:
    """The torch module of a graph: ``encoder`` reads the base wheel, ``mlm`` a fine-tuned folder."""
    if kind == "encoder":
        return load_encoder()
    if kind == "mlm":
        assert model_dir is not None
        return load_masked_lm(model_dir)
    raise ValueError(f"unknown graph kind {kind!r}")


def example_inputs(kind: str, batch: int = 2, seq: int = 9) -> dict[str, torch.Tensor]:
    """Inputs to trace an export with (batch/seq > 1 so no dimension is specialised to 1)."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (batch, seq), generator=gen)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if kind == "mlm":
        feeds["token_type_ids"] = torch.zeros_like(ids)
        feeds["target_ids"] = ids.clone()
    return feeds


def export_onnx(module: nn.Module, kind: str, path: Path) -> dict[str, Any]:
    """Export ``module`` to one self-contained ``path`` (weights inside), batch and sequence axes dynamic.

    Uses the dynamo exporter (torch's default); falls back to the TorchScript exporter if it fails. Returns
    what to record in metadata: exporter, opset, and the max |difference| to torch fp32 on a check batch.
    """
    feeds = example_inputs(kind)
    names = INPUTS[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.float().eval()
    exporter = "dynamo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=512)
            torch.onnx.export(module, tuple(feeds[n] for n in names), str(path), input_names=list(names),
                              output_names=[OUTPUTS[kind]], opset_version=OPSET, dynamo=True,
                              external_data=False, dynamic_shapes={n: {0: batch, 1: seq} for n in names},
                              verbose=False)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: try the other exporter
            log.warning("dynamo ONNX export failed (%s); using the TorchScript exporter", exc)
            exporter = "torchscript"
            axes = {n: {0: "batch", 1: "seq"} for n in names}
            axes[OUTPUTS[kind]] = {0: "batch"} if kind == "encoder" else {0: "batch", 1: "seq"}  # type: ignore
            torch.onnx.export(module, tuple(feeds[n] for n in names), str(path), input_names=list(names),
                              output_names=[OUTPUTS[kind]], opset_version=OPSET, dynamo=False,
                              dynamic_axes=axes)
    import onnxruntime as ort

    check = example_inputs(kind, batch=3, seq=13)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: check[n].numpy() for n in names})[0]
    with torch.inference_mode():
        want = module(*(check[n] for n in names)).numpy()
    diff = float(np.max(np.abs(got - want)))
    return {"exporter": exporter, "opset": OPSET, "export_check_max_abs_diff": diff}
