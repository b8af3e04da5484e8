"""The ``dqd`` command: ``dqd serve`` runs the server, ``dqd demo`` shows it end to end."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from .config import Settings, SettingsError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dqd", description="dqd — Data Quality Detection service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server (env: API_HOST, API_PORT, MODEL_PATH, …)")
    serve.add_argument("--host", help="address to bind (default: API_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: API_PORT or 50051; 0 picks a free one)")
    serve.add_argument("--rules", type=Path, help="rules/model repository (default: MODEL_PATH or bundled)")
    demo = sub.add_parser("demo", help="start a server, stream a generated catalog with injected errors, "
                                       "print the summary with precision and recall")
    demo.add_argument("--rows", type=int, default=200_000, help="catalog rows (default 200000)")
    demo.add_argument("--error-rate", type=float, default=0.02, help="share of cells made wrong (default 0.02)")
    demo.add_argument("--batch-size", type=int, default=20_000, help="rows per streamed batch")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--target", help="use this running server instead of starting one")
    args = parser.parse_args(argv)

    try:
        if args.command == "serve":
            settings = Settings.from_env(api_host=args.host, api_port=args.port, model_path=args.rules)
        else:
            settings = Settings.from_env()
    except SettingsError as exc:
        parser.exit(2, f"dqd: configuration error: {exc}\n")
    _setup_logging(settings.log_level)

    if args.command == "serve":
        from .server import serve as run_server

        def ready(address: str) -> None:
            print(f"dqd listening on {address}", flush=True)

        asyncio.run(run_server(settings, on_ready=ready))
    else:
        from .demo import run_demo

        sys.exit(run_demo(rows=args.rows, error_rate=args.error_rate, batch_size=args.batch_size,
                          seed=args.seed, target=args.target))


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, so log shippers need no parsing rules."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
