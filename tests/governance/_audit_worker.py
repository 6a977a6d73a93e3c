"""One appender of the audit chain's multi-process test (``test_audit.py``), run as a separate process.

    python _audit_worker.py URL CALLS GO_FILE

Prints ``READY`` once its kernel is open, waits for ``GO_FILE``, then makes CALLS transfers (each chains its
``ledger.write`` record in the transfer's own step) and CALLS direct appends, interleaved, and prints ``done``.
"""

from __future__ import annotations

import os
import sys
import time

import anyio

import sos_kernel


async def main(url: str, calls: int, go_file: str) -> None:
    async with sos_kernel.open(url) as kernel:
        print("READY", flush=True)
        deadline = time.monotonic() + 60
        while not await anyio.Path(go_file).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal in 60 s")
            await anyio.sleep(0.005)
        me = os.getpid()
        for i in range(calls):
            await kernel.ledger.transfer(id=f"p{me}-{i}", debit="system:t", credit="agent:a", amount=1, currency="USD")
            await kernel.audit.record("test", actor=f"agent:p{me}", action="x.y", resource=f"r{i}")
        print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
