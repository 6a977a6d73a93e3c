"""A seeded tenant for the tests of the kernel's tools (MCP, LangChain, LangGraph, CrewAI)."""

from __future__ import annotations

from typing import Any

import sos_kernel

USD = "USD"
SKILL = {
    "schema_version": "1",
    "id": "skill-a",
    "name": "A",
    "version": "1.0.0",
    "author_agent": "agent:carol",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "a.py"},
    "commerce": {"price_per_call_micros": 10, "currency": "USD", "marketplace_listed": True},
}


async def seed(kernel: sos_kernel.Kernel, slug: str = "acme") -> tuple[Any, dict[str, str]]:
    """Tenant ``slug`` with agents alice, bob and carol (100 USD micros each) and one priced skill; their tokens
    (and ``admin``'s)."""
    _, admin_token = await kernel.tenants.create(slug, plan="scale")
    view = kernel.tenant(slug)
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    tokens = {"admin": admin_token}
    for name in ("alice", "bob", "carol"):
        await view.ledger.open_account(f"agent:{name}", USD)
        await view.ledger.transfer(
            id=f"seed-{name}", debit="system:treasury", credit=f"agent:{name}", amount=100, currency=USD
        )
        tokens[name] = (await view.tokens.issue(agent=f"agent:{name}")).secret
    await view.skills.publish(SKILL)
    return view, tokens
