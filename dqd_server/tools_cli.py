"""``dqd profile``, ``dqd evaluate`` and ``dqd inject``: learn rules from a table, measure detection, make test data.

Wired into ``dqd`` by ``cli.py`` with ``add_subcommands(sub)`` and ``run(args)``; ``main(argv)`` runs them alone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COMMANDS = ("profile", "evaluate", "inject")


def add_subcommands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Add ``profile``, ``evaluate`` and ``inject`` to a ``dqd`` sub-parser set."""
    p = sub.add_parser("profile", help="learn rules for every column of a table (a rules repository dqd serve loads)",
                       description="Learn, for every column of TABLE, how missing values are spelled, the type and "
                                   "written form of numbers, allowed and frequent values, letter/digit shapes, "
                                   "lengths and ranges — and dependencies between columns — from the table's "
                                   "majority, and write them as a rules repository: dqd serve --rules DIR.")
    p.add_argument("--data", required=True, type=Path, metavar="TABLE", help="CSV/TSV, Parquet, Arrow or JSON lines")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="rules repository to write (or add a "
                                                                            "version to)")
    p.add_argument("--name", help="table name, the prefix of field types <name>__<column> (default: file stem)")
    p.add_argument("--no-dependencies", action="store_true", help="skip cross-column dependencies")
    p.add_argument("--json", action="store_true", help="print what was learned as JSON")

    e = sub.add_parser("evaluate", help="measure detection: precision/recall/F1 per column × method",
                       description="Two modes. --dirty D --clean C: ground truth = cells whose text differs "
                                   "(columns aligned by position; the clean table is only used for scoring). "
                                   "--clean C alone: errors are injected first (see dqd inject). Unsupervised by "
                                   "default: the dirty table is profiled and checked with its own profile.")
    e.add_argument("--dirty", type=Path, metavar="DIRTY", help="the table as it is")
    e.add_argument("--clean", type=Path, metavar="CLEAN", required=True,
                   help="its clean version (with --dirty) or a clean table to inject errors into")
    e.add_argument("--name", help="table name for field types (default: the dirty/clean file stem)")
    e.add_argument("--profile", type=Path, metavar="DIR", help="use this rules repository instead of profiling")
    e.add_argument("--profile-out", type=Path, metavar="DIR", help="keep the profile learned from the dirty table here")
    e.add_argument("--methods", default="validation,pattern,dependency,combined",
                   help="comma-separated methods (default: validation,pattern,dependency,combined)")
    e.add_argument("--batch-size", type=int, default=10_000, help="rows per batch (default 10000)")
    e.add_argument("--target", metavar="HOST:PORT", help="detect through this running server (dqd serve --rules DIR) "
                                                         "with the client library instead of in-process")
    e.add_argument("--api-key", help="API key for --target")
    e.add_argument("--json", dest="json_out", type=Path, metavar="OUT.json", help="write all scores as JSON")
    e.add_argument("--report", type=Path, metavar="REPORT.html", help="write a self-contained HTML report")
    e.add_argument("--write-weights", action="store_true",
                   help="store each method's measured F1 per field type in the profile (weights of 'combined')")
    e.add_argument("--rules", dest="injection_rules", metavar="RULES.yaml",
                   help="injection rules (inject mode; 'catalog' for the product-catalog set)")
    e.add_argument("--rate", type=float, help="share of cells to corrupt (inject mode; default from the rules)")
    e.add_argument("--seed", type=int, default=0, help="injection seed (default 0)")
    e.add_argument("--dirty-out", type=Path, help="inject mode: also write the dirty table here")
    e.add_argument("--log-out", type=Path, help="inject mode: also write the injected cells here")
    e.add_argument("--quiet", "-q", action="store_true", help="print only the overall scores")

    i = sub.add_parser("inject", help="inject errors into a clean table, reproducibly (declarative rules, a seed)")
    i.add_argument("--data", required=True, type=Path, metavar="CLEAN")
    i.add_argument("--out", required=True, type=Path, metavar="DIRTY", help="the dirty table (CSV, Parquet, Arrow)")
    i.add_argument("--log", type=Path, metavar="INJECTED", help="the injected cells: row, column, kind, original, "
                                                                 "dirty (default: DIRTY.injected.csv)")
    i.add_argument("--rules", metavar="RULES.yaml", help="injection rules (default: a generic set by column kind; "
                                                          "'catalog': the product-catalog set)")
    i.add_argument("--rate", type=float, help="share of each column's cells to corrupt (overrides the rules)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--map", dest="maps", action="append", default=[], metavar="COLUMN=FIELD_TYPE",
                   help="use FIELD_TYPE's rules for COLUMN (default: rules by column name)")


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``profile``/``evaluate``/``inject`` command; returns the exit code."""
    try:
        if args.command == "profile":
            return _profile(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "inject":
            return _inject(args)
    except (ValueError, OSError) as exc:
        print(f"dqd {args.command}: {exc}", file=sys.stderr)
        return 2
    raise ValueError(f"unknown command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dqd", description="dqd profile / evaluate / inject")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    return run(parser.parse_args(argv))


# ---- profile ---------------------------------------------------------------------------------------------------

def _profile(args: argparse.Namespace) -> int:
    from .profiling.learn import profile_table
    from .profiling.tables import read_table, table_name_of
    from .profiling.write import summary, write_profile

    table = read_table(args.data)
    name = args.name or table_name_of(args.data)
    profile = profile_table(table, name, dependencies=not args.no_dependencies)
    written = write_profile(profile, args.out)
    if args.json:
        print(json.dumps(summary(profile), indent=2, default=str))
        return 0
    print(f"profiled {args.data} ({profile.rows:,} rows × {len(profile.columns)} columns) into {args.out}; "
          f"missing values are written {'as empty cells' if profile.null_form == '' else repr(profile.null_form)}")
    print(f"\n{'column':<24}{'field type':<34}{'kind':<9}{'checks'}")
    for col in profile.columns:
        print(f"{col.column[:23]:<24}{col.field_type[:33]:<34}{col.kind:<9}{', '.join(_checks(col))}")
    for d in profile.dependencies:
        print(f"dependency  {d.describe()}")
    for s in profile.spills:
        print(f"spill       {s.describe()}")
    print(f"\n{len(written)} field types written; serve them with: dqd serve --rules {args.out}")
    return 0


def _checks(col: Any) -> list[str]:
    out = []
    if col.token_list and col.null_tokens:
        out.append("null tokens " + "/".join(sorted(col.null_tokens)))
    if col.kind == "numeric":
        out.append(f"form {col.canonical_form}")
        if col.number_range:
            out.append(f"range {col.number_range[0]:g}..{col.number_range[1]:g}")
    if col.allowed:
        out.append(f"{len(col.allowed)} allowed values")
    if col.known:
        out.append(f"{len(col.known)} known values")
    if col.vocabulary:
        out.append(f"{len(col.vocabulary)} words")
    if col.shapes:
        out.append(f"shapes {'|'.join(s for s, _ in col.shapes)}")
    if col.fixed_length:
        out.append(f"length {col.fixed_length}")
    if col.required:
        out.append("required")
    return out or ["-"]


# ---- evaluate --------------------------------------------------------------------------------------------------

def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation.run import evaluate_injected, evaluate_pair, write_weights

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    common: dict[str, Any] = dict(name=args.name, profile_dir=args.profile, profile_out=args.profile_out,
                                  methods=methods, batch_size=args.batch_size, target=args.target,
                                  client_options={"api_key": args.api_key} if args.api_key else None)
    if args.dirty is not None:
        ev = evaluate_pair(args.dirty, args.clean, **common)
        source = args.dirty
    else:
        ev = evaluate_injected(args.clean, rules=args.injection_rules, rate=args.rate, seed=args.seed, **common)
        source = args.clean
        from .profiling.tables import write_table

        if args.dirty_out:
            write_table(ev.dirty, args.dirty_out)
        if args.log_out and ev.injected is not None:
            write_table(ev.injected, args.log_out)
    result = ev.result
    _print_evaluation(result, quiet=args.quiet)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    if args.report:
        from .report import render_report

        render_report(ev.dirty, ev.findings, evaluation=result, truth=ev.truth, path=args.report,
                      title=f"dqd evaluation of {Path(source).name}")
        print(f"report: {args.report}")
    if args.write_weights:
        repo = args.profile or args.profile_out
        if repo is None:
            print("dqd evaluate: --write-weights needs --profile or --profile-out (where the weights go)",
                  file=sys.stderr)
            return 2
        written = write_weights(repo, result)
        print(f"weights written to {len(written)} field types in {repo}")
    return 0


def _print_evaluation(r: dict[str, Any], quiet: bool = False) -> None:
    t, o = r["table"], r["overall"]
    print(f"{r.get('name')}: {t['rows']:,} rows × {t['columns']} columns, {t['errors']:,} erroneous cells "
          f"({t['error_rate']:.1%}); mode {r.get('mode')}; {'profiled unsupervised' if r.get('profiled') else 'profile ' + str(r.get('profile'))}"
          + (f"; through {r['target']}" if r.get("target") else ""))
    print(f"overall ({o['verdict']}): precision {o['precision']:.3f}  recall {o['recall']:.3f}  F1 {o['f1']:.3f}  "
          f"(tp {o['tp']:,}  fp {o['fp']:,}  fn {o['fn']:,}  tn {o.get('tn', 0):,})")
    if quiet:
        return
    print(f"\n{'method':<12}{'precision':>10}{'recall':>9}{'F1':>8}{'tp':>8}{'fp':>7}{'fn':>8}")
    for m, s in r["methods"].items():
        print(f"{m:<12}{s['precision']:>10.3f}{s['recall']:>9.3f}{s['f1']:>8.3f}{s['tp']:>8,}{s['fp']:>7,}{s['fn']:>8,}")
    methods = list(r["methods"])
    print(f"\n{'column':<22}{'errors':>7}  " + "".join(f"{m[:11]:>12}" for m in methods) + "   (F1; precision/recall)")
    for col, c in r["columns"].items():
        cells = []
        for m in methods:
            s = c["methods"][m]
            cells.append(f"{s['f1']:>12.3f}" if c["errors"] or s["fp"] else f"{'-':>12}")
        print(f"{col[:21]:<22}{c['errors']:>7}  " + "".join(cells))
    if "injection" in r:
        kinds = r["injection"]["recall_by_kind"]
        print("\nrecall by injected kind: " + ", ".join(f"{k} {v:.2f}" for k, v in kinds.items()))


# ---- inject ----------------------------------------------------------------------------------------------------

def _inject(args: argparse.Namespace) -> int:
    from .injection import inject, load_rules
    from .profiling.tables import read_table, write_table

    mapping = {}
    for item in args.maps:
        column, sep, field = item.partition("=")
        if not sep or not column or not field:
            raise ValueError(f"--map {item!r}: expected COLUMN=FIELD_TYPE")
        mapping[column] = field
    table = read_table(args.data)
    dirty, injected = inject(table, load_rules(args.rules), seed=args.seed, rate=args.rate, columns=mapping or None)
    write_table(dirty, args.out)
    log = args.log or args.out.with_name(args.out.stem + ".injected.csv")
    write_table(injected, log)
    kinds: dict[str, int] = {}
    for k in injected.column("kind").to_pylist():
        kinds[k] = kinds.get(k, 0) + 1
    print(f"injected {injected.num_rows:,} errors into {table.num_rows:,} rows × {table.num_columns} columns "
          f"(seed {args.seed}): " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    print(f"dirty table: {args.out}\ninjected cells: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
