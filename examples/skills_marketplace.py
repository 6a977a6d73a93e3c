"""Publish a skill, fork it, verify it, list the marketplace, invoke it with a price, and see who earned what.

Runs on the in-process kernel: ``python examples/skills_marketplace.py``.
"""

from __future__ import annotations

import anyio

import sos_kernel


def card(skill_id: str, author: str, **extra: object) -> dict[str, object]:
    return {
        "schema_version": "1",
        "id": skill_id,
        "name": skill_id.replace("-", " ").title(),
        "version": "1.0.0",
        "author_agent": author,
        "created_at": "2026-11-01T00:00:00Z",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "runtime": {"entry_point": f"skills/{skill_id}.py", "backend": "local-python"},
        **extra,
    }


async def main() -> None:
    async with sos_kernel.open("memory://") as kernel:
        ledger, skills = kernel.ledger, kernel.skills
        await ledger.open_account("system:treasury", "USD", allow_negative=True)
        await ledger.open_account("agent:buyer", "USD")
        await ledger.transfer(
            id="fund-buyer", debit="system:treasury", credit="agent:buyer", amount=5_000_000, currency="USD"
        )

        price = {
            "price_per_call_micros": 250_000,
            "currency": "USD",
            "marketplace_listed": True,
            "revenue_split": {"author": 0.85, "operator": 0.10, "network": 0.05},
        }
        await skills.publish(card("summarise", "agent:ada", tags=["text"], commerce=price))
        await skills.publish(
            card(
                "summarise-legal",
                "agent:lin",
                tags=["text", "legal"],
                commerce=price,
                lineage=[{"parent_skill_id": "summarise", "relation": "forked"}],
            )
        )
        await skills.verify(
            "summarise", "1.0.0", verifier="human:grace", status="human_verified", sample_output_refs=["sha256:9f2c"]
        )

        print("marketplace:", [c.id for c in await skills.marketplace()])
        print("ancestors of summarise-legal:", [c.id for c in await skills.ancestors("summarise-legal")])

        for n in range(3):
            inv = await skills.record_invocation(
                "summarise", caller="agent:buyer", tenant="default", invocation_id=f"call-{n}"
            )
            print(f"call-{n}: paid {inv.price_micros} micros split {inv.payouts}")
        retry = await skills.record_invocation(
            "summarise", caller="agent:buyer", tenant="default", invocation_id="call-0"
        )
        print("retry of call-0 replayed:", retry.replayed)

        earned = (await skills.get("summarise")).earnings
        if earned is None:
            raise SystemExit("a published skill always has earnings")
        print("summarise earnings:", earned.total_invocations, "calls,", earned.total_earned_micros, "micros")
        for owner in ("agent:buyer", "agent:ada", "system:operator", "system:network"):
            print(f"  {owner:<16} {(await ledger.balance(owner, 'USD')).posted:>10} micros")
        await ledger.check()


if __name__ == "__main__":
    anyio.run(main)
