"""What the engine and the providers' health answer with."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["ChatReply", "ChatUsage", "ProviderHealth"]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatUsage(_Result):
    """Tokens of one call, as the provider that answered counted them."""

    input_tokens: int = 0
    output_tokens: int = 0


class ChatReply(_Result):
    """One answered chat: the text, the provider that answered (``tried`` lists every provider attempted, in order)
    and what it cost the session's agent (integer micros of ``currency``, charged once for ``id``)."""

    id: str
    text: str
    provider: str
    model: str
    usage: ChatUsage
    cost_micros: int
    currency: str
    tried: tuple[str, ...] = ()
    replayed: bool = False


class ProviderHealth(_Result):
    """A provider's breaker as the processes sharing the store see it."""

    provider: str
    state: Literal["closed", "open", "half_open"]
    failures: int
    since: datetime | None
    tier: str
    model: str
    backend: str
