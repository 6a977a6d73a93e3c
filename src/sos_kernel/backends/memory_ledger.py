"""The in-process ledger store (the reference the other engines are tested against)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..audit import acting
from ..audit.chain import now as audit_now
from ..audit.models import AuditDraft
from ..ledger.chain import account_digest, genesis, link
from ..ledger.models import Account, Balance, Price, Rate, Transfer, TransferRequest
from ..ledger.rules import AccountState, evaluate, expire_holds
from ..ledger.service import ledger_write_record
from ..ledger.store import Applied, LedgerStore, UsageQuery, rate_key

__all__ = ["MemoryLedgerStore", "usage_matches"]


def usage_matches(record: dict[str, Any], query: UsageQuery) -> bool:
    """Whether a stored usage record passes ``query``'s filters."""
    if query.provider is not None and record["provider"] != query.provider:
        return False
    if query.model is not None and record["model"] != query.model:
        return False
    at = float(record["occurred_ts"])
    if query.since is not None and at < query.since:
        return False
    return not (query.until is not None and at >= query.until)


class MemoryLedgerStore(LedgerStore):
    """Dicts and lists; every method runs without awaiting, so it is atomic on one event loop. Given an audit
    log (``audit``, set by the memory backend), it records every applied batch in the same step."""

    def __init__(self, audit: Any = None) -> None:
        self.audit = audit
        self.audits_writes = audit is not None
        self._accounts: dict[tuple[str, str, str], tuple[Account, AccountState]] = {}
        self._transfers: dict[tuple[str, str], Transfer] = {}
        self._order: dict[str, list[str]] = {}
        self._open_holds: dict[str, set[str]] = {}
        self._history: dict[tuple[str, str, str], list[str]] = {}
        self._usage: dict[tuple[str, str], dict[str, Any]] = {}
        self._usage_order: dict[str, list[str]] = {}
        self._prices: dict[tuple[str, str, str], Price] = {}
        self._rates: dict[tuple[str, str, str], dict[str, Rate]] = {}
        self._digests: dict[tuple[str, str], str] = {}  # (tenant, transfer id) -> digest (hex)
        self._account_digests: dict[tuple[str, str, str], str] = {}
        self._heads: dict[str, bytes] = {}

    def _balance(self, tenant: str, owner: str, currency: str) -> Balance | None:
        found = self._accounts.get((tenant, owner, currency))
        if found is None:
            return None
        account, st = found
        return Balance(
            owner,
            currency,
            st.debits_posted,
            st.credits_posted,
            st.debits_pending,
            st.credits_pending,
            account.allow_negative,
        )

    def _expire(self, tenant: str, now: float) -> None:
        open_ids = self._open_holds.get(tenant, set())
        holds = {i: self._transfers[(tenant, i)] for i in open_ids}
        states = {(h.debit, h.currency): self._accounts[(tenant, h.debit, h.currency)][1] for h in holds.values()} | {
            (h.credit, h.currency): self._accounts[(tenant, h.credit, h.currency)][1] for h in holds.values()
        }
        for hold_id, hold in expire_holds(holds, states, now).items():
            self._transfers[(tenant, hold_id)] = hold
            open_ids.discard(hold_id)

    async def open_account(
        self, tenant: str, owner: str, currency: str, allow_negative: bool, now: float
    ) -> tuple[Account, bool]:
        key = (tenant, owner, currency)
        found = self._accounts.get(key)
        if found is not None:
            return found[0], False
        account = Account(owner, currency, allow_negative, datetime.fromtimestamp(now, UTC))
        self._accounts[key] = (account, AccountState(allow_negative, 0, 0, 0, 0))
        self._account_digests[key] = account_digest(tenant, owner, currency, allow_negative)
        return account, True

    async def balance(self, tenant: str, owner: str, currency: str, now: float) -> Balance | None:
        self._expire(tenant, now)
        return self._balance(tenant, owner, currency)

    async def apply(self, tenant: str, requests: Sequence[TransferRequest], now: float) -> Applied:
        existing = {r.id: self._transfers[(tenant, r.id)] for r in requests if (tenant, r.id) in self._transfers}
        if existing:
            return Applied([], existing)
        self._expire(tenant, now)
        holds = {
            r.pending_id: self._transfers[(tenant, r.pending_id)]
            for r in requests
            if r.pending_id and (tenant, r.pending_id) in self._transfers
        }
        keys = {(r.debit, r.currency) for r in requests if r.kind in ("posted", "pending")}
        keys |= {(r.credit, r.currency) for r in requests if r.kind in ("posted", "pending")}
        keys |= {(h.debit, h.currency) for h in holds.values()} | {(h.credit, h.currency) for h in holds.values()}
        accounts = {k: (self._accounts[(tenant, *k)][1] if (tenant, *k) in self._accounts else None) for k in keys}
        order = self._order.setdefault(tenant, [])
        result = evaluate(requests, accounts, holds, now, len(order) + 1)
        digests = link(self._heads.get(tenant) or genesis(tenant), result.transfers, accounts)
        if digests:
            self._heads[tenant] = digests[-1]
        for transfer, digest in zip(result.transfers, digests, strict=True):
            self._transfers[(tenant, transfer.id)] = transfer
            self._digests[(tenant, transfer.id)] = digest.hex()
            order.append(transfer.id)
            if transfer.ok:
                self._index(tenant, transfer)
        for hold_id, hold in result.holds.items():
            self._transfers[(tenant, hold_id)] = hold
            self._open_holds.setdefault(tenant, set()).discard(hold_id)
        if self.audit is not None and result.transfers:
            fields = ledger_write_record(result.transfers)
            self.audit.append_now(tenant, AuditDraft(at=audit_now(), kind="ledger.write", actor=acting(), **fields))
        return Applied(result.transfers, {})

    def _index(self, tenant: str, transfer: Transfer) -> None:
        for owner in (transfer.debit, transfer.credit):
            self._history.setdefault((tenant, owner, transfer.currency), []).append(transfer.id)
        if transfer.kind == "pending":
            self._open_holds.setdefault(tenant, set()).add(transfer.id)

    async def transfers(self, tenant: str, ids: Sequence[str]) -> dict[str, Transfer]:
        return {i: self._transfers[(tenant, i)] for i in ids if (tenant, i) in self._transfers}

    async def history(self, tenant: str, owner: str, currency: str, after_seq: int, limit: int) -> list[Transfer]:
        ids = self._history.get((tenant, owner, currency), [])
        found = [self._transfers[(tenant, i)] for i in ids]
        return [t for t in found if t.sequence > after_seq][:limit]

    async def balances(self, tenant: str) -> list[Balance]:
        out = []
        for t, owner, currency in self._accounts:
            if t == tenant:
                found = self._balance(tenant, owner, currency)
                if found is not None:
                    out.append(found)
        return out

    async def all_transfers(self, tenant: str, after_seq: int, limit: int) -> list[Transfer]:
        order = self._order.get(tenant, [])
        return [self._transfers[(tenant, i)] for i in order[after_seq : after_seq + limit]]

    async def put_usage(self, tenant: str, event_id: str, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (tenant, event_id)
        if key in self._usage:
            return self._usage[key], False
        self._usage[key] = dict(record)
        self._usage_order.setdefault(tenant, []).append(event_id)
        return record, True

    async def usage(self, tenant: str, query: UsageQuery, limit: int) -> list[dict[str, Any]]:
        records = (self._usage[(tenant, i)] for i in self._usage_order.get(tenant, []))
        return [r for r in records if usage_matches(r, query)][:limit]

    async def set_price(self, tenant: str, price: Price) -> None:
        self._prices[(tenant, price.provider, price.model)] = replace(price)

    async def price(self, tenant: str, provider: str, model: str) -> Price | None:
        return self._prices.get((tenant, provider, model))

    async def set_rate(self, tenant: str, rate: Rate) -> None:
        self._rates.setdefault((tenant, rate.from_currency, rate.to_currency), {})[rate_key(rate)] = rate

    async def rates(self, tenant: str, from_currency: str, to_currency: str) -> list[Rate]:
        return list(self._rates.get((tenant, from_currency, to_currency), {}).values())

    async def chain(self, tenant: str, after_seq: int, limit: int) -> list[tuple[Transfer, str]]:
        found = await self.all_transfers(tenant, after_seq, limit)
        return [(t, self._digests[(tenant, t.id)]) for t in found]

    async def account_digests(self, tenant: str) -> dict[tuple[str, str], str]:
        return {(o, c): digest for (t, o, c), digest in self._account_digests.items() if t == tenant}
