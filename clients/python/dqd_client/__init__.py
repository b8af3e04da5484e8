"""Python client of dqd, the Data Quality Detection gRPC service.

    import dqd_client

    with dqd_client.Client("localhost:50051") as client:
        stream = client.check_file("products.parquet", {"material": "material"})
        for result in stream:
            print(result.first_row, result.findings.num_rows)
        print(stream.summary)
"""
from ._channel import API_KEY_HEADER, DEFAULT_MAX_MESSAGE_BYTES, create_channel
from ._client import Client, DetectStream, Emit
from ._exceptions import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    DqdError,
    FailedPrecondition,
    InputError,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ResourceExhausted,
    RpcError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    from_rpc_error,
)
from ._io import DEFAULT_BATCH_SIZE, read_batches
from ._report import render_report
from ._models import (
    FINDINGS_SCHEMA,
    BatchResult,
    FieldInfo,
    Finding,
    FindingCount,
    Job,
    MethodInfo,
    Summary,
    findings_table,
)
from ._version import __version__

__all__ = [
    "API_KEY_HEADER",
    "Aborted",
    "AlreadyExists",
    "BatchResult",
    "Cancelled",
    "Client",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DeadlineExceeded",
    "DetectStream",
    "DqdError",
    "Emit",
    "FINDINGS_SCHEMA",
    "FailedPrecondition",
    "FieldInfo",
    "Finding",
    "FindingCount",
    "InputError",
    "InternalError",
    "InvalidArgument",
    "Job",
    "MethodInfo",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "ResourceExhausted",
    "RpcError",
    "Summary",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "__version__",
    "create_channel",
    "findings_table",
    "from_rpc_error",
    "read_batches",
    "render_report",
]
