#!/usr/bin/env python3
"""Render dqd's Envoy config from envoy.yaml.tmpl, and the API-keys file Envoy reads (stdlib only).

Envoy does not expand environment variables, so the template's ``${NAME}`` placeholders are filled
here, from options or the environment (an option wins)::

    render.py config --cert tls.crt --key tls.key --api-keys keys.yaml \\
        --upstream 10.0.0.5:50051 --upstream 10.0.0.6:50051 --rate-limit 100 -o envoy.yaml
    render.py keys clients.txt -o keys.yaml        # "client key" lines -> Envoy's api_key_auth config

``keys`` reads plain-text lines ``<client-name> <key>`` (``#`` starts a comment) and writes the
api_key_auth filter's configuration as an xDS resource file: Envoy compares the key a caller sends
with these, so (unlike dqd's own API_KEYS_FILE of SHA-256 digests) the file holds the keys
themselves. Keep it in a secret (Kubernetes Secret, mode 0600 file), never in the repository.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "envoy.yaml.tmpl"
FILTER_NAME = "dqd.api_key_auth"  # the http_filters entry the keys file configures
KEY_HEADER = "x-api-key"
CLIENT_HEADER = "x-dqd-client"
MIN_KEY_LENGTH = 16
GRPC_FRAME_OVERHEAD = 1024  # a message of MAX_FILE_SIZE bytes plus gRPC/HTTP2 framing
# Most bytes of one unary call Envoy keeps for a retry. DetectRows carries at most MAX_ROWS_PER_CALL
# rows (kilobytes to a few MB); a larger call still goes through, only without a retry.
UNARY_RETRY_BUFFER_CAP = 16 * 1024**2

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "T": 1000**4, "TB": 1000**4, "TIB": 1024**4}
_DURATION = re.compile(r"^\d+(?:\.\d+)?s$")
_CLIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RenderError(ValueError):
    """A setting the config cannot be made from; the message names it and says what to fix."""


# Settings: (placeholder, option, environment variable, default, help). Defaults of None are required.
SETTINGS: tuple[tuple[str, str, str, str | None, str], ...] = (
    ("LISTEN", "--listen", "ENVOY_LISTEN", "0.0.0.0:8443", "address:port of the TLS gRPC listener"),
    ("ADMIN", "--admin", "ENVOY_ADMIN", "127.0.0.1:9901", "address:port of Envoy's admin page (keep it on loopback)"),
    ("TLS_CERT_FILE", "--cert", "TLS_CERT_FILE", None, "PEM certificate chain the listener presents"),
    ("TLS_KEY_FILE", "--key", "TLS_KEY_FILE", None, "PEM private key of --cert"),
    ("API_KEYS_FILE", "--api-keys", "ENVOY_API_KEYS_FILE", None,
     "the api_key_auth config file made by `render.py keys` (a mounted secret)"),
    ("UPSTREAMS", "--upstream", "DQD_UPSTREAMS", None,
     "dqd replica host:port; repeat, or comma-separated in the variable; names are resolved by DNS"),
    ("RATE_LIMIT", "--rate-limit", "RATE_LIMIT", "0", "calls per second per client (API key name); 0: off"),
    ("OPEN_RATE_LIMIT", "--open-rate-limit", "ENVOY_OPEN_RATE_LIMIT", "100",
     "calls per second, all together, of callers without a key (the health Check); 0: off"),
    ("MAX_FILE_SIZE", "--max-file-size", "MAX_FILE_SIZE", "64MiB",
     "largest gRPC message the replicas accept (dqd's MAX_FILE_SIZE); units as dqd: 64MB, 1GiB"),
    ("HEALTH_CHECK_INTERVAL", "--health-check-interval", "ENVOY_HEALTH_CHECK_INTERVAL", "5s",
     "seconds between gRPC health checks of each replica, e.g. 5s"),
    ("STREAM_IDLE_TIMEOUT", "--stream-idle-timeout", "ENVOY_STREAM_IDLE_TIMEOUT", "300s",
     "a stream with no data either way for this long is reset"),
    ("UNARY_TIMEOUT", "--unary-timeout", "ENVOY_UNARY_TIMEOUT", "60s",
     "longest DetectRows/ListFields/GetJob call, retries included"),
    ("MAX_CLIENTS", "--max-clients", "ENVOY_MAX_CLIENTS", "10000", "rate-limit buckets kept (distinct clients)"),
    ("MAX_CONNECTIONS", "--max-connections", "ENVOY_MAX_CONNECTIONS", "10000", "client connections at once"),
)


def parse_size(text: str, name: str = "MAX_FILE_SIZE") -> int:
    """``64MB``, ``1GiB`` or plain bytes — the same grammar as dqd's own settings."""
    m = _SIZE.match(text)
    unit = (m.group(2) or "").upper() if m else ""
    if not m or unit not in _UNITS:
        raise RenderError(f"{name}={text!r} is not a size; use bytes or a unit such as 64MB or 1GiB")
    return int(float(m.group(1)) * _UNITS[unit])


def _int(text: str, name: str, low: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RenderError(f"{name}={text!r} is not a whole number") from None
    if value < low:
        raise RenderError(f"{name}={value} must be at least {low}")
    return value


def _duration(text: str, name: str) -> str:
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        text += "s"
    if not _DURATION.match(text) or float(text[:-1]) <= 0:
        raise RenderError(f"{name}={text!r} is not a duration in seconds such as 5s")
    return text


def _host_port(text: str, name: str, any_port: bool = False) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not (0 if any_port else 1) <= int(port) < 65536:
        raise RenderError(f"{name}={text!r} is not host:port (e.g. dqd-headless:50051 or 127.0.0.1:6000)")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _path(text: str, name: str) -> str:
    if not text or "\n" in text:
        raise RenderError(f"{name} must be a file path")
    return text


def values(settings: Mapping[str, str | Sequence[str]]) -> dict[str, str]:
    """The template's placeholders from raw settings (keys as in SETTINGS), validated."""
    out: dict[str, str] = {}
    listen_host, listen_port = _host_port(str(settings["LISTEN"]), "LISTEN", any_port=True)  # 0: a free port
    admin_host, admin_port = _host_port(str(settings["ADMIN"]), "ADMIN", any_port=True)
    out |= {"LISTEN_ADDRESS": json.dumps(listen_host), "LISTEN_PORT": str(listen_port),
            "ADMIN_ADDRESS": json.dumps(admin_host), "ADMIN_PORT": str(admin_port)}
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "API_KEYS_FILE"):
        out[name] = json.dumps(_path(str(settings[name]), name))
    keys_dir = os.path.dirname(str(settings["API_KEYS_FILE"])) or "."
    out["API_KEYS_DIR"] = json.dumps(keys_dir)

    raw = settings["UPSTREAMS"]
    items = [u for part in ([raw] if isinstance(raw, str) else raw) for u in str(part).split(",") if u.strip()]
    if not items:
        raise RenderError("UPSTREAMS is empty: give at least one dqd replica as host:port")
    hosts = [_host_port(u, "UPSTREAMS") for u in items]
    out["UPSTREAM_DISCOVERY"] = "STATIC" if all(_is_ip(h) for h, _ in hosts) else "STRICT_DNS"
    out["UPSTREAM_ENDPOINTS"] = json.dumps(
        [{"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}} for h, p in hosts])

    rate = _int(str(settings["RATE_LIMIT"]), "RATE_LIMIT")
    open_rate = _int(str(settings["OPEN_RATE_LIMIT"]), "OPEN_RATE_LIMIT")
    # One switch for the whole filter: RATE_LIMIT=0 turns rate limiting off (as in dqd).
    out["RATE_LIMIT"] = str(rate) if rate else "0 (off)"
    out["RATE_LIMIT_PERCENT"] = "100" if rate else "0"
    out["RATE_LIMIT_TOKENS"] = out["RATE_LIMIT_BURST"] = str(max(rate, 1))
    # The open bucket: 0 means no limit for keyless calls; a bucket cannot be infinite, so take a big one.
    out["OPEN_RATE_LIMIT"] = str(open_rate if open_rate else 1_000_000)

    max_file = parse_size(str(settings["MAX_FILE_SIZE"]))
    if not 0 < max_file < 2**31:
        raise RenderError(f"MAX_FILE_SIZE={settings['MAX_FILE_SIZE']!r} must be between 1 byte and 2GiB "
                          "(gRPC messages are limited to 2^31-1 bytes)")
    out["UNARY_RETRY_BUFFER"] = str(min(max_file + GRPC_FRAME_OVERHEAD, UNARY_RETRY_BUFFER_CAP))
    out["HEALTH_CHECK_INTERVAL"] = _duration(str(settings["HEALTH_CHECK_INTERVAL"]), "HEALTH_CHECK_INTERVAL")
    out["STREAM_IDLE_TIMEOUT"] = _duration(str(settings["STREAM_IDLE_TIMEOUT"]), "STREAM_IDLE_TIMEOUT")
    out["UNARY_TIMEOUT"] = _duration(str(settings["UNARY_TIMEOUT"]), "UNARY_TIMEOUT")
    out["MAX_CLIENTS"] = str(_int(str(settings["MAX_CLIENTS"]), "MAX_CLIENTS", 1))
    out["MAX_CONNECTIONS"] = str(_int(str(settings["MAX_CONNECTIONS"]), "MAX_CONNECTIONS", 1))
    return out


def render(settings: Mapping[str, str | Sequence[str]]) -> str:
    """The Envoy config for ``settings`` (missing optional ones take their defaults)."""
    full: dict[str, str | Sequence[str]] = {k: d for k, _, _, d, _ in SETTINGS if d is not None}
    full.update({k: v for k, v in settings.items() if v is not None})
    missing = [f"{opt} ({env})" for k, opt, env, d, _ in SETTINGS if d is None and not full.get(k)]
    if missing:
        raise RenderError("missing: " + ", ".join(missing))
    placeholders = values(full)
    used = [f"#   {key}={v if isinstance(v, str) else ','.join(v)}" for key, v in
            ((k, full[k]) for k, *_ in SETTINGS)]
    placeholders["HEADER"] = "#\n# Rendered by render.py with:\n" + "\n".join(used)
    try:
        return string.Template(TEMPLATE.read_text()).substitute(placeholders)
    except (KeyError, ValueError) as exc:  # a placeholder the renderer does not know: a bug here
        raise RenderError(f"{TEMPLATE.name}: bad placeholder {exc}") from None


def parse_keys(text: str, source: str = "keys") -> list[tuple[str, str]]:
    """``(client, key)`` pairs from ``client key`` lines; raises RenderError naming the bad line."""
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not _CLIENT.match(parts[0]):
            raise RenderError(f"{source}:{number}: expected '<client-name> <key>' with a name of letters, "
                              "digits, '.', '_' or '-'")
        client, key = parts
        if len(key) < MIN_KEY_LENGTH or not key.isprintable() or key.startswith("sha256:"):
            raise RenderError(f"{source}:{number}: the key of {client!r} must be the plain key, at least "
                              f"{MIN_KEY_LENGTH} characters (e.g. `openssl rand -hex 24`), not its digest")
        if key in seen:
            raise RenderError(f"{source}:{number}: the key of {client!r} is also on line {seen[key]}")
        seen[key] = number
        pairs.append((client, key))
    if not pairs:
        raise RenderError(f"{source} holds no keys; Envoy would refuse every call")
    return pairs


def render_keys(pairs: Sequence[tuple[str, str]]) -> str:
    """The api_key_auth filter's config as an xDS (ECDS) resource file; JSON is valid YAML."""
    resource = {
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": FILTER_NAME,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": [{"key": key, "client": client} for client, key in pairs],
            "key_sources": [{"header": KEY_HEADER}],
            "forwarding": {"header": CLIENT_HEADER, "hide_credentials": True},
        },
    }
    return json.dumps({"resources": [resource]}, indent=2) + "\n"


def write(text: str, out: str | None, mode: int = 0o644) -> None:
    """Write ``text`` to ``out`` atomically (a rename, which Envoy's file watch sees), or to stdout."""
    if not out or out == "-":
        sys.stdout.write(text)
        return
    path = Path(out)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cfg = sub.add_parser("config", help="render envoy.yaml from envoy.yaml.tmpl")
    for key, opt, env, default, help_ in SETTINGS:
        extra = f" [env {env}" + (f", default {default}]" if default is not None else ", required]")
        cfg.add_argument(opt, dest=key, action="append" if key == "UPSTREAMS" else "store", help=help_ + extra)
    cfg.add_argument("-o", "--output", help="file to write (default: stdout)")
    keys = sub.add_parser("keys", help="api_key_auth config from '<client> <key>' lines")
    keys.add_argument("input", nargs="?", default="-", help="file of '<client> <key>' lines (default: stdin)")
    keys.add_argument("-o", "--output", help="file to write, mode 0600 (default: stdout)")
    args = parser.parse_args(argv)
    try:
        if args.command == "keys":
            text = sys.stdin.read() if args.input == "-" else Path(args.input).read_text()
            write(render_keys(parse_keys(text, args.input)), args.output, 0o600)
            return 0
        settings: dict[str, str | Sequence[str]] = {}
        for key, _, env, _, _ in SETTINGS:
            given = getattr(args, key)
            if given is not None:
                settings[key] = given
            elif os.environ.get(env):
                settings[key] = os.environ[env]
        write(render(settings), args.output)
    except (RenderError, OSError) as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
