"""The blocking facade and trio support, over every backend."""

from __future__ import annotations

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.contracts import SendMessage, SendPayload
from sos_kernel.errors import UnknownType

from ..conftest import requires


def test_sync_facade_has_the_same_semantics_and_errors(kernel_url: str) -> None:
    with sos_kernel.sync.open(kernel_url) as kernel:
        receipt = kernel.bus.send("agent:alice", "agent:bob", "hello")
        assert kernel.bus.publish(
            SendMessage(
                source="agent:alice", target="agent:bob", payload=SendPayload(text="x"), message_id=receipt.message_id
            )
        ).duplicate
        with pytest.raises(UnknownType):
            kernel.bus.publish({"type": "sned"})
        with kernel.bus.subscribe("agent:bob") as sub:
            d = sub.receive(timeout_s=5)
            assert d is not None
            assert d.message.message_id == receipt.message_id
            assert d.ack() is True
            assert sub.receive(timeout_s=0.2) is None
            kernel.bus.send("agent:alice", "agent:bob", "and back?")
            d = sub.receive(timeout_s=5)
            assert d is not None
            answer = d.reply("back")  # the answer, and the ack with it
            assert d.ack() is False
        assert [m.payload.text for m in kernel.bus.history("agent:alice")] == ["back"]
        assert answer.address == "agent:alice"
        assert [m.message_id for m in kernel.bus.history("agent:bob")][:1] == [receipt.message_id]
        assert kernel.tenant("acme").bus.history("agent:bob") == []
    kernel.close()


def test_trio_runs_the_same_bus(kernel_url: str, implements: Implements) -> None:
    requires(implements, trio=True)

    async def main() -> list[str]:
        async with sos_kernel.open(kernel_url) as kernel:
            await kernel.bus.send("agent:alice", "agent:bob", "over trio")
            async with kernel.bus.subscribe("agent:bob") as sub:
                d = await sub.receive(timeout_s=5)
                assert d is not None
                await d.ack()
                return [d.message.payload.text]  # type: ignore[attr-defined]

    assert anyio.run(main, backend="trio") == ["over trio"]


def test_sync_facade_reaches_every_service_and_sessions(kernel_url: str) -> None:
    from sos_kernel.errors import Forbidden, InsufficientFunds

    with sos_kernel.sync.open(kernel_url) as kernel:
        kernel.ledger.open_account("system:treasury", "USD", allow_negative=True)
        kernel.ledger.open_account("agent:alice", "USD")
        kernel.ledger.transfer(id="t1", debit="system:treasury", credit="agent:alice", amount=5, currency="USD")
        assert kernel.ledger.balance("agent:alice", "USD").posted == 5
        with pytest.raises(InsufficientFunds):
            kernel.ledger.transfer(id="t2", debit="agent:alice", credit="system:treasury", amount=9, currency="USD")
        _, admin = kernel.tenants.create("acme")
        issued = kernel.tenant("acme").tokens.issue(agent="agent:alice")
        alice = kernel.session(issued.secret)
        alice.bus.send("agent:alice", "agent:bob", "hi")
        with pytest.raises(Forbidden):
            alice.bus.send("agent:bob", "agent:alice", "spoof")
        assert kernel.session(admin).slug == "acme"
