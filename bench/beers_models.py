"""ml and llm on real errors of other kinds than they were trained against: the beers table (Raha benchmark).

    python bench/beers_models.py [--data ../shared/data/beers] [--json bench/results/beers_models.json]

The model-based methods are calibrated and measured on injected semantic errors (``models/corrupt.py``), the same
kinds their training uses as negatives. This is the independent check: the real dirty/clean beers pair, ground
truth = cells whose text differs (columns aligned by position). The models are trained (``train_repository``,
default options, into a temp dir) on the *clean* values of the even rows only and then check the *dirty* odd rows,
so no tested cell's clean value was seen in training as such. Prints precision and recall per method and column
and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa

from dqd_server.engine.pipeline import Engine
from dqd_server.models.train import TrainOptions, distinct_values, train_repository
from dqd_server.profiling.tables import read_table

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["beer_name", "style", "ounces", "abv", "ibu", "brewery_name", "city", "state"]  # the dirty file's names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "beers")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "beers_models.json")
    args = p.parse_args(argv)
    dirty, clean = read_table(args.data / "dirty.csv"), read_table(args.data / "clean.csv")  # all text
    position = {c: dirty.column_names.index(c) for c in COLUMNS}  # the clean file names them differently
    train_rows = pa.array(range(0, dirty.num_rows, 2))
    test_rows = pa.array(range(1, dirty.num_rows, 2))
    values = {f"beers_{c}": distinct_values([clean.column(position[c]).take(train_rows).to_pylist()], 2000, 0)
              for c in COLUMNS}
    test = pa.table({c: dirty.column(position[c]).take(test_rows) for c in COLUMNS})
    truth_table = pa.table({c: clean.column(position[c]).take(test_rows) for c in COLUMNS})
    truth = {(r, c) for c in COLUMNS
             for r, (a, b) in enumerate(zip(test.column(c).to_pylist(), truth_table.column(c).to_pylist())) if a != b}
    result: dict = {"train_rows": len(train_rows), "test_rows": len(test_rows), "erroneous_cells": len(truth),
                    "distinct_training_values": {k: len(v) for k, v in values.items()}, "methods": {}}
    with tempfile.TemporaryDirectory(prefix="dqd-beers-") as tmp:
        started = time.perf_counter()
        train_repository(values, ("ml", "llm"), Path(tmp) / "repo", TrainOptions())
        result["train_seconds"] = round(time.perf_counter() - started, 1)
        engine = Engine.from_repository(Path(tmp) / "repo")
        batch = test.combine_chunks().to_batches()[0]
        for method in ("ml", "llm"):
            plan = engine.plan({c: f"beers_{c}" for c in COLUMNS}, [method])
            found = {(r["row"], r["column"]) for r in engine.detect(plan, batch).to_pylist()}
            per = {}
            for c in COLUMNS:
                mine, errors = {x for x in found if x[1] == c}, {x for x in truth if x[1] == c}
                per[c] = {"errors": len(errors), "flagged": len(mine), "true_positives": len(mine & errors)}
            tp = len(found & truth)
            result["methods"][method] = {"flagged": len(found), "true_positives": tp,
                                         "precision": tp / max(1, len(found)), "recall": tp / max(1, len(truth)),
                                         "columns": per}
    print(f"beers: trained on the clean values of {result['train_rows']} rows in {result['train_seconds']} s, "
          f"checked {result['test_rows']} dirty rows with {len(truth)} erroneous cells")
    print(f"{'column':14} {'errors':>6}" + "".join(f" {m + ' found/flagged':>18}" for m in result["methods"]))
    for c in COLUMNS:
        cells = [result["methods"][m]["columns"][c] for m in result["methods"]]
        print(f"{c:14} {cells[0]['errors']:6d}" + "".join(f" {x['true_positives']:>8d}/{x['flagged']:<9d}"
                                                         for x in cells))
    for m, r in result["methods"].items():
        print(f"{m}: precision {r['precision']:.3f}  recall {r['recall']:.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
