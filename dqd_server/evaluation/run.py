"""``dqd evaluate``: measure detection the way users see it.

Two modes:

* **pair** — a dirty table and its clean version: ground truth = cells whose text differs (columns aligned by
  position). The clean table is used for scoring only, never for learning.
* **inject** — a clean table: errors are injected (``dqd_server.injection``), ground truth = the injected cells.

Unsupervised by default: the dirty table is profiled (``dqd_server.profiling``) and checked with that profile
(or with ``profile_dir``, a repository written earlier by ``dqd profile``). Detection runs in-process through
``engine.Engine`` — or through a live server with the client library (``target``), so a deployment is measured
exactly as users see it.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from ..profiling.learn import profile_table
from ..profiling.tables import as_text, field_types, read_table, table_name_of
from ..profiling.write import write_profile
from .score import recall_by_kind, score, truth_from_pair

DEFAULT_METHODS = ("validation", "pattern", "dependency", "combined")
DEFAULT_BATCH = 10_000


@dataclass
class Evaluation:
    """Everything an evaluation produced: scores (``result``), the findings, the dirty table and the truth."""

    result: dict[str, Any]
    findings: pa.Table
    dirty: pa.Table
    truth: pa.Table
    injected: pa.Table | None = None


def evaluate_pair(dirty: pa.Table | str | Path, clean: pa.Table | str | Path, *, name: str | None = None,
                  profile_dir: str | Path | None = None, profile_out: str | Path | None = None,
                  methods: Sequence[str] = DEFAULT_METHODS, batch_size: int = DEFAULT_BATCH,
                  target: str | None = None, client_options: Mapping[str, Any] | None = None) -> Evaluation:
    """Mode (b): score detection on ``dirty`` against ``clean`` (same shape; columns aligned by position)."""
    if name is None:
        name = table_name_of(dirty) if isinstance(dirty, (str, Path)) else "table"
    dirty_t = read_table(dirty) if isinstance(dirty, (str, Path)) else as_text(dirty)
    clean_t = read_table(clean) if isinstance(clean, (str, Path)) else as_text(clean)
    truth = truth_from_pair(dirty_t, clean_t)
    ev = _run(dirty_t, truth, name=name, profile_dir=profile_dir, profile_out=profile_out, methods=methods,
              batch_size=batch_size, target=target, client_options=client_options)
    ev.result["mode"] = "pair"
    return ev


def evaluate_injected(clean: pa.Table | str | Path, *, rules: Any = None, rate: float | None = None, seed: int = 0,
                      name: str | None = None, profile_dir: str | Path | None = None,
                      profile_out: str | Path | None = None, methods: Sequence[str] = DEFAULT_METHODS,
                      batch_size: int = DEFAULT_BATCH, target: str | None = None,
                      client_options: Mapping[str, Any] | None = None) -> Evaluation:
    """Mode (a): inject errors into ``clean``, detect them, score against the injected cells."""
    from ..injection import inject, load_rules

    if name is None:
        name = table_name_of(clean) if isinstance(clean, (str, Path)) else "table"
    clean_t = read_table(clean) if isinstance(clean, (str, Path)) else as_text(clean)
    rule_set = rules if rules is None or not isinstance(rules, (str, Path)) else load_rules(rules)
    dirty_t, injected = inject(clean_t, rule_set, seed=seed, rate=rate)
    truth = injected.select(["row", "column"])
    ev = _run(dirty_t, truth, name=name, profile_dir=profile_dir, profile_out=profile_out, methods=methods,
              batch_size=batch_size, target=target, client_options=client_options)
    ev.injected = injected
    ev.result["mode"] = "inject"
    ev.result["injection"] = {"seed": seed, "rate": rate, "cells": injected.num_rows,
                              "recall_by_kind": recall_by_kind(ev.findings, injected, dirty_t.column_names,
                                                               _verdict(methods))}
    return ev


def _verdict(methods: Sequence[str]) -> str | None:
    return "combined" if "combined" in methods else None


def _run(dirty: pa.Table, truth: pa.Table, *, name: str, profile_dir: str | Path | None,
         profile_out: str | Path | None, methods: Sequence[str], batch_size: int, target: str | None,
         client_options: Mapping[str, Any] | None) -> Evaluation:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dqd-profile-") as tmp:
        if profile_dir is not None:
            repo = Path(profile_dir)
            columns = columns_of_profile(repo, dirty.column_names, name)
            profiled = False
        else:
            repo = Path(profile_out) if profile_out is not None else Path(tmp)
            t0 = time.perf_counter()
            profile = profile_table(dirty, name)
            if target is None or profile_out is not None:
                write_profile(profile, repo)
            timings["profile_seconds"] = round(time.perf_counter() - t0, 3)
            columns = profile.field_types
            profiled = True
        t0 = time.perf_counter()
        if target is None:
            findings = detect_in_process(repo, dirty, columns, methods, batch_size)
        else:
            findings = detect_with_server(target, dirty, columns, methods, batch_size, client_options or {})
        timings["detect_seconds"] = round(time.perf_counter() - t0, 3)
    result = score(findings, truth, dirty.column_names, dirty.num_rows, list(methods))
    result.update({
        "name": name, "methods": result["methods"], "profile": str(profile_dir) if profile_dir else (
            str(profile_out) if profile_out else None),
        "profiled": profiled, "target": target, "batch_size": batch_size, **timings,
        "seconds": round(time.perf_counter() - started, 3), "column_field_types": dict(columns),
    })
    return Evaluation(result, findings, dirty, truth)


def columns_of_profile(repo: Path, names: Sequence[str], table: str) -> dict[str, str]:
    """Column -> field type for a table profiled into ``repo`` (by the profile metadata, else by name)."""
    from ..engine.repository import load_repository

    specs = load_repository(repo)
    by_column: dict[str, str] = {}
    for ft, spec in specs.items():
        meta = spec.profile
        if meta.get("table") == table and meta.get("column") in names:
            by_column[str(meta["column"])] = ft
    if not by_column:  # profiled under another table name: match by column name alone
        for ft, spec in specs.items():
            col = spec.profile.get("column")
            if col in names and col not in by_column:
                by_column[str(col)] = ft
    if not by_column:
        expected = field_types(table, names)
        by_column = {c: f for c, f in expected.items() if f in specs}
    if not by_column:
        raise ValueError(f"{repo}: no field type of this repository matches the table's columns {list(names)[:12]}; "
                         "profile the table first (dqd profile --data TABLE --out DIR)")
    return {c: by_column[c] for c in names if c in by_column}


def _batches(table: pa.Table, size: int) -> Iterator[pa.RecordBatch]:
    yield from table.combine_chunks().to_batches(max_chunksize=size)


def detect_in_process(repo: Path, table: pa.Table, columns: Mapping[str, str], methods: Sequence[str],
                      batch_size: int) -> pa.Table:
    from ..engine import Engine, StreamSession
    from ..engine.cache import VerdictCache
    from ..engine.findings import FINDINGS_SCHEMA

    engine = Engine.from_repository(repo, cache=VerdictCache())  # as the server runs it
    session = StreamSession(engine, engine.plan(columns, methods))
    parts = [session.feed(b).findings for b in _batches(table, batch_size)]
    return pa.Table.from_batches(parts, schema=FINDINGS_SCHEMA) if parts else FINDINGS_SCHEMA.empty_table()


def detect_with_server(target: str, table: pa.Table, columns: Mapping[str, str], methods: Sequence[str],
                       batch_size: int, options: Mapping[str, Any]) -> pa.Table:
    """Stream ``table`` to a live server with the client library and collect the findings."""
    from dqd_client import Client, findings_table

    with Client(target, **dict(options)) as client:
        served = {f.name for f in client.list_fields()}
        absent = sorted({ft for ft in columns.values() if ft not in served})
        if absent:
            raise ValueError(f"the server at {target} does not serve field type(s) {absent[:8]}; start it with the "
                             "profile: dqd serve --rules DIR (after dqd profile --data TABLE --out DIR)")
        stream = client.check_table(table.select(list(columns)), dict(columns), batch_size=batch_size,
                                    methods=list(methods))
        return findings_table(stream)


def write_weights(repo: str | Path, result: Mapping[str, Any], *, min_cells: int = 1) -> list[Path]:
    """Store each method's measured F1 per field type in the serving field.yaml (``weights``), for ``combined``.

    Only columns with at least ``min_cells`` errors in the truth are written (F1 is undefined without errors).
    """
    from ..engine.repository import load_repository

    repo = Path(repo)
    specs = load_repository(repo)
    written = []
    for column, ft in result.get("column_field_types", {}).items():
        col = result["columns"].get(column)
        if ft not in specs or not col or col["errors"] < min_cells:
            continue
        weights = {m: max(0.0, min(1.0, float(s["f1"]))) for m, s in col["methods"].items() if m != "combined"}
        path = specs[ft].path
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        doc["weights"] = {**(doc.get("weights") or {}), **{m: round(w, 4) for m, w in weights.items()}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
        written.append(path)
    return written
