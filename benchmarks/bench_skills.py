"""Paid skill invocations on SQLite against the ledger's own linked-batch rate, measured in the same run.

A paid invocation is: resolve the skill version, one linked ledger batch of three transfers (author, operator,
network), one counter update, one ``sos.skill_executed`` message. The floor is the ledger alone doing the same
three-transfer linked batch per call, so the ratio is what the marketplace adds on top of the money movement.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import anyio

import sos_kernel

CALLS = 1000
ROUNDS = 3
PRICE = {
    "price_per_call_micros": 1_000,
    "currency": "USD",
    "marketplace_listed": True,
    "revenue_split": {"author": 0.85, "operator": 0.10, "network": 0.05},
}
CARD = {
    "schema_version": "1",
    "id": "bench-skill",
    "name": "Bench",
    "version": "1.0.0",
    "author_agent": "agent:author",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "bench.py"},
    "commerce": PRICE,
}


async def _setup(url: str) -> sos_kernel.Kernel:
    kernel = await sos_kernel.open(url)
    led = kernel.ledger
    await led.open_account("system:treasury", "USD", allow_negative=True)
    for owner in ("agent:caller", "agent:author", "system:operator", "system:network"):
        await led.open_account(owner, "USD")
    await led.transfer(id="fund", debit="system:treasury", credit="agent:caller", amount=10**12, currency="USD")
    await kernel.skills.publish(CARD)
    return kernel


async def invocations(url: str) -> float:
    kernel = await _setup(url)
    started = time.perf_counter()
    for i in range(CALLS):
        await kernel.skills.record_invocation(
            "bench-skill", caller="agent:caller", tenant="default", invocation_id=f"i{i}"
        )
    rate = CALLS / (time.perf_counter() - started)
    await kernel.aclose()
    return rate


async def batches(url: str) -> float:
    kernel = await _setup(url)
    led = kernel.ledger
    started = time.perf_counter()
    for i in range(CALLS):
        await led.transfer_many(
            [
                {"id": f"b{i}:a", "debit": "agent:caller", "credit": "agent:author", "amount": 850, "currency": "USD"},
                {
                    "id": f"b{i}:o",
                    "debit": "agent:caller",
                    "credit": "system:operator",
                    "amount": 100,
                    "currency": "USD",
                },
                {"id": f"b{i}:n", "debit": "agent:caller", "credit": "system:network", "amount": 50, "currency": "USD"},
            ]
        )
    rate = CALLS / (time.perf_counter() - started)
    await kernel.aclose()
    return rate


def main() -> None:
    """Interleave rounds of both cases on fresh SQLite files and print the medians and their ratio."""
    ours, floor = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            ours.append(anyio.run(invocations, f"sqlite:///{Path(tmp)}/inv-{r}.db"))
            floor.append(anyio.run(batches, f"sqlite:///{Path(tmp)}/led-{r}.db"))
    o, f = statistics.median(ours), statistics.median(floor)
    print(f"{'case':<44} {'calls/s':>10}")
    print(f"{'sqlite paid invocation (3-way split)':<44} {o:>10,.0f}")
    print(f"{'sqlite ledger linked batch of 3 (floor)':<44} {f:>10,.0f}")
    print(f"ratio {o / f:.2f}x (record)")


if __name__ == "__main__":
    main()
