"""Idempotency replies in this process: per tenant, records in insertion order; per principal, its keys."""

from __future__ import annotations

import time
from collections import OrderedDict

from ..replies import RUNNING, Reply, ReplyBounds, ReplyStore

__all__ = ["MemoryReplyStore"]

_Slot = tuple[str, str]  # (principal, key)


class MemoryReplyStore(ReplyStore):
    """Reply primitives on dictionaries (one event loop: every method runs without awaiting, so it is atomic)."""

    def __init__(self) -> None:
        self._tenants: dict[str, OrderedDict[_Slot, tuple[Reply, float]]] = {}
        self._principals: dict[tuple[str, str], OrderedDict[str, None]] = {}

    def _live(self, tenant: str, slot: _Slot) -> Reply | None:
        records = self._tenants.get(tenant)
        found = records.get(slot) if records is not None else None
        if found is None:
            return None
        if found[1] > time.monotonic():
            return found[0]
        self._drop(tenant, slot)
        return None

    def _drop(self, tenant: str, slot: _Slot) -> None:
        records = self._tenants[tenant]
        del records[slot]
        keys = self._principals[(tenant, slot[0])]
        del keys[slot[1]]
        if not keys:
            del self._principals[(tenant, slot[0])]
        if not records:
            del self._tenants[tenant]

    def _make_room(self, tenant: str, principal: str, bounds: ReplyBounds) -> None:
        keys = self._principals.get((tenant, principal))
        while keys and len(keys) >= bounds.principal_keys_max:
            self._drop(tenant, (principal, next(iter(keys))))
        records = self._tenants.get(tenant)
        while records and len(records) >= bounds.tenant_keys_max:
            self._drop(tenant, next(iter(records)))

    async def claim(self, tenant: str, principal: str, key: str, fingerprint: str, bounds: ReplyBounds) -> Reply | None:
        found = self._live(tenant, (principal, key))
        if found is not None:
            return found
        self._make_room(tenant, principal, bounds)
        expires = time.monotonic() + bounds.running_s
        self._tenants.setdefault(tenant, OrderedDict())[(principal, key)] = (Reply(fingerprint, RUNNING, b""), expires)
        self._principals.setdefault((tenant, principal), OrderedDict())[key] = None
        return None

    async def finish(self, tenant: str, principal: str, key: str, reply: Reply, ttl_s: float) -> None:
        found = self._live(tenant, (principal, key))
        if found is not None and found.status == RUNNING and found.fingerprint == reply.fingerprint:
            self._tenants[tenant][(principal, key)] = (reply, time.monotonic() + ttl_s)

    async def release(self, tenant: str, principal: str, key: str, fingerprint: str) -> None:
        found = self._live(tenant, (principal, key))
        if found is not None and found.status == RUNNING and found.fingerprint == fingerprint:
            self._drop(tenant, (principal, key))
