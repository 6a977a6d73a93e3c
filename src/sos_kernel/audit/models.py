"""Audit records, checkpoints and verification reports (frozen pydantic models: they travel as JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AuditDraft", "AuditRecord", "AuditReport", "Checkpoint"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuditDraft(_Frozen):
    """What a record says, before the store chains it."""

    at: datetime
    kind: str
    actor: str
    action: str = ""
    resource: str = ""
    outcome: str = "ok"
    details: Mapping[str, Any] = Field(default_factory=dict)


class AuditRecord(AuditDraft):
    """One chained audit record of a tenant: ``seq`` from 1, ``prev`` and ``digest`` as hex SHA-256."""

    tenant: str
    seq: int
    prev: str
    digest: str


class Checkpoint(_Frozen):
    """A signed statement that record ``seq`` of ``tenant`` has ``digest``."""

    tenant: str
    seq: int
    digest: str
    at: datetime
    public_key: str
    signature: str


class AuditReport(_Frozen):
    """What :meth:`sos_kernel.audit.Audit.verify` found: ``ok`` when ``problems`` is empty."""

    tenant: str
    ok: bool
    records: int
    checkpoints: int
    problems: list[str] = Field(default_factory=list)
