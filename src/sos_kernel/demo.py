"""``sos demo``: three agents on the embedded kernel, start to finish in about a second.

Each run uses a fresh tenant (``demo-<hex>``), so it can be repeated on the same ``sos.db``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import anyio

from .contracts import Message, ReceiptMessage
from .kernel import Kernel, open

__all__ = ["run_demo"]


def _line(message: Message) -> str:
    payload = getattr(message, "payload", None)
    if isinstance(message, ReceiptMessage):
        what = f"{message.payload.kind} receipt for {message.payload.message_id[:8]}"
    else:
        what = getattr(payload, "text", None) or getattr(payload, "question", None) or ""
    return f"  {message.type:<9} {message.source:<14} -> {message.target:<28} {what}"


async def _oracle(kernel: Kernel, tenant: str) -> None:
    bus = kernel.tenant(tenant).bus
    async with bus.subscribe("agent:carol") as sub:
        delivery = await sub.receive(timeout_s=10)
        if delivery is not None:
            await bus.reply(delivery.message, "42 - and here is the evidence trail.")
            await delivery.ack()


async def run_demo(url: str | None = None, echo: Callable[[str], None] = print) -> int:
    """Run the demo on ``url`` (default: the embedded ``sqlite:///sos.db``); returns a process exit code."""
    tenant = f"demo-{uuid.uuid4().hex[:8]}"
    async with open(url) as kernel:
        bus = kernel.tenant(tenant).bus
        echo(f"sos-kernel demo on {kernel.url} (tenant {tenant}, backend {kernel.backend.name})")
        for name in ("alice", "bob", "carol"):
            await bus.announce(f"agent:{name}", f"{name} is online", tool="sdk")
        sent = await bus.send("agent:alice", "agent:bob", "Please review task t-1.", receipts=True)
        async with bus.subscribe("agent:bob") as sub:
            delivery = await sub.receive(timeout_s=5)
            if delivery is None:
                echo("bob received nothing")
                return 1
            await delivery.ack()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_oracle, kernel, tenant)
            answer = await bus.ask("agent:alice", "agent:carol", "What is the answer?", timeout_s=10)
        echo("\nmessage trail:")
        for address in ("sos:channel:global", "agent:bob", "agent:carol", answer.target, "agent:alice"):
            for message in await bus.history(address):
                echo(_line(message))
        receipts = [m for m in await bus.history("agent:alice") if isinstance(m, ReceiptMessage)]
        kinds = [r.payload.kind for r in receipts if r.payload.message_id == sent.message_id]
        echo(f"\nreceipts for alice's message {sent.message_id[:8]}: {', '.join(kinds)}")
        echo(f"carol answered: {answer.payload.text}")
        return 0 if kinds == ["delivered", "processed"] else 1
