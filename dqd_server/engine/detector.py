"""The one interface every detection method implements, and the registry that plugs methods in.

A new method (ml, llm, …) is a class with ``method``, ``fields()``, ``describe()`` and ``detect()`` plus one
``register()`` call; the engine and the servicers need no change. A cross-column method implements
``TableDetector`` (``detect_table`` over a whole batch) instead, like ``dependency``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import pyarrow as pa


@dataclass(frozen=True)
class MethodInfo:
    """What a method offers for one field type (shown by ListFields)."""

    version: str
    checks: int


@runtime_checkable
class Detector(Protocol):
    """Finds bad values of a field type among the distinct values of a column."""

    method: str

    def fields(self) -> Mapping[str, MethodInfo]:
        """Field types this detector can check, with version and number of checks."""
        ...

    def describe(self, field: str) -> str:
        """One line on what the field type holds (for ListFields)."""
        ...

    def context_free(self, field: str) -> bool:
        """True when a value's hits do not depend on the other values of the call, so the engine
        may remember them across batches (``cache.VerdictCache``)."""
        ...

    def detect(self, field: str, values: pa.StringArray) -> pa.RecordBatch:
        """Return hits (``hits.HITS_SCHEMA``) for the distinct ``values`` (nulls included, each once).

        Must be vectorized over ``values``; must not raise on any string content.
        """
        ...


TABLE_HITS_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),  # batch-local row
        pa.field("column", pa.string(), nullable=False),  # the flagged column (a key of ``columns``)
        pa.field("code", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("confidence", pa.float64(), nullable=False),
    ]
)


@runtime_checkable
class TableDetector(Protocol):
    """Finds bad cells that only show next to the other columns of a row (cross-column checks).

    Registered like a ``Detector``; the engine calls ``detect_table`` once per batch with the whole batch and
    the plan's column -> field type mapping. A batch holds only part of a table, so what a table detector knows
    about the table (e.g. learned dependencies) comes from the repository, not from the batch.
    """

    method: str

    def fields(self) -> Mapping[str, MethodInfo]:
        """Field types this detector can flag (others in a plan are simply not checked by it)."""
        ...

    def describe(self, field: str) -> str:
        ...

    def detect_table(self, batch: pa.RecordBatch, columns: Mapping[str, str]) -> pa.RecordBatch:
        """Row-level hits (``TABLE_HITS_SCHEMA``): at most one per (row, column); vectorized over rows."""
        ...


def is_table_detector(detector: object) -> bool:
    """True for a ``TableDetector`` (also when wrapped, e.g. by metrics timing)."""
    return callable(getattr(detector, "detect_table", None))


def is_combiner(detector: object) -> bool:
    """True for the post-processing method that merges the other methods' findings (``combine.py``)."""
    return callable(getattr(detector, "combine", None))


def waits_on_model(detector: object) -> bool:
    """True for a detector whose ``detect`` blocks on a shared model batcher (``ml``, ``llm``): the engine
    calls those concurrently so the columns of a batch meet in the same model batches."""
    return bool(getattr(detector, "batched", False))


def is_optional(detector: object) -> bool:
    """Table detectors and the combiner cover the field types they cover; a plan may include others."""
    return is_table_detector(detector) or is_combiner(detector)


DetectorFactory = Callable[[Path], "Detector | TableDetector"]
_FACTORIES: dict[str, DetectorFactory] = {}
# Modules that register the built-in methods when imported (a plug-in adds itself the same way).
BUILTIN_METHOD_MODULES = ("dqd_server.engine.validation", "dqd_server.engine.pattern",
                          "dqd_server.engine.dependency", "dqd_server.engine.combine",
                          "dqd_server.engine.ml", "dqd_server.engine.llm")


def register(method: str, factory: DetectorFactory) -> None:
    """Make ``method`` available; ``factory(repository_root)`` builds its detector."""
    _FACTORIES[method] = factory


def registered_methods() -> list[str]:
    for module in BUILTIN_METHOD_MODULES:
        importlib.import_module(module)
    return sorted(_FACTORIES)


def build_detectors(repository: Path, methods: list[str] | None = None) -> dict[str, Detector]:
    """Build the detectors of ``methods`` (default: all registered) from one repository root."""
    known = registered_methods()
    names = known if methods is None else methods
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ValueError(f"unknown detection method(s) {unknown}; known: {known}")
    return {m: _FACTORIES[m](repository) for m in names}
