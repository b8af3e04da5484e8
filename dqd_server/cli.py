"""The ``dqd`` command: ``dqd serve`` runs the server, ``dqd config`` lists the settings, ``dqd demo`` shows
it end to end."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from .config import Settings, SettingsError, settings_markdown
from .models import train_cli
from .tools_cli import COMMANDS as TOOL_COMMANDS
from .tools_cli import add_subcommands as add_tool_subcommands
from .tools_cli import run as run_tool


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dqd", description="dqd — Data Quality Detection service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server (env: API_HOST, API_PORT, MODEL_PATH, …)")
    serve.add_argument("--host", help="address to bind (default: API_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: API_PORT or 50051; 0 picks a free one)")
    serve.add_argument("--rules", type=Path, help="rules/model repository (default: MODEL_PATH or bundled)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default: API_WORKERS or 1)")
    serve.add_argument("--metrics-port", type=int,
                       help="Prometheus /metrics port (default: METRICS_PORT or 9090; 0 picks a free one)")
    config = sub.add_parser("config", help="list every setting (environment variable), its value and meaning")
    config.add_argument("--markdown", action="store_true", help="print the defaults as a Markdown table")
    hash_key = sub.add_parser("hash-key", help="print the API_KEYS_FILE line for an API key (read from stdin "
                                               "when not given, so it stays out of the shell history)")
    hash_key.add_argument("key", nargs="?", help="the API key (default: read one line from stdin)")
    demo = sub.add_parser("demo", help="start a server, stream a generated catalog with injected errors, "
                                       "print the summary with precision and recall")
    demo.add_argument("--rows", type=int, default=200_000, help="catalog rows (default 200000)")
    demo.add_argument("--error-rate", type=float, default=0.02, help="share of cells made wrong (default 0.02)")
    demo.add_argument("--batch-size", type=int, default=20_000, help="rows per streamed batch")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--target", help="use this running server instead of starting one")
    demo.add_argument("--semantic", type=float, default=0.0,
                      help="also make this share of the descriptive cells well-formed but wrong (a value of "
                           "another field, a foreign word, shuffled words): errors for the ml/llm methods")
    demo.add_argument("--methods", help="comma-separated methods to run (default: the server's default)")
    demo.add_argument("--write", metavar="FILE", help="write the dirty catalog (CSV, or Parquet by extension) and "
                                                      "FILE.injected.csv instead of checking it")
    add_tool_subcommands(sub)
    train_cli.add_subcommand(sub)
    args = parser.parse_args(argv)

    if args.command == "train":
        sys.exit(train_cli.run(args))

    if args.command in TOOL_COMMANDS:
        sys.exit(run_tool(args))

    if args.command == "config" and args.markdown:
        print(settings_markdown())
        return
    if args.command == "hash-key":
        from .auth import hash_key as hashed

        key = args.key if args.key is not None else sys.stdin.readline().strip()
        if not key:
            parser.exit(2, "dqd: hash-key needs a non-empty key\n")
        print(hashed(key))
        return
    try:
        if args.command == "serve":
            settings = Settings.from_env(api_host=args.host, api_port=args.port, model_path=args.rules,
                                         api_workers=args.workers, metrics_port=args.metrics_port)
        else:
            settings = Settings.from_env()
    except SettingsError as exc:
        parser.exit(2, f"dqd: configuration error: {exc}\n")

    if args.command == "config":
        values = settings.to_env()
        for name, default, text in Settings.describe():
            print(f"{name}={values[name]}    # {text} (default {default})")
        return
    if args.command == "serve":
        sys.exit(_serve(settings))
    else:
        _setup_logging(settings.effective_log_level)
        from .demo import run_demo

        sys.exit(run_demo(rows=args.rows, error_rate=args.error_rate, batch_size=args.batch_size,
                          seed=args.seed, target=args.target, semantic=args.semantic, write=args.write,
                          methods=args.methods.split(",") if args.methods else None))


def _serve(settings: Settings) -> int:
    """``dqd serve``: one server process, a supervisor of API_WORKERS processes, or one of its workers."""
    from .server import StartupError
    from .workers import WORKER_ENV, run_supervisor

    worker = os.environ.get(WORKER_ENV)  # internal: set by the supervisor for the processes it starts
    multi = worker is not None or settings.api_workers > 1
    fields: dict[str, object] = {}
    if multi:
        fields = {"worker": int(worker)} if worker is not None else {"role": "supervisor"}
        fields["pid"] = os.getpid()
    _setup_logging(settings.effective_log_level, fields)
    if worker is None:
        for note in settings.unenforced():
            logging.getLogger("dqd.config").warning(note)

    def ready(address: str) -> None:
        print(f"dqd listening on {address}", flush=True)

    def metrics_ready(address: str) -> None:
        print(f"dqd metrics on http://{address}/metrics", flush=True)

    try:
        if worker is None and settings.api_workers > 1:
            return run_supervisor(settings, on_ready=ready, on_metrics=metrics_ready)
        from .server import serve as run_server

        asyncio.run(run_server(settings, on_ready=ready, on_metrics=metrics_ready, worker=worker))
    except StartupError as exc:
        print(f"dqd: {exc}", file=sys.stderr)
        return 1
    return 0


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, so log shippers need no parsing rules.

    ``fields`` go into every line: with API_WORKERS > 1, ``worker`` (0…N-1) and ``pid`` in the workers'
    lines, ``role: supervisor`` and ``pid`` in the supervisor's.
    """

    def __init__(self, fields: dict[str, object] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 **self.fields, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(level: str, fields: dict[str, object] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(fields))
    logging.basicConfig(level=level.upper(), handlers=[handler])
