"""The ledger's hash chain: what a digest covers, and how it is computed.

Every recorded transfer (applied or failed, holds and settlements alike) carries a digest: SHA-256 over the digest
of the tenant's previous record (32 bytes; for the first record, the tenant's genesis digest, so a record cannot be
moved to another tenant), the record's request digest (32 bytes: SHA-256 of the canonical encoding of the fields it
was asked with, which a client knows beforehand) and the canonical encoding of what applying it gave (sequence,
amount, time, status, error, hold deadline, and the ``allow_negative`` flags of both accounts of an applied record,
so the chain commits to the facts of every account it moves money through). Every account carries the digest of its
opening facts (tenant, owner, currency, ``allow_negative``). :meth:`~sos_kernel.ledger.Ledger.check` recomputes all
of it from the first record.

A record's ``state`` and ``captured`` are not encoded: they change when a hold is settled or expires. ``check()``
derives them from the chain instead (a hold is posted or voided exactly when a chained settlement names it; else it
is pending, or expired once its deadline passed) and compares them with what is stored.

The canonical encoding is a sequence of fields, each written as its length in UTF-8 bytes, ``:``, and its UTF-8
bytes; ints are written in decimal, times as integer microseconds since the epoch, absent values as empty strings,
metadata as JSON with sorted keys and no whitespace. The Redis ledger script computes the outer digest in Lua (with
the request digest the client sends), the same bytes as :func:`record_digest`: 2 SHA-256 blocks for a plain transfer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InvariantViolation
from .models import Transfer
from .rules import AccountKey, AccountState

__all__ = [
    "CHAIN_VERSION",
    "CLOCK_SKEW_S_MAX",
    "ChainVerifier",
    "account_digest",
    "canonical_metadata",
    "encode_fields",
    "genesis",
    "link",
    "micros",
    "record_digest",
    "record_flags",
    "request_digest",
]

CHAIN_VERSION = "sos-ledger-chain-1"
"""Names the encoding below; part of every genesis and account digest, so a change of encoding is a new chain."""

CLOCK_SKEW_S_MAX = 60
"""How far the clock of the engine that expires holds (Redis's ``TIME``) may be from this process's: within it of
its deadline, ``check()`` accepts a hold as either pending or expired."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(at: datetime) -> int:
    """``at`` as integer microseconds since the epoch, exactly (no float in between)."""
    return (at - _EPOCH) // _MICROSECOND


def encode_fields(fields: tuple[str, ...]) -> bytes:
    """The canonical encoding of ``fields``: ``<UTF-8 byte length>:<UTF-8 bytes>`` each, concatenated."""
    text = "".join([f"{len(f)}:{f}" for f in fields])
    if text.isascii():  # the usual case: character counts are byte counts
        return text.encode("ascii")
    encoded = [f.encode("utf-8", "surrogatepass") for f in fields]
    return b"".join([b"%d:%s" % (len(b), b) for b in encoded])


def canonical_metadata(metadata: Mapping[str, Any]) -> str:
    """Metadata as the chain encodes it (and as the Redis store keeps it): empty, or compact sorted JSON."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":")) if metadata else ""


@functools.lru_cache(maxsize=1024)
def genesis(tenant: str) -> bytes:
    """The digest a tenant's first record is chained to."""
    return hashlib.sha256(encode_fields(("G", CHAIN_VERSION, tenant))).digest()


def account_digest(tenant: str, owner: str, currency: str, allow_negative: bool) -> str:
    """The digest (hex) of an account's opening facts."""
    flag = "1" if allow_negative else "0"
    return hashlib.sha256(encode_fields(("A", CHAIN_VERSION, tenant, owner, currency, flag))).hexdigest()


def record_flags(t: Transfer, debit_negative: bool, credit_negative: bool) -> str:
    """The account flags an applied record commits to (``"10"``: the debit may go negative); ``""`` if failed."""
    if t.status != "ok":
        return ""
    return ("1" if debit_negative else "0") + ("1" if credit_negative else "0")


def request_digest(
    id: str,
    kind: str,
    debit: str,
    credit: str,
    currency: str,
    pending_id: str | None,
    timeout_s: int,
    code: int,
    reason: str,
    metadata: str,
) -> bytes:
    """SHA-256 of the encoding of what a record was asked to do (``metadata`` as :func:`canonical_metadata`).

    These fields are known before the batch is applied, so a client may compute this part of a digest itself.
    """
    fields = ("Q", id, kind, debit, credit, currency, pending_id or "", str(timeout_s), str(code), reason, metadata)
    return hashlib.sha256(encode_fields(fields)).digest()


def record_digest(prev: bytes, t: Transfer, flags: str) -> bytes:
    """The digest of the record ``t`` chained to ``prev`` (the previous digest), with its accounts' ``flags``:
    SHA-256 of ``prev``, the record's :func:`request_digest` and the encoding of what applying it gave."""
    asked = request_digest(
        t.id,
        t.kind,
        t.debit,
        t.credit,
        t.currency,
        t.pending_id,
        t.timeout_s,
        t.code,
        t.reason,
        canonical_metadata(t.metadata),
    )
    expires = "" if t.expires_at is None else str(micros(t.expires_at))
    outcome = (
        "R",
        str(t.sequence),
        str(t.amount),
        str(micros(t.timestamp)),
        t.status,
        t.error_code or "",
        t.error_message or "",
        expires,
        flags,
    )
    return hashlib.sha256(prev + asked + encode_fields(outcome)).digest()


def link(prev: bytes, transfers: list[Transfer], accounts: Mapping[AccountKey, AccountState | None]) -> list[bytes]:
    """The digests of ``transfers``, chained in order after ``prev`` (the last is the new head).

    ``accounts`` holds every account an applied record names, as the batch's atomic step loaded it.
    """
    digests = []
    for t in transfers:
        flags = ""
        if t.status == "ok":
            debit, credit = accounts.get((t.debit, t.currency)), accounts.get((t.credit, t.currency))
            if debit is None or credit is None:
                raise InvariantViolation(f"applied transfer {t.id} names an account its batch did not load")
            flags = record_flags(t, debit.allow_negative, credit.allow_negative)
        prev = record_digest(prev, t, flags)
        digests.append(prev)
    return digests


class ChainVerifier:
    """Walks a tenant's records in sequence order; raises SOS-6099 at the first one the chain does not vouch for.

    ``negative`` maps each account, by (owner, currency), to its stored ``allow_negative``; ``now`` is the time
    the verification runs at (epoch seconds), after due holds were expired. Call :meth:`step` per record, then
    :meth:`finish`, which compares each hold's stored state with the state its chain implies.
    """

    def __init__(self, tenant: str, negative: Mapping[tuple[str, str], bool], now: float) -> None:
        self._prev = genesis(tenant)
        self._sequence = 0
        self._negative = negative
        self._now = now
        self._holds: dict[str, Transfer] = {}
        self._settled: dict[str, Transfer] = {}

    def step(self, t: Transfer, stored: str) -> None:
        """Check that ``t`` follows the previous record and that its stored digest is the one it should have."""
        details: dict[str, object] = {"id": t.id, "sequence": t.sequence}
        if t.sequence != self._sequence + 1:
            raise InvariantViolation(
                f"the ledger's records go from sequence {self._sequence} to {t.sequence} (transfer {t.id})",
                details=details,
            )
        try:
            digest = record_digest(self._prev, t, self._flags(t))
        except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong type, as read back
            raise InvariantViolation(
                f"transfer {t.id} holds a field of the wrong type: {exc}", details=details
            ) from exc
        if digest.hex() != stored:
            raise InvariantViolation(
                f"the ledger's chain breaks at transfer {t.id} (sequence {t.sequence}): its digest does not match"
                " its fields, its accounts' allow_negative flags and the previous record",
                details=details,
            )
        self._prev, self._sequence = digest, t.sequence
        self._track(t)

    def _flags(self, t: Transfer) -> str:
        if t.status != "ok":
            return ""
        debit, credit = self._negative.get((t.debit, t.currency)), self._negative.get((t.credit, t.currency))
        if debit is None or credit is None:
            missing = t.debit if debit is None else t.credit
            raise InvariantViolation(
                f"transfer {t.id} names {missing}'s {t.currency} account, which does not exist",
                details={"id": t.id, "owner": missing, "currency": t.currency},
            )
        return record_flags(t, debit, credit)

    def _track(self, t: Transfer) -> None:
        if not (t.ok and t.kind == "pending") and (t.state is not None or t.captured != 0):
            raise InvariantViolation(f"transfer {t.id} is not a placed hold but has a hold state", details={"id": t.id})
        if t.ok and t.kind == "pending":
            self._holds[t.id] = t
        elif t.ok and t.kind in ("post_pending", "void_pending"):
            hold_id = t.pending_id or ""
            if hold_id not in self._holds or hold_id in self._settled:
                raise InvariantViolation(
                    f"settlement {t.id} names {hold_id!r}, which is not a hold open before it", details={"id": t.id}
                )
            self._settled[hold_id] = t

    def finish(self) -> None:
        """Check every hold's stored state against its chain: settled by a chained record, else open or expired."""
        for hold_id, hold in self._holds.items():
            settlement = self._settled.get(hold_id)
            expected: tuple[str | None, int]
            if settlement is not None:
                posted = settlement.kind == "post_pending"
                expected = ("posted", settlement.amount) if posted else ("voided", 0)
            else:
                expected = (self._unsettled_state(hold), 0)
            if (hold.state, hold.captured) != expected:
                raise InvariantViolation(
                    f"hold {hold_id} is recorded as {hold.state} (captured {hold.captured}) where its chain says"
                    f" {expected[0]} (captured {expected[1]})",
                    details={"id": hold_id},
                )

    def _unsettled_state(self, hold: Transfer) -> str | None:
        # a hold no chained record settled is pending until its deadline, expired after; the clocks of this
        # process and of the engine that expired it may differ by up to CLOCK_SKEW_S_MAX
        deadline = hold.expires_at.timestamp() if hold.expires_at is not None else math.inf
        if hold.state in ("pending", "expired") and abs(deadline - self._now) <= CLOCK_SKEW_S_MAX:
            return hold.state
        return "expired" if deadline <= self._now else "pending"
