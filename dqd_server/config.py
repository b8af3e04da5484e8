"""One typed settings object, read from the environment (the deployment guide's names) in main()."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .engine.repository import BUNDLED_RULES

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "T": 1000**4, "TB": 1000**4, "TIB": 1024**4}
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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


@dataclass(frozen=True)
class Settings:
    """Server settings. Environment variable = field name in upper case (API_HOST, API_PORT, …)."""

    api_host: str = "0.0.0.0"
    api_port: int = 50051
    model_path: Path = BUNDLED_RULES  # rules/model repository root
    log_level: str = "INFO"
    max_file_size: int = 64 * 1000**2  # largest gRPC message accepted, bytes
    max_batch_rows: int = 1_000_000  # rows in one Arrow batch of a Detect stream
    max_rows_per_call: int = 10_000  # rows in one DetectRows call
    shutdown_delay: float = 1.0  # seconds health reports NOT_SERVING before the port closes
    shutdown_grace: float = 30.0  # seconds in-flight streams then get to finish

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """Read every field from ``env`` (default ``os.environ``); raise SettingsError on a bad value."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name.upper(), raw, type(getattr(cls(), f.name)))
        settings = replace(cls(), **values)
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        settings.check()
        return settings

    def check(self) -> None:
        if not 0 <= self.api_port <= 65535:
            raise SettingsError(f"API_PORT={self.api_port} must be within 0..65535 (0 picks a free port)")
        if self.log_level.upper() not in _LEVELS:
            raise SettingsError(f"LOG_LEVEL={self.log_level!r} must be one of {', '.join(_LEVELS)}")
        if not Path(self.model_path).is_dir():
            raise SettingsError(f"MODEL_PATH={self.model_path} is not a directory holding a rules repository")
        for name in ("max_file_size", "max_batch_rows", "max_rows_per_call"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be positive")
        if self.shutdown_grace < 0 or self.shutdown_delay < 0:
            raise SettingsError("SHUTDOWN_GRACE and SHUTDOWN_DELAY must be >= 0 seconds")


def _convert(name: str, raw: str, kind: type) -> object:
    if name == "MAX_FILE_SIZE":
        return parse_size(raw, name)
    try:
        if kind is bool:
            return _bool(raw, name)
        if kind is int:
            return int(raw.replace("_", ""))
        if kind is float:
            return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if issubclass(kind, Path):
        return Path(raw)
    return raw
