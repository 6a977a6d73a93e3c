"""Stateful model test: every backend against a tiny, independent model of the ledger (hypothesis).

The model is a few dicts of integers written from the rules in ``sos_kernel.ledger.service`` and ``rules`` docs,
not from their code. After every step the backend's balances, every recorded id (status, error code, sequence,
hold state) and ``check()`` must agree with it. Holds use a long timeout: wall-clock expiry is not modelled here
(the conformance suite and the bank test cover it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import hypothesis.strategies as st
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

import sos_kernel
from sos_kernel.errors import IdempotencyConflict, SOSError
from sos_kernel.ledger import AMOUNT_MICROS_MAX, Ledger, Transfer

SETTINGS = settings(max_examples=50, stateful_step_count=30, deadline=None)
MINT = "system:mint"
OWNERS = (MINT, "agent:a", "agent:b", "agent:c")
CURRENCIES = ("USD",) * 7 + ("MIND",)  # MIND accounts are rare, so MIND transfers mostly meet SOS-7002
HOLD_TIMEOUT_S = 3600

pairs = st.tuples(st.sampled_from(OWNERS), st.sampled_from(OWNERS)).filter(lambda p: p[0] != p[1])
small = st.integers(1, 1500)
amounts = st.one_of(small, small, small, st.just(AMOUNT_MICROS_MAX))  # the cap is reached in a step or two
FUNDING = 5000
shares = st.sampled_from(["all", "part", "exact", "over"])
hold_pairs = st.tuples(st.sampled_from(OWNERS[:3]), st.sampled_from(OWNERS)).filter(lambda p: p[0] != p[1])


# --- the model -----------------------------------------------------------------------------------------------------


@dataclass
class Acct:
    allow_negative: bool
    dp: int = 0
    cp: int = 0
    dpend: int = 0
    cpend: int = 0


@dataclass(frozen=True)
class Rec:
    """What the ledger must hold under one id: the request fields it is compared by, and the outcome."""

    kind: str
    debit: str
    credit: str
    currency: str
    amount: int
    pending_id: str | None
    seq: int
    code: str | None  # None: applied
    state: str | None = None  # holds: pending, posted, voided
    captured: int = 0

    @property
    def ok(self) -> bool:
        return self.code is None

    def same_request(self, other: Rec) -> bool:
        mine = (self.kind, self.debit, self.credit, self.currency, self.amount, self.pending_id)
        return mine == (other.kind, other.debit, other.credit, other.currency, other.amount, other.pending_id)


@dataclass(frozen=True)
class Move:
    id: str
    kind: str  # posted or pending
    debit: str
    credit: str
    currency: str
    amount: int


class Model:
    """Balances and records as plain dicts; every rule restated."""

    def __init__(self) -> None:
        self.accounts: dict[tuple[str, str], Acct] = {}
        self.recorded: dict[str, Rec] = {}
        self.seq = 0

    def open(self, owner: str, currency: str, allow_negative: bool) -> bool:
        """False when the account exists with the other flag (an IdempotencyConflict)."""
        found = self.accounts.setdefault((owner, currency), Acct(allow_negative))
        return found.allow_negative == allow_negative

    @staticmethod
    def _move(accounts: dict[tuple[str, str], Acct], m: Move) -> str | None:
        debit, credit = accounts.get((m.debit, m.currency)), accounts.get((m.credit, m.currency))
        if debit is None or credit is None:
            return "SOS-7002"
        if not debit.allow_negative and debit.dp + debit.dpend + m.amount > debit.cp:
            return "SOS-7001"
        # posted + pending stays within the cap on both sides, so a capture can never pass it
        if (
            debit.dp + debit.dpend + m.amount > AMOUNT_MICROS_MAX
            or credit.cp + credit.cpend + m.amount > AMOUNT_MICROS_MAX
        ):
            return "SOS-4010"
        if m.kind == "posted":
            debit.dp, credit.cp = debit.dp + m.amount, credit.cp + m.amount
        else:
            debit.dpend, credit.cpend = debit.dpend + m.amount, credit.cpend + m.amount
        return None

    def moves(self, batch: list[Move]) -> str | None:
        """A linked batch of new ids: all applied, or all recorded failed with the first failure's code."""
        work = {k: replace(v) for k, v in self.accounts.items()}
        code = None
        for m in batch:
            if (code := self._move(work, m)) is not None:
                break
        if code is None:
            self.accounts = work
        for m in batch:
            self.seq += 1
            state = "pending" if m.kind == "pending" and code is None else None
            self.recorded[m.id] = Rec(m.kind, m.debit, m.credit, m.currency, m.amount, None, self.seq, code, state)
        return code

    def settlement(self, kind: str, hold_id: str, amount: int | None, op_id: str) -> Rec:
        """The request a capture/void call stands for: the hold's accounts, the amount it would move.

        A hold that is missing or failed gives an empty request, and so does an op id whose first attempt found
        no hold: retrying a call never turns it into another request.
        """
        hold, prior = self.recorded.get(hold_id), self.recorded.get(op_id)
        usable = hold is not None and hold.kind == "pending" and hold.ok
        if prior is not None and prior.pending_id == hold_id and prior.debit == "":
            usable = False
        if hold is None or not usable:
            return Rec(kind, "", "", "", amount or 0, hold_id, 0, None)
        moved = 0 if kind == "void_pending" else (hold.amount if amount is None else amount)
        return Rec(kind, hold.debit, hold.credit, hold.currency, moved, hold_id, 0, None)

    def settle(self, request: Rec, op_id: str) -> str | None:
        """Apply a capture/void under a new id; returns its error code."""
        hold = self.recorded.get(request.pending_id or "")
        code = None
        if (
            request.debit == ""
            or hold is None
            or hold.state != "pending"
            or (request.kind == "post_pending" and request.amount > hold.amount)
        ):
            code = "SOS-7020"
        else:
            debit, credit = self.accounts[(hold.debit, hold.currency)], self.accounts[(hold.credit, hold.currency)]
            debit.dpend, credit.cpend = debit.dpend - hold.amount, credit.cpend - hold.amount
            debit.dp, credit.cp = debit.dp + request.amount, credit.cp + request.amount
            posted = request.kind == "post_pending"
            self.recorded[request.pending_id or ""] = replace(
                hold, state="posted" if posted else "voided", captured=request.amount if posted else 0
            )
        self.seq += 1
        self.recorded[op_id] = replace(request, seq=self.seq, code=code)
        return code


# --- the machine ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """How an id was first asked for, so a retry can ask again."""

    method: str
    kwargs: dict[str, Any]
    ids: tuple[str, ...]


class LedgerMachine(RuleBasedStateMachine):
    """Drives one tenant's ledger (async, through a blocking portal) and the model side by side."""

    ids = Bundle("ids")
    holds = Bundle("holds")

    def __init__(self, portal: BlockingPortal, ledger: Ledger) -> None:
        super().__init__()
        self.portal = portal
        self.ledger = ledger
        self.model = Model()
        self.calls: dict[str, Call] = {}
        self.counter = itertools.count(1)
        self.next_hold = 1

    def call(self, method: str, **kwargs: Any) -> Any:
        """The ledger method's result, or the SOSError it raised."""
        try:
            return self.portal.call(partial(getattr(self.ledger, method), **kwargs))
        except SOSError as exc:
            return exc

    def expect(self, result: Any, ids: tuple[str, ...], *, replayed: bool) -> None:
        """``result`` is what the model recorded for ``ids``: the transfers, or the first one's error."""
        recs = [self.model.recorded[i] for i in ids]
        if recs[0].ok:
            transfers = result if isinstance(result, list) else [result]
            assert not isinstance(result, SOSError), f"{ids}: expected success, got {result!r}"
            for rec, t in zip(recs, transfers, strict=True):
                assert (t.ok, t.sequence, t.amount, t.replayed) == (True, rec.seq, rec.amount, replayed)
            return
        assert isinstance(result, SOSError), f"{ids}: expected {recs[0].code}, got {result!r}"
        assert result.code == recs[0].code, (ids, result)
        assert result.details["replayed"] is replayed

    def new_ids(self, call: Call) -> Any:
        for i in call.ids:
            self.calls[i] = call
        return multiple(*call.ids)

    @initialize(target=ids)
    def open_and_fund(self) -> Any:
        for owner, negative in ((MINT, True), ("agent:a", False), ("agent:b", False), ("agent:c", False)):
            self.open_account(owner, "USD", negative)
        funded = [self.transfer((MINT, owner), FUNDING, "USD") for owner in ("agent:a", "agent:b")]
        return multiple(*(i for result in funded for i in result.values))

    @rule(owner=st.sampled_from(OWNERS), currency=st.sampled_from(CURRENCIES), negative=st.booleans())
    def open_account(self, owner: str, currency: str, negative: bool) -> None:
        result = self.call("open_account", owner=owner, currency=currency, allow_negative=negative)
        if self.model.open(owner, currency, negative):
            assert not isinstance(result, SOSError), result
            assert (result.owner, result.currency, result.allow_negative) == (owner, currency, negative)
        else:
            assert isinstance(result, IdempotencyConflict), result

    def _moves(self, method: str, kwargs: dict[str, Any], batch: list[Move]) -> Any:
        self.model.moves(batch)
        ids = tuple(m.id for m in batch)
        self.expect(self.call(method, **kwargs), ids, replayed=False)
        return self.new_ids(Call(method, kwargs, ids))

    @rule(target=ids, pair=pairs, amount=amounts, currency=st.sampled_from(CURRENCIES))
    def transfer(self, pair: tuple[str, str], amount: int, currency: str) -> Any:
        move = Move(f"t{next(self.counter)}", "posted", *pair, currency, amount)
        kwargs = {"id": move.id, "debit": pair[0], "credit": pair[1], "amount": amount, "currency": currency}
        return self._moves("transfer", kwargs, [move])

    @rule(target=ids, legs=st.lists(st.tuples(pairs, amounts), min_size=2, max_size=3))
    def transfer_many(self, legs: list[tuple[tuple[str, str], int]]) -> Any:
        batch = [Move(f"t{next(self.counter)}", "posted", d, c, "USD", a) for (d, c), a in legs]
        items = [
            {"id": m.id, "debit": m.debit, "credit": m.credit, "amount": m.amount, "currency": "USD"} for m in batch
        ]
        return self._moves("transfer_many", {"transfers": items}, batch)

    @rule(targets=(ids, holds), pair=hold_pairs, amount=st.one_of(small, small, small, small, amounts))
    def hold(self, pair: tuple[str, str], amount: int) -> Any:
        move = Move(f"h{self.next_hold}", "pending", *pair, "USD", amount)
        self.next_hold += 1
        kwargs = {"id": move.id, "debit": pair[0], "credit": pair[1], "amount": amount, "currency": "USD"}
        return self._moves("hold", {**kwargs, "timeout_s": HOLD_TIMEOUT_S}, [move])

    def _settle(self, method: str, hold_id: str, amount: int | None, op_id: str | None) -> Any:
        kind = "post_pending" if method == "capture" else "void_pending"
        target = op_id or f"{hold_id}:{method}"
        request = self.model.settlement(kind, hold_id, amount, target)
        kwargs: dict[str, Any] = {"hold_id": hold_id, "id": op_id} | ({"amount": amount} if method == "capture" else {})
        prior = self.model.recorded.get(target)
        result = self.call(method, **kwargs)
        if prior is not None:  # the call names an id already recorded: a replay, or a conflict
            if prior.kind == kind and prior.same_request(request):
                self.expect(result, (target,), replayed=True)
            else:
                assert isinstance(result, IdempotencyConflict), (target, result)
            return multiple()
        self.model.settle(request, target)
        self.expect(result, (target,), replayed=False)
        return self.new_ids(Call(method, kwargs, (target,)))

    def _pick(self, hold_id: str, ahead: bool) -> str:
        """``hold_id``, or (``ahead``) the id the next hold will take: settling it fails now, and a retry of that
        settlement must fail the same way once the hold exists."""
        return f"h{self.next_hold}" if ahead else hold_id

    @rule(target=ids, hold_id=holds, ahead=st.sampled_from([False] * 7 + [True]), share=shares, explicit=st.booleans())
    def capture(self, hold_id: str, ahead: bool, share: str, explicit: bool) -> Any:
        hold_id = self._pick(hold_id, ahead)
        held = self.model.recorded[hold_id].amount if hold_id in self.model.recorded else 100
        amount = {"all": None, "part": max(1, held // 3), "exact": held, "over": held + 1}[share]
        if amount is not None and amount > AMOUNT_MICROS_MAX:
            amount = held
        return self._settle("capture", hold_id, amount, f"c{next(self.counter)}" if explicit or ahead else None)

    @rule(target=ids, hold_id=holds, ahead=st.sampled_from([False] * 7 + [True]), explicit=st.booleans())
    def void(self, hold_id: str, ahead: bool, explicit: bool) -> Any:
        hold_id = self._pick(hold_id, ahead)
        return self._settle("void", hold_id, None, f"v{next(self.counter)}" if explicit or ahead else None)

    @rule(transfer_id=ids)
    def retry(self, transfer_id: str) -> None:
        call = self.calls[transfer_id]
        self.expect(self.call(call.method, **call.kwargs), call.ids, replayed=True)

    @rule(transfer_id=ids)
    def retry_with_another_amount(self, transfer_id: str) -> None:
        call = self.calls[transfer_id]
        rec = self.model.recorded[call.ids[0]]
        if call.method == "void" or rec.amount >= AMOUNT_MICROS_MAX:
            return
        kwargs = dict(call.kwargs)
        if call.method == "transfer_many":
            kwargs["transfers"] = [{**kwargs["transfers"][0], "amount": rec.amount + 1}, *kwargs["transfers"][1:]]
        else:
            kwargs["amount"] = rec.amount + 1
        result = self.call(call.method, **kwargs)
        assert isinstance(result, IdempotencyConflict), result
        assert result.details["field"] == "amount"

    @invariant()
    def balances_match_the_model(self) -> None:
        found = self.portal.call(self.ledger.balances)
        got = {
            (b.owner, b.currency): (
                b.allow_negative,
                b.debits_posted,
                b.credits_posted,
                b.debits_pending,
                b.credits_pending,
            )
            for b in found
        }
        want = {k: (a.allow_negative, a.dp, a.cp, a.dpend, a.cpend) for k, a in self.model.accounts.items()}
        assert got == want
        assert all(0 <= v <= AMOUNT_MICROS_MAX for fields in got.values() for v in fields[1:])

    @invariant()
    def every_id_is_recorded_once_as_modelled(self) -> None:
        ids = list(self.model.recorded)
        found: dict[str, Transfer] = self.portal.call(self.ledger.store.transfers, self.ledger.tenant, ids)
        assert set(found) == set(ids)
        for i, rec in self.model.recorded.items():
            t = found[i]
            got = (t.kind, t.debit, t.credit, t.currency, t.amount, t.pending_id, t.sequence, t.error_code)
            assert got == (
                rec.kind,
                rec.debit,
                rec.credit,
                rec.currency,
                rec.amount,
                rec.pending_id,
                rec.seq,
                rec.code,
            ), i
            assert (t.state, t.captured) == (rec.state, rec.captured), i

    @invariant()
    def check_passes(self) -> None:
        self.portal.call(self.ledger.check)


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal(backend="asyncio") as p:
        yield p


def test_ledger_matches_the_model(kernel_url: str, portal: BlockingPortal) -> None:
    with portal.wrap_async_context_manager(sos_kernel.open(kernel_url)) as kernel:
        tenants = itertools.count()

        class Machine(LedgerMachine):
            def __init__(self) -> None:  # a fresh tenant per example: its own, empty ledger
                super().__init__(portal, kernel.tenant(f"model-{next(tenants)}").ledger)

        run_state_machine_as_test(Machine, settings=SETTINGS)
