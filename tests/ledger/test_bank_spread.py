"""Three processes transfer at random over thousands of accounts of one ledger; no money is lost or made.

Every account starts with :data:`FUNDING`; the workers (``_spread_worker.py``) move random amounts, some larger
than the payer holds (refused with SOS-7001), between accounts drawn at random, so each process's kept account
states go stale under it as the others commit. Afterwards: ``check()`` passes, the balances sum to what was
funded, every id is recorded once with the outcome its sender saw, and every balance equals a recomputation from
the transfers the workers saw succeed. Then the same over a few accounts, the workers killed mid-run: every
statement stays whole and goes on. Runs on the backends that declare ``multi_process``.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements
from sos_kernel.backends.sqlite_ledger import STATEMENT_ANCHOR_EVERY

from ..conftest import requires
from ..procs import WorkerProcess
from ._spread_worker import ACCOUNTS, ISSUER, USD

WORKER = str(Path(__file__).with_name("_spread_worker.py"))
WORKERS = 3
OPS = 400
TENANT = "spread"
FUNDING = 1000
FUND_BATCH = 1000


async def fund(url: str) -> None:
    async with sos_kernel.open(url) as kernel:
        ledger = kernel.tenant(TENANT).ledger
        await ledger.open_account(ISSUER, USD, allow_negative=True)
        for owner in ACCOUNTS:
            await ledger.open_account(owner, USD)
        for start in range(0, len(ACCOUNTS), FUND_BATCH):
            await ledger.transfer_many(
                [
                    {"id": f"fund-{owner}", "debit": ISSUER, "credit": owner, "amount": FUNDING, "currency": USD}
                    for owner in ACCOUNTS[start : start + FUND_BATCH]
                ]
            )


def run_workers(url: str, go_file: Path, seed: int) -> list[dict[str, Any]]:
    with ExitStack() as stack:
        workers = []
        for index in range(WORKERS):
            worker = WorkerProcess(WORKER, url, TENANT, str(index), str(OPS), str(seed + index), str(go_file))
            stack.callback(worker.stop)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        go_file.touch()
        return [json.loads(line) for worker in workers for line in worker.finish()]


async def verify(url: str, lines: list[dict[str, Any]]) -> Counter[str]:
    async with sos_kernel.open(url) as kernel:
        ledger = kernel.tenant(TENANT).ledger
        await ledger.check()
        want: Counter[str] = Counter({owner: FUNDING for owner in ACCOUNTS} | {ISSUER: -FUNDING * len(ACCOUNTS)})
        for line in lines:
            assert line["code"] in (None, "SOS-7001"), line
            recorded = await ledger.get_transfer(line["id"])
            assert (recorded.ok, recorded.error_code) == (line["ok"], line["code"]), (line, recorded)
            if line["ok"]:
                want[line["debit"]] -= line["amount"]
                want[line["credit"]] += line["amount"]
        balances = await ledger.balances()
        assert sum(b.posted for b in balances) == 0
        assert all(b.posted >= 0 for b in balances if b.owner != ISSUER)
        assert {b.owner: b.posted for b in balances} == dict(want)
        return Counter("ok" if line["ok"] else line["code"] for line in lines)


@pytest.mark.slow
def test_three_processes_transferring_over_many_accounts_conserve_money(
    kernel_url: str, implements: Implements, tmp_path: Path
) -> None:
    requires(implements, multi_process=True)
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    anyio.run(fund, kernel_url)
    lines = run_workers(kernel_url, tmp_path / "go", seed)
    assert len(lines) == WORKERS * OPS
    outcomes = anyio.run(verify, kernel_url, lines)
    print(sorted(outcomes.items()))
    assert outcomes["ok"], "the run should see transfers applied"
    assert outcomes["SOS-7001"], "the run should see transfers refused"


KILLED_ACCOUNTS = 6
"""Few accounts, so each one's statement runs long (past several of SQLite's anchors) while the writers die."""
KILLED_AFTER = (150, 300, 450)
"""How many transfers each worker reports before it is killed, mid-run."""


@pytest.mark.slow
def test_writers_killed_mid_run_leave_every_statement_whole(
    kernel_url: str, implements: Implements, tmp_path: Path
) -> None:
    # each account's statement (on SQLite: its links and anchors, written in the transfer's own transaction) stays
    # exactly the fold of its applied transfers when the processes writing it are killed at any point, and goes
    # on from there
    requires(implements, multi_process=True)
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    anyio.run(fund, kernel_url)
    go_file = tmp_path / "go"
    with ExitStack() as stack:
        workers = []
        for index in range(len(KILLED_AFTER)):
            args = (kernel_url, TENANT, str(index), "1000000", str(seed + index), str(go_file), str(KILLED_ACCOUNTS))
            worker = WorkerProcess(WORKER, *args)
            stack.callback(worker.stop)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        go_file.touch()
        for worker, after in zip(workers, KILLED_AFTER, strict=True):
            deadline = time.monotonic() + 120
            while len(worker.lines) < after:
                assert worker.proc.poll() is None, worker.stop()
                assert time.monotonic() < deadline, "the workers made too few transfers"
                time.sleep(0.01)
            worker.proc.kill()  # SIGKILL: wherever it is, in a transaction or between two
            worker.proc.wait()

    async def verify_and_go_on() -> None:
        async with sos_kernel.open(kernel_url) as kernel:
            ledger = kernel.tenant(TENANT).ledger
            await ledger.check()  # every statement is the fold of the applied transfers
            statements = {o: await ledger.history(o, USD, limit=10_000) for o in ACCOUNTS[:KILLED_ACCOUNTS]}
            assert max(len(s) for s in statements.values()) > 2 * STATEMENT_ANCHOR_EVERY
            after = range(STATEMENT_ANCHOR_EVERY + 1)
            for i in after:
                credit = ACCOUNTS[i % KILLED_ACCOUNTS]
                await ledger.transfer(id=f"after-{i}", debit=ISSUER, credit=credit, amount=1, currency=USD)
            for owner, listed in statements.items():
                now = await ledger.history(owner, USD, limit=10_000)
                assert now[: len(listed)] == listed
                added = [f"after-{i}" for i in after if ACCOUNTS[i % KILLED_ACCOUNTS] == owner]
                assert [t.id for t in now[len(listed) :]] == added
            await ledger.check()

    anyio.run(verify_and_go_on)
