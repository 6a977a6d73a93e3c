"""The audit chain: what a record's digest covers, and how a tenant's records are verified.

Each record holds the digest of the tenant's previous record (``prev``; for the first, the tenant's genesis
digest, so a record cannot be moved to another tenant) and its own ``digest``: SHA-256 over ``prev`` and the
canonical encoding of its fields (sequence, time in integer microseconds, kind, actor, action, resource, outcome,
details as compact sorted JSON) — the ledger's encoding (:func:`sos_kernel.ledger.chain.encode_fields`). A signed
checkpoint holds a sequence, the digest of the record at that sequence and an Ed25519 signature over both: a
rewrite of the chain up to a checkpoint cannot be recomputed without the signing key.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from ..identity.keys import PublicKey
from ..ledger.chain import canonical_metadata, encode_fields, micros
from .models import AuditDraft, AuditRecord, Checkpoint

__all__ = [
    "AUDIT_CHAIN_VERSION",
    "ChainWalk",
    "audit_genesis",
    "chained",
    "checkpoint_message",
    "digest_of",
    "record_digest",
    "text_digest",
]

AUDIT_CHAIN_VERSION = "sos-audit-chain-1"


@functools.lru_cache(maxsize=1024)
def audit_genesis(tenant: str) -> str:
    """The digest (hex) a tenant's first audit record is chained to."""
    return hashlib.sha256(encode_fields(("G", AUDIT_CHAIN_VERSION, tenant))).hexdigest()


def record_digest(
    prev: str,
    seq: int,
    at_us: int,
    kind: str,
    actor: str,
    action: str,
    resource: str,
    outcome: str,
    details: dict[str, object],
) -> str:
    """The digest (hex) of a record with these fields (its time in integer microseconds) chained after ``prev``."""
    return text_digest(prev, seq, at_us, kind, actor, action, resource, outcome, canonical_metadata(details))


def text_digest(
    prev: str,
    seq: int,
    at_us: int,
    kind: str,
    actor: str,
    action: str,
    resource: str,
    outcome: str,
    details_text: str,
) -> str:
    """:func:`record_digest` of a record whose ``details`` are already in their canonical text (``""`` for
    none), so a store that writes that text hashes it without encoding it twice."""
    fields = ("A", str(seq), str(at_us), kind, actor, action, resource, outcome, details_text)
    return hashlib.sha256(bytes.fromhex(prev) + encode_fields(fields)).hexdigest()


def digest_of(r: AuditRecord) -> str:
    """What ``r``'s digest should be, from its fields and its ``prev``."""
    return record_digest(r.prev, r.seq, micros(r.at), r.kind, r.actor, r.action, r.resource, r.outcome, dict(r.details))


def checkpoint_message(tenant: str, seq: int, digest: str, at: datetime) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return encode_fields(("C", AUDIT_CHAIN_VERSION, tenant, str(seq), digest, str(micros(at))))


def now() -> datetime:
    """The time a record is stamped with (UTC, microseconds)."""
    return datetime.now(UTC)


class ChainWalk:
    """Walks a tenant's records in order; :attr:`problems` names the first record the chain does not vouch for."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.prev = audit_genesis(tenant)
        self.seq = 0
        self.problems: list[str] = []
        self.digests: dict[int, str] = {}

    def step(self, r: AuditRecord) -> bool:
        """Check ``r`` follows the previous record; False (and a problem named) at the first break."""
        if r.tenant != self.tenant:
            return self._broken(f"record {r.seq} belongs to tenant {r.tenant!r}")
        if r.seq != self.seq + 1:
            what = "deleted, or records reordered" if r.seq > self.seq + 1 else "inserted, or records reordered"
            return self._broken(f"record {r.seq} follows record {self.seq}: a record was {what}")
        if r.prev != self.prev:
            return self._broken(f"record {r.seq} does not hold the digest of record {self.seq} (chain broken)")
        if digest_of(r) != r.digest:
            return self._broken(f"record {r.seq} was edited: its digest does not match its fields")
        self.prev, self.seq = r.digest, r.seq
        self.digests[r.seq] = r.digest
        return True

    def _broken(self, problem: str) -> bool:
        self.problems.append(problem)
        return False

    def check_points(self, checkpoints: Iterable[Checkpoint], trusted: frozenset[str] | None) -> None:
        """Check each checkpoint's signature, key and digest against the walked records."""
        for cp in checkpoints:
            key = PublicKey.from_hex(cp.public_key)
            message = checkpoint_message(self.tenant, cp.seq, cp.digest, cp.at)
            if not key.verify(message, cp.signature):
                self.problems.append(f"checkpoint at record {cp.seq} has a bad signature")
            elif trusted is not None and key.hex not in trusted:
                self.problems.append(f"checkpoint at record {cp.seq} is signed by untrusted key {key.key_id}")
            elif cp.seq > self.seq and not self.problems:
                self.problems.append(f"checkpoint at record {cp.seq} names a record the chain no longer holds")
            elif cp.seq in self.digests and self.digests[cp.seq] != cp.digest:
                self.problems.append(f"record {cp.seq} differs from its signed checkpoint (chain rewritten)")


def chained(tenant: str, prev: str | None, seq: int, draft: AuditDraft) -> AuditRecord:
    """``draft`` as record ``seq + 1`` of ``tenant``, chained after ``prev`` (``None``: the first record)."""
    before = prev or audit_genesis(tenant)
    n = seq + 1
    d = dict(draft.details)
    digest = record_digest(
        before, n, micros(draft.at), draft.kind, draft.actor, draft.action, draft.resource, draft.outcome, d
    )
    return AuditRecord(
        tenant=tenant,
        seq=n,
        prev=before,
        digest=digest,
        at=draft.at,
        kind=draft.kind,
        actor=draft.actor,
        action=draft.action,
        resource=draft.resource,
        outcome=draft.outcome,
        details=d,
    )
