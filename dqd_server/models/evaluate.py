"""Measure a trained repository: detection quality of ml and llm, and single-pass vs PLL scoring of the masked LM.

    python -m dqd_server.models.evaluate --repo REPO [--rows 20000] [--seed 7] [--pll-values 400] [--json out.json]

Quality: clean values of a catalog generated with another seed, minus every value the models were trained on
(those are skipped as known, which would flatter the numbers), give the false-positive rate per method and field
type; semantic errors made from them (``corrupt.py``, another seed than training used) give the recall, overall
and on the subset the rule methods (validation, pattern) pass — the errors only a model can catch. Scoring: on a
sample of clean values and errors, the masked LM's true pseudo-log-likelihood (one pass per token) and the
single-pass approximation are compared by Spearman rank correlation of the value scores, by AUC (clean vs error)
and by time per value (ONNX Runtime, CPU unless MODEL_DEVICE says otherwise).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .calibrate import auc, spearman
from .corrupt import semantic_errors


def _rules_flag(field: str, values: Sequence[str]) -> set[str]:
    from dqd_server.engine.pattern import PatternDetector
    from dqd_server.engine.repository import BUNDLED_RULES
    from dqd_server.engine.validation import ValidationDetector

    if not values:
        return set()
    arr = pa.array(list(values), pa.string())
    out: set[str] = set()
    for det in (ValidationDetector.from_repository(BUNDLED_RULES), PatternDetector.from_repository(BUNDLED_RULES)):
        if field in det.fields():
            out |= {values[i] for i in det.detect(field, arr).column("index").to_pylist()}
    return out


def _flagged(engine: Any, method: str, field: str, values: Sequence[str]) -> set[str]:
    if not values:
        return set()
    plan = engine.plan({"c": field}, [method])
    hits = engine.detect(plan, pa.record_batch({"c": pa.array(list(values), pa.string())}))
    return set(hits.column("value").to_pylist())


def quality(engine: Any, clean: Mapping[str, list[str]], errors: Mapping[str, list[tuple[str, str]]]
            ) -> list[dict[str, Any]]:
    """Per method and field type: FP rate on ``clean``, recall on ``errors`` (all, and those the rules pass)."""
    rows = []
    for method in ("ml", "llm"):
        if method not in engine.detectors:
            continue
        for field in sorted(engine.detectors[method].fields()):
            if field not in clean and field not in errors:
                continue
            wrong = [v for _, v in errors.get(field, [])]
            rule_miss = sorted(set(wrong) - _rules_flag(field, wrong))
            started = time.perf_counter()
            fp = _flagged(engine, method, field, clean.get(field, []))
            caught = _flagged(engine, method, field, wrong)
            seconds = time.perf_counter() - started
            kinds: dict[str, list[bool]] = {}
            for kind, v in errors.get(field, []):
                kinds.setdefault(kind, []).append(v in caught)
            n_clean = len(clean.get(field, []))
            rows.append({"method": method, "field": field, "clean": n_clean, "errors": len(wrong),
                         "fpr": len(fp) / max(1, n_clean), "recall": len(caught) / max(1, len(wrong)),
                         "rules_miss": len(rule_miss),
                         "recall_rules_miss": len(caught & set(rule_miss)) / max(1, len(rule_miss)),
                         "recall_by_kind": {k: float(np.mean(v)) for k, v in sorted(kinds.items())},
                         "values_per_s": round((n_clean + len(wrong)) / max(seconds, 1e-9), 1)})
    return rows


def scoring_comparison(engine: Any, clean: Mapping[str, list[str]], errors: Mapping[str, list[tuple[str, str]]],
                       per_field: int) -> dict[str, Any]:
    """Single-pass vs PLL on up to ``per_field`` clean values and as many errors per field type."""
    from .mlm_score import value_scores

    det = engine.detectors.get("llm")
    if det is None or not det.fields():
        return {}
    out: dict[str, Any] = {"fields": {}}
    all_single, all_pll = [], []
    time_single = time_pll = 0.0
    n_values = n_tokens = 0
    for field in sorted(det.fields()):
        good = (clean.get(field) or [])[:per_field]
        bad = [v for _, v in errors.get(field, [])][:per_field]
        texts = good + bad
        if not good or not bad:
            continue
        net = det.networks[field]
        t = time.perf_counter()
        encs, lp_single = net.token_logprobs(field, texts, "single")
        time_single += time.perf_counter() - t
        t = time.perf_counter()
        _, lp_pll = net.token_logprobs(field, texts, "pll")
        time_pll += time.perf_counter() - t
        how = det.entries[field].metadata.get("score", "min_logprob")
        s, p = value_scores(lp_single, how), value_scores(lp_pll, how)
        all_single += list(s)
        all_pll += list(p)
        n_values += len(texts)
        n_tokens += sum(int(e.value_mask.sum()) for e in encs)
        out["fields"][field] = {"spearman": spearman(s, p), "auc_single": auc(s[: len(good)], s[len(good):]),
                                "auc_pll": auc(p[: len(good)], p[len(good):]), "values": len(texts)}
    out.update({"spearman": spearman(np.array(all_single), np.array(all_pll)), "values": n_values,
                "tokens_per_value": n_tokens / max(1, n_values),
                "single_values_per_s": n_values / max(time_single, 1e-9),
                "pll_values_per_s": n_values / max(time_pll, 1e-9), "speed_ratio": time_pll / max(time_single, 1e-9),
                "backend": next(iter(det.networks.values())).backend.name})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--rows", type=int, default=20000, help="rows of the evaluation catalog (default 20000)")
    p.add_argument("--seed", type=int, default=7, help="catalog and error seed (training used 0/its own)")
    p.add_argument("--max-values", type=int, default=600, help="clean values per field type (default 600)")
    p.add_argument("--errors", type=int, default=150, help="semantic errors per field type (default 150)")
    p.add_argument("--pll-values", type=int, default=60, help="values per field and class for PLL (default 60)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog
    from dqd_server.engine.pipeline import Engine

    from .base import offline
    from .train import distinct_values

    offline()
    t = time.perf_counter()
    engine = Engine.from_repository(args.repo)
    load_s = time.perf_counter() - t
    table = generate_catalog(args.rows, seed=args.seed)
    fields = sorted({f for m in ("ml", "llm") if m in engine.detectors for f in engine.detectors[m].fields()})
    known: dict[str, set[str]] = {}
    for m in ("ml", "llm"):
        if m in engine.detectors:
            for f, arr in engine.detectors[m].known.items():
                known.setdefault(f, set()).update(arr.to_pylist())
    every = {f: distinct_values([table.column(c).to_pylist() for c, ft in CATALOG_COLUMNS.items() if ft == f],
                                10**9, args.seed) for f in fields if f in CATALOG_COLUMNS.values()}
    # FP rate: only values the models never saw (known ones are skipped, which would flatter the rate); closed
    # lists (colours, sizes, …) may have none. Errors: made from every clean value of the evaluation catalog.
    clean = {f: [v for v in vs if v not in known.get(f, set())][: args.max_values] for f, vs in every.items()}
    sources = {f: vs[: args.max_values] for f, vs in every.items() if vs}
    errors = semantic_errors(sources, args.errors, args.seed)
    rows = quality(engine, clean, errors)
    comparison = scoring_comparison(engine, clean, errors, args.pll_values)
    print(f"loaded {args.repo} in {load_s:.1f}s; unseen clean values per field: "
          + ", ".join(f"{f} {len(v)}" for f, v in clean.items()))
    print(f"{'method':6} {'field':18} {'clean':>5} {'FPR':>6} {'errors':>6} {'recall':>6} {'rules-miss':>10} "
          f"{'recall':>6}  by kind")
    for r in rows:
        kinds = " ".join(f"{k} {v:.2f}" for k, v in r["recall_by_kind"].items())
        print(f"{r['method']:6} {r['field']:18} {r['clean']:5d} {r['fpr']:6.3f} {r['errors']:6d} {r['recall']:6.3f} "
              f"{r['rules_miss']:10d} {r['recall_rules_miss']:6.3f}  {kinds}")
    for method in ("ml", "llm"):
        mine = [r for r in rows if r["method"] == method]
        if mine:
            c, e = sum(r["clean"] for r in mine), sum(r["errors"] for r in mine)
            rm = sum(r["rules_miss"] for r in mine)
            print(f"{method}: FPR {sum(r['fpr'] * r['clean'] for r in mine) / max(1, c):.4f} on {c} clean values; "
                  f"recall {sum(r['recall'] * r['errors'] for r in mine) / max(1, e):.3f} on {e} semantic errors, "
                  f"{sum(r['recall_rules_miss'] * r['rules_miss'] for r in mine) / max(1, rm):.3f} on the {rm} "
                  "the rules miss")
    if comparison:
        print(f"llm scoring: Spearman(single, PLL) = {comparison['spearman']:.3f} over {comparison['values']} values "
              f"({comparison['tokens_per_value']:.1f} tokens each); single {comparison['single_values_per_s']:.0f} "
              f"values/s, PLL {comparison['pll_values_per_s']:.0f} values/s (x{comparison['speed_ratio']:.1f}) on "
              f"{comparison['backend']}")
        for f, c in comparison["fields"].items():
            print(f"  {f:18} spearman {c['spearman']:.3f}  AUC single {c['auc_single']:.3f}  PLL {c['auc_pll']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"quality": rows, "scoring": comparison}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
