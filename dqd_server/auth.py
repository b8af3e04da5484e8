"""In-process defence for deployments without Envoy: API keys (hashed, constant-time) and TLS.

Keys file (API_KEYS_FILE): one key per line as ``sha256:<hex digest>`` (make one with
``dqd hash-key``), optionally prefixed by a client name and a space; ``#`` starts a comment.
Health and reflection stay open so probes and ``grpcurl list`` need no key.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

API_KEY_HEADER = "x-api-key"
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")


def hash_key(key: str) -> str:
    """The line to put in the keys file for ``key``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: Path) -> dict[bytes, str]:
    """Client name per key digest from a keys file (``[name] sha256:<hex>`` lines); a key without a name is
    called ``key-<first 12 hex digits>``. Raises ValueError naming the line that is wrong."""
    names: dict[bytes, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        *name, entry = line.split()
        algo, _, digest = entry.partition(":")
        if algo != "sha256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or len(name) > 1:
            raise ValueError(f"{path}:{number}: expected '[name] sha256:<64 hex digits>' (see `dqd hash-key`)")
        names[bytes.fromhex(digest)] = name[0] if name else f"key-{digest[:12]}"
    if not names:
        raise ValueError(f"{path} holds no keys; API_KEY_REQUIRED=true needs at least one")
    return names


def load_key_hashes(path: Path) -> list[bytes]:
    """Digests from a keys file; raises ValueError naming the line that is wrong."""
    return list(load_keys(path))


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without a valid ``x-api-key`` with UNAUTHENTICATED, before any handler runs."""

    def __init__(self, digests: list[bytes]) -> None:
        self._digests = digests

    def valid(self, key: str | None) -> bool:
        if not key:
            return False
        presented = hashlib.sha256(key.encode()).digest()
        ok = False
        for digest in self._digests:  # compare with every key: time does not depend on which matched
            ok |= hmac.compare_digest(presented, digest)
        return ok

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_SERVICES):
            return handler
        key = next((v for k, v in details.invocation_metadata or () if k == API_KEY_HEADER), None)
        if self.valid(key if isinstance(key, str) else None):
            return handler
        reason = "missing x-api-key metadata" if not key else "the x-api-key is not valid"
        return _refusal(handler, f"{reason}: send a valid API key in the x-api-key header")


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def deny(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(request: object, context: grpc.aio.ServicerContext):  # noqa: ANN202
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    kind = (handler.request_streaming, handler.response_streaming)
    make = {(False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler}[kind]
    return make(deny_stream if kind[1] else deny, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def server_credentials(cert_file: Path, key_file: Path, client_ca_file: Path | None = None
                       ) -> grpc.ServerCredentials:
    """TLS for the gRPC port; with ``client_ca_file`` clients must present a certificate (mTLS)."""
    pair = [(Path(key_file).read_bytes(), Path(cert_file).read_bytes())]
    if client_ca_file:
        return grpc.ssl_server_credentials(pair, root_certificates=Path(client_ca_file).read_bytes(),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials(pair)
