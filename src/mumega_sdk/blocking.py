"""``SyncMumegaClient``: the blocking twin of :class:`~mumega_sdk.client.MumegaClient`, for scripts and sync apps.

``with SyncMumegaClient(url, token) as client: client.bus.send(...)`` runs a ``MumegaClient`` on an event loop in
a background thread (an anyio blocking portal, as ``sos_kernel.sync`` does for the kernel) and forwards each call,
so arguments, results, retries and errors are exactly the async client's. Calls from several threads are
serialised onto its loop.
"""

from __future__ import annotations

from typing import Any

from sos_kernel.identity.models import Principal
from sos_kernel.sync import Loop, SyncBus, SyncService

from .client import MumegaClient

__all__ = ["SyncMumegaClient"]


class SyncMumegaClient:
    """A connected :class:`MumegaClient` behind a blocking API: ``bus`` (a :class:`~sos_kernel.sync.SyncBus`),
    ``registry``, ``ledger``, ``skills`` and ``tokens`` (blocking services), ``tenant`` and ``agent``.

    Connecting checks the token (SOS-5001/5002/5003/5006 as ``await kernel.session(token)``). Close it (or leave
    the ``with``) to close the connections and stop the background thread; one left open is closed at interpreter
    exit, and calls after ``close()`` raise SOS-6005.
    """

    def __init__(self, base_url: str, token: str | None, **options: Any) -> None:
        self._portal = Loop("client")
        try:
            self.client: MumegaClient = self._portal.call(self._connect, base_url, token, options)
        except BaseException:
            self._portal.close()
            raise
        self._portal.on_exit = self.client.aclose
        self.bus = SyncBus(self._portal, self.client.bus)
        self.registry = SyncService(self._portal, self.client.registry)
        self.ledger = SyncService(self._portal, self.client.ledger)
        self.skills = SyncService(self._portal, self.client.skills)
        self.tokens = SyncService(self._portal, self.client.tokens)

    @staticmethod
    async def _connect(base_url: str, token: str | None, options: dict[str, Any]) -> MumegaClient:
        client = MumegaClient(base_url, token, **options)
        try:
            return await client.connect()
        except BaseException:
            await client.aclose()
            raise

    @property
    def principal(self) -> Principal:
        """Who the token is (see :attr:`MumegaClient.principal`)."""
        return self.client.principal

    @property
    def tenant(self) -> str:
        """The tenant slug of the token."""
        return self.client.tenant

    @property
    def agent(self) -> str | None:
        """The agent the token is bound to (None for a tenant-wide token)."""
        return self.client.agent

    def refresh(self) -> Principal:
        """Re-validate the token now (see :meth:`MumegaClient.refresh`)."""
        return self._portal.call(self.client.refresh)

    def close(self) -> None:
        """Close the connections and stop the background loop. Idempotent."""
        self._portal.close(self.client.aclose)

    def __enter__(self) -> SyncMumegaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SyncMumegaClient({self.client.base_url!r})"
