"""A kernel agent served over A2A: an a2a-sdk client asks it a question, then hands it a paid task.

What ``sos serve`` does, in one file: a real HTTP server on a free 127.0.0.1 port with the A2A endpoint mounted,
and agent ``bob`` registered with ``a2a=True``, so it is an A2A agent at ``/a2a/acme/bob/``. Bob answers from a
scripted function (no model, no network): an A2A message is an ``ask`` in his inbox, and a message in task mode
(``metadata.sos_task``) is a kernel task created by the caller, alice, with a bounty from her own account; bob
claims it and submits a result, alice approves it, bob is paid from escrow, and the A2A task completes with the
result as its artifact.

Run: ``python examples/a2a_peer.py`` (needs ``pip install 'sos-kernel[a2a]'``). Its database lives in a temporary
directory removed at the end.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading

import anyio
import httpx
import uvicorn
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_data_parts, new_text_message
from a2a.types import Role, SendMessageRequest, TaskState
from google.protobuf.struct_pb2 import Struct

import sos_kernel
from mumega_sdk import MumegaClient
from sos_kernel.contracts import AgentCard
from sos_kernel.integrations.a2a import TASK_HEADER, TASK_KEY, A2AAgent, mount
from sos_kernel.server import create_app

START_S = 15.0
BOUNTY = 2_000_000  # 2.00 USD, in micros


def answer(question: str) -> str:
    """Bob's scripted mind."""
    if "6 x 7" in question:
        return "42"
    return f"done: {question.lower()}"


async def seed(db_url: str) -> tuple[str, str]:
    """Tenant acme: bob serves A2A, alice calls him and has 5.00 USD."""
    async with sos_kernel.open(db_url) as kernel:
        await kernel.tenants.create("acme", "growth")
        acme = kernel.tenant("acme")
        card = AgentCard(name="bob", tool="sdk", type="service", role="specialist", summary="bob answers")
        await acme.registry.register(card, a2a=True)
        await acme.ledger.open_account("system:treasury", "USD", allow_negative=True)
        for owner in ("agent:alice", "agent:bob"):
            await acme.ledger.open_account(owner, "USD")
        await acme.ledger.transfer(
            id="grant", debit="system:treasury", credit="agent:alice", amount=5_000_000, currency="USD"
        )
        alice = await acme.tokens.issue(agent="agent:alice")
        bob = await acme.tokens.issue(agent="agent:bob")
        return alice.secret, bob.secret


def start_server(sock: socket.socket, db_url: str) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(None, log_level="warning", lifespan="on")  # type: ignore[arg-type]
    server = uvicorn.Server(config)

    async def serve() -> None:
        async with sos_kernel.open(db_url) as kernel:
            app = create_app(kernel)
            mount(app)  # what `sos serve` does when the a2a extra is installed
            config.app = app
            await server.serve(sockets=[sock])

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    return server, thread


async def responder(bob: MumegaClient) -> None:
    """Bob: answers every ask; claims every task he is told of (header ``sos-task-id``) and submits a result."""
    async with bob.bus.subscribe("agent:bob") as inbox:
        async for delivery in inbox:
            message = delivery.message
            if message.type == "ask":
                await delivery.reply(answer(message.payload.question), source="agent:bob")  # answered and acked
                continue
            task_id = (getattr(message, "headers", None) or {}).get(TASK_HEADER)
            if message.type == "send" and task_id:
                claim = await bob.tasks.claim(task_id)
                await bob.tasks.submit(task_id, claim.token, result={"answer": answer(message.payload.text)})
            await delivery.ack()


async def hand_over_a_task(url: str, token: str, alice: MumegaClient) -> None:
    """Task mode through the a2a-sdk's own streaming client; alice approves the work when it reaches review."""
    metadata = Struct()
    metadata.update({"timeout_s": 30, TASK_KEY: {"title": "Tidy the notes", "bounty": BOUNTY}})
    request = SendMessageRequest(message=new_text_message("Tidy the Notes", role=Role.ROLE_USER), metadata=metadata)
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=60) as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(card)
        async for event in client.send_message(request):
            if event.HasField("status_update"):
                update = event.status_update
                status = update.metadata["sos_task_status"]
                print(f"task {update.task_id[:8]}: {TaskState.Name(update.status.state)} (kernel: {status})")
                if status == "review":
                    await alice.tasks.review(update.task_id, verdict="approve")
            elif event.HasField("artifact_update"):
                artifact = event.artifact_update.artifact
                print(f"artifact {artifact.name}: {get_data_parts(artifact.parts)}")
        await client.close()


async def talk(base: str, alice_token: str, bob_token: str) -> None:
    url = f"{base}/a2a/acme/bob/"
    async with (
        MumegaClient(base, alice_token) as alice,
        MumegaClient(base, bob_token) as bob,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(responder, bob)
        async with A2AAgent(url, token=alice_token) as remote_bob:
            print(f"A2A card: {remote_bob.card['name']!r} at {url}")
            print(f"ask 'what is 6 x 7?' -> {await remote_bob.ask('what is 6 x 7?')!r}")
        await hand_over_a_task(url, alice_token, alice)
        for agent in (alice, bob):  # each reads its own account
            balance = await agent.ledger.balance(str(agent.agent), "USD")
            print(f"{agent.agent}: {balance.available / 1_000_000:.2f} USD")
        tg.cancel_scope.cancel()


def run(db_url: str) -> None:
    alice_token, bob_token = anyio.run(seed, db_url)
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers are not held back for a delayed ACK
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server, thread = start_server(sock, db_url)
    try:
        if not anyio.run(_started, server):
            raise SystemExit("the server did not start")
        anyio.run(talk, base, alice_token, bob_token)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def _started(server: uvicorn.Server) -> bool:
    with anyio.move_on_after(START_S):
        while not server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, no event)
            await anyio.sleep(0.02)
        return True
    return False


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        run(f"sqlite:///{workdir}/a2a-example.db")


if __name__ == "__main__":
    main()
