"""What each dashboard page shows, read through a tenant admin's session: the declared operations only, so every
scope check, tenant boundary, policy and audit record applies as to any other call. Every read is bounded."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ...api import SessionAPI
from ...bus import DEFAULT_INBOX_GROUP, DeadLetter
from ...contracts import AlertMessage, Message
from ...contracts.messages import AlertPayload
from ...errors import InvalidArgument, NotFound, SOSError
from ...ledger import Balance, Transfer
from ...ops.watch import ALERTS_CHANNEL
from ...registry import RegisteredAgent
from ...skills import split_price

__all__ = [
    "ALERTS_SHOWN_MAX",
    "CHART_BUCKETS",
    "CHART_WINDOW_S",
    "DEAD_LETTERS_SHOWN_MAX",
    "HISTORY_SCAN_MAX",
    "TASKS_SHOWN_MAX",
    "TRANSFERS_SHOWN_MAX",
    "UI_ADDRESSES_SCAN_MAX",
    "UI_AGENTS_MAX",
    "Chart",
    "agent_page",
    "agents",
    "dead_letter",
    "dead_letters",
    "money",
    "overview",
    "skills",
    "tasks",
]

UI_AGENTS_MAX = 500
"""Agents a page lists (the registry's first, by name)."""
UI_ADDRESSES_SCAN_MAX = 50
"""Inboxes (and channels) a page reads history or dead letters of."""
HISTORY_SCAN_MAX = 1_000
"""Messages read per address to find its most recent ones (history is oldest first)."""
HISTORY_PAGE = 250
ALERTS_SHOWN_MAX = 20
DEAD_LETTERS_SHOWN_MAX = 100
TRANSFERS_SHOWN_MAX = 50
TRANSFERS_SCAN_MAX = 1_000
TRANSFERS_PAGE = 100
"""Statement lines read per account to find its most recent transfers."""
ACCOUNTS_SCAN_MAX = 200
SKILLS_SHOWN_MAX = 200
RECENT_MESSAGES_MAX = 50
TASKS_SHOWN_MAX = 100
"""Tasks a page reads (``tasks.list``) and shows per board column."""
CHART_WINDOW_S = 3600
CHART_BUCKETS = 12
CHANNELS = ("sos:channel:global", ALERTS_CHANNEL)


@dataclass(frozen=True)
class Chart:
    """A bar chart of the last hour, drawn as inline SVG: ``bars`` are ``(x, y, width, height, count)``."""

    title: str
    counts: tuple[int, ...]
    width: int = 240
    height: int = 60

    @property
    def bars(self) -> list[tuple[int, int, int, int, int]]:
        step = self.width // max(1, len(self.counts))
        top = max(self.counts, default=0) or 1
        out = []
        for i, count in enumerate(self.counts):
            h = (count * (self.height - 2)) // top
            out.append((i * step, self.height - h, step - 2, h, count))
        return out

    @property
    def total(self) -> int:
        return sum(self.counts)


def _buckets(times: Sequence[datetime], now: float) -> tuple[int, ...]:
    size = CHART_WINDOW_S // CHART_BUCKETS
    counts = [0] * CHART_BUCKETS
    for t in times:
        age = now - t.timestamp()
        if 0 <= age < CHART_WINDOW_S:
            counts[CHART_BUCKETS - 1 - int(age // size)] += 1
    return tuple(counts)


async def _agents(api: SessionAPI) -> list[RegisteredAgent]:
    return sorted(await api.registry.find(), key=lambda a: a.card.name)[:UI_AGENTS_MAX]


async def _recent(api: SessionAPI, address: str, keep: int) -> list[Message]:
    """The last ``keep`` of the first ``HISTORY_SCAN_MAX`` retained messages of ``address``, newest first."""
    out: list[Message] = []
    after: str | None = None
    while len(out) < HISTORY_SCAN_MAX:
        page = await api.bus.history_entries(address, after=after, limit=HISTORY_PAGE)
        out.extend(m for _, m in page)
        if len(page) < HISTORY_PAGE:
            break
        after = page[-1][0]
    return out[-keep:][::-1]


async def _dead(api: SessionAPI, addresses: Sequence[str]) -> list[DeadLetter]:
    found: list[DeadLetter] = []
    for address in addresses[:UI_ADDRESSES_SCAN_MAX]:
        found.extend(await api.bus.dead_letters(address, limit=DEAD_LETTERS_SHOWN_MAX))
    return sorted(found, key=lambda d: d.dead_at, reverse=True)[:DEAD_LETTERS_SHOWN_MAX]


def _addresses(agents: Sequence[RegisteredAgent]) -> list[str]:
    return [a.address for a in agents][:UI_ADDRESSES_SCAN_MAX]


async def _pending(api: SessionAPI, addresses: Sequence[str]) -> list[tuple[str, str, int]]:
    """``(address, group, pending)`` of the inbox group of the first ``UI_ADDRESSES_SCAN_MAX`` addresses."""
    return [
        (address, DEFAULT_INBOX_GROUP, await api.bus.pending(address, group=DEFAULT_INBOX_GROUP))
        for address in addresses[:UI_ADDRESSES_SCAN_MAX]
    ]


async def _alerts(api: SessionAPI) -> list[AlertPayload]:
    """Alerts still firing (the latest state of each alert id on the alerts channel), most recent first."""
    latest: dict[str, AlertMessage] = {}
    for message in reversed(await _recent(api, ALERTS_CHANNEL, HISTORY_SCAN_MAX)):
        if isinstance(message, AlertMessage):
            latest[message.payload.alert_id] = message
    firing = [m.payload for m in latest.values() if m.payload.state == "fired"]
    firing.sort(key=lambda p: p.fired_at, reverse=True)
    return firing[:ALERTS_SHOWN_MAX]


async def overview(api: SessionAPI) -> dict[str, Any]:
    """Agents by status, traffic and dead letters of the last hour, open tasks, escrow, alerts, breakers."""
    now = time.time()
    agents = await _agents(api)
    addresses = _addresses(agents)
    times: list[datetime] = []
    for address in [*addresses, *CHANNELS][:UI_ADDRESSES_SCAN_MAX]:
        times.extend(m.timestamp for m in await _recent(api, address, HISTORY_SCAN_MAX))
    traffic = _buckets(times, now)
    dead = await _dead(api, addresses)
    alerts = await _alerts(api)
    board = await api.tasks.board()
    open_statuses = [s for s in board.columns if s not in ("done", "canceled", "failed")]
    escrow: Counter[str] = Counter()
    for status in open_statuses:
        escrow.update(board.columns[status].bounty)
    health = await api.providers.health()
    pending = await _pending(api, [*addresses, *CHANNELS])
    return {
        "status": Counter(a.status for a in agents),
        "agents": agents,
        "per_minute": f"{traffic[-1] / (CHART_WINDOW_S / CHART_BUCKETS / 60):.1f}",
        "traffic": Chart("Messages per 5 minutes, last hour", traffic),
        "dead_chart": Chart("Dead letters per 5 minutes, last hour", _buckets([d.dead_at for d in dead], now)),
        "dead_count": len(dead),
        "lag": [a for a in alerts if a.rule == "pending_growth"],
        "pending": pending,
        "pending_total": sum(count for _, _, count in pending),
        "open_tasks": sum(board.columns[s].count for s in open_statuses),
        "escrow": sorted(escrow.items()),
        "alerts": alerts,
        "breakers": sorted(health.items()),
    }


async def agents(api: SessionAPI) -> dict[str, Any]:
    """The registry: every agent (bounded) with its status, last heartbeat, skills and inbox depth (the pending
    deliveries of its inbox group, read for the first ``UI_ADDRESSES_SCAN_MAX`` agents)."""
    listed = await _agents(api)
    depth = {address: count for address, _, count in await _pending(api, _addresses(listed))}
    return {"agents": listed, "depth": depth}


async def agent_page(api: SessionAPI, name: str) -> dict[str, Any]:
    """One agent: its card, recent messages of its inbox, its accounts and its tasks."""
    agent = await api.registry.get(name)
    balances = [b for b in await api.ledger.balances() if b.owner in (agent.address, agent.card.name)]
    board = await api.tasks.list(limit=TASKS_SHOWN_MAX)
    return {
        "agent": agent,
        "messages": await _recent(api, agent.address, RECENT_MESSAGES_MAX),
        "depth": await api.bus.pending(agent.address, group=DEFAULT_INBOX_GROUP),
        "balances": balances,
        "tasks": [t for t in board if agent.address in (t.assignee, t.created_by) or t.assignee == agent.card.name],
        "dead": await _dead(api, [agent.address]),
    }


async def _transfers(api: SessionAPI, balances: Sequence[Balance]) -> list[Transfer]:
    """The most recent transfers over the tenant's first ``ACCOUNTS_SCAN_MAX`` accounts, newest first."""
    seen: dict[str, Transfer] = {}
    for balance in balances[:ACCOUNTS_SCAN_MAX]:
        after, read = 0, 0
        while read < TRANSFERS_SCAN_MAX:
            page = await api.ledger.history(balance.owner, balance.currency, after=after, limit=TRANSFERS_PAGE)
            seen.update((t.id, t) for t in page)
            read += len(page)
            if len(page) < TRANSFERS_PAGE:
                break
            after = page[-1].sequence
    return sorted(seen.values(), key=lambda t: t.sequence, reverse=True)


async def money(api: SessionAPI) -> dict[str, Any]:
    """Balances, recent transfers and open holds, usage and cost by provider and model, the ledger's check."""
    balances = sorted(await api.ledger.balances(), key=lambda b: (b.currency, b.owner))
    transfers = await _transfers(api, balances)
    try:
        await api.ledger.check()
        check: tuple[bool, str] = (True, "the books balance and the chain verifies")
    except SOSError as exc:
        check = (False, f"{exc.code} {exc.message}")
    return {
        "balances": balances,
        "transfers": transfers[:TRANSFERS_SHOWN_MAX],
        "holds": [t for t in transfers if t.kind == "pending" and t.state == "pending"][:TRANSFERS_SHOWN_MAX],
        "usage": await api.ledger.usage_summary(group_by=("provider", "model")),
        "check": check,
    }


async def skills(api: SessionAPI) -> dict[str, Any]:
    """Every skill of the tenant with its versions, lineage, verdict, invocations, earnings and the exact micros
    of its price each payee gets per call (``split_price``, the rule paid invocations pay by; ``None`` for a version
    stored with a split that rule refuses, whose invocations are refused)."""
    cards = sorted(await api.skills.find(), key=lambda c: c.id)[:SKILLS_SHOWN_MAX]
    rows = []
    for card in cards:
        commerce = card.commerce
        price = (commerce.price_per_call_micros or 0) if commerce else 0
        try:
            split: dict[str, int] | None = split_price(price, commerce.revenue_split if commerce else None)
        except InvalidArgument:
            split = None
        rows.append(
            {
                "card": card,
                "versions": await api.skills.versions(card.id),
                "price": price,
                "currency": commerce.currency if commerce else "USD",
                "split": split,
            }
        )
    return {"rows": rows}


async def tasks(api: SessionAPI) -> dict[str, Any]:
    """The board: tasks by status, with claims (assignee, lease) and reviewers."""
    board = await api.tasks.board()
    listed = {t.id: t for t in await api.tasks.list(limit=TASKS_SHOWN_MAX)}
    columns = []
    for status, column in board.columns.items():
        shown = [listed[i] for i in column.tasks if i in listed]
        for task_id in column.tasks:
            if task_id not in listed and len(shown) < TASKS_SHOWN_MAX:
                try:
                    shown.append(await api.tasks.get(task_id))
                except NotFound:
                    continue
        columns.append(
            {"status": status, "count": column.count, "bounty": sorted(column.bounty.items()), "tasks": shown}
        )
    return {"columns": columns, "total": board.total}


async def dead_letters(api: SessionAPI) -> dict[str, Any]:
    """Dead letters of every agent inbox and the shared channels (bounded), most recent first."""
    agents = await _agents(api)
    return {"dead": await _dead(api, [*_addresses(agents), *CHANNELS])}


async def dead_letter(api: SessionAPI, address: str, dead_id: str) -> DeadLetter:
    """One dead letter of ``address`` by id; SOS-4040 when it is not there (or was replayed)."""
    for found in await api.bus.dead_letters(address, limit=DEAD_LETTERS_SHOWN_MAX):
        if found.id == dead_id:
            return found
    raise NotFound(f"no dead letter {dead_id} in {address}", details={"id": dead_id})


def utc(moment: datetime | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS UTC`` (empty for None)."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
