"""The blocking facade, for scripts and sync frameworks: ``with sos_kernel.sync.open(url) as kernel: ...``.

It runs the async kernel on an event loop in a background thread (an anyio blocking portal) and forwards each
call, so the semantics, limits and errors are exactly the async API's. One ``SyncKernel`` may be used from several
threads; calls are serialised onto its loop. Close it with ``with`` or ``close()``; one left open (a notebook, a
script that just ends) is closed at interpreter exit, its writes committed, and never holds the exit up.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

from ._loop import Loop
from .api import BusAPI, DeliveryAPI, SubscriptionAPI
from .bus import DeadLetter, PublishReceipt
from .contracts import Message, SendMessage
from .errors import KernelClosed
from .identity.models import Principal
from .kernel import Kernel
from .session import Session

__all__ = [
    "Loop",
    "SyncBus",
    "SyncDelivery",
    "SyncKernel",
    "SyncService",
    "SyncSession",
    "SyncSubscription",
    "SyncTenant",
    "open",
]


class SyncDelivery:
    """A :class:`~sos_kernel.Delivery` with blocking ``ack`` / ``nack`` / ``reply``."""

    def __init__(self, portal: Loop, delivery: DeliveryAPI) -> None:
        self._portal = portal
        self.delivery = delivery
        self.message = delivery.message
        self.attempt = delivery.attempt
        self.position = delivery.position

    def ack(self) -> bool:
        """See :meth:`Delivery.ack`."""
        return self._portal.call(self.delivery.ack)

    def nack(self, delay_s: float = 0.0, *, reason: str | None = None) -> bool:
        """See :meth:`Delivery.nack`."""
        return self._portal.call(functools.partial(self.delivery.nack, delay_s, reason=reason))

    def reply(
        self,
        text: str,
        *,
        source: str | None = None,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
    ) -> PublishReceipt:
        """See :meth:`Delivery.reply`."""
        answer = functools.partial(self.delivery.reply, text, source=source, content_type=content_type)
        return self._portal.call(answer)


class SyncSubscription:
    """A blocking :class:`~sos_kernel.Subscription`: ``with bus.subscribe(addr) as sub: for d in sub: ...``."""

    def __init__(self, portal: Loop, sub: SubscriptionAPI) -> None:
        self._portal = portal
        self.subscription = sub
        self._entered: AbstractContextManager[Any] | None = None

    def __enter__(self) -> SyncSubscription:
        # Entered and left in one task of the portal: a remote subscription holds a task group for its reader.
        entered = self._portal.wrap_async_context_manager(self.subscription)
        entered.__enter__()
        self._entered = entered
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """See :meth:`Subscription.aclose`. Idempotent."""
        entered, self._entered = self._entered, None
        if entered is not None:
            entered.__exit__(None, None, None)
        else:
            self._portal.call(self.subscription.aclose)

    def receive(self, timeout_s: float | None = None) -> SyncDelivery | None:
        """The next delivery, or None after ``timeout_s``."""
        found = self._portal.call(self.subscription.receive, timeout_s)
        return SyncDelivery(self._portal, found) if found is not None else None

    def __iter__(self) -> Iterator[SyncDelivery]:
        while (found := self.receive()) is not None:
            yield found


class SyncBus:
    """The blocking twin of a bus (:class:`~sos_kernel.Bus`, a session's, a remote client's); each method has the
    same arguments and errors."""

    def __init__(self, portal: Loop, bus: BusAPI) -> None:
        self._portal = portal
        self._bus = bus

    def publish(
        self, message: Message | Mapping[str, Any] | bytes | str, *, receipts: bool = False, chunking: bool = True
    ) -> PublishReceipt:
        """See :meth:`Bus.publish`."""
        return self._portal.call(lambda: self._bus.publish(message, receipts=receipts, chunking=chunking))

    def publish_many(
        self, messages: Sequence[Message | Mapping[str, Any] | bytes | str], *, receipts: bool = False
    ) -> list[PublishReceipt]:
        """See :meth:`Bus.publish_many`."""
        return self._portal.call(lambda: self._bus.publish_many(messages, receipts=receipts))

    def send(self, source: str, target: str, text: str, **options: Any) -> PublishReceipt:
        """See :meth:`Bus.send`."""
        return self._portal.call(lambda: self._bus.send(source, target, text, **options))

    def announce(self, source: str, text: str | None = None, **options: Any) -> PublishReceipt:
        """See :meth:`Bus.announce`."""
        return self._portal.call(lambda: self._bus.announce(source, text, **options))

    def wake(self, source: str, target: str, text: str, **options: Any) -> PublishReceipt:
        """See :meth:`Bus.wake`."""
        return self._portal.call(lambda: self._bus.wake(source, target, text, **options))

    def ask(self, source: str, target: str, question: str, *, timeout_s: float = 30.0) -> SendMessage:
        """See :meth:`Bus.ask`."""
        return self._portal.call(lambda: self._bus.ask(source, target, question, timeout_s=timeout_s))

    def reply(self, to: Message, text: str, **options: Any) -> PublishReceipt:
        """See :meth:`Bus.reply`."""
        return self._portal.call(lambda: self._bus.reply(to, text, **options))

    def history(self, address: str, *, after: str | None = None, limit: int = 100) -> list[Message]:
        """See :meth:`Bus.history`."""
        return self._portal.call(lambda: self._bus.history(address, after=after, limit=limit))

    def dead_letters(self, address: str, *, group: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`Bus.dead_letters`."""
        return self._portal.call(lambda: self._bus.dead_letters(address, group=group, limit=limit))

    def pending(self, address: str, *, group: str | None = None) -> int:
        """See :meth:`Bus.pending`."""
        return self._portal.call(lambda: self._bus.pending(address, group=group))

    def replay(self, dead_letter: DeadLetter) -> PublishReceipt:
        """See :meth:`Bus.replay`."""
        return self._portal.call(self._bus.replay, dead_letter)

    def subscribe(
        self,
        address: str,
        *,
        group: str | None = None,
        consumer: str | None = None,
        visibility_timeout_s: float = 30.0,
        max_deliveries: int = 5,
        prefetch: int = 16,
        start: Literal["earliest", "latest"] | None = None,
    ) -> SyncSubscription:
        """See :meth:`Bus.subscribe`."""
        sub = self._bus.subscribe(
            address,
            group=group,
            consumer=consumer,
            visibility_timeout_s=visibility_timeout_s,
            max_deliveries=max_deliveries,
            prefetch=prefetch,
            start=start,
        )
        return SyncSubscription(self._portal, sub)


class SyncService:
    """Any async service (ledger, registry, skills, tokens, tenants...) behind a blocking API.

    Each coroutine method becomes a blocking call with the same arguments, result and errors; other attributes
    pass through unchanged.
    """

    def __init__(self, portal: Loop, service: object) -> None:
        self._portal = portal
        self._service = service

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._service, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._portal.call(functools.partial(attr, *args, **kwargs))

        call.__doc__ = attr.__doc__
        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"SyncService({self._service!r})"


class SyncTenant:
    """A tenant's services, blocking: ``bus`` (a :class:`SyncBus`), ``ledger``, ``registry``, ``skills``, ``tasks``,
    ``tokens`` and ``capabilities`` (each a :class:`SyncService`)."""

    def __init__(self, portal: Loop, kernel: Kernel, slug: str) -> None:
        view = kernel.tenant(slug)
        self.slug = slug
        self.bus = SyncBus(portal, view.bus)
        self.ledger = SyncService(portal, view.ledger)
        self.registry = SyncService(portal, view.registry)
        self.skills = SyncService(portal, view.skills)
        self.tasks = SyncService(portal, view.tasks)
        self.tokens = SyncService(portal, view.tokens)
        self.capabilities = SyncService(portal, view.capabilities)


class SyncSession(SyncTenant):
    """A blocking :class:`~sos_kernel.session.Session`: the checked ``bus``, ``ledger``, ``registry``, ``skills`` and
    ``tasks`` of a token's principal, with its ``principal``, ``tenant``, ``agent``, ``scopes`` and ``denials``."""

    def __init__(self, portal: Loop, session: Session) -> None:
        self._portal = portal
        self.session = session
        self.slug = session.tenant
        self.bus = SyncBus(portal, session.bus)
        self.ledger = SyncService(portal, session.ledger)
        self.registry = SyncService(portal, session.registry)
        self.skills = SyncService(portal, session.skills)
        self.tasks = SyncService(portal, session.tasks)

    @property
    def principal(self) -> Principal:
        """Who the session acts as, as of its last check."""
        return self.session.principal

    @property
    def tenant(self) -> str:
        """The tenant slug of the token."""
        return self.session.tenant

    @property
    def agent(self) -> str | None:
        """The agent the token is bound to (None for a tenant-wide token)."""
        return self.session.agent

    @property
    def scopes(self) -> frozenset[str]:
        """The token's scopes."""
        return self.session.scopes

    @property
    def denials(self) -> int:
        """Calls of this session that were refused (SOS-5004)."""
        return self.session.denials

    def refresh(self) -> Principal:
        """See :meth:`Session.refresh`."""
        return self._portal.call(self.session.refresh)

    def __repr__(self) -> str:
        return f"SyncSession(tenant={self.tenant!r}, agent={self.agent!r})"


class SyncKernel:
    """A :class:`~sos_kernel.Kernel` behind a blocking API. Close it (or leave the ``with``) to stop its thread.

    A kernel left open is closed at interpreter exit (its writes committed), so a script or a notebook that never
    closes it still exits promptly; after :meth:`close`, every call raises SOS-6005.
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        kernel = Kernel(url, **options)
        self._portal = Loop("kernel", kernel.aclose)
        try:
            self.kernel: Kernel = self._portal.call(kernel.connect)
        except BaseException:
            self._portal.close(kernel.aclose)
            raise
        default = SyncTenant(self._portal, self.kernel, "default")
        self.bus = default.bus
        self.ledger = default.ledger
        self.registry = default.registry
        self.skills = default.skills
        self.tasks = default.tasks
        self.tenants = SyncService(self._portal, self.kernel.tenants)

    def session(self, token: str | None) -> SyncSession:
        """A blocking session: the checked services of ``token``'s principal (see :meth:`Kernel.session`)."""
        return SyncSession(self._portal, self._portal.call(self.kernel.session, token))

    def tenant(self, slug: str) -> SyncTenant:
        """The same API scoped to tenant ``slug``."""
        if self._portal.closed:
            raise KernelClosed("this kernel was closed; open a new one")
        return SyncTenant(self._portal, self.kernel, slug)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._portal.closed

    def close(self) -> None:
        """Close the kernel and stop the background loop. Idempotent."""
        self._portal.close(self.kernel.aclose)

    def __enter__(self) -> SyncKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SyncKernel({self.kernel.url!r}, {'closed' if self.closed else 'open'})"


def open(url: str | None = None, **options: Any) -> SyncKernel:
    """A blocking kernel on ``url``; same URLs, options and errors as :func:`sos_kernel.open`."""
    return SyncKernel(url, **options)
