"""Providers and the engine: a provider matrix with shared circuit breakers, and chat through it, every call
metered and charged once (see :mod:`sos_kernel.providers.service`)."""

from __future__ import annotations

from .breaker import BreakerConfig, BreakerState
from .matrix import load_matrix, register_matrix
from .models import ChatReply, ChatUsage, ProviderHealth
from .runtime import KEY_ENV_PREFIX, ProviderRuntime, key_env_name
from .service import ChatStream, Engine, Providers
from .store import CallClaim, ProviderStore

__all__ = [
    "KEY_ENV_PREFIX",
    "BreakerConfig",
    "BreakerState",
    "CallClaim",
    "ChatReply",
    "ChatStream",
    "ChatUsage",
    "Engine",
    "ProviderHealth",
    "ProviderRuntime",
    "ProviderStore",
    "Providers",
    "key_env_name",
    "load_matrix",
    "register_matrix",
]
