"""Counts the kernel reports as it works, for whoever listens (``sos_kernel.ops.metrics``); nothing by default.

An event is a name from :data:`EVENTS`, a tenant slug and a count. Events never carry message ids, text, tokens or
account names: what a listener may label by is fixed here, so a metric's cardinality is bounded by the number of
tenants times the number of events. A listener runs inline and must be cheap and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["EVENTS", "Events", "Listener", "Timer"]

EVENTS = frozenset(
    {
        "published",
        "delivered",
        "acked",
        "nacked",
        "dead_lettered",
        "transfers",
        "transfers_failed",
        "denied",
    }
)
"""Every event name the kernel emits."""

Listener = Callable[[str, str, int], None]
Timer = Callable[[str, float, str], None]


class Events:
    """The kernel's event fan-out: ``emit(name, tenant, n)`` calls every listener."""

    __slots__ = ("listeners", "timers")

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.timers: list[Timer] = []

    def emit(self, name: str, tenant: str, n: int = 1) -> None:
        """Report ``n`` occurrences of ``name`` in ``tenant`` (a no-op without listeners)."""
        for listener in self.listeners:
            listener(name, tenant, n)

    def timed(self, operation: str, seconds: float, outcome: str) -> None:
        """Report that ``operation`` (``service.name``) took ``seconds`` and ended in ``outcome`` (``ok`` or a code)."""
        for timer in self.timers:
            timer(operation, seconds, outcome)
