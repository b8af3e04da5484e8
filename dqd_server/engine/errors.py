"""Domain errors of the engine; the servicers map each class to one gRPC status code.

    DqdError
    ├── InvalidInput    bad config or data the caller must fix   -> INVALID_ARGUMENT
    ├── NotFound        a job or resource that does not exist      -> NOT_FOUND
    ├── AlreadyExists   a job key that names a completed/running job -> ALREADY_EXISTS
    ├── TooLarge        input over a configured limit              -> RESOURCE_EXHAUSTED
    ├── BadRepository   the rules/model repository cannot be loaded -> FAILED_PRECONDITION
    └── NotReady        rules/models still loading or shutting down -> UNAVAILABLE
"""
from __future__ import annotations


class DqdError(Exception):
    """Base class: the message says what to fix."""


class InvalidInput(DqdError):
    """The caller sent a config or data that cannot be checked as sent."""


class NotFound(DqdError):
    """A named job or resource does not exist."""


class AlreadyExists(DqdError):
    """A job with this client job key already completed (or is running in another stream)."""


class TooLarge(DqdError):
    """The input exceeds a configured limit."""


class BadRepository(DqdError):
    """The rules/model repository on disk is malformed; the server keeps what it serves."""


class NotReady(DqdError):
    """The server cannot serve this yet (loading) or any more (shutting down)."""
