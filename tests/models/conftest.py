"""A tiny model repository trained once per test session (a few hundred values, a few dozen masked-LM steps).

Tests that need the model extras (torch, onnxruntime, transformers, tokenizers, the packaged base model) use the
``tiny_repo`` fixture or call ``model_support.require_models()``; without the extras they are skipped.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from model_support import TINY, catalog_values, require_models


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ml + llm trained on 4 catalog fields; read-only for tests (copy it to modify)."""
    require_models()
    from dqd_server.models.train import train_repository

    out = tmp_path_factory.mktemp("models") / "repo"
    started = time.perf_counter()
    report = train_repository(catalog_values(4000, seed=1), ("ml", "llm"), out, TINY)
    print(f"\ntiny model repository trained in {time.perf_counter() - started:.1f}s: {report.seconds}")
    yield out


@pytest.fixture
def repo_copy(tiny_repo: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny repository."""
    target = tmp_path / "repo"

    def link_big(src: str, dst: str) -> None:  # big immutable artifacts are hard-linked, the rest copied
        if src.endswith((".onnx", ".safetensors", ".npz")):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(tiny_repo, target, copy_function=link_big)
    return target
