"""The dqd Client: streaming detection over Arrow batches, tables and files, plus the unary calls."""
from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
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

# Resumable streams (``detect(..., resume=True)``): reconnect tries per outage, their backoff, and
# how many bytes of sent but not yet acknowledged batches are kept for re-sending.
RESUME_TRIES = 10
RESUME_FIRST_DELAY_S = 0.25
RESUME_MAX_DELAY_S = 4.0
RESUME_WINDOW_S = 30.0  # most seconds spent waiting between the tries of one outage
RESUME_BUFFER_BYTES = 256 * 1024 * 1024
# A server that never says where to resume does not support it (it waits for batches, the client for
# its StreamStarted): the stream fails after this many seconds instead of waiting forever.
RESUME_STARTED_TIMEOUT_S = 60.0
RETRY_AFTER_MS_KEY = "dqd-retry-after-ms"  # trailing metadata of a resume the server asks to retry later
# Failures a resumable stream survives by reconnecting: the server or the connection went away.
_RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED})
_RESET_HINTS = ("rst_stream", "stream removed", "socket closed", "connection reset", "broken pipe")


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
    cancelled when garbage-collected. :attr:`target` is the server address the stream uses; a
    resumable stream (``detect(..., resume=True)``) may move to another one, and also has
    :attr:`job_id`, :attr:`reconnects` and :attr:`replayed` (results re-sent from the server's
    storage after a reconnect).
    """

    def __init__(self, start: Callable[[Iterator[pb.DetectRequest]], Any],
                 config: pb.DetectConfig, batches: Iterable[pa.RecordBatch],
                 encode: Callable[[pa.RecordBatch], Iterator[tuple[int, bytes]]], *, target: str = "") -> None:
        self.summary: Summary | None = None
        self.rows_done = 0
        self.target = target  # the server address this stream talks to
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
        sent = self._sent_rows(index)
        if sent is not None and msg.num_rows != sent:
            raise ProtocolError(f"findings for batch {index} cover {msg.num_rows} rows, "
                                f"but that batch had {sent}")
        findings = decode_findings(msg.arrow_batch)
        if findings.num_rows != msg.num_findings:
            raise ProtocolError(f"findings for batch {index}: num_findings says {msg.num_findings}, "
                                f"the Arrow batch holds {findings.num_rows}")
        self._next_index += 1
        self.rows_done += msg.num_rows
        return BatchResult(batch_index=msg.batch_index, first_row=msg.first_row,
                           num_rows=msg.num_rows, findings=findings, stored=msg.stored)

    def _sent_rows(self, index: int) -> int | None:
        sent = self._feed.sent
        return sent[index] if index < len(sent) else None

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


class _Outbox:
    """The input of a resumable stream as numbered messages, each kept until the server acknowledges it.

    Shared by the successive calls of one stream: the sending side of each call (run by gRPC's
    request thread) takes messages from here, the reading side drops the acknowledged ones. Input
    is pulled lazily, and not past ``max_bytes`` of unacknowledged messages (at least one).
    A call whose ``epoch`` is no longer current stops sending at once.
    """

    def __init__(self, batches: Iterable[pa.RecordBatch],
                 encode: Callable[[pa.RecordBatch], Iterator[tuple[int, bytes]]], max_bytes: int) -> None:
        self.cond = threading.Condition()
        self.epoch = 0
        self.started_epoch = -1  # the epoch whose ``started`` said where to send from
        self.send_from = 0
        self.base = 0  # index of pending[0]: every message before it is acknowledged
        self.base_row = 0
        self.pending: deque[tuple[int, bytes]] = deque()
        self.pending_bytes = 0
        self.rows_sent = 0
        self.input_done = False
        self.error: BaseException | None = None
        self.call: Any = None
        self.max_bytes = max_bytes
        self._pulling = False
        self._batches = iter(batches)
        self._encode = encode
        self._queue: deque[tuple[int, bytes]] = deque()
        self._skip_rows = 0

    # -- sending side (gRPC's request thread of the call of ``epoch``) -------------------------

    def requests(self, epoch: int, config: pb.DetectConfig) -> Iterator[pb.DetectRequest]:
        yield pb.DetectRequest(config=config)
        deadline = time.monotonic() + RESUME_STARTED_TIMEOUT_S
        with self.cond:
            while self.epoch == epoch and self.started_epoch != epoch and time.monotonic() < deadline:
                self.cond.wait(0.5)
            if self.epoch != epoch:
                return
            if self.started_epoch != epoch:
                self.error = ProtocolError(
                    f"the server did not answer StreamStarted within {RESUME_STARTED_TIMEOUT_S:g} s; "
                    "it does not support resume (upgrade it, or call detect without resume)")
                call = self.call
            else:
                call = None
                index = self.send_from
        if call is not None or self.error is not None:
            if call is not None:
                call.cancel()
            return
        while (item := self._take(epoch, index)) is not None:
            yield pb.DetectRequest(arrow_batch=item[1])
            index += 1

    def _take(self, epoch: int, index: int) -> tuple[int, bytes] | None:
        while True:
            with self.cond:
                while True:
                    if self.epoch != epoch or self.error is not None:
                        return None
                    k = index - self.base
                    if 0 <= k < len(self.pending):
                        return self.pending[k]
                    if k < 0:  # acknowledged meanwhile: cannot happen, the server asked for it
                        index = self.base
                        continue
                    if self.input_done:
                        return None
                    if not self._pulling and (not self.pending or self.pending_bytes < self.max_bytes):
                        self._pulling = True
                        break
                    self.cond.wait(0.5)
            try:
                item = self._pull()
            except BaseException as exc:  # noqa: BLE001 - re-raised by the stream in the caller's thread
                with self.cond:
                    self._pulling = False
                    self.error = exc
                    call = self.call
                    self.cond.notify_all()
                if call is not None:
                    call.cancel()
                return None
            with self.cond:
                self._pulling = False
                if item is None:
                    self.input_done = True
                else:
                    self.pending.append(item)
                    self.pending_bytes += len(item[1])
                    self.rows_sent += item[0]
                self.cond.notify_all()

    def _pull(self) -> tuple[int, bytes] | None:
        while not self._queue:
            batch = next(self._batches, None)
            if batch is None:
                return None
            if self._skip_rows:
                if batch.num_rows <= self._skip_rows:
                    self._skip_rows -= batch.num_rows
                    continue
                batch, self._skip_rows = batch.slice(self._skip_rows), 0
            self._queue.extend(self._encode(batch))
        return self._queue.popleft()

    # -- reading side (the caller's thread) ----------------------------------------------------

    def new_epoch(self) -> int:
        """Stop the senders of earlier calls; the number of the next call."""
        with self.cond:
            self.epoch += 1
            self.cond.notify_all()
            return self.epoch

    def attach(self, call: Any) -> None:
        with self.cond:
            self.call = call
            failed = self.error is not None
        if failed:
            call.cancel()

    def begin(self, epoch: int, next_batch: int, next_row: int) -> None:
        """The server of call ``epoch`` expects batch ``next_batch`` (row ``next_row``) next."""
        with self.cond:
            if epoch != self.epoch:
                return
            end = self.base + len(self.pending)
            if next_batch < self.base:
                raise ProtocolError(f"the server resumes the job at batch {next_batch}, but batches up to "
                                    f"{self.base - 1} were already acknowledged: the job was run again from "
                                    "scratch by another stream")
            if next_batch > end:
                if self.base or self.pending or self.rows_sent or self.input_done:
                    raise ProtocolError(f"the server has stored {next_batch} batches of the job, but this stream "
                                        f"sent only {end}: another stream is feeding the same job key")
                # A new stream continuing a job stored earlier: skip the input the job already holds.
                self._skip_rows, self.base, self.base_row = next_row, next_batch, next_row
            else:
                row = self.base_row + sum(rows for rows, _ in list(self.pending)[:next_batch - self.base])
                if row != next_row:
                    raise ProtocolError(f"the server resumes at batch {next_batch}, row {next_row}, but this "
                                        f"stream's batch {next_batch} starts at row {row}")
            self.send_from = next_batch
            self.started_epoch = epoch
            self.cond.notify_all()

    def ack(self, index: int) -> None:
        """Batch ``index`` (and so every earlier one) is stored: forget it."""
        with self.cond:
            while self.pending and self.base <= index:
                rows, data = self.pending.popleft()
                self.pending_bytes -= len(data)
                self.base += 1
                self.base_row += rows
            self.cond.notify_all()

    def rows_of(self, index: int) -> int | None:
        with self.cond:
            k = index - self.base
            return self.pending[k][0] if 0 <= k < len(self.pending) else None

    def take_error(self) -> BaseException | None:
        with self.cond:
            error, self.error = self.error, None
            return error


class _ResumableStream(DetectStream):
    """A :class:`DetectStream` of a persisted job that survives the loss of its server.

    Every batch sent is kept until its answer says ``stored``. When the call fails with
    UNAVAILABLE, CANCELLED (not by the caller), ABORTED or a reset connection, the stream
    reconnects (the next target of the client, or the same one through a load balancer) with
    ``resume``; the server answers ``started`` with the batch it needs next and first re-sends the
    stored findings this stream had not received, then the unacknowledged batches are sent again
    and the input continues. A job still owned by a live stream (ALREADY_EXISTS with a retry hint)
    is retried too. Each outage gets ``RESUME_TRIES`` tries with exponential backoff (at most
    ``RESUME_WINDOW_S`` seconds of waiting); then the last error is raised.
    """

    def __init__(self, client: Client, config: pb.DetectConfig, batches: Iterable[pa.RecordBatch],
                 encode: Callable[[pa.RecordBatch], Iterator[tuple[int, bytes]]], *, timeout: float | None,
                 tries: int | None = None, buffer_bytes: int | None = None) -> None:
        self.summary = None
        self.rows_done = 0
        self.job_id = ""  # from the server's ``started``
        self.reconnects = 0  # calls started after the first
        self.replayed = 0  # results re-sent from the server's storage (their answers were lost in flight)
        self._done = False
        self._call = None
        self._next_index = 0
        self._client = client
        self._config = config
        self._tries = RESUME_TRIES if tries is None else tries
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._outbox = _Outbox(batches, encode, RESUME_BUFFER_BYTES if buffer_bytes is None else buffer_bytes)
        self._target_index = client._active
        self.target = client.targets[self._target_index]
        self._epoch = 0
        self._started = False
        self._call_from = 0  # the first batch the current call's server had not stored yet
        self._ended_summary: Summary | None = None  # the current call's summary
        self._last_summary: Summary | None = None  # the last summary of any call
        self._failures = 0
        self._waited = 0.0
        try:
            self._connect()
        except grpc.RpcError as exc:
            self._done = True
            raise from_rpc_error(exc) from exc

    @property
    def rows_sent(self) -> int:
        """Rows taken from the input and sent (re-sent rows count once)."""
        return self._outbox.rows_sent

    def _connect(self) -> None:
        self._epoch = self._outbox.new_epoch()
        self._started = False
        self._ended_summary = None
        config = pb.DetectConfig()
        config.CopyFrom(self._config)
        config.replay_from_batch = self._next_index
        self.target = self._client.targets[self._target_index]
        timeout = None if self._deadline is None else max(self._deadline - time.monotonic(), 0.001)
        stub = self._client._stub_of(self._target_index)
        self._call = stub.Detect(self._outbox.requests(self._epoch, config), timeout=timeout)
        self._outbox.attach(self._call)

    def __next__(self) -> BatchResult:
        if self._done:
            raise StopIteration
        while True:
            try:
                response = next(self._call)
            except StopIteration:
                self._done = True
                self._raise_input_error()
                if self._ended_summary is None:
                    raise ProtocolError("the server ended the Detect stream without a summary") from None
                self.summary = self._ended_summary
                self._outbox.new_epoch()
                raise
            except grpc.RpcError as exc:
                self._raise_input_error()
                if self._completed_meanwhile(exc):
                    raise StopIteration from None
                if self._done or not _reconnectable(exc):
                    self._done = True
                    raise from_rpc_error(exc) from exc
                self._reconnect(exc)
                continue
            try:
                result = self._handle(response)
            except ProtocolError:
                self.cancel()
                raise
            if result is not None:
                return result

    def _handle(self, response: pb.DetectResponse) -> BatchResult | None:
        kind = response.WhichOneof("payload")
        if kind == "started":
            if self._started:
                raise ProtocolError("a second StreamStarted in one Detect call")
            msg = response.started
            if msg.next_batch < self._next_index:
                raise ProtocolError(f"the server resumes the job at batch {msg.next_batch}, but this stream "
                                    f"already received the findings of {self._next_index} batches: the job was "
                                    "run again from scratch by another stream")
            self._outbox.begin(self._epoch, msg.next_batch, msg.next_row)
            self.job_id = msg.job_id
            self._call_from = msg.next_batch
            self._started = True
            self._client._active = self._target_index
            return None
        if not self._started:
            raise ProtocolError("the server answered a resumable Detect stream without StreamStarted; "
                                "it does not support resume (upgrade it, or call detect without resume)")
        if self._ended_summary is not None:
            raise ProtocolError(f"unexpected Detect response after the summary: {kind}")
        if kind == "findings":
            msg = response.findings
            if not msg.stored:
                raise ProtocolError(f"the server did not store batch {msg.batch_index} of a persisted job")
            result = self._result(msg)
            self._outbox.ack(msg.batch_index)
            if msg.batch_index < self._call_from:
                self.replayed += 1
            self._failures, self._waited = 0, 0.0  # progress: a later outage gets the full budget
            return result
        if kind == "summary":
            # Final once the call ends OK (the job is then completed); if the call fails instead,
            # the stream reconnects and the next server completes the job and sends it again.
            self._ended_summary = self._last_summary = Summary.from_proto(response.summary)
            return None
        raise ProtocolError("a Detect response without payload")

    def _sent_rows(self, index: int) -> int | None:
        return self._outbox.rows_of(index)

    def _completed_meanwhile(self, error: grpc.RpcError) -> bool:
        """The summary came, then the connection broke before the call ended, and the resume finds the
        job completed: the first server did complete it, so the stream is done."""
        if self._last_summary is None or error.code() != grpc.StatusCode.ALREADY_EXISTS:
            return False
        details = error.details() or ""
        if _retry_after(error) is not None or "already completed" not in details or self.job_id not in details:
            return False
        self.summary, self._done = self._last_summary, True
        self._outbox.new_epoch()
        return True

    def _reconnect(self, error: grpc.RpcError) -> None:
        """Wait (backoff, or the server's retry hint) and start the next call; raise when out of tries."""
        hint = _retry_after(error)
        if self._failures >= self._tries or (self._deadline is not None and time.monotonic() >= self._deadline):
            self._give_up(error)
        delay = min(RESUME_FIRST_DELAY_S * 2 ** self._failures, RESUME_MAX_DELAY_S)
        if hint is not None:
            delay = min(max(delay, hint), RESUME_MAX_DELAY_S)
        delay *= random.uniform(0.9, 1.1)
        if self._waited + delay > RESUME_WINDOW_S:
            self._give_up(error)
        if self._deadline is not None:
            delay = min(delay, max(self._deadline - time.monotonic(), 0.0))
        self._failures += 1
        self._waited += delay
        self._outbox.new_epoch()  # the old call's sender stops taking input
        if self._call is not None:
            self._call.cancel()
        time.sleep(delay)
        if self._done:  # cancelled by the caller meanwhile
            raise StopIteration
        if hint is None:  # the server went away: try the next one (a load balancer picks a live one)
            self._target_index = (self._target_index + 1) % len(self._client.targets)
        self.reconnects += 1
        try:
            self._connect()
        except grpc.RpcError as exc:
            self._done = True
            raise from_rpc_error(exc) from exc

    def _give_up(self, error: grpc.RpcError) -> None:
        self._done = True
        self._outbox.new_epoch()
        exc = from_rpc_error(error)
        if self._failures:
            exc.args = (f"{exc.args[0]} (gave up after {self._failures} reconnect tries)",)
        raise exc from error

    def _raise_input_error(self) -> None:
        error = self._outbox.take_error()
        if error is not None:
            self._done = True
            self._outbox.new_epoch()
            raise error

    def cancel(self) -> None:
        """Stop the call; the iterator then ends (further ``next`` raises StopIteration)."""
        self._done = True
        self._outbox.new_epoch()
        if self._call is not None:
            self._call.cancel()


def _retry_after(error: grpc.RpcError) -> float | None:
    """Seconds the server asked to wait before resuming (ALREADY_EXISTS of a job a live stream owns)."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    if code != grpc.StatusCode.ALREADY_EXISTS:
        return None
    metadata = error.trailing_metadata() if callable(getattr(error, "trailing_metadata", None)) else None
    for key, value in metadata or ():
        if key == RETRY_AFTER_MS_KEY:
            try:
                return max(float(value) / 1000.0, 0.0)
            except (TypeError, ValueError):
                return None
    return None


def _reconnectable(error: grpc.RpcError) -> bool:
    code = error.code() if callable(getattr(error, "code", None)) else None
    if code in _RECONNECT_CODES:
        return True
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return _retry_after(error) is not None
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        details = (error.details() if callable(getattr(error, "details", None)) else "") or ""
        return any(hint in details.lower() for hint in _RESET_HINTS)
    return False


class Client:
    """A connection to a dqd server (or to one of several replicas).

    ``target`` is ``"host:port"`` or a sequence of them: calls go to the first, and a resumable
    stream (``detect(..., resume=True)``) that loses its server moves on to the next one (unary
    calls then follow it). Behind a load balancer such as Envoy, give its one address.
    ``timeout`` (seconds) is the deadline of each unary call (ListFields, DetectRows, health);
    Detect streams have no deadline unless ``detect(..., timeout=...)`` sets one. ``api_key`` is
    sent as ``x-api-key`` metadata on every call. ``tls=True`` (implied by ``root_certificates``,
    a PEM path or bytes) encrypts the channel. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, target: str | Sequence[str], *, tls: bool = False,
                 root_certificates: CertSource | None = None, server_name_override: str | None = None,
                 api_key: str | None = None, timeout: float | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        targets = (target,) if isinstance(target, str) else tuple(target)
        if not targets or not all(isinstance(t, str) for t in targets):
            raise InputError(f"target must be 'host:port' or a non-empty sequence of them, got {target!r}")
        self.targets: tuple[str, ...] = targets
        self.target = targets[0]
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._active = 0  # index of the target unary calls and new streams use
        self._channels = [create_channel(t, tls=tls, root_certificates=root_certificates,
                                         server_name_override=server_name_override, api_key=api_key,
                                         max_message_bytes=max_message_bytes, options=options)
                          for t in targets]
        self._stubs = [pb_grpc.DetectionServiceStub(ch) for ch in self._channels]
        self._healths = [health_pb2_grpc.HealthStub(ch) for ch in self._channels]
        self._channel = self._channels[0]

    @property
    def _stub(self) -> pb_grpc.DetectionServiceStub:
        return self._stubs[self._active]

    @property
    def _health(self) -> health_pb2_grpc.HealthStub:
        return self._healths[self._active]

    def _stub_of(self, index: int) -> pb_grpc.DetectionServiceStub:
        return self._stubs[index]

    def close(self) -> None:
        """Close the channel(s); running streams are cancelled."""
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})" if len(self.targets) == 1 else f"Client({list(self.targets)!r})"

    # -- streaming detection -------------------------------------------------------------------

    def detect(self, batches: Iterable[pa.RecordBatch], columns: Mapping[str, str], *,
               methods: Sequence[str] | None = None, thresholds: Mapping[str, float] | None = None,
               emit: Emit = "flagged", job_key: str = "", persist: bool = False, data_file: str = "",
               timeout: float | None = None, resume: bool = False) -> DetectStream:
        """Stream ``batches`` to the server and iterate over the findings of each batch.

        ``columns`` maps column names in the batches to field types (see :meth:`list_fields`);
        only those columns are sent, as strings. ``job_key`` makes the job idempotent (a key
        whose job completed raises :class:`~dqd_client.AlreadyExists`); ``persist`` asks the
        server to store the job and its findings for :meth:`get_job`, ``data_file`` names the
        data in that record. ``batches`` is consumed lazily, one batch at a
        time, as gRPC flow control allows. A batch too large for one message is split in two
        (recursively), so results then follow the split batches; rows stay numbered over the
        whole stream.

        ``resume=True`` (needs ``job_key``; implies ``persist``) makes the stream survive the loss
        of its server: batches are kept until the server acknowledges them as stored, and on a
        dropped connection or a server going away the stream reconnects (the next of several
        targets, or the same address behind a load balancer) and resumes the same job from its
        last stored batch; each batch's result is still yielded exactly once, rows numbered as
        in an uninterrupted run. A job key whose job failed or was cancelled (e.g. this
        program was stopped) is continued where it stopped: the input rows the job already
        holds are skipped and their stored results yielded first. :attr:`DetectStream.target`
        is the server in use. ``timeout`` then bounds the whole stream, reconnects included.
        """
        config = _config(columns, methods, thresholds, emit, job_key)
        config.persist = persist or resume
        config.data_file = data_file
        names = list(config.columns)
        selected = (select_columns(b, names, "the batch") for b in batches)
        if resume:
            if not job_key:
                raise InputError("resume=True needs a job_key naming the job to continue")
            config.resume = True
            return _ResumableStream(self, config, selected, self._encode, timeout=timeout)
        return DetectStream(lambda requests: self._stub.Detect(requests, timeout=timeout),
                            config, selected, self._encode, target=self.targets[self._active])

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
        response = self._unary(lambda stub: stub.DetectRows, request, timeout)
        findings = [Finding.from_proto(f) for f in response.findings]
        return findings, Summary.from_proto(response.summary)

    def list_fields(self, *, timeout: float | None = None) -> list[FieldInfo]:
        """The field types the server can check, with their methods and versions."""
        response = self._unary(lambda stub: stub.ListFields, pb.ListFieldsRequest(), timeout)
        return [FieldInfo.from_proto(f) for f in response.fields]

    def get_job(self, job_id: str = "", *, job_key: str = "", timeout: float | None = None) -> Job:
        """A persisted job by its id or by the caller's ``job_key`` (raises NotFound if unknown)."""
        if bool(job_id) == bool(job_key):
            raise InputError("give exactly one of job_id and job_key")
        request = pb.GetJobRequest(job_id=job_id) if job_id else pb.GetJobRequest(job_key=job_key)
        return Job.from_proto(self._unary(lambda stub: stub.GetJob, request, timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status of ``service`` ("" = the whole server): "SERVING", "NOT_SERVING", …"""
        try:  # the health of the server in use: no failover to another target
            response = self._health.Check(health_pb2.HealthCheckRequest(service=service),
                                          timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def _unary(self, method: Callable[[pb_grpc.DetectionServiceStub], Any], request: Any,
               timeout: float | None) -> Any:
        """Call ``method`` of the target in use; with several targets, an UNAVAILABLE one is
        skipped for the next (these calls only read, so repeating them is safe)."""
        start = self._active
        for step in range(len(self.targets)):
            index = (start + step) % len(self.targets)
            try:
                response = method(self._stubs[index])(request, timeout=self.timeout if timeout is None else timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and step + 1 < len(self.targets):
                    continue
                raise from_rpc_error(exc) from exc
            self._active = index
            return response
        raise AssertionError("unreachable")


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

