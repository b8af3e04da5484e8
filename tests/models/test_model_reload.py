"""ReloadModels semantics: a rebuilt engine serves the newest versions; cached verdicts never cross versions."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from model_support import new_version_with_threshold

from dqd_server.engine.cache import VerdictCache
from dqd_server.engine.pipeline import Engine


def detect(engine: Engine, values: list[str], method: str = "ml") -> list[dict]:
    plan = engine.plan({"c": "category"}, [method])
    return engine.detect(plan, pa.record_batch({"c": pa.array(values, pa.string())})).to_pylist()


def test_reload_picks_the_new_version_and_the_cache_never_serves_stale_verdicts(repo_copy: Path) -> None:
    cache = VerdictCache()  # one cache shared across reloads, as the server keeps it
    values = ["Dark Blue", "Merino Wool", "Jeans"]  # "Jeans" is a known category: never scored
    v1 = new_version_with_threshold(repo_copy, "category", "ml", -1e9)  # flags every unknown value
    before = Engine.from_repository(repo_copy, cache=cache)
    assert before.fields()["category"]["ml"].version == v1
    first = detect(before, values)
    assert {r["value"] for r in first} == {"Dark Blue", "Merino Wool"}
    assert detect(before, values) == first and cache.hits >= len(values)

    v2 = new_version_with_threshold(repo_copy, "category", "ml", 1e9)  # flags nothing
    assert v2 != v1 and v2.startswith("3+")
    after = Engine.from_repository(repo_copy, cache=cache)  # what ReloadModels does
    assert after.fields()["category"]["ml"].version == v2
    assert detect(after, values) == [], "the new version's verdicts, not the cached ones of the old version"
    assert detect(before, values) == first, "an engine still serving the old version keeps its own verdicts"


def test_same_version_number_with_different_content_gets_a_different_version(repo_copy: Path, tmp_path: Path) -> None:
    """Two repositories both at ml/1 but with different thresholds must not share cached verdicts."""
    new_version_with_threshold(repo_copy, "category", "ml", -1e9)
    shutil.rmtree(repo_copy / "category" / "ml" / "1")
    shutil.move(repo_copy / "category" / "ml" / "2", repo_copy / "category" / "ml" / "1")
    other = tmp_path / "other"
    shutil.copytree(repo_copy, other, symlinks=True)
    shutil.rmtree(other / "category" / "ml" / "1")
    shutil.copytree(repo_copy / "category" / "ml" / "1", other / "category" / "ml" / "1")
    meta_file = other / "category" / "ml" / "1" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["threshold"] = 1e9
    meta_file.write_text(json.dumps(meta))
    cache = VerdictCache()
    a, b = Engine.from_repository(repo_copy, cache=cache), Engine.from_repository(other, cache=cache)
    assert a.fields()["category"]["ml"].version != b.fields()["category"]["ml"].version
    assert detect(a, ["Dark Blue"]) and not detect(b, ["Dark Blue"])


def test_networks_are_shared_across_reloads(repo_copy: Path) -> None:
    a, b = Engine.from_repository(repo_copy), Engine.from_repository(repo_copy)
    assert a.detectors["llm"].networks["material"] is b.detectors["llm"].networks["material"]
    assert a.detectors["ml"].encoders["material"] is b.detectors["ml"].encoders["category"]


def test_importing_the_methods_and_loading_plain_rules_never_imports_torch() -> None:
    code = ("import sys; from dqd_server.engine.pipeline import Engine; from dqd_server.engine.repository import "
            "BUNDLED_RULES; e = Engine.from_repository(BUNDLED_RULES); assert 'ml' in e.detectors; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'transformers', 'tokenizers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
