"""The identity plane: tenants, hashed bearer tokens, Ed25519 keys and capabilities that only narrow."""

from .capability import Capability, action_covers, actions_narrower, resource_matches, resource_narrower
from .keys import AgentKey, PublicKey, key_id_of
from .models import (
    ADMIN_SCOPE,
    DEFAULT_AGENT_SCOPES,
    PLAN_SEATS,
    SCOPES,
    IssuedToken,
    Principal,
    Tenant,
    TokenInfo,
)
from .service import TOKEN_CACHE_TTL_S, TOKEN_CHARS_MAX, Authenticator, Capabilities, Tenants, Tokens, token_digest
from .store import IdentityStore, RegistryEntry, RegistryStore

__all__ = [
    "ADMIN_SCOPE",
    "DEFAULT_AGENT_SCOPES",
    "PLAN_SEATS",
    "SCOPES",
    "TOKEN_CACHE_TTL_S",
    "TOKEN_CHARS_MAX",
    "AgentKey",
    "Authenticator",
    "Capabilities",
    "Capability",
    "IdentityStore",
    "IssuedToken",
    "Principal",
    "PublicKey",
    "RegistryEntry",
    "RegistryStore",
    "Tenant",
    "Tenants",
    "TokenInfo",
    "Tokens",
    "action_covers",
    "actions_narrower",
    "key_id_of",
    "resource_matches",
    "resource_narrower",
    "token_digest",
]
