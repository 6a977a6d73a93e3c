"""Three processes transfer at random over thousands of accounts of one ledger; no money is lost or made.

Every account starts with :data:`FUNDING`; the workers (``_spread_worker.py``) move random amounts, some larger
than the payer holds (refused with SOS-7001), between accounts drawn at random, so each process's kept account
states go stale under it as the others commit. Afterwards: ``check()`` passes, the balances sum to what was
funded, every id is recorded once with the outcome its sender saw, and every balance equals a recomputation from
the transfers the workers saw succeed. Runs on the backends that declare ``multi_process``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.backends import Implements

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
