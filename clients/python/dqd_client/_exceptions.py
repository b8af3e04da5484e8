"""Exceptions raised by dqd_client; gRPC failures are mapped here and never escape raw.

    DqdError                    base of everything this package raises
    ├── InputError              a local file, table or argument the caller must fix (also a ValueError)
    ├── ProtocolError           the server answered something this client cannot read
    └── RpcError                a call failed; .code (grpc.StatusCode), .status (its name), .details
        ├── InvalidArgument     INVALID_ARGUMENT, OUT_OF_RANGE: bad config or data, fix the request
        ├── FailedPrecondition  FAILED_PRECONDITION
        ├── NotFound            NOT_FOUND: unknown job, resource or health service
        ├── AlreadyExists       ALREADY_EXISTS
        ├── ResourceExhausted   RESOURCE_EXHAUSTED: message or input over a server limit
        ├── Unauthenticated     UNAUTHENTICATED: missing or wrong API key
        ├── PermissionDenied    PERMISSION_DENIED
        ├── DeadlineExceeded    DEADLINE_EXCEEDED: the call's timeout ran out
        ├── Unavailable         UNAVAILABLE: server down, unreachable, loading or shutting down
        ├── Cancelled           CANCELLED
        ├── Aborted             ABORTED
        ├── Unimplemented       UNIMPLEMENTED: the server lacks this method
        └── InternalError       INTERNAL, UNKNOWN, DATA_LOSS: a server-side bug
"""
from __future__ import annotations

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "DqdError",
    "FailedPrecondition",
    "InputError",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "ResourceExhausted",
    "RpcError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]


class DqdError(Exception):
    """Base class of every error raised by dqd_client."""


class InputError(DqdError, ValueError):
    """A local input (file, table, column mapping, option) cannot be used as given."""


class ProtocolError(DqdError):
    """The server sent a response this client cannot decode or did not expect."""


class RpcError(DqdError):
    """A gRPC call failed with a non-OK status."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 trailing_metadata: tuple[tuple[str, str | bytes], ...] = ()) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata
        super().__init__(f"{self.status}: {details}" if details else self.status)

    @property
    def status(self) -> str:
        """The status code's name, e.g. ``"INVALID_ARGUMENT"``."""
        return self.code.name


class InvalidArgument(RpcError):
    """The request (config, column mapping, data) is invalid; the details say what to fix."""


class FailedPrecondition(RpcError):
    """The server is not in a state to run this request."""


class NotFound(RpcError):
    """A named job, resource or health service does not exist."""


class AlreadyExists(RpcError):
    """The resource the request would create already exists."""


class ResourceExhausted(RpcError):
    """A size, rate or quota limit was hit (e.g. a message larger than the server accepts)."""


class Unauthenticated(RpcError):
    """The API key is missing or wrong."""


class PermissionDenied(RpcError):
    """The caller is authenticated but not allowed to do this."""


class DeadlineExceeded(RpcError):
    """The call's deadline passed before it completed."""


class Unavailable(RpcError):
    """The server cannot be reached or cannot serve now (retrying later may help)."""


class Cancelled(RpcError):
    """The call was cancelled."""


class Aborted(RpcError):
    """The server aborted the call (e.g. a concurrency conflict)."""


class Unimplemented(RpcError):
    """The server does not implement this method."""


class InternalError(RpcError):
    """The server failed in a way the caller cannot fix (INTERNAL, UNKNOWN, DATA_LOSS)."""


_BY_CODE: dict[grpc.StatusCode, type[RpcError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}


def from_rpc_error(error: grpc.RpcError) -> RpcError:
    """Translate a ``grpc.RpcError`` into the matching :class:`RpcError` subclass (not raised)."""
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    metadata_fn = getattr(error, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else str(error)) or ""
    metadata = (metadata_fn() if callable(metadata_fn) else None) or ()
    cls = _BY_CODE.get(code, InternalError)
    exc = cls(code, details, tuple(metadata))
    exc.__cause__ = error
    return exc
