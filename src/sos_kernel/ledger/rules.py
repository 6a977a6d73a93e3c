"""The ledger's rules, as one pure function over a working set of accounts and holds.

The memory and SQLite stores call :func:`evaluate` inside their atomic step (one critical section, one
``BEGIN IMMEDIATE`` transaction); the Redis store runs the same rules as one Lua script, and the conformance suite
proves the three agree. Rules, for a linked batch applied in order:

- accounts must exist (SOS-7002);
- a must-not-overdraw debit account needs ``debits_posted + debits_pending + amount <= credits_posted`` (SOS-7001);
- no balance field may pass :data:`AMOUNT_MICROS_MAX` (SOS-4010): a transfer or hold needs posted + pending +
  amount within it on both sides, so a later capture (pending turning posted) can never pass it;
- a capture or void needs its hold to exist, to have been placed (not failed) and still be pending (SOS-7020); a
  capture takes at most the held amount (SOS-7020) and the rest of the hold is released;
- the first failing step fails the whole batch: every id in it is recorded as failed, so a retry fails the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .models import AMOUNT_MICROS_MAX, Transfer, TransferRequest

__all__ = ["AccountState", "Evaluation", "RuleFailure", "evaluate", "expire_holds"]

AccountKey = tuple[str, str]


@dataclass(slots=True)
class AccountState:
    """Mutable balance fields of one account inside an atomic step."""

    allow_negative: bool
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """Why a batch failed: the SOS code, a message, and the id of the step that failed."""

    code: str
    message: str
    failed_id: str


@dataclass(slots=True)
class Evaluation:
    """The outcome of a batch: one recorded transfer per request, and the holds it changed."""

    transfers: list[Transfer]
    holds: dict[str, Transfer]
    failure: RuleFailure | None


def _at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _copy(state: AccountState) -> AccountState:
    # not dataclasses.replace: this runs per account per batch, and replace() costs several times a constructor
    return AccountState(
        state.allow_negative, state.debits_posted, state.credits_posted, state.debits_pending, state.credits_pending
    )


def expire_holds(
    holds: Mapping[str, Transfer], accounts: Mapping[AccountKey, AccountState], now: float
) -> dict[str, Transfer]:
    """Release every pending hold whose deadline passed; returns the holds that changed (state ``expired``)."""
    changed: dict[str, Transfer] = {}
    for hold_id, hold in holds.items():
        if hold.state != "pending" or hold.expires_at is None or hold.expires_at.timestamp() > now:
            continue
        debit, credit = accounts[(hold.debit, hold.currency)], accounts[(hold.credit, hold.currency)]
        debit.debits_pending -= hold.amount
        credit.credits_pending -= hold.amount
        changed[hold_id] = replace(hold, state="expired")
    return changed


def _fail(code: str, message: str, req: TransferRequest) -> RuleFailure:
    return RuleFailure(code, message, req.id)


def _apply_move(req: TransferRequest, accounts: Mapping[AccountKey, AccountState | None]) -> RuleFailure | None:
    debit, credit = accounts.get((req.debit, req.currency)), accounts.get((req.credit, req.currency))
    if debit is None or credit is None:
        missing = req.debit if debit is None else req.credit
        return _fail("SOS-7002", f"no {req.currency} account for {missing}; open it first", req)
    if not debit.allow_negative and debit.debits_posted + debit.debits_pending + req.amount > debit.credits_posted:
        available = debit.credits_posted - debit.debits_posted - debit.debits_pending
        return _fail(
            "SOS-7001", f"{req.debit} has {available} {req.currency} micros available, needs {req.amount}", req
        )
    # posted + pending, not each alone: capturing a hold turns pending into posted, and must never pass the cap
    if (
        debit.debits_posted + debit.debits_pending + req.amount > AMOUNT_MICROS_MAX
        or credit.credits_posted + credit.credits_pending + req.amount > AMOUNT_MICROS_MAX
    ):
        return _fail("SOS-4010", f"a balance would pass AMOUNT_MICROS_MAX ({AMOUNT_MICROS_MAX})", req)
    if req.kind == "posted":
        debit.debits_posted += req.amount
        credit.credits_posted += req.amount
    else:
        debit.debits_pending += req.amount
        credit.credits_pending += req.amount
    return None


def _resolve_hold(
    req: TransferRequest,
    hold: Transfer | None,
    accounts: Mapping[AccountKey, AccountState | None],
    now: float,
) -> tuple[RuleFailure | None, Transfer | None, int]:
    # A settlement is built from the hold it saw; one built when no hold existed carries no accounts and stays a
    # "no hold" failure even if the hold was placed since (so its retry can never turn into a capture).
    if hold is None or hold.kind != "pending" or not hold.ok or (req.debit, req.credit) != (hold.debit, hold.credit):
        return _fail("SOS-7020", f"no hold {req.pending_id}", req), None, 0
    if hold.state != "pending" or (hold.expires_at is not None and hold.expires_at.timestamp() <= now):
        state = "expired" if hold.state == "pending" else hold.state
        return _fail("SOS-7020", f"hold {hold.id} is already {state}", req), None, 0
    amount = hold.amount if req.kind == "void_pending" else req.amount
    if req.kind == "post_pending" and amount > hold.amount:
        return _fail("SOS-7020", f"capture of {amount} exceeds hold {hold.id} of {hold.amount}", req), None, 0
    debit, credit = accounts[(hold.debit, hold.currency)], accounts[(hold.credit, hold.currency)]
    if debit is None or credit is None:
        return _fail("SOS-7002", "a hold's account is gone", req), None, 0
    debit.debits_pending -= hold.amount
    credit.credits_pending -= hold.amount
    if req.kind == "post_pending":
        debit.debits_posted += amount
        credit.credits_posted += amount
        return None, replace(hold, state="posted", captured=amount), amount
    return None, replace(hold, state="voided"), 0


def _record(
    req: TransferRequest,
    now: float,
    timestamp: datetime,
    seq: int,
    hold: Transfer | None,
    amount: int,
    failure: RuleFailure | None,
) -> Transfer:
    pending = req.kind == "pending" and not failure
    # positional, in Transfer's field order: this runs once per recorded transfer, and keywords cost more
    return Transfer(
        req.id,
        req.kind,
        hold.debit if hold else req.debit,
        hold.credit if hold else req.credit,
        hold.currency if hold else req.currency,
        amount,
        req.pending_id,
        req.timeout_s,
        req.code,
        req.reason,
        req.metadata,
        timestamp,
        seq,
        "failed" if failure else "ok",
        failure.code if failure else None,
        failure.message if failure else None,
        "pending" if pending else None,
        0,
        _at(now + req.timeout_s) if pending else None,
    )


def evaluate(
    requests: Sequence[TransferRequest],
    accounts: Mapping[AccountKey, AccountState | None],
    holds: Mapping[str, Transfer],
    now: float,
    first_seq: int,
) -> Evaluation:
    """Apply a linked batch to ``accounts`` (mutated in place only on success) and return what to record.

    ``accounts`` must hold every account the requests and their holds name (``None`` for a missing one);
    ``holds`` every hold a capture or void names. On failure the accounts are left as they were.
    """
    timestamp = _at(now)
    if len(requests) == 1:
        return _evaluate_one(requests[0], accounts, holds, now, timestamp, first_seq)
    snapshot = {k: _copy(v) if v is not None else None for k, v in accounts.items()}
    changed_holds: dict[str, Transfer] = {}
    recorded: list[Transfer] = []
    failure: RuleFailure | None = None
    for offset, req in enumerate(requests):
        failure, hold, amount = _step(req, snapshot, changed_holds, holds, now)
        if failure is not None:
            return Evaluation(_failed_batch(requests, now, timestamp, first_seq, failure), {}, failure)
        recorded.append(_record(req, now, timestamp, first_seq + offset, hold, amount, None))
    for key, state in snapshot.items():
        target = accounts[key]
        if state is not None and target is not None:
            target.debits_posted, target.credits_posted = state.debits_posted, state.credits_posted
            target.debits_pending, target.credits_pending = state.debits_pending, state.credits_pending
    return Evaluation(recorded, changed_holds, None)


def _evaluate_one(
    req: TransferRequest,
    accounts: Mapping[AccountKey, AccountState | None],
    holds: Mapping[str, Transfer],
    now: float,
    timestamp: datetime,
    seq: int,
) -> Evaluation:
    # A single step makes every check before it moves anything, so it needs no snapshot to leave the accounts as
    # they were on failure: the usual case, one transfer, skips copying them.
    changed_holds: dict[str, Transfer] = {}
    if req.kind == "posted":  # the usual step, without _step's dispatch
        failure, hold, amount = _apply_move(req, accounts), None, req.amount
    else:
        failure, hold, amount = _step(req, accounts, changed_holds, holds, now)
    if failure is not None:
        return Evaluation(_failed_batch([req], now, timestamp, seq, failure), {}, failure)
    return Evaluation([_record(req, now, timestamp, seq, hold, amount, None)], changed_holds, None)


def _step(
    req: TransferRequest,
    accounts: Mapping[AccountKey, AccountState | None],
    changed_holds: dict[str, Transfer],
    holds: Mapping[str, Transfer],
    now: float,
) -> tuple[RuleFailure | None, Transfer | None, int]:
    """One step of a batch: its failure (then nothing of it moved), the hold it settled, the amount it moved."""
    if req.kind in ("posted", "pending"):
        return _apply_move(req, accounts), None, req.amount
    current = changed_holds.get(req.pending_id or "") or holds.get(req.pending_id or "")
    failure, updated, amount = _resolve_hold(req, current, accounts, now)
    if updated is not None:
        changed_holds[updated.id] = updated
    return failure, current, amount


def _failed_batch(
    requests: Sequence[TransferRequest], now: float, timestamp: datetime, first_seq: int, failure: RuleFailure
) -> list[Transfer]:
    out = []
    for offset, req in enumerate(requests):
        message = failure.message if req.id == failure.failed_id else f"linked transfer {failure.failed_id} failed: "
        if req.id != failure.failed_id:
            message += failure.message
        # a failed step is recorded with its request's fields, which are what a retry is compared against
        failed = RuleFailure(failure.code, message, req.id)
        out.append(_record(req, now, timestamp, first_seq + offset, None, req.amount, failed))
    return out
