"""Arrow IPC (de)serialisation of single record batches, with validation of untrusted input."""
from __future__ import annotations

import pyarrow as pa

from .errors import InvalidInput


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """One Arrow IPC stream (schema + this batch) as bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_batch(payload: bytes) -> pa.RecordBatch:
    """Parse one Arrow IPC stream holding exactly one record batch.

    The bytes come from the network: any parse failure becomes ``InvalidInput`` with a message
    that says what was expected. Buffers are validated when columns are selected (``validate``).
    """
    if not payload:
        raise InvalidInput("arrow_batch is empty: send one Arrow IPC stream (schema + one record batch)")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(payload))
        batches = [b for b in reader]
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(
            f"arrow_batch is not a valid Arrow IPC stream ({exc}); write it with pyarrow.ipc.new_stream"
        ) from None
    if len(batches) != 1:
        raise InvalidInput(f"arrow_batch must hold exactly one record batch, found {len(batches)}")
    return batches[0]


def validate(array: pa.Array, column: str) -> None:
    """Full validation (offsets, UTF-8) of an untrusted column before compute kernels touch it."""
    try:
        array.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        raise InvalidInput(f"column {column!r} holds malformed Arrow data: {exc}") from None
