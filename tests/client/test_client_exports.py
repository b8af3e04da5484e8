"""The public surface of dqd_client: exported names, exception mapping and the findings codec."""
from __future__ import annotations

import grpc
import pyarrow as pa
import pytest

import dqd_client
from dqd_client import _exceptions
from dqd_client._models import decode_findings, encode_batch

EXPECTED = [
    "API_KEY_HEADER", "Aborted", "AlreadyExists", "BatchResult", "Cancelled", "Client",
    "DEFAULT_BATCH_SIZE", "DEFAULT_MAX_MESSAGE_BYTES", "DeadlineExceeded", "DetectStream",
    "DqdError", "Emit", "FINDINGS_SCHEMA", "FailedPrecondition", "FieldInfo", "Finding",
    "FindingCount", "InputError", "InternalError", "InvalidArgument", "Job", "MethodInfo", "NotFound",
    "PermissionDenied", "ProtocolError", "ResourceExhausted", "RpcError", "Summary",
    "Unauthenticated", "Unavailable", "Unimplemented", "__version__", "create_channel",
    "findings_table", "from_rpc_error", "read_batches", "render_report",
]


def test_exported_names() -> None:
    assert dqd_client.__all__ == EXPECTED
    assert dqd_client.__all__ == sorted(dqd_client.__all__)
    for name in dqd_client.__all__:
        assert hasattr(dqd_client, name), name


def test_private_modules_are_reexported() -> None:
    assert dqd_client.Client.__module__ == "dqd_client._client"
    assert dqd_client.InvalidArgument.__module__ == "dqd_client._exceptions"


class _FakeRpcError(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return (("k", "v"),)

    def initial_metadata(self):
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self):
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback) -> bool:
        return False


@pytest.mark.parametrize(("code", "cls"), [
    (grpc.StatusCode.INVALID_ARGUMENT, dqd_client.InvalidArgument),
    (grpc.StatusCode.UNAVAILABLE, dqd_client.Unavailable),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, dqd_client.ResourceExhausted),
    (grpc.StatusCode.UNAUTHENTICATED, dqd_client.Unauthenticated),
    (grpc.StatusCode.DEADLINE_EXCEEDED, dqd_client.DeadlineExceeded),
    (grpc.StatusCode.NOT_FOUND, dqd_client.NotFound),
    (grpc.StatusCode.UNKNOWN, dqd_client.InternalError),
    (grpc.StatusCode.INTERNAL, dqd_client.InternalError),
])
def test_from_rpc_error(code: grpc.StatusCode, cls: type) -> None:
    raw = _FakeRpcError(code, "what went wrong")
    exc = dqd_client.from_rpc_error(raw)
    assert type(exc) is cls
    assert isinstance(exc, dqd_client.RpcError) and isinstance(exc, dqd_client.DqdError)
    assert not isinstance(exc, grpc.RpcError)
    assert exc.code is code and exc.status == code.name and exc.details == "what went wrong"
    assert str(exc) == f"{code.name}: what went wrong"
    assert exc.trailing_metadata == (("k", "v"),)
    assert exc.__cause__ is raw


def test_every_status_code_maps_to_a_class() -> None:
    for code in grpc.StatusCode:
        if code is not grpc.StatusCode.OK:
            assert code in _exceptions._BY_CODE, code


def test_exception_tree_is_documented() -> None:
    doc = _exceptions.__doc__ or ""
    for name in ("DqdError", "InputError", "ProtocolError", "RpcError", "InvalidArgument", "Unavailable"):
        assert name in doc
    assert issubclass(dqd_client.InputError, ValueError)


def test_findings_codec_and_table() -> None:
    batch = pa.RecordBatch.from_pylist(
        [{"row": 3, "column": "m", "field": "material", "method": "pattern", "code": "typo",
          "message": "x", "confidence": 0.9, "value": None}], schema=dqd_client.FINDINGS_SCHEMA)
    assert decode_findings(encode_batch(batch)).equals(batch)
    empty = decode_findings(b"")
    assert empty.schema == dqd_client.FINDINGS_SCHEMA and empty.num_rows == 0
    assert dqd_client.findings_table([]).schema == dqd_client.FINDINGS_SCHEMA
    # a server batch with a null-typed value column and other column order is normalized
    odd = pa.table({"value": pa.nulls(0), "row": pa.array([], pa.int32()), "column": pa.array([], pa.string()),
                    "field": pa.array([], pa.string()), "method": pa.array([], pa.string()),
                    "code": pa.array([], pa.string()), "message": pa.array([], pa.string()),
                    "confidence": pa.array([], pa.float32())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, odd.schema) as w:
        w.write_table(odd)
    assert decode_findings(sink.getvalue().to_pybytes()).schema == dqd_client.FINDINGS_SCHEMA


def test_findings_missing_column_is_protocol_error() -> None:
    with pytest.raises(dqd_client.ProtocolError, match="lack column"):
        decode_findings(encode_batch(pa.RecordBatch.from_pydict({"row": [1]})))


def test_local_option_errors_do_not_connect() -> None:
    with dqd_client.Client("127.0.0.1:1") as client:
        with pytest.raises(dqd_client.InputError, match="non-empty mapping"):
            client.detect([], {})
        with pytest.raises(dqd_client.InputError, match="emit"):
            client.detect([], {"a": "material"}, emit="some")  # type: ignore[arg-type]
        with pytest.raises(dqd_client.InputError, match="not found in the table"):
            client.check_table(pa.table({"b": ["x"]}), {"a": "material"})
        with pytest.raises(dqd_client.InputError, match="unsupported file type"):
            client.check_file("data.xlsx", {"a": "material"})


def test_tls_options() -> None:
    with pytest.raises(dqd_client.InputError, match="cannot read root certificates"):
        dqd_client.Client("localhost:1", root_certificates="/nonexistent/ca.pem")
    with pytest.raises(dqd_client.InputError, match="needs tls"):
        dqd_client.Client("localhost:1", server_name_override="dqd.local")
    dqd_client.Client("localhost:1", tls=True, server_name_override="dqd.local").close()
