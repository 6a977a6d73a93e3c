"""One client of the bank test (``test_bank.py``), run as a separate process.

    python _bank_worker.py URL TENANT WORKER WORKERS OPS SEED GO_FILE

Prints ``READY`` once connected, waits for ``GO_FILE`` to exist, then makes OPS random requests against the
tenant's ledger — transfers, linked batches, holds, captures, voids (of its own holds and of other workers'),
deposits from the issuer — and re-sends about a fifth of its earlier requests unchanged. Every few requests it
reads every account's balance. It prints one JSON object per line:

- a request: ``{"op", "ids", "args", "replay", "ok", "code", "replayed", "seqs", "amounts"}`` — ``seqs`` are the
  recorded sequences (read back with ``get_transfer`` when the request failed), ``amounts`` what moved;
- a balance read: ``{"op": "balance", "owner", "posted", "pending", "available"}``.

It never decides whether the ledger behaved: the test does, from these lines and the ledger's final state.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import anyio

import sos_kernel
from sos_kernel.errors import SOSError
from sos_kernel.ledger import Ledger

ISSUER = "system:bank"
ACCOUNTS = [f"agent:acct-{i}" for i in range(5)]
USD = "USD"
AMOUNT_MAX = 8_000
LONG_HOLD_S = 3600
SHORT_HOLD_S = 1  # about one hold in ten: they expire while the workers run
REPLAY_SHARE = 0.2
BALANCE_EVERY = 20
RECORDED_CODES = {"SOS-7001", "SOS-7002", "SOS-7020", "SOS-4010"}  # failures the ledger records under the id


def say(item: dict[str, Any]) -> None:
    print(json.dumps(item, separators=(",", ":")), flush=True)


class Worker:
    def __init__(self, ledger: Ledger, index: int, workers: int, rng: random.Random) -> None:
        self.ledger = ledger
        self.index = index
        self.rng = rng
        self.workers = workers
        self.n = 0
        self.sent: list[tuple[str, dict[str, Any], list[str]]] = []  # every first request, for replays
        self.holds: list[str] = []
        self.used_defaults: set[str] = set()

    def new_id(self, tag: str) -> str:
        self.n += 1
        return f"w{self.index}-{tag}{self.n}"

    def pair(self) -> tuple[str, str]:
        debit, credit = self.rng.sample(ACCOUNTS, 2)
        return debit, credit

    def amount(self) -> int:
        return self.rng.randint(1, AMOUNT_MAX)

    async def call(self, op: str, args: dict[str, Any], ids: list[str], *, replay: bool) -> None:
        """Send one request and print its outcome."""
        out: dict[str, Any] = {"op": op, "ids": ids, "args": args, "replay": replay}
        try:
            result = await getattr(self.ledger, op)(**args)
        except SOSError as exc:
            out |= {"ok": False, "code": exc.code, "replayed": bool(exc.details.get("replayed")), "amounts": []}
            out["seqs"] = (
                [(await self.ledger.get_transfer(i)).sequence for i in ids] if exc.code in RECORDED_CODES else []
            )
        else:
            transfers = result if isinstance(result, list) else [result]
            out |= {"ok": True, "code": None, "replayed": all(t.replayed for t in transfers)}
            out |= {"seqs": [t.sequence for t in transfers], "amounts": [t.amount for t in transfers]}
        say(out)

    def next_request(self) -> tuple[str, dict[str, Any], list[str]]:
        roll = self.rng.random()
        if roll < 0.35:
            debit, credit = self.pair()
            transfer_id = self.new_id("t")
            return "transfer", self._move(transfer_id, debit, credit), [transfer_id]
        if roll < 0.45:
            legs = [self._move(self.new_id("b"), *self.pair()) for _ in range(self.rng.randint(2, 3))]
            return "transfer_many", {"transfers": legs}, [leg["id"] for leg in legs]
        if roll < 0.50:
            transfer_id = self.new_id("d")
            return "transfer", self._move(transfer_id, ISSUER, self.rng.choice(ACCOUNTS)), [transfer_id]
        if roll < 0.72 or not self.holds:
            return self._hold()
        if roll < 0.92:
            return self._settle_own()
        return self._settle_other()

    def _move(self, transfer_id: str, debit: str, credit: str) -> dict[str, Any]:
        return {"id": transfer_id, "debit": debit, "credit": credit, "amount": self.amount(), "currency": USD}

    def _hold(self) -> tuple[str, dict[str, Any], list[str]]:
        hold_id = self.new_id("h")
        self.holds.append(hold_id)
        timeout_s = SHORT_HOLD_S if self.rng.random() < 0.1 else LONG_HOLD_S
        return "hold", {**self._move(hold_id, *self.pair()), "timeout_s": timeout_s}, [hold_id]

    def _settle_own(self) -> tuple[str, dict[str, Any], list[str]]:
        hold_id = self.rng.choice(self.holds)
        method = self.rng.choice(["capture", "capture", "capture", "void"])
        args: dict[str, Any] = {"hold_id": hold_id}
        if method == "capture":
            args["amount"] = self.rng.choice([None, self.rng.randint(1, 2000), self.rng.randint(1, AMOUNT_MAX)])
        default = f"{hold_id}:{method}"
        if default in self.used_defaults:  # a default id is used once: a second settlement is a new request
            args["id"] = self.new_id("s")
        self.used_defaults.add(default)
        return method, args, [args.get("id", default)]

    def _settle_other(self) -> tuple[str, dict[str, Any], list[str]]:
        """Race another worker for its hold (it may not exist yet): at most one settlement may win."""
        other = self.rng.choice([w for w in range(self.workers) if w != self.index])
        guess = f"w{other}-h{self.rng.randint(1, max(1, self.n))}"
        method = self.rng.choice(["capture", "void"])
        op_id = self.new_id("x")
        return method, {"hold_id": guess, "id": op_id}, [op_id]

    async def read_balances(self) -> None:
        for owner in ACCOUNTS:
            b = await self.ledger.balance(owner, USD)
            say({"op": "balance", "owner": owner, "posted": b.posted, "pending": b.pending, "available": b.available})

    async def run(self, ops: int) -> None:
        for step in range(ops):
            if step % BALANCE_EVERY == 0:
                await self.read_balances()
            if self.sent and self.rng.random() < REPLAY_SHARE:
                op, args, ids = self.rng.choice(self.sent)
                await self.call(op, args, ids, replay=True)
                continue
            op, args, ids = self.next_request()
            self.sent.append((op, args, ids))
            await self.call(op, args, ids, replay=False)
        await self.read_balances()


async def main(url: str, tenant: str, index: int, workers: int, ops: int, seed: int, go_file: str) -> None:
    async with sos_kernel.open(url) as kernel:
        ledger = kernel.tenant(tenant).ledger
        print("READY", flush=True)
        deadline = time.monotonic() + 60
        while not await anyio.Path(go_file).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal in 60 s")
            await anyio.sleep(0.005)
        await Worker(ledger, index, workers, random.Random(seed)).run(ops)


if __name__ == "__main__":
    url, tenant, index, workers, ops, seed, go_file = sys.argv[1:8]
    anyio.run(main, url, tenant, int(index), int(workers), int(ops), int(seed), go_file)
