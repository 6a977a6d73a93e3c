"""What the operator decides for every tenant of a kernel: where provider requests may go, which keys they carry,
and how many calls may run at once. Tenants choose none of it.

- **Endpoints.** A card's ``endpoint`` and ``health_probe_url`` must be ``http(s)`` URLs on a vendor's own host
  (``api.openai.com``, ``api.anthropic.com``, ``generativelanguage.googleapis.com``), on a host in the operator's
  ``provider_hosts``, or — only when ``provider_hosts`` is not given (an embedded kernel) — on loopback. ``sos
  serve`` passes ``provider_hosts`` (empty unless ``--provider-host`` is given), so a served tenant cannot make the
  server call its internal network.
- **Keys.** A provider's key is ``provider_keys[<provider id>]`` or the environment variable
  ``SOS_PROVIDER_KEY_<ID>`` (the id upper-cased, ``-`` as ``_``): a card cannot name any other variable. A key is
  sent only to its adapter's vendor host or to a host in ``provider_hosts``: never to loopback by default, never to
  a host a tenant chose. Keys are never stored, logged, put in an error or shown by a repr.
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter
from collections.abc import Collection, Mapping
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import InvalidArgument, LimitExceeded, MissingDependency

if TYPE_CHECKING:
    import httpx

__all__ = ["KEY_ENV_PREFIX", "VENDOR_HOSTS", "ProviderRuntime", "http", "key_env_name"]

KEY_ENV_PREFIX = "SOS_PROVIDER_KEY_"
VENDOR_HOSTS = {
    "openai-adapter": "api.openai.com",
    "openai-agents-sdk": "api.openai.com",
    "claude-adapter": "api.anthropic.com",
    "gemini-adapter": "generativelanguage.googleapis.com",
}
CALLS_PER_TENANT_MAX = 64
"""Engine calls one tenant may have running at once in one kernel (a server is one kernel)."""
CALLS_PER_PRINCIPAL_MAX = 8
"""Of those, how many one agent (or tenant-wide token) may have."""


def http() -> ModuleType:
    """httpx, which provider calls need (SOS-6032 naming the extra when it is missing)."""
    try:
        import httpx
    except ModuleNotFoundError as exc:
        pip = "pip install 'sos-kernel[providers]'"
        raise MissingDependency(f"calling providers needs httpx: {pip}", details={"pip": pip}) from exc
    return httpx


def key_env_name(provider_id: str) -> str:
    """The only environment variable a provider's key is read from."""
    return KEY_ENV_PREFIX + provider_id.upper().replace("-", "_")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Keys:
    """The operator's keys by provider id; its repr shows ids only."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, str]) -> None:
        for pid, key in keys.items():
            if not isinstance(pid, str) or not isinstance(key, str) or not key:
                raise InvalidArgument("provider_keys maps provider ids to non-empty key strings")
        self._keys = dict(keys)

    def get(self, provider_id: str) -> str | None:
        return self._keys.get(provider_id) or os.environ.get(key_env_name(provider_id)) or None

    def __repr__(self) -> str:
        return f"provider keys for {sorted(self._keys)}"


class ProviderRuntime:
    """One kernel's provider policy, its HTTP client and its counts of running calls."""

    def __init__(self, keys: Mapping[str, str] | None = None, hosts: Collection[str] | None = None) -> None:
        if hosts is not None and (isinstance(hosts, str) or not all(isinstance(h, str) for h in hosts)):
            raise InvalidArgument("provider_hosts must be a collection of host names")
        self._keys = _Keys(keys or {})
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)
        self._client: httpx.AsyncClient | None = None
        self.running: Counter[tuple[str, ...]] = Counter()

    def __repr__(self) -> str:
        return f"ProviderRuntime(hosts={sorted(self.hosts) if self.hosts is not None else 'embedded'})"

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared HTTP client (opened on first use; timeouts are set per request)."""
        if self._client is None:
            self._client = http().AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def check_url(self, backend: str, url: str, field: str) -> None:
        """SOS-4005 unless ``url`` may be called (see the module docstring)."""
        if backend == "local":
            if url not in ("local://echo", "local://fail"):
                raise InvalidArgument(f"a local provider's {field} is local://echo or local://fail, got {url!r}")
            return
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
            raise InvalidArgument(f"{field} must be an http(s) URL without credentials", details={"field": field})
        if host == VENDOR_HOSTS.get(backend) or (self.hosts is not None and host in self.hosts):
            return
        if self.hosts is None and _loopback(host):
            return
        raise InvalidArgument(
            f"{field} host {host!r} is not allowed on this kernel (the operator's provider_hosts list it)",
            details={"field": field, "host": host},
        )

    def key(self, backend: str, provider_id: str, url: str) -> str | None:
        """The provider's key, if one is set and ``url``'s host may receive it."""
        host = (urlsplit(url).hostname or "").lower()
        if host != VENDOR_HOSTS.get(backend) and (self.hosts is None or host not in self.hosts):
            return None
        return self._keys.get(provider_id)

    def enter(self, tenant: str, principal: str) -> None:
        """Count a call in (SOS-4010 beyond the per-tenant or per-principal bound)."""
        if self.running[(tenant,)] >= CALLS_PER_TENANT_MAX:
            raise LimitExceeded(f"tenant {tenant!r} has {CALLS_PER_TENANT_MAX} engine calls running (the maximum)")
        if self.running[(tenant, principal)] >= CALLS_PER_PRINCIPAL_MAX:
            raise LimitExceeded(f"{principal} has {CALLS_PER_PRINCIPAL_MAX} engine calls running (the maximum)")
        self.running[(tenant,)] += 1
        self.running[(tenant, principal)] += 1

    def leave(self, tenant: str, principal: str) -> None:
        for key in ((tenant,), (tenant, principal)):
            self.running[key] -= 1
            if self.running[key] <= 0:
                del self.running[key]
