"""ProtocolError: the client refuses Detect answers that break the protocol (misbehaving_server.py says why a double)."""
from __future__ import annotations

from collections.abc import Iterator

import dqd_client
import pyarrow as pa
import pytest
from dqd_client import Client
from misbehaving_server import MID_STREAM, Fault, MisbehavingServicer, start_misbehaving_server

BATCHES = [pa.record_batch({"material": ["100% Cotton", "78% Viscose - 22% Nylon"]})] * 2


@pytest.fixture(params=list(Fault), ids=lambda fault: fault.name.lower())
def misbehaving(request: pytest.FixtureRequest) -> Iterator[tuple[str, MisbehavingServicer]]:
    server, target, servicer = start_misbehaving_server(request.param)
    try:
        yield target, servicer
    finally:
        server.stop(grace=None)


EXPECTED = {
    Fault.SKEWED_FIRST_ROW: r"findings out of order: got batch 0 at row 1, expected batch 0 at row 0",
    Fault.WRONG_BATCH_INDEX: r"findings out of order: got batch 1 at row 0, expected batch 0 at row 0",
    Fault.WRONG_NUM_ROWS: r"findings for batch 0 cover 3 rows, but that batch had 2",
    Fault.NUM_FINDINGS_MISMATCH: r"findings for batch 0: num_findings says 1, the Arrow batch holds 0",
    Fault.NO_SUMMARY: r"the server ended the Detect stream without a summary",
    Fault.EXTRA_AFTER_SUMMARY: r"unexpected Detect response after the summary: findings",
    Fault.NO_PAYLOAD: r"a Detect response without payload",
}


def test_protocol_error(misbehaving: tuple[str, MisbehavingServicer]) -> None:
    target, servicer = misbehaving
    fault = servicer.fault
    with Client(target, timeout=10) as client:
        stream = client.detect(iter(BATCHES), {"material": "material"})
        with pytest.raises(dqd_client.ProtocolError, match=EXPECTED[fault]):
            list(stream)
        assert stream.done and list(stream) == []
        if fault is not Fault.EXTRA_AFTER_SUMMARY:
            assert stream.summary is None
        if fault in MID_STREAM:  # the client cancels a call it gave up on (checked before the channel closes)
            assert servicer.cancelled_by_client.wait(5), "the client did not cancel the call after the ProtocolError"
