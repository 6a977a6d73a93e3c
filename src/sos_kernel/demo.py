"""``sos demo``: a tenant, three agents, messages, a priced skill and the money adding up — in about a second.

Each run sprouts a fresh tenant (``demo-<hex>``) so it can be repeated on the same ``sos.db``. The agents act
through sessions (bearer tokens with scopes), as they would from another process or over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import anyio

from .contracts import AgentCard, Message, ReceiptMessage
from .kernel import open
from .session import Session

__all__ = ["run_demo"]

USD = "USD"
SKILL = {
    "schema_version": "1",
    "id": "summarise",
    "name": "Summarise",
    "version": "1.0.0",
    "author_agent": "agent:carol",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "tags": ["text"],
    "runtime": {"entry_point": "skills/summarise.py", "backend": "local-python"},
    "commerce": {
        "price_per_call_micros": 250_000,
        "currency": USD,
        "marketplace_listed": True,
        "revenue_split": {"author": 0.85, "operator": 0.10, "network": 0.05},
    },
}


def _line(message: Message) -> str:
    payload = getattr(message, "payload", None)
    if isinstance(message, ReceiptMessage):
        what = f"{message.payload.kind} receipt for {message.payload.message_id[:8]}"
    else:
        what = getattr(payload, "text", None) or getattr(payload, "question", None) or ""
    return f"  {message.type:<13} {message.source:<13} -> {message.target:<28} {what}"


async def _carol(carol: Session) -> None:
    async with carol.bus.subscribe("agent:carol") as inbox:
        delivery = await inbox.receive(timeout_s=10)
        if delivery is not None:
            await carol.bus.reply(delivery.message, "42 - and the evidence trail is on the bus.")
            await delivery.ack()


async def run_demo(url: str | None = None, echo: Callable[[str], None] = print) -> int:
    """Run the demo on ``url`` (default: the embedded ``sqlite:///sos.db``); returns a process exit code."""
    slug = f"demo-{uuid.uuid4().hex[:8]}"
    async with open(url) as kernel:
        _, admin_token = await kernel.tenants.create(slug, plan="growth")
        echo(f"sos-kernel demo on {kernel.url} (backend {kernel.backend.name}): sprouted tenant {slug}")
        admin = await kernel.session(admin_token)
        tokens = kernel.tenant(slug).tokens
        agents = {}
        for name in ("alice", "bob", "carol"):
            issued = await tokens.issue(agent=f"agent:{name}")
            agents[name] = await kernel.session(issued.secret)
            await agents[name].registry.register(AgentCard(name=name, tool="sdk", type="service", role="executor"))
            await agents[name].bus.announce(f"agent:{name}", f"{name} is online", tool="sdk")
        alice, bob, carol = agents["alice"], agents["bob"], agents["carol"]

        sent = await alice.bus.send("agent:alice", "agent:bob", "Please review task t-1.", receipts=True)
        async with bob.bus.subscribe("agent:bob") as inbox:
            delivery = await inbox.receive(timeout_s=5)
            if delivery is None:
                echo("bob received nothing")
                return 1
            await delivery.ack()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_carol, carol)
            answer = await alice.bus.ask("agent:alice", "agent:carol", "What is the answer?", timeout_s=10)

        await admin.ledger.open_account("system:treasury", USD, allow_negative=True)
        for name, session in agents.items():
            await session.ledger.open_account(f"agent:{name}", USD)
        await admin.ledger.transfer(
            id="grant-alice",
            debit="system:treasury",
            credit="agent:alice",
            amount=1_000_000,
            currency=USD,
            reason="starting grant",
        )
        await carol.skills.publish(SKILL)
        await admin.skills.verify(
            "summarise", "1.0.0", verifier="agent:bob", status="human_verified", sample_output_refs=["sha256:9f2c1e"]
        )
        invocation = await alice.skills.record_invocation(
            "summarise", caller="agent:alice", tenant=slug, invocation_id="demo-call-1"
        )

        echo("\nmessage trail:")
        bus = kernel.tenant(slug).bus
        for address in ("sos:channel:global", "agent:bob", "agent:carol", answer.target, "agent:alice"):
            for message in await bus.history(address):
                echo(_line(message))
        receipts = [m for m in await bus.history("agent:alice") if isinstance(m, ReceiptMessage)]
        kinds = [r.payload.kind for r in receipts if r.payload.message_id == sent.message_id]
        echo(f"\nreceipts for alice's message {sent.message_id[:8]}: {', '.join(kinds)}")
        echo(f"carol answered: {answer.payload.text}")
        echo(f"alice paid {invocation.price_micros} micros for summarise, split {invocation.payouts}")

        echo("\nwallets (USD micros):")
        total = 0
        for balance in await admin.ledger.balances():
            total += balance.posted
            echo(f"  {balance.owner:<18} {balance.posted:>12}")
        echo(f"  {'sum':<18} {total:>12}  (double entry: always 0)")
        await admin.ledger.check()
        ok = kinds == ["delivered", "processed"] and total == 0 and sum(invocation.payouts.values()) == 250_000
        return 0 if ok else 1
