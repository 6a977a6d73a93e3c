"""One client of the failover test (``test_failover.py``), run as a separate process.

    python _failover_worker.py URL WORKER TENANTS OPS GO_FILE

Prints ``READY`` once connected, waits for ``GO_FILE``, then makes OPS steps; a step publishes one message and
makes one transfer (1 micro from the tenant's issuer to its sink) in a tenant chosen round-robin. Every failed
write is sent again with the same id until it is acknowledged (the ids make a resend safe) or RETRY_FOR_S passes.
It prints one JSON line per acknowledged write: ``{"k": "pub"|"xfer", "t": tenant, "id": id}``, then ``DONE``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import sos_kernel
from sos_kernel.contracts import SendMessage, SendPayload
from sos_kernel.errors import SOSError

ISSUER = "system:issuer"
SINK = "agent:sink"
USD = "USD"
RETRY_FOR_S = 60.0
"""How long one write is retried (a failover takes a few seconds; a write past this is reported unacknowledged)."""


def tenant_name(index: int) -> str:
    return f"fo{index}"


async def acknowledged(write: Callable[[], Awaitable[Any]]) -> bool:
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            await write()
            return True
        except SOSError as exc:
            if not exc.retryable or time.monotonic() > deadline:
                print(json.dumps({"k": "error", "code": exc.code, "message": exc.message}), file=sys.stderr)
                return False
        await anyio.sleep(0.05)


async def main(url: str, worker: int, tenants: int, ops: int, go: Path) -> None:
    async with sos_kernel.open(url) as kernel:
        print("READY", flush=True)
        while not await anyio.Path(go).exists():  # noqa: ASYNC110 -- another process creates it
            await anyio.sleep(0.01)
        for step in range(ops):
            tenant = tenant_name((worker + step * 7) % tenants)
            view = kernel.tenant(tenant)
            ident = f"w{worker}-{step}"
            message = SendMessage(
                source="agent:w",
                target=SINK,
                payload=SendPayload(text=ident),
                message_id=str(uuid.uuid5(uuid.NAMESPACE_URL, ident)),
            )
            if await acknowledged(lambda view=view, message=message: view.bus.publish(message)):
                print(json.dumps({"k": "pub", "t": tenant, "id": message.message_id}), flush=True)

            async def transfer(view: Any = view, ident: str = ident) -> Any:
                return await view.ledger.transfer(id=f"x-{ident}", debit=ISSUER, credit=SINK, amount=1, currency=USD)

            if await acknowledged(transfer):
                print(json.dumps({"k": "xfer", "t": tenant, "id": f"x-{ident}"}), flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    url, worker, tenants, ops, go = sys.argv[1:]
    anyio.run(main, url, int(worker), int(tenants), int(ops), Path(go))
