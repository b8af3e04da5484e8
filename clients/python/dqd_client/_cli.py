"""The dqd-client command line: check a file, list the server's field types, probe its health."""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ._client import Client
from ._exceptions import DqdError, InputError, RpcError
from ._io import DEFAULT_BATCH_SIZE, FORMATS, detect_format
from ._models import FINDINGS_SCHEMA, Summary
from ._report import render_report
from ._output import FindingsWriter, Progress, format_table
from ._version import __version__

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_RPC, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_TARGET = "localhost:50051"


def _pair(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.rpartition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return key.strip(), value.strip()


def _map_arg(text: str) -> tuple[str, str]:
    return _pair(text, "COLUMN=FIELD_TYPE")


def _threshold_arg(text: str) -> tuple[str, float]:
    key, value = _pair(text, "METHOD=NUMBER")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {text!r}: {value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold {text!r}: expected a confidence in [0, 1]")
    return key, number


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dqd-client`` (exposed for tests and docs)."""
    conn = argparse.ArgumentParser(add_help=False)
    group = conn.add_argument_group("connection")
    group.add_argument("--target", default=os.environ.get("DQD_TARGET") or DEFAULT_TARGET,
                       help="server HOST:PORT (default: $DQD_TARGET or %(default)s)")
    group.add_argument("--tls", action="store_true", help="use TLS (implied by --ca)")
    group.add_argument("--ca", metavar="CA.pem", help="PEM file of the CA that signed the server certificate")
    group.add_argument("--server-name", metavar="NAME",
                       help="expect this name in the server certificate instead of the target host")
    group.add_argument("--api-key", default=os.environ.get("DQD_API_KEY"),
                       help="API key sent as x-api-key (default: $DQD_API_KEY)")
    group.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                       help="deadline per call (default: 30 for health/fields, none for check)")

    parser = argparse.ArgumentParser(prog="dqd-client", description="Client of the dqd data quality service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", parents=[conn], help="check a file and write its findings",
                           description="Stream FILE to the server and collect the findings.")
    check.add_argument("file", metavar="FILE",
                       help=f"input file: {', '.join(sorted(FORMATS))} (CSV: every column is text, empty = null)")
    check.add_argument("--map", dest="maps", action="append", type=_map_arg, required=True,
                       metavar="COLUMN=FIELD_TYPE", help="check COLUMN as FIELD_TYPE (repeatable)")
    check.add_argument("--methods", help="comma-separated methods, e.g. validation,pattern (default: all)")
    check.add_argument("--threshold", dest="thresholds", action="append", type=_threshold_arg, default=[],
                       metavar="METHOD=CONF", help="minimum confidence per method or FIELD.METHOD (repeatable)")
    check.add_argument("--emit", choices=("flagged", "all"), default="flagged",
                       help="flagged cells only, or a score for every checked cell (default: flagged)")
    check.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                       help="rows per message (default: %(default)s)")
    check.add_argument("--format", choices=sorted(set(FORMATS.values())),
                       help="input format (default: from the file name)")
    check.add_argument("--out", metavar="FINDINGS.parquet|.csv", help="write the findings to this file")
    check.add_argument("--job-key", default="", help="idempotency key of this job")
    check.add_argument("--persist", action="store_true", help="have the server store the job for `dqd-client job`")
    check.add_argument("--report", metavar="REPORT.html",
                       help="also write a self-contained HTML report (flagged cells coloured by method, filters, "
                            "charts); the file is read a second time for the rows with findings")
    check.add_argument("--resume", action="store_true",
                       help="with --job-key: survive a lost connection or replica by reconnecting and continuing "
                            "after the last batch the server stored; rerun the same command to continue a job "
                            "that stopped (implies --persist)")
    check.add_argument("--fail-on-findings", action="store_true", help="exit 1 when anything is flagged")
    check.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

    sub.add_parser("health", parents=[conn], help="print the server's health status",
                   description="Print SERVING, NOT_SERVING, … (exit 0 only when SERVING).")
    job = sub.add_parser("job", parents=[conn], help="show a persisted job by id or --key",
                         description="Show a job stored with `check --persist`.")
    job.add_argument("job_id", nargs="?", default="", metavar="JOB_ID", help="the job id printed by check")
    job.add_argument("--key", default="", help="look the job up by its --job-key instead")
    sub.add_parser("fields", parents=[conn], help="list the field types, methods and versions",
                   description="List the field types the server can check.")
    return parser


def _client(args: argparse.Namespace, default_timeout: float | None) -> Client:
    timeout = args.timeout if args.timeout is not None else default_timeout
    return Client(args.target, tls=args.tls or bool(args.ca), root_certificates=args.ca,
                  server_name_override=args.server_name, api_key=args.api_key, timeout=timeout)


def _total_rows(path: str, fmt: str) -> int | None:
    if fmt != "parquet":
        return None
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - the real reader reports the error properly
        return None


def _cmd_check(args: argparse.Namespace) -> int:
    columns: dict[str, str] = {}
    for column, field in args.maps:
        if column in columns and columns[column] != field:
            raise InputError(f"column {column!r} is mapped twice ({columns[column]} and {field})")
        columns[column] = field
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    fmt = args.format or detect_format(args.file)
    if args.out:
        FindingsWriter.check_path(args.out)
    writer: FindingsWriter | None = None
    with _client(args, None) as client:
        started = time.monotonic()
        stream = client.check_file(args.file, columns, batch_size=args.batch_size, format=fmt,
                                   methods=methods, thresholds=dict(args.thresholds),
                                   emit=args.emit, job_key=args.job_key, persist=args.persist,
                                   resume=args.resume, timeout=args.timeout)
        with stream:
            writer = FindingsWriter(args.out) if args.out else None
            progress = Progress(_total_rows(args.file, fmt), enabled=not args.quiet)
            kept: list[pa.RecordBatch] = []  # findings for --report (findings are few next to the input)
            try:
                for result in stream:
                    if args.report:
                        kept.append(result.findings)
                    if writer is not None:
                        writer.write(result.findings)
                    progress.update(result.num_rows, result.num_findings)
            except BaseException:
                if writer is not None:
                    print(f"dqd-client: stopped after {progress.rows:,} rows; the findings so far "
                          f"({writer.rows:,}) are in {writer.path}", file=sys.stderr)
                raise
            finally:
                progress.close()
                if writer is not None:
                    writer.close()
        elapsed = time.monotonic() - started
    summary = stream.summary
    assert summary is not None  # an exhausted stream always has one, or raised
    print(_summary_text(summary, elapsed))
    if writer is not None:
        print(f"findings written to {writer.path} ({writer.rows:,} rows)")
    if args.report:
        findings = pa.Table.from_batches(kept, schema=FINDINGS_SCHEMA)
        print(f"report: {render_report(args.file, findings, path=args.report, columns=list(columns), format=fmt)}")
    return EXIT_FINDINGS if args.fail_on_findings and summary.findings > 0 else EXIT_OK


def _summary_text(summary: Summary, elapsed: float) -> str:
    rows = sorted(((c.column, c.field, c.method, c.count) for c in summary.counts))
    table = format_table(("column", "field", "method", "findings"), rows) if rows else "(no counts)"
    rate = summary.rows / elapsed if elapsed > 0 else 0.0
    facts = [("rows", f"{summary.rows:,}"), ("batches", f"{summary.batches:,}"),
             ("cells checked", f"{summary.cells_checked:,}"), ("findings", f"{summary.findings:,}"),
             ("elapsed", f"{elapsed:.2f} s (server {summary.elapsed_seconds:.2f} s)"),
             ("rows/s", f"{rate:,.0f}"), ("job id", summary.job_id or "-")]
    width = max(len(k) for k, _ in facts)
    return table + "\n\n" + "\n".join(f"{k.ljust(width)}  {v}" for k, v in facts)


def _cmd_health(args: argparse.Namespace) -> int:
    with _client(args, 30.0) as client:
        status = client.health()
    print(status)
    return EXIT_OK if status == "SERVING" else EXIT_FINDINGS


def _cmd_job(args: argparse.Namespace) -> int:
    if bool(args.job_id) == bool(args.key):
        raise InputError("give a JOB_ID or --key KEY (one of them)")
    with _client(args, 30.0) as client:
        job = client.get_job(args.job_id, job_key=args.key)
    facts = [("job id", job.job_id), ("job key", job.job_key or "-"), ("status", job.status),
             ("created", job.created_at or "-"), ("finished", job.finished_at or "-"),
             ("rows", f"{job.rows:,}"), ("data file", job.data_file or "-"),
             ("findings file", job.findings_path or "-"), ("error", job.error or "-")]
    width = max(len(k) for k, _ in facts)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in facts))
    if job.summary is not None:
        print()
        print(_summary_text(job.summary, job.summary.elapsed_seconds))
    return EXIT_OK


def _cmd_fields(args: argparse.Namespace) -> int:
    with _client(args, 30.0) as client:
        fields = client.list_fields()
    rows: list[tuple[object, ...]] = []
    for f in sorted(fields, key=lambda f: f.name):
        description = f.description if len(f.description) <= 80 else f.description[:79] + "…"
        methods = [(m.method, m.version, m.checks) for m in f.methods] or [("-", "-", "-")]
        for i, (method, version, checks) in enumerate(methods):
            rows.append((f.name if i == 0 else "", method, version, checks, description if i == 0 else ""))
    print(format_table(("field", "method", "version", "checks", "description"), rows))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it).

    0 ok; 1 findings with --fail-on-findings (for ``health``: not SERVING); 2 usage or input
    error; 3 server/RPC error; 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command = {"check": _cmd_check, "health": _cmd_health, "fields": _cmd_fields, "job": _cmd_job}[args.command]
    try:
        return command(args)
    except InputError as exc:
        print(f"dqd-client: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RpcError as exc:
        print(f"dqd-client: server error {exc.status}: {exc.details or '(no details)'} "
              f"[target {args.target}]", file=sys.stderr)
        return EXIT_RPC
    except DqdError as exc:
        print(f"dqd-client: server error: {exc}", file=sys.stderr)
        return EXIT_RPC
    except KeyboardInterrupt:
        print("dqd-client: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
