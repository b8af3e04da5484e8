"""In-process Detect peers that do what a real dqd server cannot be made to do — used only for that.

Everything else in the client tests runs against real ``dqd serve`` processes (see conftest.py).
Two behaviours need this double:

* Breaking the Detect protocol (test_client_protocol_errors.py). The client verifies every answer
  (batch index, first row and row count of each batch, ``num_findings`` against the Arrow payload,
  a summary at the end and nothing after it) and raises ``dqd_client.ProtocolError`` otherwise.
  The real server never breaks the protocol — the server tests check that — and has no switch to
  make it, so these client checks are only reachable through a peer that misbehaves on purpose.
  With a ``Fault`` the double answers each batch with an empty findings batch and ends with a
  summary, except for the one fault it commits; after a faulty first answer (``MID_STREAM``) it
  holds the call open and records in ``cancelled_by_client`` whether the client cancelled it.
* gRPC's default keepalive policy (test_client_detect.py). The client promises a stream with slow
  input survives a server that answers a third ping without data with GOAWAY too_many_pings. The
  real server is deliberately lenient (dqd_server/server.py: pings every 10 s, no ping strikes) and
  cannot be configured otherwise; this double, started without a fault, is a correct Detect peer
  (empty findings) with the default policy.
"""
from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pyarrow as pa
from dqd_client import FINDINGS_SCHEMA
from dqd_client._models import encode_batch
from dqd_client._proto import detection_pb2 as pb
from dqd_client._proto import detection_pb2_grpc as pb_grpc


class Fault(enum.Enum):
    SKEWED_FIRST_ROW = "first_row of every batch is one too high"
    WRONG_BATCH_INDEX = "batch_index starts at 1"
    WRONG_NUM_ROWS = "num_rows is one more than the batch had"
    NUM_FINDINGS_MISMATCH = "num_findings says 1, the Arrow batch holds none"
    NO_SUMMARY = "the stream ends without a summary"
    EXTRA_AFTER_SUMMARY = "one more findings message after the summary"
    NO_PAYLOAD = "an empty DetectResponse instead of findings"


MID_STREAM = frozenset({Fault.SKEWED_FIRST_ROW, Fault.WRONG_BATCH_INDEX, Fault.WRONG_NUM_ROWS,
                        Fault.NUM_FINDINGS_MISMATCH, Fault.NO_PAYLOAD})
HOLD_SECONDS = 10.0

_NO_FINDINGS = encode_batch(pa.RecordBatch.from_pylist([], schema=FINDINGS_SCHEMA))


class MisbehavingServicer(pb_grpc.DetectionServiceServicer):
    def __init__(self, fault: Fault | None = None) -> None:
        self.fault = fault
        self.cancelled_by_client = threading.Event()

    def Detect(self, request_iterator: Iterator[pb.DetectRequest],
               context: grpc.ServicerContext) -> Iterator[pb.DetectResponse]:
        fault = self.fault
        ended_by_itself = threading.Event()
        # runs when the call ends, also when the server stops iterating this generator because the client
        # cancelled (then it never resumes after its last yield)
        context.add_callback(lambda: ended_by_itself.is_set() or self.cancelled_by_client.set())
        next(request_iterator)  # the config
        row = 0
        index = 0
        for index, request in enumerate(request_iterator):
            rows = pa.ipc.open_stream(request.arrow_batch).read_next_batch().num_rows
            if fault is Fault.NO_PAYLOAD:
                yield pb.DetectResponse()
            else:
                yield pb.DetectResponse(findings=pb.BatchFindings(
                    batch_index=index + (fault is Fault.WRONG_BATCH_INDEX),
                    first_row=row + (fault is Fault.SKEWED_FIRST_ROW),
                    num_rows=rows + (fault is Fault.WRONG_NUM_ROWS),
                    num_findings=int(fault is Fault.NUM_FINDINGS_MISMATCH),
                    arrow_batch=_NO_FINDINGS))
            if fault in MID_STREAM:  # hold the call open until the client cancels it
                self.cancelled_by_client.wait(HOLD_SECONDS)
                ended_by_itself.set()
                return
            row += rows
        ended_by_itself.set()
        if fault is Fault.NO_SUMMARY:
            return
        yield pb.DetectResponse(summary=pb.DetectSummary(rows=row, batches=index + 1, findings=0))
        if fault is Fault.EXTRA_AFTER_SUMMARY:
            yield pb.DetectResponse(findings=pb.BatchFindings(batch_index=index + 1, first_row=row,
                                                              arrow_batch=_NO_FINDINGS))


def start_misbehaving_server(fault: Fault | None = None) -> tuple[grpc.Server, str, MisbehavingServicer]:
    """Serve a ``MisbehavingServicer`` (with ``fault``, if any) on a free 127.0.0.1 port: (server, target, servicer).

    The server keeps gRPC's default options, its keepalive policy included.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = MisbehavingServicer(fault)
    pb_grpc.add_DetectionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}", servicer
