"""``crewai_tools(session)``: the kernel's tools through CrewAI's own invocation paths (``BaseTool.run`` with its
argument validation, ``arun``, and a crew whose agents call them), as the session's principal, on every backend and
through the remote client."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from crewai.llms.base_llm import BaseLLM

from crewai import Agent, Crew, Task
from sos_kernel.integrations.crewai import KernelToolFailure, crewai_tools

from ..tenants import seed
from .conftest import Acme

pytestmark = [
    pytest.mark.anyio,
    # crewai reads its own deprecated fields while running a crew: warnings from its modules, not ours
    pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai"),
]


class ScriptedLLM(BaseLLM):
    replies: list[str]

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        return self.replies.pop(0) if self.replies else "Thought: done\nFinal Answer: done"

    def supports_function_calling(self) -> bool:
        return False


def by_name(session: Any, **options: Any) -> dict[str, Any]:
    return {t.name: t for t in crewai_tools(session, **options)}


async def run(tool: Any, **arguments: Any) -> Any:
    return await anyio.to_thread.run_sync(lambda: tool.run(**arguments))


def posted(balance: dict[str, Any]) -> int:
    return int(balance["credits_posted"]) - int(balance["debits_posted"])


async def test_tools_are_named_and_send_reaches_the_inbox(acme: Acme) -> None:
    alice, bob = by_name(acme.sessions["alice"]), by_name(acme.sessions["bob"])
    assert {"send", "inbox", "peers", "transfer", "wallet_balance"} <= set(alice)
    await run(alice["send"], to="bob", text="hello from a crew")
    found = await run(bob["inbox"], limit=5)
    assert [m["message"]["payload"]["text"] for m in found["messages"]] == ["hello from a crew"]


async def test_arguments_are_checked_by_the_tool_schema(acme: Acme) -> None:
    alice = by_name(acme.sessions["alice"])
    with pytest.raises(ValueError, match="arguments validation failed"):
        await run(alice["transfer"], to="bob", amount_micros=5, surprise=True)


async def test_a_refusal_is_text_the_agent_reads_or_raises(acme: Acme) -> None:
    text = await run(by_name(acme.sessions["alice"])["transfer"], id="big", to="bob", amount_micros=10**9)
    assert text.startswith("SOS-7001")
    strict = by_name(acme.sessions["alice"], raise_errors=True)
    with pytest.raises(KernelToolFailure) as caught:
        await strict["transfer"].arun(id="big", to="bob", amount_micros=10**9)
    assert caught.value.error.code == "SOS-7001"
    assert posted(await strict["wallet_balance"].arun()) == 100


async def test_a_crew_agent_acts_as_its_principal(acme: Acme) -> None:
    pay = {"id": "crew-pay", "to": "bob", "amount_micros": 25}
    llm = ScriptedLLM(
        model="scripted",
        replies=[
            f"Thought: pay bob\nAction: transfer\nAction Input: {json.dumps(pay)}",
            "Thought: I now know the final answer\nFinal Answer: paid",
        ],
    )
    agent = Agent(role="Payer", goal="pay", backstory="pays", llm=llm, tools=crewai_tools(acme.sessions["alice"]))
    crew = Crew(agents=[agent], tasks=[Task(description="Pay bob 25.", expected_output="done", agent=agent)])
    output = await anyio.to_thread.run_sync(crew.kickoff)
    assert output.raw == "paid"
    assert posted(await by_name(acme.sessions["bob"])["wallet_balance"].arun()) == 125


async def test_tenants_are_isolated_through_the_tools(acme: Acme, connect: Any) -> None:
    _, tokens = await seed(acme.kernel, "beta")
    intruder = by_name(await connect(tokens["alice"]))
    await run(intruder["send"], to="bob", text="from beta")
    await run(intruder["transfer"], id="x", to="bob", amount_micros=40)
    bob = by_name(acme.sessions["bob"])
    assert (await bob["inbox"].arun())["messages"] == []
    assert posted(await bob["wallet_balance"].arun()) == 100


async def test_a_sync_call_on_the_loop_is_refused(acme: Acme) -> None:
    with pytest.raises(Exception, match="own event loop"):
        by_name(acme.sessions["alice"])["peers"].run()
