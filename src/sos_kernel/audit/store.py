"""The audit store: a handful of primitives; the chain and its checks live in :mod:`sos_kernel.audit.chain`."""

from __future__ import annotations

from abc import ABC, abstractmethod

from .models import AuditDraft, AuditRecord, Checkpoint

__all__ = ["AuditStore"]


class AuditStore(ABC):
    """Per tenant: an append-only chain of records and its signed checkpoints."""

    @abstractmethod
    async def append(self, tenant: str, draft: AuditDraft) -> AuditRecord:
        """Chain ``draft`` after the tenant's last record, atomically (concurrent appends never fork the chain)."""

    @abstractmethod
    async def page(self, tenant: str, after: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` records with ``seq > after``, ascending, as stored (a malformed row raises SOS-6099)."""

    @abstractmethod
    async def head(self, tenant: str) -> tuple[int, str | None]:
        """The tenant's last sequence and digest (``0, None`` before the first record)."""

    @abstractmethod
    async def count(self, tenant: str) -> int:
        """How many records the store holds for the tenant (the chain's length, unless one was inserted)."""

    @abstractmethod
    async def put_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Keep a signed checkpoint (one per sequence; a second for the same sequence is ignored)."""

    @abstractmethod
    async def checkpoints(self, tenant: str) -> list[Checkpoint]:
        """The tenant's checkpoints, by sequence."""
