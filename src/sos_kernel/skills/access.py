"""The skills' access rule that is not a declaration (see :mod:`sos_kernel.operations`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..contracts import SkillCard
    from ..guard import Caller
    from . import Skills

__all__ = ["publish"]


async def publish(caller: Caller, skills: Skills, arguments: dict[str, Any]) -> SkillCard:
    """The session's agent is the publisher (its default), so a capability chain counts only when the session's
    agent is its leaf's subject; an admin may publish for anyone."""
    principal = caller.principal
    publisher = arguments.get("publisher")
    if not principal.admin:
        if principal.agent is None:
            caller.deny("publishing needs a token bound to an agent (or the admin scope)")
        if publisher is None:
            publisher = principal.agent
        if publisher != principal.agent:
            caller.deny("may only publish as itself")
    return await skills.publish(arguments["card"], publisher=publisher, capability=arguments.get("capability"))
