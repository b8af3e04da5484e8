"""Reading and writing the model repository (layout: ``dqd_server.models`` docstring).

Versions are immutable: a new training run writes ``<field>/<method>/<N+1>/`` into a temporary folder first and
renames it into place, so a server (re)loading at the same time never sees half a version. The serving version
of a (field type, method) is the highest numeric folder with a ``metadata.json``. A detector's version string is
``N+<8 hex>`` — the folder number plus a digest of its metadata (which holds the sha256 of every artifact and of
the shared network), so two different models can never share a version, even across repositories; verdict caches
keyed by version therefore never return another model's scores.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import METADATA_FILE, SHARED_DIR
from .base import file_sha256

_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")


class ModelError(ValueError):
    """A model version is malformed or does not match what its metadata pins; the message names the file."""


@dataclass(frozen=True)
class ModelEntry:
    """One serving model version of a field type and method."""

    field_type: str
    method: str
    number: int
    path: Path
    metadata: dict[str, Any]
    digest: str  # sha256 of metadata.json

    @property
    def version(self) -> str:
        return f"{self.number}+{self.digest[:8]}"

    def artifact(self, name: str) -> Path:
        """An artifact of this version, checked against the sha256 its metadata records."""
        path = self.path / name
        want = self.metadata.get("artifacts", {}).get(name)
        if not path.is_file():
            raise ModelError(f"{path}: missing (listed in {self.path / METADATA_FILE})")
        if want and file_sha256(path) != want:
            raise ModelError(f"{path}: sha256 does not match {self.path / METADATA_FILE}; the version was modified")
        return path

    def shared(self, key: str, root: Path) -> Path:
        """The shared network folder this version pins (``metadata[key]``), its main file's sha256 checked."""
        ref = self.metadata.get(key) or {}
        path = (root / ref.get("path", "")).resolve()
        main = path / ref.get("file", "")
        if not ref or not main.is_file():
            raise ModelError(f"{self.path / METADATA_FILE}: shared {key} {ref.get('path')!r} is missing under {root}")
        for file, key_ in ((main, "sha256"), (path / "model.onnx", "onnx_sha256")):
            if ref.get(key_) and (not file.is_file() or file_sha256(file) != ref[key_]):
                raise ModelError(f"{file}: missing or sha256 differs from the one pinned by "
                                 f"{self.path / METADATA_FILE}")
        return path


def numeric_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((d for d in folder.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))


def newest_entries(root: Path, method: str) -> dict[str, ModelEntry]:
    """Field type -> serving version of ``method`` (cheap: reads only metadata.json files)."""
    root = Path(root)
    out: dict[str, ModelEntry] = {}
    if not root.is_dir():
        return out
    for field_dir in sorted(root.iterdir()):
        if not field_dir.is_dir() or field_dir.name[:1] in "._" or not _FIELD.match(field_dir.name):
            continue
        versions = [d for d in numeric_dirs(field_dir / method) if (d / METADATA_FILE).is_file()]
        if versions:
            out[field_dir.name] = read_entry(field_dir.name, method, versions[-1])
    return out


def read_entry(field_type: str, method: str, path: Path) -> ModelEntry:
    raw = (path / METADATA_FILE).read_bytes()
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path / METADATA_FILE}: not valid JSON: {exc}") from None
    if meta.get("method") != method or meta.get("field_type") != field_type:
        raise ModelError(f"{path / METADATA_FILE}: says method {meta.get('method')!r} / field type "
                         f"{meta.get('field_type')!r}, but sits in {field_type}/{method}/")
    return ModelEntry(field_type, method, int(path.name), path, meta, hashlib.sha256(raw).hexdigest())


def next_number(folder: Path) -> int:
    dirs = numeric_dirs(folder)
    return int(dirs[-1].name) + 1 if dirs else 1


def publish(folder: Path, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Create version ``folder/<N+1>``: ``build(tmp)`` writes artifacts into ``tmp`` and returns the metadata,
    to which the artifacts' sha256 are added; the folder is renamed into place only when complete."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        meta = build(tmp)
        meta.setdefault("artifacts", {}).update(
            {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != METADATA_FILE})
        for _ in range(20):  # another trainer may publish concurrently: take the next free number
            number = next_number(folder)
            meta["version"] = number
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            try:
                os.rename(tmp, folder / str(number))
                return folder / str(number)
            except OSError:
                continue
        raise ModelError(f"{folder}: could not publish a new version")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def shared_folder(root: Path, kind: str) -> Path:
    return Path(root) / SHARED_DIR / kind


def find_shared(root: Path, kind: str, key: str, value: str) -> Path | None:
    """A shared network version whose metadata has ``key == value`` (reuse an identical encoder export)."""
    for d in reversed(numeric_dirs(shared_folder(root, kind))):
        meta_file = d / METADATA_FILE
        if meta_file.is_file():
            try:
                if json.loads(meta_file.read_text()).get(key) == value:
                    return d
            except json.JSONDecodeError:
                continue
    return None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def dqd_version() -> str:
    try:
        from importlib.metadata import version

        return version("dqd-server")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"
