"""The dqd Client: streaming detection over Arrow batches, tables and files, plus the unary calls."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import grpc
import pyarrow as pa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._channel import DEFAULT_MAX_MESSAGE_BYTES, CertSource, create_channel
from ._exceptions import InputError, ProtocolError, from_rpc_error
from ._io import DEFAULT_BATCH_SIZE, read_batches, rebatch, select_columns
from ._models import BatchResult, FieldInfo, Finding, Job, Summary, decode_findings, encode_batch
from ._proto import detection_pb2 as pb
from ._proto import detection_pb2_grpc as pb_grpc

__all__ = ["Client", "DetectStream", "Emit"]

Emit = Literal["flagged", "all"]
_EMIT = {"flagged": pb.EMIT_MODE_FLAGGED, "all": pb.EMIT_MODE_ALL}
_ENVELOPE_BYTES = 64 * 1024  # room for the protobuf framing around one Arrow payload


class _Feed:
    """The sending side of a Detect call, run by gRPC's request thread (holds no DetectStream)."""

    def __init__(self, batches: Iterable[pa.RecordBatch],
                 encode: Callable[[pa.RecordBatch], Iterator[tuple[int, bytes]]]) -> None:
        self.lock = threading.Lock()
        self.call: Any = None
        self.error: BaseException | None = None
        self.sent: list[int] = []  # rows of each message sent
        self.rows_sent = 0
        self._batches = batches
        self._encode = encode

    def requests(self, config: pb.DetectConfig) -> Iterator[pb.DetectRequest]:
        yield pb.DetectRequest(config=config)
        try:
            for batch in self._batches:
                for rows, data in self._encode(batch):
                    self.sent.append(rows)
                    self.rows_sent += rows
                    yield pb.DetectRequest(arrow_batch=data)
        except Exception as exc:  # noqa: BLE001 - re-raised by DetectStream in the caller's thread
            with self.lock:
                self.error = exc
                call = self.call
            if call is not None:
                call.cancel()

    def attach(self, call: Any) -> None:
        with self.lock:
            self.call = call
            failed = self.error is not None
        if failed:
            call.cancel()


class DetectStream(Iterator[BatchResult]):
    """Iterator over the :class:`BatchResult` of one Detect call, in input order.

    Findings for a batch arrive while later batches are still being read and sent. Once the
    iterator is exhausted, :attr:`summary` holds the server's summary. Errors raise
    :class:`~dqd_client.DqdError` subclasses: an exception raised while producing the input
    (e.g. :class:`~dqd_client.InputError` from a file) cancels the call and is re-raised here.
    Use as a context manager (or call :meth:`cancel`) to stop early; an abandoned stream is
    cancelled when garbage-collected.
    """

    def __init__(self, start: Callable[[Iterator[pb.DetectRequest]], Any],
                 config: pb.DetectConfig, batches: Iterable[pa.RecordBatch],
                 encode: Callable[[pa.RecordBatch], Iterator[tuple[int, bytes]]]) -> None:
        self.summary: Summary | None = None
        self.rows_done = 0
        self._done = False
        self._call: Any = None
        self._next_index = 0
        self._feed = _Feed(batches, encode)
        try:
            self._call = start(self._feed.requests(config))
        except grpc.RpcError as exc:
            self._done = True
            raise from_rpc_error(exc) from exc
        self._feed.attach(self._call)

    @property
    def rows_sent(self) -> int:
        """Rows handed to gRPC so far (ahead of :attr:`rows_done` by what is in flight)."""
        return self._feed.rows_sent

    def __iter__(self) -> DetectStream:
        return self

    def __next__(self) -> BatchResult:
        if self._done:
            raise StopIteration
        try:
            response = next(self._call)
        except StopIteration:
            self._done = True
            self._raise_input_error()
            if self.summary is None:
                raise ProtocolError("the server ended the Detect stream without a summary") from None
            raise
        except grpc.RpcError as exc:
            self._done = True
            self._raise_input_error()
            raise from_rpc_error(exc) from exc
        kind = response.WhichOneof("payload")
        try:
            if kind == "findings":
                return self._result(response.findings)
            if kind == "summary":
                self.summary = Summary.from_proto(response.summary)
                self._drain()
                raise StopIteration
            raise ProtocolError("a Detect response without payload")
        except ProtocolError:
            self.cancel()
            raise

    def _result(self, msg: pb.BatchFindings) -> BatchResult:
        index, expected_first = self._next_index, self.rows_done
        if msg.batch_index != index or msg.first_row != expected_first:
            raise ProtocolError(f"findings out of order: got batch {msg.batch_index} at row "
                                f"{msg.first_row}, expected batch {index} at row {expected_first}")
        sent = self._feed.sent
        if index < len(sent) and msg.num_rows != sent[index]:
            raise ProtocolError(f"findings for batch {index} cover {msg.num_rows} rows, "
                                f"but that batch had {sent[index]}")
        findings = decode_findings(msg.arrow_batch)
        if findings.num_rows != msg.num_findings:
            raise ProtocolError(f"findings for batch {index}: num_findings says {msg.num_findings}, "
                                f"the Arrow batch holds {findings.num_rows}")
        self._next_index += 1
        self.rows_done += msg.num_rows
        return BatchResult(batch_index=msg.batch_index, first_row=msg.first_row,
                           num_rows=msg.num_rows, findings=findings)

    def _drain(self) -> None:
        try:
            for extra in self._call:
                raise ProtocolError(f"unexpected Detect response after the summary: "
                                    f"{extra.WhichOneof('payload')}")
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            self._done = True

    def _raise_input_error(self) -> None:
        with self._feed.lock:
            error, self._feed.error = self._feed.error, None
        if error is not None:
            raise error

    def cancel(self) -> None:
        """Stop the call; the iterator then ends (further ``next`` raises StopIteration)."""
        self._done = True
        if self._call is not None:
            self._call.cancel()

    @property
    def done(self) -> bool:
        return self._done

    def __enter__(self) -> DetectStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._done:
            self.cancel()

    def __del__(self) -> None:
        if not getattr(self, "_done", True) and getattr(self, "_call", None) is not None:
            self._call.cancel()


class Client:
    """A connection to a dqd server.

    ``timeout`` (seconds) is the deadline of each unary call (ListFields, DetectRows, health);
    Detect streams have no deadline unless ``detect(..., timeout=...)`` sets one. ``api_key`` is
    sent as ``x-api-key`` metadata on every call. ``tls=True`` (implied by ``root_certificates``,
    a PEM path or bytes) encrypts the channel. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, target: str, *, tls: bool = False, root_certificates: CertSource | None = None,
                 server_name_override: str | None = None, api_key: str | None = None,
                 timeout: float | None = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._channel = create_channel(target, tls=tls, root_certificates=root_certificates,
                                       server_name_override=server_name_override, api_key=api_key,
                                       max_message_bytes=max_message_bytes, options=options)
        self._stub = pb_grpc.DetectionServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        """Close the channel; running streams are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"

    # -- streaming detection -------------------------------------------------------------------

    def detect(self, batches: Iterable[pa.RecordBatch], columns: Mapping[str, str], *,
               methods: Sequence[str] | None = None, thresholds: Mapping[str, float] | None = None,
               emit: Emit = "flagged", job_key: str = "", persist: bool = False, data_file: str = "",
               timeout: float | None = None) -> DetectStream:
        """Stream ``batches`` to the server and iterate over the findings of each batch.

        ``columns`` maps column names in the batches to field types (see :meth:`list_fields`);
        only those columns are sent, as strings. ``job_key`` makes the job idempotent (a key
        whose job completed raises :class:`~dqd_client.AlreadyExists`); ``persist`` asks the
        server to store the job and its findings for :meth:`get_job`, ``data_file`` names the
        data in that record. ``batches`` is consumed lazily, one batch at a
        time, as gRPC flow control allows. A batch too large for one message is split in two
        (recursively), so results then follow the split batches; rows stay numbered over the
        whole stream.
        """
        config = _config(columns, methods, thresholds, emit, job_key)
        config.persist = persist
        config.data_file = data_file
        names = list(config.columns)
        selected = (select_columns(b, names, "the batch") for b in batches)
        return DetectStream(lambda requests: self._stub.Detect(requests, timeout=timeout),
                            config, selected, self._encode)

    def check_table(self, table: pa.Table | pa.RecordBatch, columns: Mapping[str, str], *,
                    batch_size: int = DEFAULT_BATCH_SIZE, **kwargs: Any) -> DetectStream:
        """:meth:`detect` over an in-memory table, sent in batches of ``batch_size`` rows."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise InputError(f"expected a pyarrow Table or RecordBatch, got {type(table).__name__}")
        names = list(_config(columns).columns)
        missing = [c for c in names if c not in table.schema.names]
        if missing:
            raise InputError(f"column(s) {missing} not found in the table; available: {table.schema.names}")
        batches = rebatch(table.select(names).to_batches(max_chunksize=batch_size), batch_size)
        return self.detect(batches, columns, **kwargs)

    def check_file(self, path: str | os.PathLike[str], columns: Mapping[str, str], *,
                   batch_size: int = DEFAULT_BATCH_SIZE, format: str | None = None,
                   **kwargs: Any) -> DetectStream:
        """:meth:`detect` over a Parquet, CSV/TSV, Arrow IPC or JSON-lines file, streamed.

        The file is opened (and its columns checked) at once; it is read batch by batch while
        the stream runs. See :func:`dqd_client._io.read_batches` for how each format is read.
        """
        names = list(_config(columns).columns)
        batches = read_batches(path, names, batch_size=batch_size, format=format)
        kwargs.setdefault("data_file", os.path.basename(os.fspath(path)))
        return self.detect(batches, columns, **kwargs)

    def _encode(self, batch: pa.RecordBatch) -> Iterator[tuple[int, bytes]]:
        data = encode_batch(batch)
        if len(data) + _ENVELOPE_BYTES <= self.max_message_bytes:
            yield batch.num_rows, data
        elif batch.num_rows > 1:
            half = batch.num_rows // 2
            yield from self._encode(batch.slice(0, half))
            yield from self._encode(batch.slice(half))
        else:
            raise InputError(f"a single row needs {len(data)} bytes, over the message limit of "
                             f"{self.max_message_bytes} bytes (raise max_message_bytes)")

    # -- unary calls ---------------------------------------------------------------------------

    def detect_rows(self, rows: Sequence[Mapping[str, str | None]], columns: Mapping[str, str], *,
                    methods: Sequence[str] | None = None, thresholds: Mapping[str, float] | None = None,
                    emit: Emit = "flagged", timeout: float | None = None) -> tuple[list[Finding], Summary]:
        """Check a few rows given as ``{column: text}`` maps; ``None`` or a left-out column is null."""
        config = _config(columns, methods, thresholds, emit)
        request = pb.DetectRowsRequest(columns=config.columns, methods=config.methods,
                                       thresholds=config.thresholds, emit=config.emit)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputError(f"row {i} is a {type(row).__name__}, expected a mapping of column -> text")
            cells = {str(k): v if isinstance(v, str) else str(v) for k, v in row.items() if v is not None}
            request.rows.add().cells.update(cells)
        response = self._unary(self._stub.DetectRows, request, timeout)
        findings = [Finding.from_proto(f) for f in response.findings]
        return findings, Summary.from_proto(response.summary)

    def list_fields(self, *, timeout: float | None = None) -> list[FieldInfo]:
        """The field types the server can check, with their methods and versions."""
        response = self._unary(self._stub.ListFields, pb.ListFieldsRequest(), timeout)
        return [FieldInfo.from_proto(f) for f in response.fields]

    def get_job(self, job_id: str = "", *, job_key: str = "", timeout: float | None = None) -> Job:
        """A persisted job by its id or by the caller's ``job_key`` (raises NotFound if unknown)."""
        if bool(job_id) == bool(job_key):
            raise InputError("give exactly one of job_id and job_key")
        request = pb.GetJobRequest(job_id=job_id) if job_id else pb.GetJobRequest(job_key=job_key)
        return Job.from_proto(self._unary(self._stub.GetJob, request, timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status of ``service`` ("" = the whole server): "SERVING", "NOT_SERVING", …"""
        response = self._unary(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc


def _config(columns: Mapping[str, str], methods: Sequence[str] | None = None,
            thresholds: Mapping[str, float] | None = None, emit: Emit = "flagged",
            job_key: str = "") -> pb.DetectConfig:
    """Validate the caller's options locally and build the DetectConfig."""
    if not isinstance(columns, Mapping) or not columns:
        raise InputError("columns must be a non-empty mapping of column name -> field type")
    for column, field in columns.items():
        if not isinstance(column, str) or not isinstance(field, str) or not column or not field:
            raise InputError(f"bad column mapping {column!r} -> {field!r}; both must be non-empty text")
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m]
    if emit not in _EMIT:
        raise InputError(f"emit must be one of {sorted(_EMIT)}, got {emit!r}")
    try:
        limits = {str(k): float(v) for k, v in (thresholds or {}).items()}
    except (TypeError, ValueError) as exc:
        raise InputError(f"thresholds must map method names to numbers: {exc}") from exc
    return pb.DetectConfig(columns=dict(columns), methods=list(methods or ()), thresholds=limits,
                           emit=_EMIT[emit], job_key=job_key or "")

