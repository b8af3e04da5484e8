"""One typed settings object, read from the environment (the deployment guide's names) in main().

Every field is one environment variable (the field name in upper case) with a default and a help text
(``Settings.describe()``, ``dqd config --markdown``), so documentation tables are generated, not copied.
``Settings.from_env`` converts and validates everything at start-up and raises ``SettingsError`` naming
the variable; ``dqd`` turns that into ``dqd: configuration error: …`` and exit status 2.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .engine.repository import BUNDLED_RULES
from .storage.database import default_url

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "T": 1000**4, "TB": 1000**4, "TIB": 1024**4}
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ENVIRONMENTS = ("development", "staging", "production")
_DEVICES = ("auto", "cpu", "cuda")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
GRPC_MAX_MESSAGE = 2**31 - 1  # gRPC message limits are signed 32-bit


class SettingsError(ValueError):
    """A setting has a value dqd cannot use; the message names the variable and the fix."""


def parse_size(text: str, name: str = "size") -> int:
    """Parse ``64MB``, ``1GiB`` or plain bytes."""
    m = _SIZE.match(text)
    unit = (m.group(2) or "").upper() if m else ""
    if not m or unit not in _UNITS:
        raise SettingsError(f"{name}={text!r} is not a size; use bytes or a unit such as 64MB or 1GiB")
    return int(float(m.group(1)) * _UNITS[unit])


def _bool(text: str, name: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={text!r} is not a boolean; use true or false")


def _opt(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - "help" reads best here
    """A settings field: its default and the help text shown by ``describe()``."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Settings:
    """Server settings. Environment variable = field name in upper case (API_HOST, API_PORT, …)."""

    # application
    environment: str = _opt("development", "deployment stage: development, staging or production",
                            choices=_ENVIRONMENTS)
    debug: bool = _opt(False, "true: log at DEBUG whatever LOG_LEVEL says")
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL; logs are JSON lines on stderr",
                          choices=_LEVELS)
    # API
    api_host: str = _opt("0.0.0.0", "address the gRPC server (and the metrics endpoint) binds", flag="--host")
    api_port: int = _opt(50051, "gRPC port; 0 picks a free one", flag="--port")
    api_workers: int = _opt(1, "server processes sharing the port (SO_REUSEPORT) under one supervisor",
                            flag="--workers")
    # model / rules
    model_path: Path = _opt(BUNDLED_RULES, "rules/model repository root", flag="--rules")
    model_cache_size: int = _opt(10, "model versions kept loaded per process (for model-based detectors)")
    model_device: str = _opt("auto", "auto, cpu or cuda for model-based detectors; the rule detectors run on CPU",
                             choices=_DEVICES)
    model_backend: str = _opt("", "force the inference backend of the model-based detectors: torch, onnxruntime or "
                                  "tensorrt (benchmarks, parity checks); empty: chosen by MODEL_DEVICE",
                              choices=("", "torch", "onnxruntime", "tensorrt"))
    model_max_batch: int = _opt(0, "most values in one model batch (dynamic batching across streams); 0: 64 on a "
                                   "CPU, 256 on a GPU")
    model_max_delay_ms: float = _opt(2.0, "milliseconds a model batch waits for more values after its first")
    model_max_tokens: int = _opt(0, "most padded tokens in one model batch; 0: 8192 on a CPU, 65536 on a GPU")
    model_threads: int = _opt(0, "ONNX Runtime threads per model; 0: all cores")
    # data
    data_path: Path = _opt(Path("./data"), "directory for job results and the default SQLite database")
    database_url: str = _opt("", "results database URL (e.g. postgresql://…); empty: SQLite under DATA_PATH")
    max_batch_size: int = _opt(1_000_000, "most rows in one Arrow batch of a Detect stream")
    max_file_size: int = _opt(64 * 1024**2, "largest gRPC message in bytes; accepts units: 64MB, 1GB, 1GiB",
                              size=True)
    max_rows_per_call: int = _opt(10_000, "most rows in one DetectRows call")
    # performance
    enable_cache: bool = _opt(True, "remember the verdicts on values already seen (per process, bounded, keyed "
                                     "by rules version), so repeated values are checked once")
    cache_ttl: int = _opt(3600, "seconds the verdicts remembered for a (method, field type, rules version) "
                                "live before they are checked afresh")
    cache_max_values: int = _opt(250_000, "distinct values whose verdicts are remembered per (method, field type, "
                                          "version); the least recently seen are forgotten first")
    parallel_workers: int = _opt(0, "threads per server process checking batches; 0: Python's default "
                                    "(min(32, CPUs + 4))")
    # security
    api_key_required: bool = _opt(False, "require a valid x-api-key on every call but health and reflection "
                                         "(UNAUTHENTICATED otherwise); keys come from API_KEYS_FILE")
    api_keys_file: str = _opt("", "file of hashed API keys, one '[client-name] sha256:<hex>' per line (make "
                                  "one with `dqd hash-key`); the name is the client's identity")
    trust_client_id_header: bool = _opt(False, "take the caller's identity (who owns jobs, whose rate limit counts) "
                                               "from x-dqd-client-id; only behind an edge that checks the API key "
                                               "and sets that header itself")
    tls_cert_file: str = _opt("", "PEM certificate chain: with TLS_KEY_FILE, the gRPC port speaks TLS")
    tls_key_file: str = _opt("", "PEM private key of TLS_CERT_FILE")
    tls_client_ca_file: str = _opt("", "PEM CA bundle: clients must present a certificate it signed (mTLS)")
    job_heartbeat_s: float = _opt(2.0, "seconds between heartbeats of a stream that owns a persisted job")
    job_takeover_after_s: float = _opt(6.0, "a resuming stream takes over a job whose owner has not heartbeated "
                                            "for this long (a replica that died); must exceed JOB_HEARTBEAT_S")
    max_concurrent_rpcs: int = _opt(0, "calls served at once per process; more get RESOURCE_EXHAUSTED; 0: no limit")
    rate_limit: int = _opt(0, "requests per second per client; 0: off (reserved: not enforced by dqd yet)")
    cors_origins: str = _opt("", "accepted for compatibility, unused: CORS applies to browsers over HTTP, "
                                 "not to a gRPC service")
    # monitoring
    metrics_enabled: bool = _opt(True, "serve Prometheus metrics over HTTP at /metrics")
    metrics_port: int = _opt(9090, "port of the metrics endpoint, bound on API_HOST; 0 picks a free one",
                             flag="--metrics-port")
    tracing_enabled: bool = _opt(False, "distributed tracing (reserved: not implemented yet)")
    # lifecycle
    shutdown_delay: float = _opt(1.0, "seconds health reports NOT_SERVING before the port closes")
    shutdown_grace: float = _opt(30.0, "seconds in-flight streams then get to finish")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """Read every field from ``env`` (default ``os.environ``); raise SettingsError on a bad value.

        ``overrides`` (command-line flags) win over the environment; ``None`` means "not given".
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f, raw)
        settings = replace(cls(), **values)
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        settings.check()
        return settings

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """``(VARIABLE, default, help)`` for every setting, in declaration order: the source of docs tables."""
        return [(f.name.upper(), _show(f), f.metadata.get("help", "")) for f in fields(cls)]

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, ``from_env(s.to_env()) == s`` (how workers inherit them)."""
        return {f.name.upper(): _text(getattr(self, f.name)) for f in fields(self)}

    @property
    def effective_log_level(self) -> str:
        return "DEBUG" if self.debug else self.log_level.upper()

    @property
    def effective_database_url(self) -> str:
        """DATABASE_URL, or a SQLite file under DATA_PATH when it is empty."""
        return self.database_url or default_url(self.data_path)

    def check(self) -> None:
        """Validate every field; the message names the variable and says what would be accepted."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and str(value).lower() not in {c.lower() for c in choices}:
                raise SettingsError(f"{f.name.upper()}={value!r} must be one of {', '.join(c or '(empty)' for c in choices)}")
        for name in ("api_port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise SettingsError(f"{name.upper()}={getattr(self, name)} must be within 0..65535 "
                                    "(0 picks a free port)")
        if self.metrics_enabled and self.metrics_port and self.metrics_port == self.api_port:
            raise SettingsError(f"METRICS_PORT={self.metrics_port} must differ from API_PORT")
        if not self.api_host.strip():
            raise SettingsError("API_HOST must not be empty; use 0.0.0.0 for all interfaces")
        if self.api_workers < 1:
            raise SettingsError(f"API_WORKERS={self.api_workers} must be at least 1")
        if not Path(self.model_path).is_dir():
            raise SettingsError(f"MODEL_PATH={self.model_path} is not a directory holding a rules repository")
        if Path(self.data_path).exists() and not Path(self.data_path).is_dir():
            raise SettingsError(f"DATA_PATH={self.data_path} exists and is not a directory")
        if self.database_url and not _URL.match(self.database_url):
            raise SettingsError(f"DATABASE_URL={self.database_url!r} is not a URL such as "
                                "postgresql://user@host/db or sqlite:////path/dqd.db (empty: SQLite "
                                "under DATA_PATH)")
        for name in ("model_cache_size", "max_file_size", "max_batch_size", "max_rows_per_call", "cache_max_values"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()}={getattr(self, name)} must be positive")
        if self.max_file_size > GRPC_MAX_MESSAGE:
            raise SettingsError(f"MAX_FILE_SIZE={self.max_file_size} is over gRPC's limit of {GRPC_MAX_MESSAGE} "
                                "bytes (2GiB - 1); stream smaller batches instead")
        for name in ("cache_ttl", "parallel_workers", "rate_limit", "max_concurrent_rpcs", "model_max_batch",
                     "model_max_tokens", "model_threads", "model_max_delay_ms"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()}={getattr(self, name)} must be >= 0")
        for name in ("shutdown_delay", "shutdown_grace"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()}={getattr(self, name)} must be >= 0 seconds")
        if self.api_key_required and not self.api_keys_file:
            raise SettingsError("API_KEY_REQUIRED=true needs API_KEYS_FILE: a file of 'sha256:<hex>' lines "
                                "(`dqd hash-key KEY` prints one)")
        if not 0 < self.job_heartbeat_s < self.job_takeover_after_s:
            raise SettingsError(f"JOB_HEARTBEAT_S={self.job_heartbeat_s} must be positive and below "
                                f"JOB_TAKEOVER_AFTER_S={self.job_takeover_after_s}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise SettingsError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both for TLS, or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise SettingsError("TLS_CLIENT_CA_FILE (mTLS) needs TLS_CERT_FILE and TLS_KEY_FILE")
        for name in ("api_keys_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise SettingsError(f"{name.upper()}={value} is not a readable file")

    def unenforced(self) -> list[str]:
        """Settings that are accepted but change nothing yet: logged as warnings at start-up."""
        notes = []
        if self.rate_limit:
            notes.append(f"RATE_LIMIT={self.rate_limit}: rate limiting is not enforced by dqd; limit at a proxy")
        if self.tracing_enabled:
            notes.append("TRACING_ENABLED=true: tracing is not implemented; nothing is exported")
        if self.cors_origins:
            notes.append("CORS_ORIGINS is unused: a gRPC service has no CORS")
        if self.debug and self.environment == "production":
            notes.append("DEBUG=true in ENVIRONMENT=production: logs are verbose and may include data values")
        return notes


def settings_markdown() -> str:
    """The settings as a Markdown table (``dqd config --markdown``), generated from ``Settings.describe()``."""
    flags = {f.name.upper(): f.metadata.get("flag") for f in fields(Settings)}
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, text in Settings.describe():
        flag = f" / `{flags[name]}`" if flags[name] else ""
        shown = default if default.startswith("(") else f"`{default}`"
        lines.append(f"| `{name}`{flag} | {shown} | {text} |")
    return "\n".join(lines)


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _show(f: Field[Any]) -> str:
    value = f.default if f.default is not MISSING else None
    if f.name == "model_path":
        return "(the bundled rules)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    if value == "":
        return "(empty)"
    if f.metadata.get("size") and isinstance(value, int) and value % 1024**2 == 0:
        return f"{value // 1024**2}MiB"
    return str(value)


def _convert(f: Field[Any], raw: str) -> object:
    name = f.name.upper()
    kind = type(f.default)
    if f.metadata.get("size"):
        return parse_size(raw, name)
    try:
        if kind is bool:
            return _bool(raw, name)
        if kind is int:
            return int(raw.strip().replace("_", ""))
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {'integer' if kind is int else 'number'}") from None
    if issubclass(kind, Path):
        return Path(raw)
    if f.metadata.get("choices"):
        return raw.strip().lower() if f.name != "log_level" else raw.strip().upper()
    return raw
