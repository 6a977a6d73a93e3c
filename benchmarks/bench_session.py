"""A session call against the trusted call it guards, measured in the same run (memory backend).

- ``ledger.balance``: a session's read of its own account against ``kernel.tenant(t).ledger.balance``;
- ``ledger.transfer``: a session's transfer from its own account (its id recorded in its namespace) against the
  trusted transfer;
- ``bus.send``: a session's send as its own agent against the trusted send.

The session re-validates its token (a cache hit within ``TOKEN_CACHE_TTL_S``) and applies the operation's declared
access rule before the same trusted call, so the ratio is the price of the checks. Rounds are interleaved.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import anyio

import sos_kernel

CALLS = 2000
ROUNDS = 5


async def _rate(call: Callable[[int], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for i in range(CALLS):
        await call(i)
    return CALLS / (time.perf_counter() - started)


async def run() -> list[tuple[str, float, float]]:
    async with sos_kernel.open("memory://") as kernel:
        _, _admin = await kernel.tenants.create("acme", "scale")
        view = kernel.tenant("acme")
        await view.ledger.open_account("system:mint", "USD", allow_negative=True)
        for name in ("alice", "bob"):
            await view.ledger.open_account(f"agent:{name}", "USD")
        await view.ledger.transfer(id="seed", debit="system:mint", credit="agent:alice", amount=10**12, currency="USD")
        session = await kernel.session((await view.tokens.issue(agent="agent:alice")).secret)
        n = iter(range(10**9))
        cases: dict[str, tuple[Callable[[int], Awaitable[object]], Callable[[int], Awaitable[object]]]] = {
            "ledger.balance": (
                lambda i: session.ledger.balance("agent:alice", "USD"),
                lambda i: view.ledger.balance("agent:alice", "USD"),
            ),
            "ledger.transfer": (
                lambda i: session.ledger.transfer(
                    id=f"s{next(n)}", debit="agent:alice", credit="agent:bob", amount=1, currency="USD"
                ),
                lambda i: view.ledger.transfer(
                    id=f"k{next(n)}", debit="agent:alice", credit="agent:bob", amount=1, currency="USD"
                ),
            ),
            "bus.send": (
                lambda i: session.bus.send("agent:alice", "agent:bob", "hi"),
                lambda i: view.bus.send("agent:alice", "agent:bob", "hi"),
            ),
        }
        rows = []
        for name, (ours, raw) in cases.items():
            pairs = [(await _rate(ours), await _rate(raw)) for _ in range(ROUNDS)]
            ours_rate = statistics.median(p[0] for p in pairs)
            rows.append((name, ours_rate, statistics.median(p[0] / p[1] for p in pairs)))
        return rows


def main() -> None:
    """Print each case's session rate and its ratio to the trusted call."""
    print(f"{CALLS} calls x {ROUNDS} interleaved rounds, memory backend; session / trusted")
    for name, rate, ratio in anyio.run(run):
        print(f"{name:18} {rate:>10,.0f}/s  {ratio:.2f}x")


if __name__ == "__main__":
    main()
