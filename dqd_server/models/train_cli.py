"""``dqd train``: learn the model-based methods from a clean file and publish them into a model repository.

    dqd train --data clean.csv --map material=material --map colour=color_name --methods ml,llm --out REPO
    dqd train --catalog 50000 --out REPO          # the bundled sample catalog, every catalog column

Wire-up (cli.py): ``train_cli.add_subcommand(sub)`` while building the parser, then
``sys.exit(train_cli.run(args))`` when ``args.command == "train"``. Prints one line per published version (held-out
false-positive rate, recall on injected semantic errors, estimated precision at 2 % errors, AUC) and the time each
phase took; ``--json`` prints the same as JSON. Exit status 0, or 2 with a message for bad arguments or data.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to ``dqd``'s subcommands."""
    p = subparsers.add_parser("train", help="train the ml/llm methods from clean data into a model repository")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="clean data: CSV, TSV, Parquet, Arrow/Feather or JSON lines")
    src.add_argument("--catalog", type=int, metavar="ROWS", help="train on a generated catalog of ROWS rows")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD_TYPE",
                   help="column of the data and its field type (repeat); --catalog maps every catalog column")
    p.add_argument("--methods", default="ml,llm", help="comma-separated: ml, llm (default both)")
    p.add_argument("--out", type=Path, required=True, help="model repository to publish into (usually MODEL_PATH)")
    p.add_argument("--max-values", type=int, default=2000, help="distinct values per field type (default 2000)")
    p.add_argument("--steps", type=int, default=400, help="masked-LM fine-tuning steps (default 400)")
    p.add_argument("--time-budget", type=float, default=150.0,
                   help="seconds the masked-LM fine-tuning may take at most (default 150)")
    p.add_argument("--scoring", choices=("single", "pll"), default="single",
                   help="llm scoring served: single pass (default) or pseudo-log-likelihood")
    p.add_argument("--llm-score", choices=("min_logprob", "max_excess"), default="min_logprob",
                   help="llm value score: least likely token (default) or largest excess surprisal")
    p.add_argument("--max-fpr", type=float, default=0.01,
                   help="share of held-out clean values a threshold may flag (default 0.01)")
    p.add_argument("--min-auc", type=float, default=0.6,
                   help="publish a version inactive (flags nothing) below this held-out AUC (default 0.6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``dqd train``; 0 on success, 2 for bad arguments or data."""
    from dqd_server.models.base import offline

    offline()
    _log_to_stderr()
    try:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - {"ml", "llm"})
        if unknown or not methods:
            raise ValueError(f"--methods: unknown {unknown}; use ml, llm or ml,llm")
        table, mapping = _load(args)
    except (ValueError, OSError, pa.ArrowException) as exc:
        print(f"dqd train: {exc}", file=sys.stderr)
        return 2
    from dqd_server.models.train import TrainOptions, distinct_values, train_repository

    by_field: dict[str, list[list[str | None]]] = {}
    for column, field_type in mapping.items():
        by_field.setdefault(field_type, []).append(table.column(column).cast(pa.string()).to_pylist())
    values = {f: distinct_values(cols, args.max_values, args.seed) for f, cols in by_field.items()}
    options = TrainOptions(max_values=args.max_values, mlm_steps=args.steps, mlm_time_budget=args.time_budget,
                           scoring=args.scoring, value_score=args.llm_score, max_fpr=args.max_fpr, min_auc=args.min_auc,
                           seed=args.seed)
    started = time.perf_counter()
    report = train_repository(values, methods, args.out, options)
    total = time.perf_counter() - started
    if args.json:
        print(json.dumps({"out": str(report.out), "seconds": {**report.seconds, "total": round(total, 2)},
                          "entries": report.entries}, indent=2))
        return 0
    print(f"{'version':42} {'fpr':>6} {'recall':>6} {'prec@2%':>7} {'auc':>6}")
    for e in report.entries:
        note = "" if e["active"] else f"  inactive: held-out AUC below {args.min_auc}"
        print(f"{e['path']:42} {e['fpr']:6.3f} {e['recall']:6.3f} {e['precision_at_2pct']:7.3f} {e['auc']:6.3f}{note}")
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    print(f"trained {', '.join(methods)} for {len(values)} field types in {total:.1f}s ({phases})")
    return 0


def _load(args: argparse.Namespace) -> tuple[pa.Table, dict[str, str]]:
    mapping: dict[str, str] = {}
    for item in args.map:
        column, sep, field_type = item.partition("=")
        if not sep or not column or not field_type:
            raise ValueError(f"--map {item!r}: use COLUMN=FIELD_TYPE")
        mapping[column] = field_type
    if args.catalog is not None:
        from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog

        table = generate_catalog(args.catalog, seed=args.seed)
        mapping = mapping or dict(CATALOG_COLUMNS)
    else:
        from dqd_server.profiling.tables import read_table  # every CSV column as text, typed columns cast

        table = read_table(args.data)
        if not mapping:
            raise ValueError("--map COLUMN=FIELD_TYPE is required with --data")
    missing = [c for c in mapping if c not in table.column_names]
    if missing:
        raise ValueError(f"columns {missing} are not in the data; it has {table.column_names[:30]}")
    return table, mapping


def main(argv: list[str] | None = None) -> int:
    """``python -m dqd_server.models.train_cli ...`` (same arguments as ``dqd train``)."""
    parser = argparse.ArgumentParser(prog="dqd")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommand(sub)
    return run(parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)]))



def _log_to_stderr() -> None:
    """Progress of dqd's own training at INFO (not the exporters' chatter on the root logger)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("dqd.models")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
