"""The registry's access rule that is not a declaration (see :mod:`sos_kernel.operations`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..contracts import AgentCard

if TYPE_CHECKING:
    from ..guard import Caller
    from . import RegisteredAgent, Registry

__all__ = ["register"]


async def register(caller: Caller, registry: Registry, arguments: dict[str, Any]) -> RegisteredAgent:
    """An agent session registers only itself: the card's ``name`` is its own (admin: any)."""
    card = arguments["card"]
    name = card.name if isinstance(card, AgentCard) else (card.get("name", "") if isinstance(card, Mapping) else "")
    if not caller.principal.admin:
        caller.own("name", "agent", str(name))
    options = {k: v for k, v in arguments.items() if k != "card"}
    return await registry.register(card, **options)
