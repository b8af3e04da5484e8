"""Measured on real data: the beers dirty/clean pair (Raha benchmark), unsupervised — dqd profiles the dirty
table itself and never learns from the clean one. Data: ../shared/data/beers/ next to the repository."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from dqd_server.evaluation.run import evaluate_pair
from dqd_server.tools_cli import main as tools_main

BEERS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "beers"


@pytest.fixture(scope="module")
def beers() -> Path:
    if not (BEERS / "dirty.csv").is_file() or not (BEERS / "clean.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the beers data set is missing at {BEERS} (shared/data/beers next to the repository)")
        pytest.skip(f"the beers data set is not at {BEERS} (shared/data/beers next to the repository)")
    return BEERS


def test_beers_unsupervised_f1(beers: Path, tmp_path: Path) -> None:
    out = tmp_path / "beers.json"
    code = tools_main(["evaluate", "--dirty", str(beers / "dirty.csv"), "--clean", str(beers / "clean.csv"),
                       "--name", "beers", "--json", str(out), "-q"])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["table"]["errors"] == 4362
    assert r["overall"]["verdict"] == "combined" and r["profiled"] is True
    assert r["overall"]["f1"] >= 0.90, r["overall"]
    # every method pulls its weight where it should
    cols = r["columns"]
    assert cols["ounces"]["methods"]["validation"]["recall"] == 1.0  # unit variants ("12.0 oz")
    assert cols["ibu"]["methods"]["validation"]["recall"] == 1.0  # "N/A" where the table leaves cells empty
    assert cols["abv"]["methods"]["validation"]["recall"] == 1.0  # "0.05%" among bare numbers
    assert cols["city"]["methods"]["dependency"]["f1"] >= 0.9 and cols["state"]["methods"]["dependency"]["f1"] >= 0.9


def test_no_table_specific_rules_in_the_code() -> None:
    """The detectors are generic: nothing in the code knows this table (its rules come from its own majority)."""
    root = Path(__file__).resolve().parents[2] / "dqd_server"
    words = re.compile(r"beer|brewer|ounce|\babv\b|\bibu\b|alumi-tek", re.IGNORECASE)
    offenders = [(str(p.relative_to(root)), m.group()) for p in root.rglob("*.py")
                 for m in words.finditer(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_beers_through_evaluate_pair_reports(beers: Path, tmp_path: Path) -> None:
    ev = evaluate_pair(beers / "dirty.csv", beers / "clean.csv", name="beers", profile_out=tmp_path / "repo")
    assert (tmp_path / "repo" / "beers__city" / "1" / "field.yaml").is_file()
    assert ev.result["methods"]["combined"]["f1"] >= 0.90
    assert ev.findings.num_rows > 4000
