"""``sos demo``: a tenant, three agents, messages, a priced skill, a reviewed and paid task, and the money adding up
— in about a second.

Each run sprouts a fresh tenant (``demo-<hex>``) so it can be repeated on the same ``sos.db``. The agents act
through sessions (bearer tokens with scopes), as they would from another process or over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from .contracts import AgentCard, Message, ReceiptMessage
from .errors import DeliveryFailed
from .kernel import DEFAULT_URL, Kernel, open
from .ledger import Balance
from .session import Session
from .skills import Invocation
from .tasks import Task

__all__ = ["ASK_TIMEOUT_S", "RECEIVE_TIMEOUT_S", "DemoReport", "demo", "run_demo"]

USD = "USD"
TASKS = "sos:channel:tasks"
RECEIVE_TIMEOUT_S = 5.0
"""How long bob waits for alice's message (it is already there: this only bounds a broken backend)."""
ASK_TIMEOUT_S = 10.0
"""How long alice waits for carol's answer."""
GRANT_MICROS = 1_000_000
SKILL = {
    "schema_version": "1",
    "id": "summarise",
    "name": "Summarise",
    "version": "1.0.0",
    "author_agent": "agent:carol",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "tags": ["text"],
    "runtime": {"entry_point": "skills/summarise.py", "backend": "local-python"},
    "commerce": {
        "price_per_call_micros": 250_000,
        "currency": USD,
        "marketplace_listed": True,
        "revenue_split": {"author": 0.85, "operator": 0.10, "network": 0.05},
    },
}
SKILL_PRICE_MICROS = 250_000
BOUNTY_MICROS = 300_000
EVIDENCE = {"argv": ["make", "notes"], "exit_status": 0, "output_sha256": "3" * 64, "output_bytes": 2048}


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What one demo run did: the message trail, the receipts, the paid invocation and the wallets."""

    url: str
    backend: str
    tenant: str
    trail: tuple[Message, ...]
    receipts: tuple[str, ...]
    message_id: str
    answer: str
    invocation: Invocation
    balances: tuple[Balance, ...]
    task: Task

    @property
    def total(self) -> int:
        """The posted balances summed (double entry: always 0)."""
        return sum(b.posted for b in self.balances)

    @property
    def ok(self) -> bool:
        """Receipts arrived in order, the wallets sum to zero and the skill's price was split exactly."""
        paid = sum(self.invocation.payouts.values()) == SKILL_PRICE_MICROS
        task_paid = self.task.status == "done" and self.task.bounty == BOUNTY_MICROS
        return self.receipts == ("delivered", "processed") and self.total == 0 and paid and task_paid

    def lines(self) -> list[str]:
        """The human report."""
        out = [f"sos-kernel demo on {self.url} (backend {self.backend}): sprouted tenant {self.tenant}"]
        out += ["", "message trail:", *(_line(m) for m in self.trail)]
        out += [
            "",
            f"receipts for alice's message {self.message_id[:8]}: {', '.join(self.receipts)}",
            f"carol answered: {self.answer}",
            f"alice paid {self.invocation.price_micros} micros for summarise, split {self.invocation.payouts}",
            f"task {self.task.id}: alice's brief -> {self.task.assignee} claimed it -> evidence -> "
            f"{', '.join(r.reviewer for r in self.task.reviews)} approved -> {self.task.bounty} micros from escrow",
            "",
            "wallets (USD micros):",
            *(f"  {b.owner:<18} {b.posted:>12}" for b in self.balances),
            f"  {'sum':<18} {self.total:>12}  (double entry: always 0)",
            "",
            *self.where(),
        ]
        return out

    def where(self) -> list[str]:
        """Where the demo's data went and the commands that show it (it stays in its own tenant)."""
        url = "" if self.url == DEFAULT_URL else f" --url {self.url}"
        sos = f"sos{url} --tenant {self.tenant}"
        return [
            f"the demo's data is in tenant {self.tenant} of {self.url}; look at it with:",
            f"  {sos} agents",
            f"  {sos} wallet list",
            f"  {sos} history agent:bob",
            f"  {sos} task board",
        ]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values (``sos demo --json``)."""
        return {
            "url": self.url,
            "backend": self.backend,
            "tenant": self.tenant,
            "ok": self.ok,
            "trail": [m.to_wire() for m in self.trail],
            "message_id": self.message_id,
            "receipts": list(self.receipts),
            "answer": self.answer,
            "invocation": self.invocation,
            "wallets": [{"owner": b.owner, "currency": b.currency, "posted": b.posted} for b in self.balances],
            "sum": self.total,
            "task": self.task,
        }


def _line(message: Message) -> str:
    return f"  {message.type:<14} {message.source:<13} -> {message.target:<28} {_what(message)}"


def _what(message: Message) -> str:
    payload: Any = getattr(message, "payload", None)
    if isinstance(message, ReceiptMessage):
        return f"{message.payload.kind} receipt for {message.payload.message_id[:8]}"
    if message.type == "evidence":
        return f"{' '.join(payload.argv or [])} exited {payload.exit_status} ({payload.subject_ref})"
    if message.type == "gate_verdict":
        return f"{payload.reviewer} {payload.verdict} {payload.subject_ref}"
    if message.type in ("task_created", "task_claimed", "task_completed"):
        return f"{payload.task_id} {getattr(payload, 'title', None) or getattr(payload, 'status', '')}".rstrip()
    return getattr(payload, "text", None) or getattr(payload, "question", None) or ""


async def _carol(carol: Session) -> None:
    async with carol.bus.subscribe("agent:carol") as inbox:
        delivery = await inbox.receive(timeout_s=ASK_TIMEOUT_S)
        if delivery is not None:
            await carol.bus.reply(delivery.message, "42 - and the evidence trail is on the bus.")
            await delivery.ack()


async def _agents(kernel: Kernel, slug: str) -> dict[str, Session]:
    tokens = kernel.tenant(slug).tokens
    agents = {}
    for name in ("alice", "bob", "carol"):
        issued = await tokens.issue(agent=f"agent:{name}")
        agents[name] = await kernel.session(issued.secret)
        await agents[name].registry.register(AgentCard(name=name, tool="sdk", type="service", role="executor"))
        await agents[name].bus.announce(f"agent:{name}", f"{name} is online", tool="sdk")
    return agents


async def _talk(agents: dict[str, Session]) -> tuple[str, Message, str]:
    alice, bob, carol = agents["alice"], agents["bob"], agents["carol"]
    sent = await alice.bus.send("agent:alice", "agent:bob", "Please review task t-1.", receipts=True)
    async with bob.bus.subscribe("agent:bob") as inbox:
        delivery = await inbox.receive(timeout_s=RECEIVE_TIMEOUT_S)
        if delivery is None:
            raise DeliveryFailed(f"bob received nothing within {RECEIVE_TIMEOUT_S} s")
        await delivery.ack()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_carol, carol)
        answer = await alice.bus.ask("agent:alice", "agent:carol", "What is the answer?", timeout_s=ASK_TIMEOUT_S)
    return sent.message_id, answer, answer.payload.text


async def _trade(admin: Session, agents: dict[str, Session], slug: str) -> Invocation:
    await admin.ledger.open_account("system:treasury", USD, allow_negative=True)
    for name, session in agents.items():
        await session.ledger.open_account(f"agent:{name}", USD)
    await admin.ledger.transfer(
        id="grant-alice",
        debit="system:treasury",
        credit="agent:alice",
        amount=GRANT_MICROS,
        currency=USD,
        reason="starting grant",
    )
    await agents["carol"].skills.publish(SKILL)
    await admin.skills.verify(
        "summarise", "1.0.0", verifier="agent:bob", status="human_verified", sample_output_refs=["sha256:9f2c1e"]
    )
    return await agents["alice"].skills.record_invocation(
        "summarise", caller="agent:alice", tenant=slug, invocation_id="demo-call-1"
    )


async def _squad(agents: dict[str, Session]) -> Task:
    """The loop: alice's brief becomes a funded task, bob claims it and posts evidence, carol's gate pays him."""
    alice, bob, carol = agents["alice"], agents["bob"], agents["carol"]
    brief = await alice.tasks.create(
        "Summarise the release notes", id="release-notes", reviewers=["agent:carol"], bounty=BOUNTY_MICROS
    )
    claim = await bob.tasks.claim(brief.id)
    await bob.tasks.submit(brief.id, claim.token, evidence=[EVIDENCE], result={"summary": "3 fixes, 1 feature"})
    return await carol.tasks.review(brief.id, verdict="approve")


async def demo(url: str | None = None, progress: Callable[[str], None] = _quiet) -> DemoReport:
    """Run the demo on ``url`` (default: the embedded ``sqlite:///sos.db``); ``progress`` hears each step."""
    slug = f"demo-{uuid.uuid4().hex[:8]}"
    progress(f"opening {url or 'the embedded default'}...")
    async with open(url) as kernel:
        progress(f"sprouting tenant {slug} on {kernel.url}...")
        _, admin_token = await kernel.tenants.create(slug, plan="growth")
        admin = await kernel.session(admin_token)
        progress("registering alice, bob and carol...")
        agents = await _agents(kernel, slug)
        progress("sending, receiving with receipts, asking and answering...")
        message_id, answer, text = await _talk(agents)
        progress("opening wallets, publishing, verifying and invoking a paid skill...")
        invocation = await _trade(admin, agents, slug)
        progress("briefing a task, claiming it, posting evidence, reviewing and paying it...")
        task = await _squad(agents)
        bus = kernel.tenant(slug).bus
        trail: list[Message] = []
        for address in ("sos:channel:global", "agent:bob", "agent:carol", answer.target, "agent:alice", TASKS):
            trail += await bus.history(address)
        receipts = tuple(
            m.payload.kind
            for m in await bus.history("agent:alice")
            if isinstance(m, ReceiptMessage) and m.payload.message_id == message_id
        )
        balances = tuple(await admin.ledger.balances())
        await admin.ledger.check()
        return DemoReport(
            kernel.url, kernel.backend.name, slug, tuple(trail), receipts, message_id, text, invocation, balances, task
        )


async def run_demo(url: str | None = None, echo: Callable[[str], None] = print) -> int:
    """Run the demo on ``url`` and ``echo`` its report; returns a process exit code (0 when everything added up)."""
    report = await demo(url)
    for line in report.lines():
        echo(line)
    return 0 if report.ok else 1
