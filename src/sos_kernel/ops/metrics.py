"""Prometheus metrics of one kernel (the ``metrics`` extra: ``pip install 'sos-kernel[metrics]'``).

:class:`Metrics` listens to the kernel's events (:mod:`sos_kernel._observe`) and keeps its own
``CollectorRegistry``; ``sos serve`` exposes it at ``GET /metrics`` (who may read it: docs/security.md).

Labels are bounded: ``tenant`` takes at most :data:`TENANT_LABELS_MAX` values (further tenants count under
``_other``), ``operation`` only the declared operations' names, ``outcome`` ``ok`` or an SOS error code, and
``address``/``group`` only what a watcher was told to watch (at most ``WATCH_ADDRESSES_MAX``). No message id, text,
token or account is ever a label.
"""

from __future__ import annotations

from typing import Any

from .._observe import EVENTS
from ..errors import MissingDependency

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS_S", "TENANT_LABELS_MAX", "Metrics", "metrics_available"]

TENANT_LABELS_MAX = 1000
"""Distinct tenant label values per metric; beyond it, ``_other`` (a metric's series stay bounded)."""
OTHER = "_other"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_HELP = {
    "published": ("sos_messages_published", "Messages stored by the bus (duplicates not counted)"),
    "delivered": ("sos_messages_delivered", "Deliveries handed to consumers (redeliveries included)"),
    "acked": ("sos_messages_acked", "Deliveries acknowledged"),
    "nacked": ("sos_messages_nacked", "Deliveries given back for redelivery"),
    "dead_lettered": ("sos_messages_dead_lettered", "Messages moved to a dead-letter place"),
    "transfers": ("sos_ledger_transfers", "Ledger transfers recorded as applied"),
    "transfers_failed": ("sos_ledger_transfers_failed", "Ledger transfers recorded as failed"),
    "denied": ("sos_denials", "Requests refused by an access rule"),
}


def metrics_available() -> bool:
    """Whether ``prometheus-client`` is installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingDependency(
            "metrics need the 'metrics' extra (prometheus-client is missing)",
            details={"pip": "pip install 'sos-kernel[metrics]'"},
        ) from exc
    return prometheus_client


class Metrics:
    """The kernel's counters, latency histograms and gauges, in their own registry. Attach to a kernel with
    :meth:`attach` (done by ``create_app(metrics=True)``); :meth:`detach` stops counting."""

    def __init__(self) -> None:
        prom = _prometheus()
        self.registry = prom.CollectorRegistry()
        self._tenants: set[str] = set()
        self._counters = {
            event: prom.Counter(name, text, ["tenant"], registry=self.registry) for event, (name, text) in _HELP.items()
        }
        if set(self._counters) != EVENTS:
            raise MissingDependency("metrics and kernel events disagree; reinstall sos-kernel")
        self.latency = prom.Histogram(
            "sos_request_duration_seconds",
            "Time to answer one operation over HTTP",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.pending = prom.Gauge(
            "sos_consumer_pending",
            "Deliveries handed out and not yet settled, per watched address and group",
            ["tenant", "address", "group"],
            registry=self.registry,
        )
        self.dead_letters = prom.Gauge(
            "sos_dead_letters",
            "Dead letters waiting, per watched address and group",
            ["tenant", "address", "group"],
            registry=self.registry,
        )
        self.alerts = prom.Gauge(
            "sos_alerts_firing", "Watcher alerts firing, per rule", ["rule"], registry=self.registry
        )
        self.breakers = prom.Gauge(
            "sos_breaker_open", "1 when a provider's circuit breaker is open", ["provider"], registry=self.registry
        )
        self._kernel: Any = None

    def tenant_label(self, tenant: str) -> str:
        """``tenant``, or ``_other`` once :data:`TENANT_LABELS_MAX` tenants have been labelled."""
        if tenant in self._tenants:
            return tenant
        if len(self._tenants) >= TENANT_LABELS_MAX:
            return OTHER
        self._tenants.add(tenant)
        return tenant

    def count(self, event: str, tenant: str, n: int) -> None:
        """A kernel event (the listener :meth:`attach` installs)."""
        counter = self._counters.get(event)
        if counter is not None:
            counter.labels(self.tenant_label(tenant)).inc(n)

    def timed(self, operation: str, seconds: float, outcome: str) -> None:
        """One operation's duration (the timer :meth:`attach` installs)."""
        self.latency.labels(operation, outcome).observe(seconds)

    def attach(self, kernel: Any) -> Metrics:
        """Count what ``kernel`` does from now on."""
        kernel.events.listeners.append(self.count)
        kernel.events.timers.append(self.timed)
        self._kernel = kernel
        return self

    def detach(self) -> None:
        """Stop counting (idempotent)."""
        if self._kernel is not None:
            events = self._kernel.events
            if self.count in events.listeners:
                events.listeners.remove(self.count)
            if self.timed in events.timers:
                events.timers.remove(self.timed)
            self._kernel = None

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return bytes(_prometheus().generate_latest(self.registry))
