"""Checkpoints: graph state kept in the kernel per tenant (see :mod:`sos_kernel.checkpoints.service`)."""

from .service import (
    CHECKPOINT_BYTES_MAX,
    CHECKPOINT_ID_CHARS_MAX,
    CHECKPOINT_THREADS_PER_TENANT_MAX,
    CHECKPOINT_WRITES_PER_CALL_MAX,
    CHECKPOINTS_PER_THREAD_MAX,
    Checkpoints,
)
from .store import CheckpointRow, CheckpointStore, WriteRow

__all__ = [
    "CHECKPOINTS_PER_THREAD_MAX",
    "CHECKPOINT_BYTES_MAX",
    "CHECKPOINT_ID_CHARS_MAX",
    "CHECKPOINT_THREADS_PER_TENANT_MAX",
    "CHECKPOINT_WRITES_PER_CALL_MAX",
    "CheckpointRow",
    "CheckpointStore",
    "Checkpoints",
    "WriteRow",
]
