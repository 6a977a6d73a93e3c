"""Remote use: a real HTTP server on 127.0.0.1 and two agents talking to it through MumegaClient.

The server runs in a background thread here so the example is one file; in production it is
``sos serve --url sqlite:///sos.db --host 127.0.0.1 --port 6060`` and the agents only need its URL and a token.
It shows the same interface and the same errors as an in-process session: send, subscribe with ack, an escrow
hold captured on delivery, a refused spoof (SOS-5004), and the blocking client for scripts.

Run: ``python examples/remote_client.py`` (needs ``pip install 'sos-kernel[server]'``). Its database lives in a
temporary directory removed at the end, so it runs again and again and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading

import anyio
import uvicorn

import sos_kernel
from mumega_sdk import MumegaClient, SyncMumegaClient
from sos_kernel.errors import Forbidden
from sos_kernel.server import create_app


async def seed(db_url: str) -> tuple[str, str, str]:
    """A tenant with an admin, a buyer and a seller; the buyer gets 5.00 USD (micros)."""
    async with sos_kernel.open(db_url) as kernel:
        _, admin = await kernel.tenants.create("shop", "growth")
        tokens = kernel.tenant("shop").tokens
        buyer = await tokens.issue(agent="agent:buyer")
        seller = await tokens.issue(agent="agent:seller")
        ledger = kernel.tenant("shop").ledger
        await ledger.open_account("system:treasury", "USD", allow_negative=True)
        for owner in ("agent:buyer", "agent:seller"):
            await ledger.open_account(owner, "USD")
        await ledger.transfer(
            id="grant", debit="system:treasury", credit="agent:buyer", amount=5_000_000, currency="USD"
        )
        return admin, buyer.secret, seller.secret


def start_server(sock: socket.socket, db_url: str) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(None, log_level="warning", lifespan="on")  # type: ignore[arg-type]
    server = uvicorn.Server(config)

    async def serve() -> None:
        async with sos_kernel.open(db_url) as kernel:
            config.app = create_app(kernel)
            await server.serve(sockets=[sock])

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    return server, thread


async def trade(url: str, buyer_token: str, seller_token: str) -> None:
    async with MumegaClient(url, buyer_token) as buyer, MumegaClient(url, seller_token) as seller:
        print(f"connected as {buyer.agent} and {seller.agent} of tenant {buyer.tenant!r}")
        # The buyer escrows 1.20 USD for the job, then asks for it.
        hold = await buyer.ledger.hold(
            id="job-1:escrow",
            debit="agent:buyer",
            credit="agent:seller",
            amount=1_200_000,
            currency="USD",
            timeout_s=600,
        )
        await buyer.bus.send("agent:buyer", "agent:seller", "please summarise report.pdf (escrow job-1:escrow)")
        try:
            await buyer.bus.send("agent:seller", "agent:buyer", "I am the seller, honest")
        except Forbidden as exc:
            print(f"spoof refused: {exc.code} {exc.message}")
        async with seller.bus.subscribe("agent:seller", visibility_timeout_s=30) as inbox:
            with anyio.fail_after(10):
                delivery = await inbox.receive()
            if delivery is None:
                raise SystemExit("the seller's inbox stayed empty")
            print(f"seller got: {delivery.message.payload.text!r} (attempt {delivery.attempt})")  # type: ignore[attr-defined]
            await delivery.ack()
        # Work done: the buyer releases the escrow to the seller (idempotent: a retry changes nothing).
        captured = await buyer.ledger.capture(hold.id)
        again = await buyer.ledger.capture(hold.id)
        print(f"captured {captured.amount} micros; retry replayed={again.replayed}")
        for agent in (buyer, seller):
            balance = await agent.ledger.balance(str(agent.agent), "USD")
            print(f"{agent.agent}: {balance.available / 1_000_000:.2f} USD")


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        run(f"sqlite:///{workdir}/remote-example.db")


def run(db_url: str) -> None:
    _, buyer_token, seller_token = anyio.run(seed, db_url)
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers are not held back for a delayed ACK
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server, thread = start_server(sock, db_url)
    try:
        with SyncMumegaClient(url, buyer_token, retries=10) as client:  # waits out the server's start-up
            print(f"server at {url}; history of agent:buyer has {len(client.bus.history('agent:buyer'))} messages")
        anyio.run(trade, url, buyer_token, seller_token)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


if __name__ == "__main__":
    main()
