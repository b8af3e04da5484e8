"""The model repository: layout next to the rules, newest versions, immutability checks, metadata, dqd train."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from model_support import FIELDS

from dqd_server.engine.repository import BUNDLED_RULES, load_repository
from dqd_server.models import SHARED_DIR
from dqd_server.models.store import ModelError, newest_entries


def test_models_sit_next_to_the_rules_without_clashing(tiny_repo: Path) -> None:
    """The rules loader skips ml/, llm/ (not numeric) and _models/ (leading underscore)."""
    specs = load_repository(tiny_repo)
    assert set(specs) == set(FIELDS)
    assert all(s.version == "1" for s in specs.values())
    for f in FIELDS:
        assert (tiny_repo / f / "ml" / "1" / "metadata.json").is_file()
        assert (tiny_repo / f / "llm" / "1" / "metadata.json").is_file()
    assert (tiny_repo / SHARED_DIR / "encoder" / "1" / "model.onnx").is_file()
    assert (tiny_repo / SHARED_DIR / "mlm" / "1" / "model.safetensors").is_file()
    assert (tiny_repo / SHARED_DIR / "mlm" / "1" / "model.onnx").is_file()
    assert not list(tiny_repo.rglob(".tmp-*")), "a published version leaves no temporary folder"


def test_bundled_rules_have_no_models() -> None:
    assert newest_entries(BUNDLED_RULES, "ml") == {} and newest_entries(BUNDLED_RULES, "llm") == {}


def test_metadata_records_what_made_the_model(tiny_repo: Path) -> None:
    ml = json.loads((tiny_repo / "material" / "ml" / "1" / "metadata.json").read_text())
    llm = json.loads((tiny_repo / "material" / "llm" / "1" / "metadata.json").read_text())
    for meta in (ml, llm):
        assert meta["base_model"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert len(meta["base_model"]["sha256"]) == 64 and len(meta["data"]["sha256"]) == 64
        assert meta["tokenizer"]["sha256"] and meta["created_at"] and meta["dqd_version"]
        assert meta["threshold"] > 0 and meta["confidence_scale"] > 0
        held = meta["heldout"]
        assert held["clean"] > 0 and held["errors"] > 0 and 0 <= held["fpr"] <= 0.05
        assert {"recall", "precision", "precision_at_2pct", "auc", "recall_by_kind"} <= set(held)
        assert meta["description"].startswith("Material composition")
    assert set(ml["artifacts"]) == {"reference.npz"} and ml["encoder"]["path"] == f"{SHARED_DIR}/encoder/1"
    assert set(llm["artifacts"]) == {"calibration.npz"} and llm["model"]["path"] == f"{SHARED_DIR}/mlm/1"
    assert llm["scoring"] in ("single", "pll") and llm["prefix"] == "material"
    net = json.loads((tiny_repo / SHARED_DIR / "mlm" / "1" / "metadata.json").read_text())
    assert net["export_check_max_abs_diff"] < 2e-3 and net["exporter"] in ("dynamo", "torchscript")


def test_newest_version_serves_and_versions_carry_a_digest(repo_copy: Path) -> None:
    first = newest_entries(repo_copy, "ml")["material"]
    assert first.number == 1 and first.version.startswith("1+") and len(first.version) == 10
    shutil.copytree(repo_copy / "material" / "ml" / "1", repo_copy / "material" / "ml" / "7")
    (repo_copy / "material" / "ml" / "3").mkdir()  # no metadata.json: not a version
    second = newest_entries(repo_copy, "ml")["material"]
    assert second.number == 7 and second.version.startswith("7+")


def test_a_modified_artifact_is_refused(repo_copy: Path) -> None:
    entry = newest_entries(repo_copy, "ml")["color_name"]
    path = entry.path / "reference.npz"
    data = path.read_bytes()
    path.unlink()  # hard-linked from the session repo: replace, never write through
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ModelError, match="sha256 does not match"):
        entry.artifact("reference.npz")


def test_metadata_in_the_wrong_folder_is_refused(repo_copy: Path) -> None:
    shutil.copytree(repo_copy / "material" / "ml" / "1", repo_copy / "category" / "ml" / "2")
    with pytest.raises(ModelError, match="sits in category/ml/"):
        newest_entries(repo_copy, "ml")


def test_train_cli_reads_csv_as_text_and_publishes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from model_support import require_models

    require_models()
    from dqd_server.models.train_cli import main

    colours = ["Black", "White", "Navy", "Grey", "Blue", "Beige", "Dark Blue", "Light Blue", "Off White", "Brown",
               "Dark Grey", "Light Grey", "Green", "Red", "Pink", "Khaki", "Olive", "Camel", "Burgundy", "Ecru"]
    csv = tmp_path / "clean.csv"
    csv.write_text("code,colour\n" + "".join(f"{i:05d},{c}\n" for i, c in enumerate(colours)), encoding="utf-8")
    out = tmp_path / "repo"
    assert main(["--data", str(csv), "--map", "colour=color_name", "--map", "code=article_number",
                 "--methods", "ml", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "color_name/ml/1" in printed and "trained ml for 2 field types" in printed
    ref = newest_entries(out, "ml")["article_number"]
    import numpy as np

    with np.load(ref.path / "reference.npz") as data:
        assert "00001" in data["values"].tolist(), "CSV columns are read as text: leading zeros stay"
    assert (out / "color_name" / "1" / "field.yaml").is_file(), "rules seeded so the repository loads as a whole"
    assert set(load_repository(out)) == {"color_name", "article_number"}
    assert main(["--data", str(csv), "--map", "nope=color_name", "--out", str(out)]) == 2
    assert main(["--data", str(csv), "--map", "colour=color_name", "--methods", "svm", "--out", str(out)]) == 2
