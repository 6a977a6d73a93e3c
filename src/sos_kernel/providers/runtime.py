"""What the operator decides for every tenant of a kernel: where provider requests may go, which keys they carry,
and how many calls may run at once. Tenants choose none of it.

- **Endpoints.** A card's ``endpoint`` and ``health_probe_url`` must be ``https`` URLs on the default port of the
  vendor host of the card's backend (``api.openai.com``, ``api.anthropic.com``,
  ``generativelanguage.googleapis.com``), ``http(s)`` URLs on a host the operator lists in ``provider_hosts``
  (``"host"``: any port; ``"host:port"``: that port only), or — only when ``provider_hosts`` is not given (an
  embedded kernel) — on loopback. ``sos serve`` passes ``provider_hosts`` (empty unless ``--provider-host`` is
  given), so a served tenant cannot make the server call its internal network.
- **Keys.** A provider's key is ``provider_keys[<provider id>]`` or the environment variable
  ``SOS_PROVIDER_KEY_<ID>`` (the id upper-cased, ``-`` as ``_``): a card cannot name any other variable. An entry
  ``{"key": ..., "backend": ..., "tenants": [...]}`` binds the key to one backend and to the listed tenants (``"*"``:
  every tenant); a plain string (and the environment variable) is the operator's own: only the ``default`` tenant's
  cards draw it. A key is sent only over ``https`` to the default port of the vendor host of the card's backend or
  of a host in ``provider_hosts``, or to a ``host:port`` the operator lists exactly: never in cleartext to a
  vendor, never to another port, never to loopback by default, never to a host a tenant chose. Keys are never
  stored, logged, put in an error or shown by a repr.
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import InvalidArgument, LimitExceeded, MissingDependency

if TYPE_CHECKING:
    import httpx

__all__ = ["KEY_ENV_PREFIX", "OPERATOR_TENANT", "VENDOR_HOSTS", "ProviderRuntime", "http", "key_env_name"]

OPERATOR_TENANT = "default"
"""The tenant whose cards may draw the operator's unbound keys (plain strings, environment variables)."""
DEFAULT_PORTS = {"https": 443, "http": 80}

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


@dataclass(frozen=True, slots=True, repr=False)
class _Key:
    secret: str
    backend: str | None  # None: any backend (the operator's own, unbound key)
    tenants: frozenset[str]  # "*" for every tenant


def _entry(value: Any) -> _Key:
    if isinstance(value, str) and value:
        return _Key(value, None, frozenset({OPERATOR_TENANT}))
    bad = InvalidArgument(
        'provider_keys maps provider ids to a key string or {"key": str, "backend": str, "tenants": [slug or "*"]}'
    )
    if not isinstance(value, Mapping) or set(value) - {"key", "backend", "tenants"}:
        raise bad
    secret, backend, tenants = value.get("key"), value.get("backend"), value.get("tenants", [OPERATOR_TENANT])
    if not isinstance(secret, str) or not secret or not isinstance(backend, str) or not backend:
        raise bad
    if isinstance(tenants, str) or not isinstance(tenants, Collection) or not all(isinstance(t, str) for t in tenants):
        raise bad
    return _Key(secret, backend, frozenset(tenants))


class _Keys:
    """The operator's keys by provider id; its repr shows ids only."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, Any]) -> None:
        if not all(isinstance(pid, str) for pid in keys):
            raise InvalidArgument("provider_keys maps provider ids to keys")
        self._keys = {pid: _entry(value) for pid, value in keys.items()}

    def get(self, provider_id: str, backend: str, tenant: str) -> str | None:
        found = self._keys.get(provider_id)
        if found is None:
            env = os.environ.get(key_env_name(provider_id))
            found = _Key(env, None, frozenset({OPERATOR_TENANT})) if env else None
        if found is None or (found.backend is not None and found.backend != backend):
            return None
        if tenant not in found.tenants and "*" not in found.tenants:
            return None
        return found.secret

    def __repr__(self) -> str:
        return f"provider keys for {sorted(self._keys)}"


class ProviderRuntime:
    """One kernel's provider policy, its HTTP client and its counts of running calls."""

    def __init__(self, keys: Mapping[str, Any] | None = None, hosts: Collection[str] | None = None) -> None:
        if hosts is not None and (isinstance(hosts, str) or not all(isinstance(h, str) for h in hosts)):
            raise InvalidArgument("provider_hosts must be a collection of host names (or host:port)")
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
        try:
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            host, port = "", None
        if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
            raise InvalidArgument(f"{field} must be an http(s) URL without credentials", details={"field": field})
        if host == VENDOR_HOSTS.get(backend) and self._secure(parts.scheme, port):
            return
        if self.hosts is not None and (host in self.hosts or f"{host}:{port}" in self.hosts):
            return
        if self.hosts is None and _loopback(host):
            return
        raise InvalidArgument(
            f"{field} {host!r} is not allowed on this kernel (https on the default port of the backend's vendor, or "
            "what the operator's provider_hosts list)",
            details={"field": field, "host": host},
        )

    @staticmethod
    def _secure(scheme: str, port: int | None) -> bool:
        return scheme == "https" and port in (None, DEFAULT_PORTS["https"])

    def key(self, backend: str, provider_id: str, url: str, tenant: str = OPERATOR_TENANT) -> str | None:
        """The key the operator bound to ``provider_id`` for ``backend`` and ``tenant``, if ``url`` may receive it:
        https on the default port of the backend's vendor host or of a listed host, or a listed ``host:port``."""
        parts = urlsplit(url)
        try:
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            return None
        vendor = host == VENDOR_HOSTS.get(backend)
        listed = self.hosts is not None and host in self.hosts
        exact = self.hosts is not None and port is not None and f"{host}:{port}" in self.hosts
        if not exact and not ((vendor or listed) and self._secure(parts.scheme, port)):
            return None
        return self._keys.get(provider_id, backend, tenant)

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
