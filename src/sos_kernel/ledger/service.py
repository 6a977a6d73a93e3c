"""The ledger: exact, idempotent, double-entry money.

Guarantees:

- **Integers.** Every amount and balance is an ``int`` of micros, at most :data:`AMOUNT_MICROS_MAX`.
- **Double entry, conserved.** Every transfer debits one account and credits another of the same currency; per
  currency, all balances sum to zero at every instant (issuer accounts go negative to mint).
- **No overdraft.** A must-not-overdraw account (the default) never has ``debits_posted + debits_pending`` above
  ``credits_posted``, under any concurrency: the check and the write are one atomic step in the engine.
- **Exactly once by id.** A transfer's ``id`` is its idempotency key. Replaying it with the same fields returns the
  recorded outcome (``replayed=True``) and moves nothing; with different fields it raises
  :class:`~sos_kernel.errors.IdempotencyConflict` naming the field. An id whose first attempt failed (e.g.
  SOS-7001) fails the same way forever: a retry can never flip an outcome. Use a new id after fixing the cause.
- **Linked batches.** ``transfer_many`` applies all or nothing.
- **Holds resolve once.** A hold is captured (fully or partly; the rest is released), voided, or expires after its
  timeout — exactly one of these.
- **Bad input writes nothing.** Validation errors (SOS-4005, 4010, 7030...) are raised before the engine is touched
  and are not recorded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._observe import Events
from ..contracts import UsageEvent, parse_card
from ..errors import (
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    InvariantViolation,
    LimitExceeded,
    NotFound,
    SettlementRejected,
    WalletNotFound,
    error_class,
)
from ..operations import Wire, kernel_namespace, operation, service
from ..refusals import bad_amount, bad_id, bad_owner
from .chain import ChainVerifier, account_digest
from .models import (
    AMOUNT_MICROS_MAX,
    CURRENCY_RE,
    OWNER_PATTERN,
    TRANSFER_ID_PATTERN,
    Account,
    Balance,
    Price,
    Rate,
    Transfer,
    TransferKind,
    TransferRequest,
    Transmutation,
    UsageSummaryRow,
)
from .store import Applied, LedgerStore
from .usage import list_usage, record_usage, recorded_usage_id, summarise_usage, usage_query

if TYPE_CHECKING:
    from ..guard import Caller

__all__ = [
    "BATCH_MAX",
    "EXCHANGE_ACCOUNT",
    "HOLD_TIMEOUT_S_MAX",
    "RATES_PER_PAIR_MAX",
    "RATE_TERM_MAX",
    "Ledger",
    "check_owner",
]

BATCH_MAX = 1000
"""Transfers per linked batch."""
HOLD_TIMEOUT_S_MAX = 30 * 24 * 3600
"""The longest a hold may stay open."""
REASON_CHARS_MAX = 500
CODE_END = 2**31
"""A transfer's ``code`` is an int in [0, CODE_END)."""
METADATA_KEYS_MAX = 32
HISTORY_LIMIT_MAX = 10_000
CHECK_PAGE = 5000
ADMIN = "ledger:admin"
SEQUENCE_MAX = 2**40 - 1
"""The highest sequence a ledger can reach (what a ``history`` cursor may name)."""
_MOVES = (InsufficientFunds, WalletNotFound, IdempotencyConflict)
_SETTLES = (SettlementRejected, InsufficientFunds, IdempotencyConflict)
EXCHANGE_ACCOUNT = "system:exchange"
"""The exchange a rate converts through unless ``set_rate`` names another system account."""
RATE_TERM_MAX = 10**12
"""The largest ``rate_num`` or ``rate_den``: a rate lies in [1e-12, 1e12]."""
RATES_PER_PAIR_MAX = 100
"""Entries (distinct ``valid_from``) in the rate table per currency pair; past it, replace one."""

_OWNER_RE = re.compile(OWNER_PATTERN)
_ID_RE = re.compile(TRANSFER_ID_PATTERN)
TRANSFER_ID_RULE = "1-200 letters, digits and _.:@/-, starting with a letter or digit"


def check_owner(owner: str) -> str:
    """``owner`` if it is ``agent:<name>``, ``tenant:<slug>`` or ``system:<name>``, else SOS-4005."""
    if not isinstance(owner, str) or not _OWNER_RE.match(owner):
        raise bad_owner("account owner", owner, pattern=OWNER_PATTERN)
    return owner


def check_currency(currency: str) -> str:
    """``currency`` if it matches ``^[A-Z0-9]{2,10}$``, else SOS-4005."""
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        raise InvalidArgument(f"currency {currency!r} must match ^[A-Z0-9]{{2,10}}$ (USD, MIND...)")
    return currency


def check_amount(amount: int, what: str = "amount") -> int:
    """A positive ``int`` of micros up to AMOUNT_MICROS_MAX; floats and bools are refused (SOS-4005/4010)."""
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise bad_amount(what, amount)
    if amount > AMOUNT_MICROS_MAX:
        raise LimitExceeded(f"{what} {amount} exceeds AMOUNT_MICROS_MAX", details={"max": AMOUNT_MICROS_MAX})
    return amount


def check_transfer_id(value: str) -> str:
    """A client-chosen transfer id: 1-200 characters of letters, digits and ``_.:@/-``."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise bad_id("transfer id", value, TRANSFER_ID_RULE, pattern=TRANSFER_ID_PATTERN)
    return value


def _check_meta(reason: str, metadata: Mapping[str, Any] | None, code: int) -> dict[str, Any]:
    if not isinstance(reason, str) or len(reason) > REASON_CHARS_MAX:
        raise InvalidArgument(f"reason must be a string of at most {REASON_CHARS_MAX} characters")
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code < CODE_END:
        raise InvalidArgument(f"code must be an int in [0, 2**31), got {code!r}")
    if not metadata:
        return {}
    meta = dict(metadata)
    if len(meta) > METADATA_KEYS_MAX or not all(isinstance(k, str) for k in meta):
        raise InvalidArgument(f"metadata is a mapping of at most {METADATA_KEYS_MAX} string keys")
    for value in meta.values():
        if not isinstance(value, str | int | bool) and value is not None:
            raise InvalidArgument("metadata values must be strings, ints, booleans or null")
    return meta


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types throughout: ``True`` is not ``1`` and ``5.0`` is not ``5`` here."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


_BATCH_REQUIRED = ("id", "debit", "credit", "amount", "currency")
_BATCH_FIELDS = frozenset((*_BATCH_REQUIRED, "code", "reason", "metadata"))


def _batch_item(index: int, item: Any) -> Mapping[str, Any]:
    """Transfer ``index`` of a batch, if it is a mapping of :meth:`Ledger.transfer`'s arguments; else SOS-4005."""
    if not isinstance(item, Mapping):
        raise InvalidArgument(f"transfer {index} of the batch is not a mapping of transfer()'s arguments")
    unknown = sorted(str(k) for k in item if k not in _BATCH_FIELDS)
    missing = [k for k in _BATCH_REQUIRED if k not in item]
    if unknown or missing:
        raise InvalidArgument(
            f"transfer {index} of the batch: " + (f"unknown {unknown}" if unknown else f"missing {missing}"),
            details={"index": index, "unknown": unknown, "missing": missing},
        )
    return item


def _first_difference(asked: Mapping[str, Any], recorded: Mapping[str, Any]) -> str | None:
    for name, value in asked.items():
        if not _same(recorded.get(name), value):
            return name
    return None


_DAWN = datetime.min.replace(tzinfo=UTC)


def _check_term(value: int, name: str) -> int:
    """A rate term: an ``int`` in 1..RATE_TERM_MAX (never a float or a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= RATE_TERM_MAX:
        raise InvalidArgument(f"{name} must be an int in 1..{RATE_TERM_MAX}, got {value!r}")
    return value


def _check_when(value: datetime | None, name: str) -> datetime | None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise InvalidArgument(f"{name} must be a timezone-aware datetime")
    return value


def _check_exchange_name(exchange: str) -> str:
    if check_owner(exchange) and not exchange.startswith("system:"):
        raise InvalidArgument(f"an exchange is a system account (system:<name>), not {exchange!r}")
    return exchange


def _recorded_rate(leg: Transfer) -> tuple[int, int] | None:
    """The rate a transmute leg recorded in its metadata, if it did."""
    num, den = leg.metadata.get("rate_num"), leg.metadata.get("rate_den")
    if type(num) is int and type(den) is int and num > 0 and den > 0:
        return num, den
    return None


# The access rules that need the store, and so cannot be declarations (see sos_kernel.operations): each runs
# after the declared checks (token, scope) and makes the call itself.


async def _transfer_many_rule(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> list[Transfer]:
    """Every debit is the caller's own and every id in its namespace (``ledger:admin``: any)."""
    transfers = arguments["transfers"]
    if not isinstance(transfers, Sequence) or caller.principal.allows(ADMIN):
        return await ledger.transfer_many(transfers)  # the ledger refuses what is not a batch
    scoped: list[Any] = []
    for t in transfers:
        if isinstance(t, Mapping):
            t = dict(t)  # one snapshot, checked and then used: a mapping could read one way here, another there
            caller.own("account", "debit", t.get("debit", ""))
            if "id" in t:
                t["id"] = caller.own_id(t["id"], ADMIN)
        scoped.append(t)
    return await ledger.transfer_many(scoped)


async def _party_transfer(caller: Caller, ledger: Ledger, id: Any) -> Transfer | None:
    """The transfer ``id`` names for the caller (its own namespace first), if the caller is a party to it."""
    principal = caller.principal
    scoped = caller.own_id(id, ADMIN, reading=True)
    for candidate in (scoped, id) if scoped != id else (id,):
        try:
            found = await ledger.get_transfer(candidate)
        except NotFound:
            continue
        if principal.allows(ADMIN) or principal.agent in (found.debit, found.credit):
            return found
    return None


async def _get_transfer_rule(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> Transfer:
    """A party to the transfer, or ``ledger:admin``; to anyone else a transfer is answered as a missing one."""
    id = arguments["id"]
    found = await _party_transfer(caller, ledger, id)
    if found is None:
        raise NotFound(f"no transfer {id}", details={"id": id})
    return found


async def _hold_of(caller: Caller, ledger: Ledger, hold_id: Any) -> Any:
    """The id of the hold the caller may settle: the payer's own, or any for ``ledger:admin``. A hold in a
    namespace the kernel reserves (``engine:``...) is settled only by the service that placed it (or an admin):
    its payer voiding or capturing it would take back money the service counts on (SOS-5004)."""
    if caller.principal.allows(ADMIN):
        return hold_id  # the ledger itself refuses (and records) a missing hold
    hold = await _party_transfer(caller, ledger, hold_id)
    if hold is None:  # missing and not the caller's are answered alike
        raise SettlementRejected(f"no hold {hold_id}", details={"hold_id": hold_id})
    reserved = kernel_namespace(hold.id)
    if reserved is not None:
        caller.deny(
            f"hold {hold.id!r} is in the kernel's {reserved!r} namespace: only its service settles it", scope=ADMIN
        )
    caller.own("account", "debit", hold.debit)
    return hold.id


async def _capture_rule(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> Transfer:
    """Only the payer of the hold (or ``ledger:admin``) settles it."""
    hold_id = await _hold_of(caller, ledger, arguments["hold_id"])
    op_id = arguments.get("id")
    return await ledger.capture(
        hold_id, arguments.get("amount"), id=None if op_id is None else caller.own_id(op_id, ADMIN)
    )


async def _record_usage_rule(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> UsageEvent:
    """A recorder without ``ledger:admin`` writes only in its own id space (see :func:`recorded_usage_id`)."""
    event, settle = arguments["event"], arguments.get("settle", False)
    principal = caller.principal
    if not principal.allows(ADMIN):
        parsed = parse_card(UsageEvent, event, "usage event")
        own = recorded_usage_id(ledger.tenant, principal.agent, parsed.id)
        event = parsed.model_copy(update={"id": own})
    return await ledger.record_usage(event, settle=settle)


async def _void_rule(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> Transfer:
    """Only the payer of the hold (or ``ledger:admin``) releases it."""
    hold_id = await _hold_of(caller, ledger, arguments["hold_id"])
    op_id = arguments.get("id")
    return await ledger.void(hold_id, id=None if op_id is None else caller.own_id(op_id, ADMIN))


_WRITE_ACTIONS = {"posted": "transfer", "pending": "hold", "post_pending": "capture", "void_pending": "void"}


LEDGER_WRITE_IDS_MAX = 100
"""The most transfer ids one batch's audit record names (``count`` says how many the batch held)."""
LEDGER_AUDIT_CHECK_BATCHES = 16
"""A ledger handle asks whether the audit chain's head has crossed a checkpoint once per this many batches its store
recorded in its own step: a head read on every transfer would cost a read transaction per transfer."""
LEDGER_WRITE_IDS_BYTES_MAX = 3584
"""The most bytes of ids one batch's audit record names, so the record stays within the audit's 4 KiB of details
(``AUDIT_DETAILS_BYTES_MAX``); the first ids that fit are named."""


def ledger_write_ids(ids: Sequence[str]) -> list[str]:
    """The ids a batch's audit record names: the first ones, within ``LEDGER_WRITE_IDS_MAX`` and
    ``LEDGER_WRITE_IDS_BYTES_MAX`` (transfer ids are ASCII)."""
    named, size = [], 0
    for i in ids[:LEDGER_WRITE_IDS_MAX]:
        size += len(i) + 3  # quotes and comma
        if size > LEDGER_WRITE_IDS_BYTES_MAX:
            break
        named.append(i)
    return named


def ledger_write_action(kind: str) -> str:
    """The ``action`` of the audit record of a batch whose first transfer is of ``kind``."""
    return "ledger." + _WRITE_ACTIONS.get(kind, kind)


def ledger_write_record(transfers: Sequence[Transfer]) -> dict[str, Any]:
    """The audit record of an applied batch: its kind, status and transfer ids (amounts live in the ledger)."""
    first = transfers[0]
    ids = ledger_write_ids([t.id for t in transfers[:LEDGER_WRITE_IDS_MAX]])
    return {
        "action": ledger_write_action(first.kind),
        "outcome": first.status,
        "details": {"ids": ids, "count": len(transfers), "sequence": first.sequence},
    }


@service("ledger")
class Ledger:
    """The ledger API of one tenant. Obtain it as ``kernel.ledger`` or ``kernel.tenant(slug).ledger``."""

    def __init__(self, store: LedgerStore, tenant: str) -> None:
        self._store = store
        self.tenant = tenant
        self.events: Events | None = None
        """Set by the kernel: counts of transfers recorded (for metrics)."""
        self.audit: Callable[..., Awaitable[Any]] | None = None
        """The tenant's audit chain (set by the kernel): each applied batch is recorded (see ``audits_writes``)."""
        self.landed: Callable[[], Awaitable[None]] | None = None
        """Set by the kernel: signs the audit chain's checkpoint if one is due; called once per
        ``LEDGER_AUDIT_CHECK_BATCHES`` batches the store recorded in its own step."""
        self._unchecked = 0

    @property
    def store(self) -> LedgerStore:
        """The store under this ledger (for diagnostics and tests)."""
        return self._store

    # -- accounts -------------------------------------------------------------------------------------------

    @operation(
        "ledger:write",
        own={"owner": "account"},
        lift=ADMIN,
        admin_unless={"allow_negative": (False,)},
        wire=Wire(
            errors=(IdempotencyConflict,),
            summary="Open an account (idempotent); an issuer that may go negative needs ledger:admin",
        ),
    )
    async def open_account(self, owner: str, currency: str, allow_negative: bool = False) -> Account:
        """Open ``owner``'s account in ``currency``. Idempotent: opening it again returns it unchanged, unless
        ``allow_negative`` differs (SOS-4009). ``allow_negative=True`` is for issuers that mint."""
        check_owner(owner)
        check_currency(currency)
        if not isinstance(allow_negative, bool):
            raise InvalidArgument("allow_negative must be a bool")
        account, _ = await self._store.open_account(self.tenant, owner, currency, allow_negative, time.time())
        if account.allow_negative != allow_negative:
            raise IdempotencyConflict(
                f"{owner}'s {currency} account exists with allow_negative={account.allow_negative}",
                details={"field": "allow_negative"},
            )
        return account

    @operation(
        "ledger:read",
        own={"owner": "account"},
        lift=ADMIN,
        wire=Wire("GET", errors=(WalletNotFound,), summary="An account's balance"),
    )
    async def balance(self, owner: str, currency: str) -> Balance:
        """The account's balance (expired holds released first). Raises SOS-7002 if it does not exist."""
        check_owner(owner)
        check_currency(currency)
        found = await self._store.balance(self.tenant, owner, currency, time.time())
        if found is None:
            raise WalletNotFound(f"no {currency} account for {owner}", details={"owner": owner, "currency": currency})
        return found

    # -- transfers ------------------------------------------------------------------------------------------

    def _request(
        self,
        kind: TransferKind,
        id: str,
        debit: str,
        credit: str,
        amount: int,
        currency: str,
        timeout_s: int = 0,
        pending_id: str | None = None,
        code: int = 0,
        reason: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> TransferRequest:
        check_transfer_id(id)
        check_owner(debit)
        check_owner(credit)
        check_currency(currency)
        check_amount(amount)
        if debit == credit:
            raise InvalidArgument(f"transfer {id} debits and credits the same account {debit}")
        meta = _check_meta(reason, metadata, code)
        return TransferRequest(id, kind, debit, credit, currency, amount, pending_id, timeout_s, code, reason, meta)

    @operation(
        "ledger:write",
        own={"debit": "account"},
        lift=ADMIN,
        ids=("id",),
        wire=Wire(errors=_MOVES, summary="Move money now (idempotent by id)"),
        spend=("amount",),
        resource=("credit", "debit"),
    )
    async def transfer(
        self,
        *,
        id: str,
        debit: str,
        credit: str,
        amount: int,
        currency: str,
        code: int = 0,
        reason: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> Transfer:
        """Move ``amount`` micros from ``debit`` to ``credit`` now. Exactly once by ``id`` (see module docs).

        Raises SOS-7001 (insufficient funds), 7002 (no such account), 4009 (id reused with other fields),
        4005/4010 (bad input, nothing written).
        """
        # positional, in _request's order: this is the hot path of the ledger, and keywords cost more
        request = self._request("posted", id, debit, credit, amount, currency, 0, None, code, reason, metadata)
        return (await self._submit([request]))[0]

    @operation(
        "ledger:write",
        lift=ADMIN,
        rule=_transfer_many_rule,
        wire=Wire(errors=_MOVES, summary="A linked batch: all or none (idempotent by ids)"),
        spend=("transfers[].amount",),
        resource=("transfers[].credit", "transfers[].debit"),
    )
    async def transfer_many(self, transfers: Sequence[Mapping[str, Any]]) -> list[Transfer]:
        """Apply a linked batch of transfers (each a mapping of :meth:`transfer`'s arguments): all or none.

        On failure every transfer of the batch is recorded as failed with the first failure's code, and the error
        is raised. Replaying the batch replays its recorded outcome.
        """
        return await self._submit(self.check_batch(transfers))

    # -- the seam for services that apply a batch in a larger atomic step of their own ----------------------

    def check_batch(self, transfers: Sequence[Mapping[str, Any]]) -> list[TransferRequest]:
        """The requests of a linked batch, checked exactly as :meth:`transfer_many` checks them; nothing is written.

        For a kernel service (skills) whose store applies the batch through :attr:`store` inside a larger atomic
        step (``LedgerStore.apply``'s rules unchanged: the check and the write are the engine's), then hands the
        result to :meth:`settle`. In-process only, not an operation: a session never reaches it, so money is still
        created only under ``ledger:admin`` and a kernel-prefixed id (``KERNEL_ID_PREFIXES``) only by its service.
        """
        if not isinstance(transfers, Sequence) or isinstance(transfers, str | bytes):
            raise InvalidArgument("transfers must be a list of transfers (mappings of transfer()'s arguments)")
        if not 1 <= len(transfers) <= BATCH_MAX:
            raise LimitExceeded(f"a batch holds 1..{BATCH_MAX} transfers, got {len(transfers)}")
        requests = [self._request("posted", **_batch_item(index, t)) for index, t in enumerate(transfers)]
        if len({r.id for r in requests}) != len(requests):
            raise InvalidArgument("a batch repeats a transfer id")
        return requests

    @operation(
        "ledger:write",
        own={"debit": "account"},
        lift=ADMIN,
        ids=("id",),
        wire=Wire(errors=_MOVES, summary="Reserve money for later capture (idempotent by id)"),
        spend=("amount",),
        resource=("credit", "debit"),
    )
    async def hold(
        self,
        *,
        id: str,
        debit: str,
        credit: str,
        amount: int,
        currency: str,
        timeout_s: int,
        code: int = 0,
        reason: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> Transfer:
        """Reserve ``amount`` from ``debit`` for ``credit`` for at most ``timeout_s`` seconds (a pending transfer).

        The amount counts against ``debit``'s available balance at once; :meth:`capture` posts it (or part of
        it), :meth:`void` releases it, and it is released by itself when the timeout passes.
        """
        if not isinstance(timeout_s, int) or isinstance(timeout_s, bool) or not 1 <= timeout_s <= HOLD_TIMEOUT_S_MAX:
            raise InvalidArgument(f"timeout_s must be an int in 1..{HOLD_TIMEOUT_S_MAX}, got {timeout_s!r}")
        request = self._request(
            "pending",
            id=id,
            debit=debit,
            credit=credit,
            amount=amount,
            currency=currency,
            timeout_s=timeout_s,
            code=code,
            reason=reason,
            metadata=metadata,
        )
        return (await self._submit([request]))[0]

    @operation(
        "ledger:write",
        lift=ADMIN,
        rule=_capture_rule,
        wire=Wire(errors=_SETTLES, summary="Post a hold, fully or partly (idempotent by id)"),
        spend=("amount",),
    )
    async def capture(self, hold_id: str, amount: int | None = None, *, id: str | None = None) -> Transfer:
        """Post ``amount`` (default: all) of a pending hold; the rest is released. The capture's id defaults to
        ``"<hold_id>:capture"`` so a retried capture is idempotent. Raises SOS-7020 if the hold is not pending
        (captured, voided, expired) or ``amount`` exceeds it."""
        return await self._resolve("post_pending", hold_id, amount, id or f"{hold_id}:capture")

    @operation(
        "ledger:write",
        lift=ADMIN,
        rule=_void_rule,
        wire=Wire(errors=_SETTLES, summary="Release a hold (idempotent by id)"),
    )
    async def void(self, hold_id: str, *, id: str | None = None) -> Transfer:
        """Release a pending hold; its id defaults to ``"<hold_id>:void"``. Raises SOS-7020 if it is not pending."""
        return await self._resolve("void_pending", hold_id, None, id or f"{hold_id}:void")

    async def _resolve(self, kind: TransferKind, hold_id: str, amount: int | None, op_id: str) -> Transfer:
        check_transfer_id(hold_id)
        check_transfer_id(op_id)
        if amount is not None:
            check_amount(amount)
        found = await self._store.transfers(self.tenant, [hold_id, op_id])
        hold, prior = found.get(hold_id), found.get(op_id)
        usable = hold is not None and hold.kind == "pending" and hold.ok
        if prior is not None and prior.pending_id == hold_id and not prior.debit:
            usable = False  # the first attempt found no hold (placed since?): a retry is that same request
        if hold is not None and usable:
            # a void moves nothing and is recorded with amount 0, so its retry must ask for 0 too
            moved = 0 if kind == "void_pending" else (hold.amount if amount is None else amount)
            request = TransferRequest(op_id, kind, hold.debit, hold.credit, hold.currency, moved, hold_id)
        else:  # recorded as a failed settlement, so a retry fails the same way
            request = TransferRequest(op_id, kind, "", "", "", amount or 0, hold_id)
        return (await self._submit([request]))[0]

    async def _submit(self, requests: list[TransferRequest]) -> list[Transfer]:
        return await self.settle(requests, await self._store.apply(self.tenant, requests, time.time()))

    async def settle(self, requests: list[TransferRequest], applied: Applied) -> list[Transfer]:
        """The outcome of ``requests`` once the store has applied them (by :meth:`transfer_many` or in a service's
        step that also did more, like a paid invocation): the transfers, or the recorded failure (SOS-7001, 7002...)
        or a replay's conflict (SOS-4009) raised. Records the batch's audit entry when the store does not, and
        counts it for metrics; it moves no money."""
        if applied.transfers and self.audit is not None and not self._store.audits_writes:
            await self.audit("ledger.write", actor="kernel", **ledger_write_record(applied.transfers))
        elif applied.transfers and self.landed is not None:
            self._unchecked += 1
            if self._unchecked >= LEDGER_AUDIT_CHECK_BATCHES:
                self._unchecked = 0
                await self.landed()
        transfers = self._replay(requests, applied.existing) if applied.existing else applied.transfers
        failed = None
        for t in transfers:
            if t.amount < 0 or t.captured < 0:
                raise InvariantViolation("a recorded transfer has a negative amount", details={"id": t.id})
            if failed is None and t.status != "ok":
                failed = t
        if self.events is not None and not applied.existing:
            self.events.emit("transfers_failed" if failed else "transfers", self.tenant, len(transfers))
        if failed is not None:
            cls = error_class(failed.error_code or "SOS-7010")
            raise cls(failed.error_message, details={"id": failed.id, "replayed": failed.replayed})
        return transfers

    @staticmethod
    def _replay(requests: list[TransferRequest], existing: dict[str, Transfer]) -> list[Transfer]:
        if len(existing) != len(requests):
            new = [r.id for r in requests if r.id not in existing]
            raise IdempotencyConflict(
                "this batch mixes already-recorded ids with new ones; replay the original batch or use new ids",
                details={"new_ids": new[:20]},
            )
        out = []
        for request in requests:
            recorded = existing[request.id]
            field = _first_difference(request.fields(), recorded.request_fields())
            if field is not None:
                raise IdempotencyConflict(
                    f"transfer {request.id} was recorded with a different {field!r}",
                    details={"id": request.id, "field": field},
                )
            out.append(replace(recorded, replayed=True))
        return out

    @operation(
        "ledger:read",
        lift=ADMIN,
        rule=_get_transfer_rule,
        wire=Wire("GET", errors=(NotFound,), summary="A recorded transfer by id"),
    )
    async def get_transfer(self, id: str) -> Transfer:
        """The recorded transfer (applied or failed) with this id; SOS-4040 if none."""
        check_transfer_id(id)
        found = (await self._store.transfers(self.tenant, [id])).get(id)
        if found is None:
            raise NotFound(f"no transfer {id}", details={"id": id})
        return found

    @operation(
        "ledger:write",
        own={"owner": "account"},
        lift=ADMIN,
        ids=("id",),
        admin_unless={"rate_num": (None,), "rate_den": (None,), "exchange": (None, EXCHANGE_ACCOUNT)},
        wire=Wire(
            errors=(*_MOVES, NotFound), summary="Convert between currencies at the rate in force (idempotent by id)"
        ),
        spend=("amount",),
    )
    async def transmute(
        self,
        *,
        id: str,
        owner: str,
        amount: int,
        from_currency: str,
        to_currency: str,
        rate_num: int | None = None,
        rate_den: int | None = None,
        exchange: str | None = None,
    ) -> Transmutation:
        """Convert ``amount`` micros of ``from_currency`` into ``to_currency`` through an exchange.

        Without ``rate_num``/``rate_den`` the rate in force (:meth:`rate`) is used, through the exchange it names
        (no rate: SOS-4040, nothing written); explicit terms go through ``exchange`` (default
        :data:`EXCHANGE_ACCOUNT`). Either way the exchange's two accounts must already exist as ``allow_negative``
        system accounts (``set_rate`` or an admin's ``open_account`` opens them): transmute never opens one.

        Two linked transfers through the exchange (ids ``<id>:in`` and ``<id>:out``, each with the rate in its
        metadata): ``owner`` pays ``amount`` of ``from_currency`` and receives ``amount * rate_num // rate_den`` of
        ``to_currency`` (rounded down; the fraction, ``remainder_num / rate_den`` of a micro, stays with the
        exchange). A retry of ``id`` without terms uses the rate its first attempt recorded, so it replays.
        """
        check_transfer_id(id)
        check_amount(amount)
        check_currency(from_currency)
        check_currency(to_currency)
        if from_currency == to_currency:
            raise InvalidArgument("transmute converts between two different currencies")
        num, den, through = await self._terms(id, from_currency, to_currency, rate_num, rate_den, exchange)
        converted, remainder = divmod(amount * num, den)
        if converted <= 0:
            raise InvalidArgument(f"{amount} {from_currency} micros convert to nothing at {num}/{den}")
        await self._check_exchange(through, from_currency, to_currency)
        common = {"reason": f"transmute {id}", "metadata": {"rate_num": num, "rate_den": den}}
        legs = await self.transfer_many(
            [
                {"id": f"{id}:in", "debit": owner, "credit": through, "amount": amount, "currency": from_currency}
                | common,
                {"id": f"{id}:out", "debit": through, "credit": owner, "amount": converted, "currency": to_currency}
                | common,
            ]
        )
        return Transmutation(id, (legs[0], legs[1]), amount, converted, remainder, num, den, through)

    async def _terms(
        self,
        id: str,
        from_currency: str,
        to_currency: str,
        rate_num: int | None,
        rate_den: int | None,
        exchange: str | None,
    ) -> tuple[int, int, str]:
        """The rate and exchange of a transmute: the explicit terms, the first attempt's, or the rate in force."""
        if rate_num is not None or rate_den is not None:
            if rate_num is None or rate_den is None:
                raise InvalidArgument("give both rate_num and rate_den, or neither to use the rate in force")
            return _check_term(rate_num, "rate_num"), _check_term(rate_den, "rate_den"), exchange or EXCHANGE_ACCOUNT
        first = (await self._store.transfers(self.tenant, [f"{id}:out"])).get(f"{id}:out")
        recorded = _recorded_rate(first) if first is not None else None
        if first is not None and recorded is not None:
            return recorded[0], recorded[1], exchange or first.debit
        rate = await self.rate(from_currency, to_currency)
        if rate is None:
            raise NotFound(
                f"no {from_currency}->{to_currency} rate is in force; ledger:admin sets one with set_rate",
                details={"from_currency": from_currency, "to_currency": to_currency},
            )
        if exchange is not None and exchange != rate.exchange:
            raise InvalidArgument(f"the {from_currency}->{to_currency} rate converts through {rate.exchange}")
        return rate.rate_num, rate.rate_den, rate.exchange

    async def _check_exchange(self, exchange: str, *currencies: str) -> None:
        """The exchange is a system account, open in both currencies and allowed to go negative."""
        check_owner(exchange)
        for currency in currencies:
            found = await self._store.balance(self.tenant, exchange, currency, time.time())
            if found is None:
                raise WalletNotFound(
                    f"no {currency} account for exchange {exchange}; ledger:admin opens it with set_rate",
                    details={"owner": exchange, "currency": currency},
                )
            if not exchange.startswith("system:") or not found.allow_negative:
                raise InvalidArgument(
                    f"exchange {exchange} must be an allow_negative system account (set_rate opens one)",
                    details={"owner": exchange, "currency": currency},
                )

    # -- exchange rates -------------------------------------------------------------------------------------

    @operation(
        ADMIN, wire=Wire(errors=(IdempotencyConflict,), summary="Set an exchange rate and its validity (ledger:admin)")
    )
    async def set_rate(
        self,
        from_currency: str,
        to_currency: str,
        *,
        rate_num: int,
        rate_den: int,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        exchange: str = EXCHANGE_ACCOUNT,
    ) -> Rate:
        """Record a rate: ``rate_num / rate_den`` micros of ``to_currency`` per micro of ``from_currency``, in force
        over ``[valid_from, valid_until)`` (``None``: unbounded), converting through ``exchange``.

        An entry with the same ``valid_from`` is replaced; a pair holds at most :data:`RATES_PER_PAIR_MAX` entries
        (SOS-4010). Opens the exchange's two accounts as ``allow_negative`` system accounts (SOS-4009 if one exists
        as must-not-overdraw). This can create money (see docs/ledger.md): sessions need ``ledger:admin``.
        """
        check_currency(from_currency)
        check_currency(to_currency)
        if from_currency == to_currency:
            raise InvalidArgument("a rate converts between two different currencies")
        rate = Rate(
            from_currency,
            to_currency,
            _check_term(rate_num, "rate_num"),
            _check_term(rate_den, "rate_den"),
            _check_exchange_name(exchange),
            _check_when(valid_from, "valid_from"),
            _check_when(valid_until, "valid_until"),
        )
        if rate.valid_from is not None and rate.valid_until is not None and rate.valid_from >= rate.valid_until:
            raise InvalidArgument("valid_from must be before valid_until")
        entries = await self._store.rates(self.tenant, from_currency, to_currency)
        starts = {e.valid_from for e in entries}
        if rate.valid_from not in starts and len(starts) >= RATES_PER_PAIR_MAX:
            raise LimitExceeded(
                f"{from_currency}->{to_currency} has {RATES_PER_PAIR_MAX} rate entries; replace one (same valid_from)",
                details={"max": RATES_PER_PAIR_MAX},
            )
        for currency in (from_currency, to_currency):
            await self.open_account(rate.exchange, currency, allow_negative=True)
        await self._store.set_rate(self.tenant, rate)
        return rate

    @operation("ledger:read", wire=Wire("GET", summary="The exchange rate in force (now or at a time), or null"))
    async def rate(self, from_currency: str, to_currency: str, *, at: datetime | None = None) -> Rate | None:
        """The rate in force at ``at`` (default: now): of the entries whose window holds ``at``, the one that
        started last; ``None`` if there is none."""
        check_currency(from_currency)
        check_currency(to_currency)
        when = _check_when(at, "at") or datetime.now(UTC)
        entries = [e for e in await self._store.rates(self.tenant, from_currency, to_currency) if e.in_force(when)]
        if not entries:
            return None
        return max(entries, key=lambda e: e.valid_from or _DAWN)

    # -- statements and invariants ------------------------------------------------------------------------------

    @operation(
        "ledger:read",
        own={"owner": "account"},
        lift=ADMIN,
        wire=Wire("GET", summary="Applied transfers of an account, oldest first"),
    )
    async def history(self, owner: str, currency: str, *, after: int = 0, limit: int = 100) -> list[Transfer]:
        """Applied transfers touching the account, oldest first; page with ``after=<last sequence>``."""
        check_owner(owner)
        check_currency(currency)
        if not isinstance(limit, int) or not 1 <= limit <= HISTORY_LIMIT_MAX:
            raise InvalidArgument(f"limit must be 1..{HISTORY_LIMIT_MAX}")
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= SEQUENCE_MAX:
            raise InvalidArgument(f"after must be a sequence number in 0..{SEQUENCE_MAX}")
        return await self._store.history(self.tenant, owner, currency, after, limit)

    @operation(ADMIN, wire=Wire("GET", summary="Every account of the tenant (ledger:admin)"))
    async def balances(self) -> list[Balance]:
        """Every account of this tenant."""
        return await self._store.balances(self.tenant)

    @operation(ADMIN, wire=Wire(errors=(InvariantViolation,), summary="Verify the ledger's invariants (ledger:admin)"))
    async def check(self) -> None:
        """Verify the invariants; raise :class:`~sos_kernel.errors.InvariantViolation` (SOS-6099) on any break.

        The chain (:mod:`sos_kernel.ledger.chain`) is verified from the first record: sequences follow each other,
        every record's stored digest is recomputed from its fields, its accounts' ``allow_negative`` flags and the
        previous digest, every account's digest from its facts, and every hold's state from the settlements
        chained after it. Then: per currency, posted and pending balances each sum to zero; every balance equals
        the fold of the applied transfers; every account's statement (``history``) lists exactly the applied
        transfers that touch it, in sequence order; no id is recorded twice, and each is found by its id (the
        idempotency check) as recorded; no must-not-overdraw account is overdrawn; every amount is a non-negative
        int.
        """
        await self._store.apply(self.tenant, [], time.time())  # an empty batch only expires due holds
        balances = await self._store.balances(self.tenant)
        await self._check_account_digests(balances)
        folded, touched = await self._fold({(b.owner, b.currency): b.allow_negative for b in balances})
        sums: dict[str, list[int]] = {}
        for bal in balances:
            listed = await self._statement(bal.owner, bal.currency)
            if listed != touched.get((bal.owner, bal.currency), []):
                raise InvariantViolation(
                    f"the statement of {bal.owner} {bal.currency} does not list exactly its applied transfers",
                    details={"owner": bal.owner, "currency": bal.currency},
                )
            expected = folded.pop((bal.owner, bal.currency), [0, 0, 0, 0])
            actual = [bal.debits_posted, bal.credits_posted, bal.debits_pending, bal.credits_pending]
            if actual != expected:
                raise InvariantViolation(
                    f"{bal.owner} {bal.currency} balance {actual} differs from the fold of its transfers {expected}",
                    details={"owner": bal.owner, "currency": bal.currency},
                )
            if not bal.allow_negative and bal.debits_posted + bal.debits_pending > bal.credits_posted:
                raise InvariantViolation(f"{bal.owner} {bal.currency} is overdrawn", details={"owner": bal.owner})
            total = sums.setdefault(bal.currency, [0, 0])
            total[0] += bal.credits_posted - bal.debits_posted
            total[1] += bal.credits_pending - bal.debits_pending
        if folded:
            raise InvariantViolation("transfers name accounts that do not exist", details={"accounts": str(folded)})
        for currency, (posted, pending) in sums.items():
            if posted != 0 or pending != 0:
                raise InvariantViolation(
                    f"{currency} balances do not sum to zero (posted {posted}, pending {pending})",
                    details={"currency": currency},
                )

    async def _check_account_digests(self, balances: list[Balance]) -> None:
        """Every account's stored digest is the digest of its facts (a flipped ``allow_negative`` shows here)."""
        stored = await self._store.account_digests(self.tenant)
        for bal in balances:
            if stored.get((bal.owner, bal.currency)) != account_digest(
                self.tenant, bal.owner, bal.currency, bal.allow_negative
            ):
                raise InvariantViolation(
                    f"{bal.owner}'s {bal.currency} account (allow_negative={bal.allow_negative}) does not match"
                    " the digest it was opened with",
                    details={"owner": bal.owner, "currency": bal.currency},
                )

    async def _fold(
        self, negative: Mapping[tuple[str, str], bool]
    ) -> tuple[dict[tuple[str, str], list[int]], dict[tuple[str, str], list[int]]]:
        """Verify the chain; return the four counters each account should hold, and the sequences of the applied
        transfers touching it."""
        folded: dict[tuple[str, str], list[int]] = {}
        touched: dict[tuple[str, str], list[int]] = {}
        seen: set[str] = set()
        chain = ChainVerifier(self.tenant, negative, time.time())
        after = 0
        while True:
            page = await self._store.chain(self.tenant, after, CHECK_PAGE)
            await self._check_ids([t for t, _ in page], seen)
            for t, digest in page:
                chain.step(t, digest)
                if t.ok:
                    self._fold_one(folded, t)
                    touched.setdefault((t.debit, t.currency), []).append(t.sequence)
                    touched.setdefault((t.credit, t.currency), []).append(t.sequence)
            if len(page) < CHECK_PAGE:
                chain.finish()
                return folded, touched
            after = page[-1][0].sequence

    async def _check_ids(self, page: list[Transfer], seen: set[str]) -> None:
        """Every transfer of ``page`` has an id no earlier one has, and is what the ledger finds by that id."""
        found = await self._store.transfers(self.tenant, [t.id for t in page])
        for t in page:
            if t.id in seen:
                raise InvariantViolation(f"transfer id {t.id} is recorded twice", details={"id": t.id})
            seen.add(t.id)
            by_id = found.get(t.id)
            if by_id is None or by_id.sequence != t.sequence:
                raise InvariantViolation(
                    f"transfer {t.id} (sequence {t.sequence}) is not what the ledger finds by its id",
                    details={"id": t.id},
                )

    async def _statement(self, owner: str, currency: str) -> list[int]:
        """The sequences an account's statement lists, read page by page as ``history`` serves them."""
        listed: list[int] = []
        while True:
            page = await self._store.history(self.tenant, owner, currency, listed[-1] if listed else 0, CHECK_PAGE)
            listed += [t.sequence for t in page]
            if len(page) < CHECK_PAGE:
                return listed

    @staticmethod
    def _fold_one(folded: dict[tuple[str, str], list[int]], t: Transfer) -> None:
        if not isinstance(t.amount, int) or t.amount < 0:
            raise InvariantViolation(f"transfer {t.id} has a bad amount {t.amount!r}")
        debit = folded.setdefault((t.debit, t.currency), [0, 0, 0, 0])
        credit = folded.setdefault((t.credit, t.currency), [0, 0, 0, 0])
        if t.kind in ("posted", "post_pending"):
            debit[0] += t.amount
            credit[1] += t.amount
        elif t.kind == "pending" and t.state == "pending":
            debit[2] += t.amount
            credit[3] += t.amount

    # -- usage and pricing --------------------------------------------------------------------------------------

    @operation(ADMIN, wire=Wire(summary="Set what a provider's model costs (ledger:admin)"))
    async def set_price(
        self,
        provider: str,
        model: str,
        *,
        input_per_mtok_micros: int,
        output_per_mtok_micros: int = 0,
        per_image_micros: int = 0,
        currency: str = "USD",
    ) -> Price:
        """Set what ``(provider, model)`` costs: micros per million input / output tokens and per image."""
        for label, text in (("provider", provider), ("model", model)):
            if not isinstance(text, str) or not 1 <= len(text) <= 200:
                raise InvalidArgument(f"{label} must be a non-empty string of at most 200 characters")
        for name, value in (
            ("input_per_mtok_micros", input_per_mtok_micros),
            ("output_per_mtok_micros", output_per_mtok_micros),
            ("per_image_micros", per_image_micros),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= AMOUNT_MICROS_MAX:
                raise InvalidArgument(f"{name} must be an int of micros >= 0")
        price = Price(
            provider, model, input_per_mtok_micros, output_per_mtok_micros, per_image_micros, check_currency(currency)
        )
        await self._store.set_price(self.tenant, price)
        return price

    @operation("ledger:read", wire=Wire("GET", summary="The price of a provider's model, or null"))
    async def price(self, provider: str, model: str) -> Price | None:
        """The price set for ``(provider, model)``, or None."""
        return await self._store.price(self.tenant, provider, model)

    @operation(
        "usage:write",
        lift=ADMIN,
        admin_unless={"settle": (False,)},
        rule=_record_usage_rule,
        wire=Wire(
            errors=(IdempotencyConflict, InsufficientFunds),
            summary="Record a usage event (idempotent by its id); settling needs ledger:admin",
        ),
    )
    async def record_usage(self, event: UsageEvent | Mapping[str, Any], *, settle: bool = False) -> UsageEvent:
        """Store a usage event; idempotent by its ``id``. Returns the stored event (``received_at`` set).

        The event's ``tenant`` must be this ledger's tenant (SOS-5004 otherwise). Without ``cost_micros`` the cost
        is computed from the price of ``(provider, model)`` when one is set (rounded up to a micro). With
        ``settle=True`` the cost is charged to ``tenant:<slug>`` and credited to ``system:usage`` through a transfer
        whose id is ``usage:<event id>`` — so a retried settlement charges once. A session without ``ledger:admin``
        records in its own id space: the event is stored (and returned) under an id derived from the tenant, its
        agent and the submitted id (retries with the same id meet the same record), so it can never write an id
        the engine or another recorder uses.
        """
        return await record_usage(self, event, settle=settle)

    @operation(ADMIN, wire=Wire("GET", summary="Stored usage events, oldest first (ledger:admin)"))
    async def usage(
        self,
        *,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[UsageEvent]:
        """Stored usage events, oldest first, matching every filter given (``since`` inclusive)."""
        return await list_usage(self, usage_query(provider, model, since, until), limit)

    @operation(ADMIN, wire=Wire("GET", summary="Usage sums grouped by keys and an optional window (ledger:admin)"))
    async def usage_summary(
        self,
        *,
        group_by: Sequence[str] = ("provider", "model"),
        window: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageSummaryRow]:
        """Sums of events, tokens, images and cost grouped by ``group_by`` (any of tenant, provider, model,
        currency) and an optional ``window`` ("hour", "day", "month"); same filters as :meth:`usage`."""
        return await summarise_usage(self, usage_query(provider, model, since, until), group_by, window)
