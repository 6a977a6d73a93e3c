"""A tenant with something on every dashboard page, and a second tenant that must see none of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sos_kernel
from sos_kernel.ops.watch import DeadLettersRule, Watcher

USD = "USD"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
"""Attacker-controlled text put in every field a page shows: it must come back escaped, never as markup."""


def skill(
    skill_id: str, name: str, *, listed: bool, author: str, price: int = 250_000, tags: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "schema_version": "1",
        "id": skill_id,
        "name": name,
        "version": "1.0.0",
        "description": f"{name} does things",
        "tags": list(tags),
        "author_agent": author,
        "created_at": "2026-11-01T00:00:00Z",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "runtime": {"entry_point": "a.py"},
        "commerce": {"price_per_call_micros": price, "currency": USD, "marketplace_listed": listed},
    }


def card(name: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "agent_card_version": "1.0.0",
        "name": name,
        "tool": "sdk",
        "type": "remote",
        "role": "executor",
        "skills": ["review"],
        "summary": f"{name} {XSS}",
        "registered_at": now,
        "last_seen": now,
    }


@dataclass
class Seeded:
    slug: str
    admin_token: str
    agents: tuple[str, ...]
    tokens: dict[str, str] = field(default_factory=dict)
    dead_id: str = ""


async def dead_letter(kernel: sos_kernel.Kernel, slug: str, target: str, text: str) -> str:
    """One message to ``target`` given up on after one delivery; its dead letter id."""
    bus = kernel.tenant(slug).bus
    await bus.send("agent:boss", target, text)
    async with bus.subscribe(target, max_deliveries=1, visibility_timeout_s=0.1) as sub:
        delivery = await sub.receive(timeout_s=5)
        if delivery is None:
            raise RuntimeError("no delivery")
        await delivery.nack()
        await sub.receive(timeout_s=0.3)  # the next hand-out buries it
    (dead,) = await bus.dead_letters(target)
    return dead.id


async def seed(kernel: sos_kernel.Kernel, slug: str, agents: tuple[str, ...], *, prefix: str = "") -> Seeded:
    """Tenant ``slug``: agents, messages (one carrying ``XSS``), money, usage, skills listed and not, a task, a dead
    letter and a firing alert."""
    _, admin_token = await kernel.tenants.create(slug, plan="scale")
    view = kernel.tenant(slug)
    out = Seeded(slug, admin_token, agents)
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    first = f"agent:{agents[0]}"
    for name in agents:
        await view.registry.register(card(name))
    out.dead_id = await dead_letter(kernel, slug, first, f"dead {XSS}")
    for name in agents:
        await view.ledger.open_account(f"agent:{name}", USD)
        await view.ledger.transfer(
            id=f"seed-{name}",
            debit="system:treasury",
            credit=f"agent:{name}",
            amount=12_345_678,
            currency=USD,
            reason=XSS,
        )
        await view.bus.send("agent:boss", f"agent:{name}", f"hello {name} {XSS}")
        out.tokens[name] = (await view.tokens.issue(agent=f"agent:{name}")).secret
    await view.ledger.hold(
        id="hold-1", debit=first, credit="system:treasury", amount=1_000_001, currency=USD, timeout_s=3600
    )
    await view.ledger.record_usage(
        {
            "schema_version": "1",
            "id": "0b9e4d8e-4f1c-4a7b-9d2e-6c1f0a3b5d7e",
            "tenant": slug,
            "provider": f"{prefix}prov",
            "model": f"{prefix}model",
            "input_tokens": 1234,
            "output_tokens": 56,
            "cost_micros": 1_500,
            "occurred_at": "2026-11-01T00:00:00Z",
        }
    )
    await view.skills.publish(
        skill(f"{prefix}listed-skill", f"{prefix}Listed {XSS}", listed=True, author=first, tags=("text",))
    )
    await view.skills.publish(skill(f"{prefix}private-skill", f"{prefix}Private skill", listed=False, author=first))
    await view.tasks.create(
        f"{prefix}Task {XSS}",
        id=f"{prefix}task-1",
        bounty=2_000_000,
        funded_by=first,
        reviewers=[f"agent:{agents[-1]}"],
    )
    await Watcher(view, [DeadLettersRule([first])], clear_s=0.0).evaluate()
    return out
