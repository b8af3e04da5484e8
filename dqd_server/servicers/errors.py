"""The one table from engine errors to gRPC status codes, applied to every handler."""
from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from ..engine.errors import AlreadyExists, BadRepository, DqdError, InvalidInput, NotFound, NotReady, TooLarge

log = logging.getLogger("dqd.servicer")

STATUS_OF: dict[type[DqdError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    BadRepository: grpc.StatusCode.FAILED_PRECONDITION,
}

F = TypeVar("F", bound=Callable[..., Any])


def status_for(exc: DqdError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, rpc: str) -> None:
    if isinstance(exc, DqdError):
        code = status_for(exc)
        log.info("%s rejected: %s %s", rpc, code.name, exc)
        await context.abort(code, str(exc))
    log.exception("%s failed with an unexpected error", rpc, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {rpc} ({type(exc).__name__}); "
                        "the server logged it and stays up")


def maps_errors(handler: F) -> F:
    """Turn engine errors (and any bug) into a status with a message; never let one escape."""
    name = handler.__name__
    if inspect.isasyncgenfunction(handler):
        @functools.wraps(handler)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in handler(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, logged
                await _abort(context, exc, name)
        return stream  # type: ignore[return-value]

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, logged
            await _abort(context, exc, name)
    return unary  # type: ignore[return-value]
