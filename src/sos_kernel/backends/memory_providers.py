"""Providers in memory: dicts per tenant; each primitive runs without awaiting, so it is atomic."""

from __future__ import annotations

from ..providers.breaker import CLOSED, BreakerState
from ..providers.store import CallClaim, ProviderStore

__all__ = ["MemoryProviderStore"]


class MemoryProviderStore(ProviderStore):
    """Provider primitives on dicts."""

    def __init__(self) -> None:
        self._cards: dict[str, dict[str, bytes]] = {}
        self._breakers: dict[tuple[str, str], tuple[BreakerState, int]] = {}
        self._calls: dict[tuple[str, str], tuple[str, bytes | None, float]] = {}

    async def put_card(self, tenant: str, provider_id: str, card: bytes, count_max: int) -> bool:
        cards = self._cards.setdefault(tenant, {})
        if provider_id not in cards and len(cards) >= count_max:
            return False
        cards[provider_id] = card
        return True

    async def remove_card(self, tenant: str, provider_id: str) -> bool:
        self._breakers.pop((tenant, provider_id), None)
        return self._cards.get(tenant, {}).pop(provider_id, None) is not None

    async def cards(self, tenant: str) -> list[bytes]:
        cards = self._cards.get(tenant, {})
        return [cards[k] for k in sorted(cards)]

    async def breaker(self, tenant: str, provider_id: str) -> tuple[BreakerState, int]:
        return self._breakers.get((tenant, provider_id), (CLOSED, 0))

    async def swap_breaker(self, tenant: str, provider_id: str, version: int, state: BreakerState) -> bool:
        if self._breakers.get((tenant, provider_id), (CLOSED, 0))[1] != version:
            return False
        self._breakers[(tenant, provider_id)] = (state, version + 1)
        return True

    async def claim_call(self, tenant: str, call_id: str, token: str, now: float, lease_s: float) -> CallClaim:
        key = (tenant, call_id)
        found = self._calls.get(key)
        if found is not None and found[2] > now:
            return CallClaim("done" if found[1] is not None else "running", found[1], found[0])
        self._calls[key] = (token, None, now + lease_s)
        return CallClaim("claimed")

    async def finish_call(self, tenant: str, call_id: str, token: str, reply: bytes, now: float, keep_s: float) -> None:
        key = (tenant, call_id)
        found = self._calls.get(key)
        if found is not None and found[0] == token and found[1] is None:
            self._calls[key] = (token, reply, now + keep_s)

    async def release_call(self, tenant: str, call_id: str, token: str) -> None:
        found = self._calls.get((tenant, call_id))
        if found is not None and found[0] == token and found[1] is None:
            del self._calls[(tenant, call_id)]
