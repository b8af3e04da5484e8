"""gRPC channel construction: plain or TLS, API key metadata, message size and keepalive options."""
from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from ._exceptions import InputError

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "API_KEY_HEADER", "create_channel"]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
API_KEY_HEADER = "x-api-key"

# Keepalive: ping a silent connection every 60 s during calls and give up after 20 s without an
# answer, so a dead server or a dropped NAT mapping fails a stream instead of hanging it. No pings
# between calls, and (gRPC's default) at most 2 pings while the client sends no data: a server
# with the default ping policy answers a third ping within 5 min with GOAWAY "too_many_pings",
# which would kill a stream whose input is slow to produce.
_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
)

CertSource = str | os.PathLike[str] | bytes


class _CallDetails(
        collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                 "wait_for_ready", "compression")),
        grpc.ClientCallDetails):
    """Mutable copy of a call's details (grpc's own object is read-only)."""


class _MetadataInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                           grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds fixed metadata (the API key) to every call made on the channel."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ()) + list(self._metadata)
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any],
                              client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any],
                               client_call_details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any],
                               client_call_details: grpc.ClientCallDetails,
                               request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Callable[..., Any],
                                client_call_details: grpc.ClientCallDetails,
                                request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def _read_cert(source: CertSource | None, what: str) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from exc


def create_channel(target: str, *, tls: bool = False, root_certificates: CertSource | None = None,
                   server_name_override: str | None = None, api_key: str | None = None,
                   max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                   options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """Open a channel to ``target`` ("host:port").

    ``tls=True`` (implied by ``root_certificates``) uses TLS with the given PEM CA bundle (a path
    or the bytes), or the system roots when none; ``server_name_override`` checks the server
    certificate against that name instead of the target's host (tests, IP targets). ``api_key``
    is sent as ``x-api-key`` metadata on every call. ``options`` are extra gRPC channel options
    and win over the defaults set here.
    """
    if not target:
        raise InputError("empty target; expected HOST:PORT")
    if max_message_bytes <= 0:
        raise InputError(f"max_message_bytes must be positive, got {max_message_bytes}")
    merged: dict[str, Any] = {
        "grpc.max_send_message_length": max_message_bytes,
        "grpc.max_receive_message_length": max_message_bytes,
        "grpc.primary_user_agent": "dqd-client-python",
        **dict(_KEEPALIVE_OPTIONS),
    }
    use_tls = tls or root_certificates is not None
    if server_name_override:
        if not use_tls:
            raise InputError("server_name_override needs tls=True")
        merged["grpc.ssl_target_name_override"] = server_name_override
    merged.update(dict(options))
    channel_options = list(merged.items())
    if use_tls:
        roots = _read_cert(root_certificates, "root certificates")
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        channel = grpc.secure_channel(target, credentials, options=channel_options)
    else:
        channel = grpc.insecure_channel(target, options=channel_options)
    if api_key:
        channel = grpc.intercept_channel(channel, _MetadataInterceptor([(API_KEY_HEADER, api_key)]))
    return channel
