"""The watcher: rules evaluated on an interval (and when poked by events) raise typed alerts on the bus.

Guarantees:

- **One fired, one resolved, per episode.** An alert is keyed ``<rule>:<subject>``. It fires (an ``alert`` message
  with ``state="fired"`` on ``sos:channel:alerts``) the first evaluation its condition holds, and resolves once the
  condition has stayed absent for ``clear_s``. A condition that flaps within ``clear_s`` keeps the one alert firing
  instead of sending a message per flap.
- **Restart-safe.** A watcher starting up reads the alerts channel's recent history (at most
  :data:`ALERTS_REPLAY_MAX` messages) and takes over the episodes its source left firing, so a restart neither
  fires them again nor forgets to resolve them.
- **Rules are a table.** A rule is any object with a ``name`` and ``async check(view) -> list[Condition]``;
  services add theirs (provider breakers, audit verification) by appending to the watcher's rules. A rule that
  raises does not stop the others: it yields a ``watcher_rule_failed`` condition naming the rule.
- **Bounded.** Every rule reads at most a named number of things per evaluation; alerts carry ids and counts,
  never message text.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import anyio

from ..api import ServicesAPI
from ..contracts import AlertMessage, AlertPayload
from ..errors import InvalidArgument, SOSError
from ._actions import Job, WebhookAction

__all__ = [
    "ALERTS_CHANNEL",
    "ALERTS_REPLAY_MAX",
    "DEAD_LETTERS_SCAN_MAX",
    "TENANTS_WATCHED_MAX",
    "WATCHER_AGENT",
    "WATCH_ADDRESSES_MAX",
    "AgentsRule",
    "AuditRule",
    "BreakersRule",
    "Condition",
    "DeadLettersRule",
    "KernelWatcher",
    "LedgerRule",
    "PendingRule",
    "Rule",
    "TenantLimitsRule",
    "WatchView",
    "Watcher",
    "default_rules",
]

log = logging.getLogger("sos_kernel.ops.watch")

ALERTS_CHANNEL = "sos:channel:alerts"
WATCHER_AGENT = "agent:watcher"
ALERTS_REPLAY_MAX = 1000
"""Alert messages a starting watcher reads back to take over the episodes still firing."""
WATCH_ADDRESSES_MAX = 100
"""Addresses one watcher checks for dead letters and pending deliveries."""
DEAD_LETTERS_SCAN_MAX = 1000
"""Dead letters read per address per evaluation (a depth at this bound reads ``>= 1000``)."""
AGENTS_SCAN_MAX = 10_000
TENANTS_WATCHED_MAX = 10_000
"""Tenants an embedded watcher evaluates per round."""
POKE_GAP_S = 1.0
"""Least time between evaluations brought forward by events (a burst of dead letters is one evaluation)."""
POKE_EVENTS = frozenset({"dead_lettered", "transfers_failed"})
INTERVAL_S_MIN = 0.05
TEXT_CHARS_MAX = 4000
Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Condition:
    """Something wrong now: ``rule`` found it about ``subject``; ``text`` names the subject in words."""

    rule: str
    subject: str
    severity: Severity
    text: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        return f"{self.rule}:{self.subject}"


class WatchView:
    """What rules read: the watched API (one tenant) and the time of this evaluation."""

    def __init__(self, api: ServicesAPI | Any, now: float, tenant: str | None = None) -> None:
        self.api = api
        self.now = now
        self.tenant = tenant
        self.store = getattr(getattr(api, "bus", None), "store", None)
        """The bus store when the kernel is embedded (rules that need engine counts use it), else None."""
        self.gauges: dict[tuple[str, str, str], int] = {}
        """``(gauge, address, group) -> value`` measured this round (``pending``, ``dead_letters``), for metrics."""


class Rule(Protocol):
    """A watcher rule: ``await rule.check(view)`` lists the conditions that hold now."""

    name: str

    async def check(self, view: WatchView) -> list[Condition]: ...


# -- the rules whose data exists today ---------------------------------------------------------------------------


@dataclass
class AgentsRule:
    """Registered agents that are ``offline`` (critical) or ``stale`` (warning) by the registry's heartbeat
    rules; with ``stale_after_s`` / ``offline_after_s``, any agent silent that long is at least stale / offline."""

    stale_after_s: float | None = None
    offline_after_s: float | None = None
    name: str = "agent_offline"

    def _status(self, status: str, silent_s: float) -> str:
        if self.offline_after_s is not None and silent_s > self.offline_after_s:
            return "offline"
        if status == "online" and self.stale_after_s is not None and silent_s > self.stale_after_s:
            return "stale"
        return status

    async def check(self, view: WatchView) -> list[Condition]:
        found: list[Condition] = []
        for agent in (await view.api.registry.find())[:AGENTS_SCAN_MAX]:
            silent_s = max(0.0, view.now - agent.last_seen.timestamp())
            status = self._status(agent.status, silent_s)
            if status == "online":
                continue
            severity: Severity = "critical" if status == "offline" else "warning"
            text = f"{agent.address} is {status}: no heartbeat for {int(silent_s)} s"
            found.append(
                Condition(self.name, agent.address, severity, text, {"status": status, "silent_s": int(silent_s)})
            )
        return found


@dataclass
class DeadLettersRule:
    """Dead letters waiting in ``group`` of each address: more than ``depth_max``, or one older than
    ``age_s_max``."""

    addresses: Sequence[str]
    group: str | None = None
    depth_max: int = 0
    age_s_max: float | None = None
    name: str = "dead_letters"

    def __post_init__(self) -> None:
        _addresses(self.addresses)

    async def check(self, view: WatchView) -> list[Condition]:
        found = []
        for address in self.addresses:
            dead = await view.api.bus.dead_letters(address, group=self.group, limit=DEAD_LETTERS_SCAN_MAX)
            view.gauges["dead_letters", address, self.group or "inbox"] = len(dead)
            if not dead:
                continue
            oldest_s = max(0.0, view.now - min(d.dead_at.timestamp() for d in dead))
            too_old = self.age_s_max is not None and oldest_s > self.age_s_max
            if len(dead) <= self.depth_max and not too_old:
                continue
            group = self.group or dead[0].group
            text = f"{len(dead)} dead letters in {address} (group {group}), the oldest {int(oldest_s)} s old"
            details = {"depth": len(dead), "oldest_s": int(oldest_s), "group": group}
            found.append(Condition(self.name, f"{address}/{group}", "warning", text, details))
        return found


@dataclass
class PendingRule:
    """A group whose pending deliveries grew ``growth_checks`` evaluations in a row, or exceed ``pending_max``.

    Counts come from ``bus.pending``, embedded or over HTTP alike (a remote token needs ``bus:read`` on each
    address: its own inbox or a channel, any address for an admin token).
    """

    addresses: Sequence[str]
    group: str = "inbox"
    growth_checks: int = 3
    pending_max: int | None = None
    name: str = "pending_growth"
    _history: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _addresses(self.addresses)
        if self.growth_checks < 1:
            raise InvalidArgument("growth_checks must be >= 1")

    async def check(self, view: WatchView) -> list[Condition]:
        found = []
        for address in self.addresses:
            count = await view.api.bus.pending(address, group=self.group)
            view.gauges["pending", address, self.group] = count
            seen = self._history.setdefault(address, [])
            seen.append(count)
            del seen[: -(self.growth_checks + 1)]
            growing = len(seen) > self.growth_checks and all(a < b for a, b in itertools.pairwise(seen))
            if growing or (self.pending_max is not None and count > self.pending_max):
                text = (
                    f"{count} deliveries pending in {address} (group {self.group}) and growing"
                    if growing
                    else (f"{count} deliveries pending in {address} (group {self.group}), over {self.pending_max}")
                )
                found.append(Condition(self.name, f"{address}/{self.group}", "warning", text, {"pending": count}))
        return found


@dataclass
class LedgerRule:
    """``ledger.check()`` failing: the books do not balance or the chain does not verify (critical)."""

    name: str = "ledger_check"

    async def check(self, view: WatchView) -> list[Condition]:
        try:
            await view.api.ledger.check()
        except SOSError as exc:
            if exc.code.startswith("SOS-5"):
                raise  # not allowed to check: the rule failed, the books did not
            text = f"ledger check failed: {exc.code} {exc}"
            return [Condition(self.name, "ledger", "critical", text, {"code": exc.code})]
        return []


@dataclass
class BreakersRule:
    """A provider's circuit breaker open: its calls fail over to the next provider, or fail when none is left."""

    name: str = "provider_breaker"

    async def check(self, view: WatchView) -> list[Condition]:
        providers = getattr(view.api, "providers", None)
        if providers is None:
            return []
        found = []
        for provider, health in sorted((await providers.health()).items()):
            view.gauges["breaker_open", provider, ""] = int(health.state == "open")
            if health.state == "open":
                text = f"provider {provider}'s breaker is open ({health.failures} failures in a row)"
                details = {"state": health.state, "failures": health.failures, "tier": health.tier}
                found.append(Condition(self.name, f"provider:{provider}", "warning", text, details))
        return found


@dataclass
class AuditRule:
    """The audit chain does not verify: a record was changed, deleted, inserted or reordered (critical)."""

    name: str = "audit_verify"

    async def check(self, view: WatchView) -> list[Condition]:
        audit = getattr(view.api, "audit", None)
        if audit is None:
            return []
        report = await audit.verify()
        if report.ok:
            return []
        first = str(report.problems[0]) if report.problems else "unknown"
        text = f"audit chain broken: {first}"[:500]
        return [Condition(self.name, "audit", "critical", text, {"problems": len(report.problems)})]


@dataclass
class TenantLimitsRule:
    """A tenant using ``ratio`` or more of a per-tenant bound: unfinished chunk groups and their bytes (embedded)."""

    ratio: float = 0.8
    name: str = "tenant_limits"

    async def check(self, view: WatchView) -> list[Condition]:
        bus = getattr(view.api, "bus", None)
        limits = getattr(bus, "limits", None)
        if view.store is None or view.tenant is None or limits is None:
            return []
        groups, used_bytes = await view.store.chunk_usage(view.tenant)
        found = []
        for limit, used, maximum in (
            ("tenant_chunk_groups_max", groups, limits.tenant_chunk_groups_max),
            ("tenant_chunk_bytes_max", used_bytes, limits.tenant_chunk_bytes_max),
        ):
            if maximum and used >= self.ratio * maximum:
                text = f"tenant {view.tenant} uses {used} of {limit}={maximum}"
                details = {"limit": limit, "used": used, "max": maximum}
                found.append(Condition(self.name, f"{view.tenant}/{limit}", "warning", text, details))
        return found


def _addresses(addresses: Sequence[str]) -> None:
    if isinstance(addresses, str) or len(addresses) > WATCH_ADDRESSES_MAX:
        raise InvalidArgument(f"watch a list of at most {WATCH_ADDRESSES_MAX} addresses")


def default_rules(
    addresses: Sequence[str] = (), *, stale_after_s: float | None = None, offline_after_s: float | None = None
) -> list[Rule]:
    """The rules shipped today: agents, dead letters and pending growth of ``addresses``, the ledger, limits,
    provider breakers and the audit chain."""
    rules: list[Rule] = [
        AgentsRule(stale_after_s, offline_after_s),
        LedgerRule(),
        TenantLimitsRule(),
        BreakersRule(),
        AuditRule(),
    ]
    if addresses:
        rules += [DeadLettersRule(list(addresses)), PendingRule(list(addresses))]
    return rules


# -- the watcher ---------------------------------------------------------------------------------------------------


@dataclass
class _Episode:
    condition: Condition
    fired_at: datetime
    absent_since: float | None = None


class Watcher:
    """Evaluates ``rules`` against ``api`` every ``interval_s`` (sooner after :meth:`poke`) and publishes alerts.

    ``api`` is a kernel, a tenant view, a session or a ``MumegaClient``; alerts are published as ``source`` (over
    HTTP: the token's own agent, or any with an admin token). ``webhook`` also receives each alert, signed.
    """

    def __init__(
        self,
        api: ServicesAPI | Any,
        rules: Iterable[Rule] | None = None,
        *,
        interval_s: float = 30.0,
        clear_s: float = 60.0,
        source: str = WATCHER_AGENT,
        channel: str = ALERTS_CHANNEL,
        tenant: str | None = None,
        webhook: WebhookAction | None = None,
        on_alert: Callable[[AlertMessage], Awaitable[None] | None] | None = None,
        metrics: Any = None,
    ) -> None:
        if not isinstance(interval_s, int | float) or interval_s < INTERVAL_S_MIN:
            raise InvalidArgument(f"interval_s must be >= {INTERVAL_S_MIN}, got {interval_s!r}")
        if not isinstance(clear_s, int | float) or clear_s < 0:
            raise InvalidArgument(f"clear_s must be >= 0, got {clear_s!r}")
        self.api = api
        self.rules: list[Rule] = list(default_rules() if rules is None else rules)
        self.interval_s = float(interval_s)
        self.clear_s = float(clear_s)
        self.source = source
        self.channel = channel
        bus_tenant = getattr(getattr(api, "bus", None), "tenant", None)
        self.tenant = tenant if tenant is not None else (bus_tenant if isinstance(bus_tenant, str) else None)
        self.webhook = webhook
        self.on_alert = on_alert
        self.metrics = metrics
        """A :class:`~sos_kernel.ops.metrics.Metrics` to set ``sos_alerts_firing`` and the queue gauges on."""
        self.active: dict[str, _Episode] = {}
        self.published: list[AlertMessage] = []
        """Alerts this watcher published (the most recent :data:`ALERTS_REPLAY_MAX`)."""
        self._poked = anyio.Event()
        self._stopping = anyio.Event()
        self._resumed = False

    def poke(self) -> None:
        """Evaluate now instead of at the next tick (an event that may change a rule's answer happened)."""
        self._poked.set()

    def stop(self) -> None:
        """End :meth:`run` after the evaluation in progress."""
        self._stopping.set()
        self._poked.set()

    async def run(self, *, rounds: int | None = None) -> None:
        """Evaluate until :meth:`stop` (or ``rounds`` evaluations)."""
        done = 0
        while not self._stopping.is_set():
            await self.evaluate()
            done += 1
            if rounds is not None and done >= rounds:
                return
            with anyio.move_on_after(self.interval_s):
                await self._poked.wait()
            self._poked = anyio.Event()

    async def evaluate(self) -> list[AlertMessage]:
        """One round: every rule, then fire the new episodes and resolve the cleared ones. Returns what it sent."""
        if not self._resumed:
            await self._resume()
        now = time.time()
        view = WatchView(self.api, now, self.tenant)
        holding: dict[str, Condition] = {}
        for rule in self.rules:
            for condition in await self._check(rule, view):
                holding.setdefault(condition.alert_id, condition)
        sent = []
        for alert_id, condition in holding.items():
            episode = self.active.get(alert_id)
            if episode is None:
                episode = self.active[alert_id] = _Episode(condition, datetime.fromtimestamp(now, UTC))
                sent.append(await self._send(episode, "fired", now))
            episode.absent_since = None
        for alert_id, episode in list(self.active.items()):
            if alert_id in holding:
                continue
            if episode.absent_since is None:
                episode.absent_since = now
            if now - episode.absent_since >= self.clear_s:
                del self.active[alert_id]
                sent.append(await self._send(episode, "resolved", now))
        if self.metrics is not None:
            self._measure(view)
        return sent

    def _measure(self, view: WatchView) -> None:
        metrics = self.metrics
        tenant = metrics.tenant_label(self.tenant or "default")
        for (gauge, address, group), value in view.gauges.items():
            if gauge == "breaker_open":
                metrics.breakers.labels(address).set(value)
                continue
            target = metrics.pending if gauge == "pending" else metrics.dead_letters
            target.labels(tenant, address, group).set(value)
        firing: dict[str, int] = {getattr(rule, "name", "?"): 0 for rule in self.rules}
        for episode in self.active.values():
            firing[episode.condition.rule] = firing.get(episode.condition.rule, 0) + 1
        for rule_name, count in firing.items():
            metrics.alerts.labels(rule_name).set(count)

    async def _check(self, rule: Rule, view: WatchView) -> list[Condition]:
        try:
            return list(await rule.check(view))
        except (SOSError, OSError, ValueError, TypeError, KeyError) as exc:
            name = getattr(rule, "name", type(rule).__name__)
            log.warning("watcher rule %s failed: %s", name, type(exc).__name__, extra={"operation": "watch.rule"})
            text = f"watcher rule {name} failed: {type(exc).__name__}: {exc}"[:TEXT_CHARS_MAX]
            return [Condition("watcher_rule_failed", str(name)[:200], "warning", text)]

    async def _send(self, episode: _Episode, state: Literal["fired", "resolved"], now: float) -> AlertMessage:
        c = episode.condition
        text = c.text if state == "fired" else f"resolved: {c.text}"
        alert = AlertMessage(
            source=self.source,
            target=self.channel,
            payload=AlertPayload(
                alert_id=c.alert_id[:600],
                rule=c.rule,
                state=state,
                severity=c.severity,
                subject=c.subject[:500],
                text=text[:TEXT_CHARS_MAX],
                details=c.details or None,
                fired_at=episode.fired_at,
                resolved_at=datetime.fromtimestamp(now, UTC) if state == "resolved" else None,
            ),
        )
        await self.api.bus.publish(alert)
        self.published = [*self.published[-(ALERTS_REPLAY_MAX - 1) :], alert]
        log.info("alert %s %s", state, c.alert_id, extra={"operation": "watch.alert", "message_id": alert.message_id})
        await self._notify(alert)
        return alert

    async def _notify(self, alert: AlertMessage) -> None:
        if self.on_alert is not None:
            result = self.on_alert(alert)
            if result is not None:
                await result
        if self.webhook is not None:
            outcome = await self.webhook(Job(alert, 1, self.source))
            if not outcome.ok:
                log.warning("alert webhook failed: %s", outcome.reason, extra={"operation": "watch.webhook"})

    async def _resume(self) -> None:
        """Take over the episodes this source left firing (from the alerts channel's recent history)."""
        self._resumed = True
        after: str | None = None
        latest: dict[str, AlertMessage] = {}
        read = 0
        while read < ALERTS_REPLAY_MAX:
            page = await self.api.bus.history_entries(
                self.channel, after=after, limit=min(500, ALERTS_REPLAY_MAX - read)
            )
            for position, message in page:
                after = position
                if isinstance(message, AlertMessage) and message.source == self.source:
                    latest[message.payload.alert_id] = message
            read += len(page)
            if len(page) < 500:
                break
        for alert_id, message in latest.items():
            p = message.payload
            if p.state == "fired":
                condition = Condition(p.rule, p.subject, p.severity, p.text, dict(p.details or {}))
                self.active[alert_id] = _Episode(condition, p.fired_at)


class KernelWatcher:
    """A :class:`Watcher` per tenant of an embedded kernel (what ``sos serve --watch`` runs): every tenant is
    evaluated each round, tenants created later join at the next one, and the kernel's dead-letter and
    failed-transfer events bring a round forward (at most one per ``POKE_GAP_S``)."""

    def __init__(
        self,
        kernel: Any,
        *,
        interval_s: float = 30.0,
        clear_s: float = 60.0,
        rules: Callable[[], list[Rule]] = default_rules,
        metrics: Any = None,
    ) -> None:
        if not isinstance(interval_s, int | float) or interval_s < INTERVAL_S_MIN:
            raise InvalidArgument(f"interval_s must be >= {INTERVAL_S_MIN}, got {interval_s!r}")
        self.kernel = kernel
        self.interval_s = float(interval_s)
        self.clear_s = clear_s
        self.rules = rules
        self.metrics = metrics
        self.watchers: dict[str, Watcher] = {}
        self._poked = anyio.Event()

    def _on_event(self, name: str, tenant: str, n: int) -> None:
        if name in POKE_EVENTS:
            self._poked.set()

    async def evaluate(self) -> list[AlertMessage]:
        """One round over every tenant."""
        from ..kernel import DEFAULT_TENANT

        slugs = [DEFAULT_TENANT, *(t.slug for t in await self.kernel.tenants.list() if t.slug != DEFAULT_TENANT)]
        sent: list[AlertMessage] = []
        for slug in slugs[:TENANTS_WATCHED_MAX]:
            watcher = self.watchers.get(slug)
            if watcher is None:
                view = self.kernel.tenant(slug)
                watcher = Watcher(view, self.rules(), clear_s=self.clear_s, tenant=slug, metrics=self.metrics)
                self.watchers[slug] = watcher
            sent += await watcher.evaluate()
        return sent

    async def run(self) -> None:
        """Evaluate every ``interval_s`` (sooner on events) until cancelled."""
        self.kernel.events.listeners.append(self._on_event)
        try:
            while True:
                await self.evaluate()
                gap_s = min(POKE_GAP_S, self.interval_s)
                await anyio.sleep(gap_s)
                with anyio.move_on_after(self.interval_s - gap_s):
                    await self._poked.wait()
                self._poked = anyio.Event()
        finally:
            self.kernel.events.listeners.remove(self._on_event)
