"""One client of the spread test (``test_bank_spread.py``), run as a separate process.

    python _spread_worker.py URL TENANT WORKER OPS SEED GO_FILE [ACCOUNTS_USED]

Prints ``READY`` once connected, waits for ``GO_FILE`` to exist, then makes OPS transfers between two accounts drawn
at random among :data:`ACCOUNTS` (its first ACCOUNTS_USED only, if given), and prints one JSON line per transfer:
``{"id", "debit", "credit", "amount", "ok", "code"}``. It never decides whether the ledger behaved: the test does.
"""

from __future__ import annotations

import json
import random
import sys
import time

import anyio

import sos_kernel
from sos_kernel.errors import SOSError

ISSUER = "system:bank"
ACCOUNTS = [f"agent:s{i}" for i in range(3000)]
"""More accounts than a batch names or a worker touches often, so kept states are read back from the file."""
USD = "USD"
AMOUNT_MAX = 1500


async def main(url: str, tenant: str, index: int, ops: int, seed: int, go_file: str, used: int) -> None:
    rng, accounts = random.Random(seed), ACCOUNTS[:used]
    async with sos_kernel.open(url) as kernel:
        ledger = kernel.tenant(tenant).ledger
        print("READY", flush=True)
        deadline = time.monotonic() + 60
        while not await anyio.Path(go_file).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal in 60 s")
            await anyio.sleep(0.005)
        for n in range(ops):
            debit, credit = rng.sample(accounts, 2)
            out = {"id": f"w{index}-{n}", "debit": debit, "credit": credit, "amount": rng.randint(1, AMOUNT_MAX)}
            try:
                await ledger.transfer(id=out["id"], debit=debit, credit=credit, amount=out["amount"], currency=USD)
            except SOSError as exc:
                out |= {"ok": False, "code": exc.code}
            else:
                out |= {"ok": True, "code": None}
            print(json.dumps(out, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    url, tenant, index, ops, seed, go_file = sys.argv[1:7]
    used = int(sys.argv[7]) if len(sys.argv) > 7 else len(ACCOUNTS)
    anyio.run(main, url, tenant, int(index), int(ops), int(seed), go_file, used)
