"""The MCP tools of a session, on every backend and through the remote client: what they do, and what they refuse.

The server is built from a session (``create_server(session)``) and reached with the MCP SDK's own client; every
effect is checked through the kernel's API.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

import sos_kernel
from sos_kernel.contracts import AgentCard, SendMessage, SendPayload
from sos_kernel.mcp import INBOX_URI
from sos_kernel.wire import encode

from ..conftest import Connect
from .conftest import USD, Acme, mcp_client, ok, refused, seed

pytestmark = pytest.mark.anyio

REQUIRED = {"send", "inbox", "ask", "broadcast", "peers", "status", "wallet_balance", "transfer", "skills_find"}


async def test_tools_are_listed_with_schemas(acme: Acme) -> None:
    async with mcp_client(acme.sessions["alice"], acme.kernel) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert REQUIRED | {"skill_invoke"} <= set(tools)
    assert tools["send"].input_schema["required"] == ["to", "text"]
    assert "limit" in tools["inbox"].input_schema["properties"]
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.description
    # derived from a declaration: the registry's get, with its argument and type
    assert tools["registry_get"].input_schema["properties"]["name"]["type"] == "string"
    # the guard fills the caller's own argument: it defaults to the session's agent and is no longer required
    heartbeat = tools["registry_heartbeat"].input_schema
    assert heartbeat["properties"]["name"]["default"] == "agent:alice"
    assert "name" not in heartbeat["required"]
    # a covered operation has no second tool; an operation needing a scope alice lacks is not listed to her
    assert "bus_send" not in tools
    assert "ledger_balances" not in tools
    assert "ledger_set_rate" not in tools


async def test_admin_only_tools_are_listed_to_a_token_that_holds_the_scope(acme: Acme) -> None:
    async with mcp_client(acme.sessions["admin"], acme.kernel) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"ledger_balances", "ledger_set_rate", "ledger_check"} <= names


async def test_send_then_inbox_peek_and_read(acme: Acme) -> None:
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        sent = ok(await alice.call_tool("send", {"to": "bob", "text": "review t-1?"}))
    async with mcp_client(acme.sessions["bob"], acme.kernel) as bob:
        peeked = ok(await bob.call_tool("inbox", {"limit": 5, "peek": True}))
        assert [m["message"]["payload"]["text"] for m in peeked["messages"]] == ["review t-1?"]
        assert peeked["consumed"] is False
        read = ok(await bob.call_tool("inbox", {"limit": 5}))
        assert [m["message"]["message_id"] for m in read["messages"]] == [sent["message_id"]]
        assert read["messages"][0]["message"]["source"] == "agent:alice"
        assert ok(await bob.call_tool("inbox", {"limit": 5}))["messages"] == []
        text = (await bob.read_resource(INBOX_URI)).contents[0]
    assert "review t-1?" in getattr(text, "text", "")
    history = await acme.view.bus.history("agent:bob")
    assert [m.message_id for m in history] == [sent["message_id"]]


async def test_send_with_a_message_id_is_idempotent(acme: Acme) -> None:
    args = {"to": "agent:bob", "text": "once", "message_id": "0190f0e8-7a41-7d2e-9c1b-3f5a6b7c8d9e"}
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        first = ok(await alice.call_tool("send", args))
        again = ok(await alice.call_tool("send", args))
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert len(await acme.view.bus.history("agent:bob")) == 1


async def test_ask_waits_for_the_reply(acme: Acme) -> None:
    bob = acme.sessions["bob"]

    async def answer() -> None:
        async with bob.bus.subscribe("agent:bob") as sub:
            delivery = await sub.receive(timeout_s=20)
            assert delivery is not None
            await bob.bus.reply(delivery.message, "yes", source="agent:bob")
            await delivery.ack()

    async with anyio.create_task_group() as tg, mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        tg.start_soon(answer)
        reply = ok(await alice.call_tool("ask", {"to": "bob", "text": "ready?", "timeout_s": 20}))
    assert reply["payload"]["text"] == "yes"
    assert reply["source"] == "agent:bob"


async def test_broadcast_peers_status_and_registry(acme: Acme) -> None:
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        card = encode(AgentCard(name="alice", tool="sdk", type="remote", role="executor"))
        ok(await alice.call_tool("registry_register", {"card": card}))
        ok(await alice.call_tool("registry_heartbeat", {}))
        assert [a["card"]["name"] for a in ok(await alice.call_tool("peers", {"role": "executor"}))] == ["alice"]
        posted = ok(await alice.call_tool("broadcast", {"text": "hello all"}))
        status = ok(await alice.call_tool("status", {}))
    assert (await acme.view.registry.get("alice")).card.role == "executor"
    assert posted["address"] == "sos:channel:global"
    assert status["agent"] == "agent:alice"
    assert status["tenant"] == "acme"
    assert status["wallets"][USD]["credits_posted"] == 100
    assert "bus:write" in status["scopes"]


async def test_status_lists_the_agents_open_tasks(acme: Acme, connect: Connect) -> None:
    tasks = acme.view.tasks
    await tasks.create("mine", id="st-mine", reviewers=["agent:bob"], bounty=10, funded_by="agent:carol")
    await tasks.create("to review", id="st-review", reviewers=["agent:alice", "agent:carol"])
    await tasks.create("reviewed", id="st-reviewed", reviewers=["agent:alice", "agent:carol"], approvals_required=2)
    await tasks.create("not mine", id="st-other", reviewers=["agent:carol"])
    await tasks.create("unclaimed", id="st-queued", reviewers=["agent:alice"])
    await tasks.claim("st-mine", agent="agent:alice")
    for task_id in ("st-review", "st-reviewed", "st-other"):
        claim = await tasks.claim(task_id, agent="agent:bob")
        await tasks.submit(task_id, claim.token)
    await tasks.review("st-reviewed", reviewer="agent:alice", verdict="approve")  # judged: awaits carol only
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        status = ok(await alice.call_tool("status", {}))
    assert [(t["id"], t["role"], t["status"]) for t in status["tasks"]] == [
        ("st-mine", "worker", "claimed"),
        ("st-review", "reviewer", "review"),
    ]
    assert status["tasks"][0]["bounty"] == 10
    reader = (await acme.view.tokens.issue(agent="agent:alice", scopes=["ledger:read"])).secret
    async with mcp_client(await connect(reader), acme.kernel) as limited:
        assert "tasks" not in ok(await limited.call_tool("status", {}))


async def test_transfer_is_idempotent_by_its_id_and_moves_money(acme: Acme) -> None:
    pay = {"id": "pay-1", "to": "bob", "amount_micros": 30, "reason": "review"}
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        first = ok(await alice.call_tool("transfer", pay))
        again = ok(await alice.call_tool("transfer", pay))
        balance = ok(await alice.call_tool("wallet_balance", {"currency": USD}))
        short = await alice.call_tool("transfer", {**pay, "id": "pay-2", "amount_micros": 1000})
    assert (first["id"], first["replayed"], again["replayed"]) == ("alice/pay-1", False, True)
    assert {k: v for k, v in first.items() if k != "replayed"} == {k: v for k, v in again.items() if k != "replayed"}
    assert balance["debits_posted"] == 30
    refused(short, "SOS-7001")
    assert (await acme.view.ledger.balance("agent:bob", USD)).credits_posted == 130


async def test_skills_find_and_invoke(acme: Acme) -> None:
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        assert [c["id"] for c in ok(await alice.call_tool("skills_find", {}))] == ["skill-a"]
        invoked = ok(await alice.call_tool("skill_invoke", {"skill_id": "skill-a", "invocation_id": "inv-1"}))
        unknown = await alice.call_tool("skill_invoke", {"skill_id": "nope", "invocation_id": "inv-2"})
    assert invoked["caller"] == "agent:alice"
    refused(unknown, "SOS-6020")
    assert (await acme.view.ledger.balance("agent:alice", USD)).debits_posted == 10


async def test_an_agent_cannot_act_as_another_through_a_tool(acme: Acme) -> None:
    forged = encode(SendMessage(source="agent:bob", target="agent:carol", payload=SendPayload(text="as bob")))
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        refused(await alice.call_tool("bus_announce", {"source": "agent:bob", "text": "as bob"}), "SOS-5004")
        refused(await alice.call_tool("bus_publish", {"message": forged}), "SOS-5004")
        refused(await alice.call_tool("bus_history", {"address": "agent:bob"}), "SOS-5004")
        refused(await alice.call_tool("ledger_history", {"owner": "agent:bob", "currency": USD}), "SOS-5004")
        # not listed to her, and refused by the guard when called anyway
        refused(await alice.call_tool("ledger_balances", {}), "SOS-5004")
    assert await acme.view.bus.history("agent:carol") == []
    assert acme.sessions["alice"].denials >= 5


async def test_bad_input_and_unknown_tools_carry_sos_codes(acme: Acme) -> None:
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        refused(await alice.call_tool("sned", {}), "SOS-4040")
        refused(await alice.call_tool("registry_get", {"nme": "x"}), "SOS-4005")
        refused(await alice.call_tool("inbox", {"limit": 10_000}), "SOS-4010")
        refused(await alice.call_tool("transfer", {"to": "bob", "amount_micros": 1}), "SOS-4005")
        refused(await alice.call_tool("send", {"to": 7, "text": "x"}), "SOS-4005")
        refused(await alice.call_tool("ask", {"to": "bob", "text": "x", "timeout_s": 10_000}), "SOS-4010")
        # a null argument is an absent one
        assert ok(await alice.call_tool("inbox", {"limit": None, "peek": None, "wait_s": None}))["messages"] == []


async def test_a_revoked_token_is_refused_by_the_next_tool(acme: Acme) -> None:
    alice = acme.sessions["alice"]
    async with mcp_client(alice, acme.kernel) as client:
        ok(await client.call_tool("status", {}))
        await acme.view.tokens.revoke(alice.principal.token_id)
        await anyio.lowlevel.checkpoint()
        refused(await client.call_tool("wallet_balance", {}), "SOS-5002")


async def test_tenant_b_sees_nothing_of_tenant_a(acme: Acme, kernel: sos_kernel.Kernel, connect: object) -> None:
    _, b_tokens = await seed(kernel, "beta")
    beta = await connect(b_tokens["alice"])  # type: ignore[operator]
    async with mcp_client(acme.sessions["alice"], acme.kernel) as a_alice:
        ok(await a_alice.call_tool("send", {"to": "bob", "text": "for acme's bob"}))
        card = encode(AgentCard(name="alice", tool="sdk", type="remote", role="executor"))
        ok(await a_alice.call_tool("registry_register", {"card": card}))
        ok(await a_alice.call_tool("transfer", {"id": "only-acme", "to": "bob", "amount_micros": 1}))
    async with mcp_client(beta, kernel) as b_alice:
        assert ok(await b_alice.call_tool("peers", {})) == []
        assert ok(await b_alice.call_tool("inbox", {"peek": True}))["messages"] == []
        status = ok(await b_alice.call_tool("status", {}))
        refused(await b_alice.call_tool("ledger_get_transfer", {"id": "alice/only-acme"}), "SOS-4040")
    assert status["tenant"] == "beta"
    assert status["wallets"][USD]["credits_posted"] == 100
    assert len(await acme.view.bus.history("agent:bob")) == 1


async def test_onboard_prompt_explains_the_loop(acme: Acme) -> None:
    async with mcp_client(acme.sessions["alice"], acme.kernel) as alice:
        prompts = [p.name for p in (await alice.list_prompts()).prompts]
        prompt = await alice.get_prompt("onboard")
    text = getattr(prompt.messages[0].content, "text", "")
    assert prompts == ["onboard"]
    assert "agent:alice" in text
    assert "Claim" in text
    assert "Evidence" in text
    assert "Verdict" in text


@pytest.mark.parametrize("who", ["alice", "admin"])
async def test_every_listed_tool_answers_a_result_or_an_sos_error(acme: Acme, who: str) -> None:
    """Each tool, called with no arguments, answers: a result, or a tool error carrying its SOS code."""
    async with mcp_client(acme.sessions[who], acme.kernel) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        for name in names:
            result = await client.call_tool(name, {})
            text = getattr(result.content[0], "text", "")
            if result.is_error:
                assert text.startswith("SOS-"), (name, text)
                assert result.structured_content is not None
                assert result.structured_content["error"]["code"] == text.split(" ", 1)[0]
            else:
                ok(result)
    assert len(names) >= 30
