"""A CrewAI crew working on the kernel: a scout finds a peer and briefs it over the bus, a treasurer pays it, each
CrewAI agent acting as its own kernel agent through the kernel's tools. The crew's LLM is a scripted fake (no model,
no network); the kernel is embedded (``memory://``).

Run: ``python examples/crewai_crew.py`` (``pip install 'sos-kernel[crewai]'``).
"""

from __future__ import annotations

import os

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")  # no network: no telemetry
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

import json
from typing import Any

import anyio
from crewai.llms.base_llm import BaseLLM

import sos_kernel
from crewai import Agent, Crew, Process, Task
from sos_kernel.contracts import AgentCard
from sos_kernel.integrations.crewai import crewai_tools

USD = "USD"
FEE_MICROS = 750_000


class ScriptedLLM(BaseLLM):
    """A fake LLM that answers with the next of its scripted replies (CrewAI's ReAct text format)."""

    replies: list[str]

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        return self.replies.pop(0) if self.replies else "Thought: done\nFinal Answer: done"

    def supports_function_calling(self) -> bool:
        return False


def act(thought: str, tool: str, arguments: dict[str, Any]) -> str:
    return f"Thought: {thought}\nAction: {tool}\nAction Input: {json.dumps(arguments)}"


def done(answer: str) -> str:
    return f"Thought: I now know the final answer\nFinal Answer: {answer}"


def crew_for(scout: Any, treasurer: Any) -> Crew:
    scout_llm = ScriptedLLM(
        model="scripted-scout",
        replies=[
            act("Who can write?", "peers", {"skill": "writing"}),
            act("Brief the writer.", "send", {"to": "writer", "text": "Please draft the launch note by Friday."}),
            done("Briefed agent:writer on the launch note."),
        ],
    )
    treasurer_llm = ScriptedLLM(
        model="scripted-treasurer",
        replies=[
            act("Pay the writer.", "transfer", {"id": "fee-launch-note", "to": "writer", "amount_micros": FEE_MICROS}),
            act("Check what is left.", "wallet_balance", {"currency": USD}),
            done("Paid agent:writer 0.75 USD."),
        ],
    )
    scouting = Agent(
        role="Scout",
        goal="Find a writer and brief them",
        backstory="Knows everyone on the bus.",
        llm=scout_llm,
        tools=crewai_tools(scout, names=["peers", "send"]),
    )
    paying = Agent(
        role="Treasurer",
        goal="Pay for briefed work",
        backstory="Keeps the books exact.",
        llm=treasurer_llm,
        tools=crewai_tools(treasurer, names=["transfer", "wallet_balance"]),
    )
    tasks = [
        Task(description="Find a writer and brief them.", expected_output="who was briefed", agent=scouting),
        Task(description="Pay the briefed writer its fee.", expected_output="what was paid", agent=paying),
    ]
    return Crew(agents=[scouting, paying], tasks=tasks, process=Process.sequential)


async def main() -> None:
    async with sos_kernel.open("memory://") as kernel:
        await kernel.tenants.create("press", plan="scale")
        view = kernel.tenant("press")
        await view.ledger.open_account("system:treasury", USD, allow_negative=True)
        for agent in ("agent:scout", "agent:treasurer", "agent:writer"):
            await view.ledger.open_account(agent, USD)
        await view.ledger.transfer(
            id="fund", debit="system:treasury", credit="agent:treasurer", amount=5_000_000, currency=USD
        )
        writer = AgentCard(name="writer", tool="sdk", type="service", role="specialist", skills=["writing"])
        await view.registry.register(writer)
        scout = await kernel.session((await view.tokens.issue(agent="agent:scout")).secret)
        treasurer = await kernel.session((await view.tokens.issue(agent="agent:treasurer")).secret)

        crew = crew_for(scout, treasurer)
        output = await anyio.to_thread.run_sync(crew.kickoff)  # the crew runs sync; the tools call back in here
        print(f"crew: {output.raw}")

        inbox = await view.bus.history_entries("agent:writer")
        print(f"writer's inbox: {[m.payload.text for _, m in inbox]}")
        paid = (await view.ledger.balance("agent:writer", USD)).available
        print(f"agent:writer: {paid / 1e6:.2f} USD")
        if paid != FEE_MICROS or len(inbox) != 1:
            raise SystemExit("the crew did not brief and pay the writer")


if __name__ == "__main__":
    anyio.run(main)
