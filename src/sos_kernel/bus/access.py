"""The bus's access rules that are not declarations (see :mod:`sos_kernel.operations`).

A session publishes only as its own agent, and that holds for the message finally stored, whatever built it: the
rules hand the bus an ``admit`` check that it applies to every parsed message (and to a message reassembled from
chunks). A subscription is checked when it opens, through its open-check hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..contracts import Message
    from ..guard import Caller
    from .models import PublishReceipt
    from .service import Bus, Subscription

__all__ = ["publish", "publish_many", "replay", "reply", "subscribe"]


def _admit(caller: Caller) -> Any:
    if caller.principal.admin:
        return None

    def admit(message: Message) -> None:
        caller.own("source", "source", message.source)

    return admit


async def publish(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> PublishReceipt:
    """Every message stored is from the caller's agent (admin: any)."""
    a = arguments
    return await bus._publish(a["message"], a.get("receipts", False), a.get("chunking", True), _admit(caller))


async def publish_many(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> list[PublishReceipt]:
    """Every message of the batch is from the caller's agent (admin: any)."""
    return await bus._publish_many(arguments["messages"], arguments.get("receipts", False), _admit(caller))


async def reply(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> PublishReceipt:
    """A reply is sent as the caller's agent; an admin token without an agent replies as the kernel does."""
    principal = caller.principal
    sender = arguments.get("source") or principal.agent
    if sender is not None:
        if not principal.admin:
            caller.own("source", "source", sender)
    elif not principal.admin:
        caller.deny("a token without an agent must name the reply's source")
    options = {k: v for k, v in arguments.items() if k not in ("to", "text", "source")}
    return await bus.reply(arguments["to"], arguments["text"], source=sender, **options)


async def replay(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> PublishReceipt:
    """A dead letter of the caller's own inbox or of a channel."""
    dead_letter = arguments["dead_letter"]
    if not caller.principal.admin:
        caller.own("inbox", "address", getattr(dead_letter, "address", None))
    return await bus.replay(dead_letter)


def subscribe(caller: Caller, bus: Bus, arguments: dict[str, Any]) -> Subscription:
    """Checked when it opens (``bus:read``; the caller's own inbox or a channel), not when it is made."""
    address = arguments["address"]

    async def check() -> None:
        principal = await caller.need("bus:read")
        if not principal.admin:
            caller.own("inbox", "address", address)

    options = {k: v for k, v in arguments.items() if k != "address"}
    return bus._subscribe(address, check=check, **options)
