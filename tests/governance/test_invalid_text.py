"""Text that is not valid Unicode (a lone UTF-16 surrogate, which JSON's ``\\ud800`` escape decodes to): refused by
the guard in any argument of any operation (SOS-4005, nothing written), on every backend and over HTTP; an audit
record holding one (a trusted caller's) is escaped before it is chained, so the chain stays readable and verified;
and a caller cancelled mid-operation never leaves an effect without its record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel import wire
from sos_kernel.errors import InvalidArgument

from ..conftest import Connect

pytestmark = pytest.mark.anyio

USD = "USD"
BOSS, WORKER, REV = "agent:boss", "agent:worker", "agent:rev"
LONE = "\ud800"


async def _fund(view: Any, owner: str) -> None:
    await view.ledger.open_account("system:treasury", USD, allow_negative=True)
    await view.ledger.open_account(owner, USD)
    await view.ledger.transfer(
        id=f"seed-{owner[6:]}", debit="system:treasury", credit=owner, amount=10_000, currency=USD
    )


class World:
    """A tenant with a claimed task (``t-1``, the worker may block it) and one in review (``t-2``)."""

    def __init__(self, kernel: sos_kernel.Kernel, connect: Connect) -> None:
        self.kernel, self.connect = kernel, connect

    async def build(self) -> World:
        _, admin = await self.kernel.tenants.create("acme", plan="scale")
        self.view = view = self.kernel.tenant("acme")
        for owner in (BOSS, WORKER):
            await _fund(view, owner)
        self.admin = await self.connect(admin)
        tokens = view.tokens
        self.boss, self.worker, self.rev = [
            await self.connect((await tokens.issue(agent=a)).secret) for a in (BOSS, WORKER, REV)
        ]
        for task in ("t-1", "t-2"):
            await self.boss.tasks.create("t", id=task, reviewers=[REV], bounty=100)
        self.claim = (await self.worker.tasks.claim("t-1")).token
        second = (await self.worker.tasks.claim("t-2")).token
        await self.worker.tasks.submit("t-2", second)
        return self

    async def snapshot(self) -> tuple[Any, ...]:
        """What a refused call must leave as it was: the chain's length, every balance, the tasks, the memory."""
        view = self.view
        balances = sorted((b.owner, b.currency, b.available, b.pending) for b in await view.ledger.balances())
        tasks = sorted((t.id, t.status, t.attempt, t.round) for t in await view.tasks.list())
        memory = await view.memory.namespaces()
        return (await view.audit.verify()).records, balances, tasks, memory


Call = Callable[[World], Awaitable[Any]]
CALLS: dict[str, Call] = {
    "tasks.create title": lambda w: w.boss.tasks.create(LONE, id="x-1", reviewers=[REV], bounty=100),
    "tasks.review reasons": lambda w: w.rev.tasks.review("t-2", verdict="reject", reasons=["\udc00"]),
    "tasks.block reason": lambda w: w.worker.tasks.block("t-1", w.claim, LONE),
    "ledger.transfer metadata": lambda w: w.boss.ledger.transfer(
        id="s1", debit=BOSS, credit=WORKER, amount=1, currency=USD, metadata={"x": {"y": [LONE]}}
    ),
    "ledger.transfer debit": lambda w: w.boss.ledger.transfer(
        id="s2", debit="agent:bob\x00" + LONE, credit=WORKER, amount=1, currency=USD
    ),
    "memory.remember metadata": lambda w: w.boss.memory.remember(BOSS, "hi", metadata={"x": LONE}),
    "memory.remember text": lambda w: w.boss.memory.remember(BOSS, "hi" + LONE),
    "skills.record_invocation tenant": lambda w: w.boss.skills.record_invocation(
        "abc", caller=BOSS, tenant=LONE + "evil", invocation_id="x1"
    ),
    "registry.register card": lambda w: w.boss.registry.register({"name": "agent:boss", "description": LONE}),
    "token label": lambda w: getattr(w.admin, "tokens", w.view.tokens).issue(agent="agent:zed", label=LONE),
}


@pytest.mark.parametrize("case", list(CALLS))
async def test_text_that_is_not_unicode_is_refused_and_writes_nothing(
    kernel: sos_kernel.Kernel, connect: Connect, case: str
) -> None:
    world = await World(kernel, connect).build()
    before = await world.snapshot()
    with pytest.raises(InvalidArgument) as refused:
        await CALLS[case](world)
    assert refused.value.code == "SOS-4005"
    assert await world.snapshot() == before
    report = await world.admin.audit.verify()
    assert (report.ok, report.problems) == (True, [])
    assert await world.admin.audit.events("acme", limit=1000)
    assert await world.admin.audit.export("acme")
    assert await world.boss.tasks.list()  # the tenant's tasks still read


async def test_the_refusal_names_the_argument_the_same_in_process_and_over_http(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    world = await World(kernel, connect).build()
    with pytest.raises(InvalidArgument) as refused:
        await CALLS["ledger.transfer metadata"](world)
    assert refused.value.details["argument"] == "metadata.x.y[0]"
    assert (
        refused.value.message
        == "argument 'metadata.x.y[0]' is not valid Unicode text (it holds a lone UTF-16 surrogate)"
    )


async def test_a_trusted_record_with_such_text_is_escaped_and_the_chain_stays_readable(
    kernel: sos_kernel.Kernel, connect: Connect
) -> None:
    _, admin = await kernel.tenants.create("acme", plan="scale")
    audit = kernel.tenant("acme").audit
    await audit.record(
        "denial",
        actor="agent:x" + LONE,
        resource=LONE,
        outcome="denied",
        details={"tenant": LONE + "evil", "k\udfff": [LONE]},
    )
    session = await connect(admin)
    report = await session.audit.verify()
    assert (report.ok, report.problems) == (True, [])
    record = (await session.audit.events("acme", kind="denial"))[-1]
    assert (record.actor, record.resource) == ("agent:x\\ud800", "\\ud800")
    assert dict(record.details) == {"tenant": "\\ud800evil", "k\\udfff": ["\\ud800"]}
    exported = await session.audit.export("acme")
    assert exported[-1]["data"]["details"]["tenant"] == "\\ud800evil"


def test_json_bytes_escapes_text_that_is_not_unicode() -> None:
    assert wire.json_bytes({"x": LONE, "y": "é"}) == b'{"x":"\\ud800","y":"\\u00e9"}'
    assert wire.json_bytes({"y": "é"}) == '{"y":"é"}'.encode()


CANCEL_ROUNDS = 120


async def test_a_cancelled_call_never_leaves_an_effect_without_its_record(kernel: sos_kernel.Kernel) -> None:
    await kernel.tenants.create("acme", plan="scale")
    view = kernel.tenant("acme")
    alice = await kernel.session((await view.tokens.issue(agent="agent:alice")).secret)
    first = (await view.audit.verify()).records
    cancelled = 0
    for i in range(CANCEL_ROUNDS):
        currency = "X" + chr(65 + i // 26 % 26) + chr(65 + i % 26)
        with anyio.move_on_after((i % 40) * 0.00005) as scope:
            await alice.ledger.open_account("agent:alice", currency)
        cancelled += scope.cancelled_caught
    opened = [b for b in await view.ledger.balances() if b.owner == "agent:alice" and b.currency.startswith("X")]
    records = [e for e in await view.audit.events("acme", after=first, limit=1000) if e.action == "ledger.open_account"]
    assert len(records) == len(opened)
    assert cancelled < CANCEL_ROUNDS  # some calls finished, so records were written


async def test_an_mcp_tool_call_with_such_text_is_refused_the_same(kernel: sos_kernel.Kernel, connect: Connect) -> None:
    from ..mcp_server.conftest import mcp_client, refused
    from ..tenants import seed

    view, tokens = await seed(kernel)
    alice = await connect(tokens["alice"])
    before = (await view.audit.verify()).records
    async with mcp_client(alice, kernel) as client:
        result = await client.call_tool("send", {"to": "bob", "text": "hi" + LONE})
    assert refused(result, "SOS-4005") == "argument 'text' is not valid Unicode text (it holds a lone UTF-16 surrogate)"
    assert (await view.audit.verify()).records == before
    assert await view.bus.history("agent:bob") == []
