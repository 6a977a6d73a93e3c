"""A Jepsen-style bank test: several processes share one ledger; afterwards nothing was lost, created or doubled.

Four worker processes (``_bank_worker.py``) make random transfers, linked batches, holds, captures and voids —
racing each other for holds — among five must-not-overdraw accounts funded from an issuer, and re-send about a
fifth of their requests unchanged. They report every outcome and every balance they read. Then, in this process:

- ``check()`` passes: per currency the balances sum to zero and each equals the fold of its transfers;
- no balance any worker read was below zero (posted or available);
- every id is recorded once, with the outcome (status, error code, sequence) its sender saw; sequences are
  1..N without a gap; a re-sent request got the first outcome back, marked replayed, and nothing more moved;
- a hold was settled (captured or voided) at most once, and its recorded state agrees;
- every balance equals a recomputation from the successful requests the workers reported.

Runs on the backends that declare ``multi_process``.
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
from sos_kernel.ledger import Ledger, Transfer

from ..conftest import requires
from ..procs import WorkerProcess
from ._bank_worker import ACCOUNTS, ISSUER, SHORT_HOLD_S, USD

WORKER = str(Path(__file__).with_name("_bank_worker.py"))
WORKERS = 4
OPS = 1500
TENANT = "bank"
FUNDING = 20_000
PAGE = 5000
OUTCOMES = {None, "SOS-7001", "SOS-7020"}  # every account exists and amounts are small: nothing else may happen

Request = dict[str, Any]


async def fund(url: str) -> None:
    async with sos_kernel.open(url) as kernel:
        ledger = kernel.tenant(TENANT).ledger
        await ledger.open_account(ISSUER, USD, allow_negative=True)
        for owner in ACCOUNTS:
            await ledger.open_account(owner, USD)
            await ledger.transfer(id=f"fund-{owner}", debit=ISSUER, credit=owner, amount=FUNDING, currency=USD)


def run_workers(url: str, go_file: Path, seed: int) -> list[dict[str, Any]]:
    """Start the workers, let them go together, and return every line they printed."""
    with ExitStack() as stack:
        workers = []
        for index in range(WORKERS):
            args = (url, TENANT, str(index), str(WORKERS), str(OPS), str(seed + index), str(go_file))
            worker = WorkerProcess(WORKER, *args)
            stack.callback(worker.stop)
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        go_file.touch()
        return [json.loads(line) for worker in workers for line in worker.finish()]


def first_attempts(requests: list[Request]) -> dict[tuple[str, ...], Request]:
    """The first attempt of each request, after checking that every re-send got the same outcome back."""
    first: dict[tuple[str, ...], Request] = {}
    for r in requests:
        assert r["code"] in OUTCOMES, r
        if not r["replay"]:
            assert tuple(r["ids"]) not in first, f"id sent twice as new: {r['ids']}"
            assert not r["replayed"], f"a new id found already recorded: {r}"
            first[tuple(r["ids"])] = r
    for r in requests:
        if r["replay"]:
            orig = first[tuple(r["ids"])]
            assert r["replayed"], f"a re-send was applied again: {r}"
            got, want = (
                (r[k] for k in ("ok", "code", "seqs", "amounts")),
                (orig[k] for k in ("ok", "code", "seqs", "amounts")),
            )
            assert list(got) == list(want), f"a re-send flipped its outcome: {orig} then {r}"
    return first


async def all_transfers(ledger: Ledger) -> dict[str, Transfer]:
    """Every recorded transfer, after checking ids are unique and sequences run 1..N without a gap."""
    found: list[Transfer] = []
    while True:
        page = await ledger.store.all_transfers(ledger.tenant, found[-1].sequence if found else 0, PAGE)
        found += page
        if len(page) < PAGE:
            break
    by_id = {t.id: t for t in found}
    assert len(by_id) == len(found), "an id is recorded twice"
    assert sorted(t.sequence for t in found) == list(range(1, len(found) + 1))
    return by_id


def check_recorded(first: dict[tuple[str, ...], Request], recorded: dict[str, Transfer]) -> None:
    """Each id is recorded with the outcome its sender saw, and nothing was recorded that nobody sent."""
    sent = {f"fund-{owner}" for owner in ACCOUNTS}
    for ids, r in first.items():
        sent.update(ids)
        for transfer_id, seq in zip(ids, r["seqs"], strict=True):
            t = recorded[transfer_id]
            assert (t.ok, t.error_code, t.sequence) == (r["ok"], r["code"], seq), (r, t)
    assert sent == set(recorded)


def expected_balances(
    first: dict[tuple[str, ...], Request], recorded: dict[str, Transfer]
) -> dict[str, tuple[int, int, int]]:
    """(posted, debits pending, credits pending) of every account, from the successful requests alone."""
    posted: Counter[str] = Counter({owner: FUNDING for owner in ACCOUNTS} | {ISSUER: -FUNDING * len(ACCOUNTS)})
    debits_pending: Counter[str] = Counter()
    credits_pending: Counter[str] = Counter()
    holds = {r["ids"][0]: r["args"] for r in first.values() if r["op"] == "hold" and r["ok"]}
    settled: dict[str, list[Request]] = {hold_id: [] for hold_id in holds}
    for r in (r for r in first.values() if r["ok"]):
        legs = r["args"]["transfers"] if r["op"] == "transfer_many" else [r["args"]]
        if r["op"] in ("transfer", "transfer_many"):
            for leg in legs:
                posted[leg["debit"]] -= leg["amount"]
                posted[leg["credit"]] += leg["amount"]
        elif r["op"] in ("capture", "void"):
            hold_id = r["args"]["hold_id"]
            settled[hold_id].append(r)
            if r["op"] == "capture":
                posted[holds[hold_id]["debit"]] -= r["amounts"][0]
                posted[holds[hold_id]["credit"]] += r["amounts"][0]
    for hold_id, args in holds.items():
        assert len(settled[hold_id]) <= 1, f"hold {hold_id} settled twice: {settled[hold_id]}"
        state, hold = recorded[hold_id].state, recorded[hold_id]
        if settled[hold_id]:
            s = settled[hold_id][0]
            want = ("posted", s["amounts"][0]) if s["op"] == "capture" else ("voided", 0)
            assert (state, hold.captured) == want, (hold_id, s, hold)
        else:
            assert state == "pending" or (state == "expired" and args["timeout_s"] == SHORT_HOLD_S), hold
        if state == "pending":
            debits_pending[args["debit"]] += args["amount"]
            credits_pending[args["credit"]] += args["amount"]
    return {o: (posted[o], debits_pending[o], credits_pending[o]) for o in [ISSUER, *ACCOUNTS]}


async def verify(url: str, lines: list[dict[str, Any]]) -> Counter[str]:
    reads = [line for line in lines if line["op"] == "balance"]
    requests = [line for line in lines if line["op"] != "balance"]
    assert len(reads) >= WORKERS * len(ACCOUNTS) * (OPS // 20)
    negative = [r for r in reads if r["posted"] < 0 or r["available"] < 0]
    assert not negative, f"a must-not-overdraw account was read below zero: {negative[:5]}"
    first = first_attempts(requests)
    async with sos_kernel.open(url) as kernel:
        ledger = kernel.tenant(TENANT).ledger
        await ledger.check()
        recorded = await all_transfers(ledger)
        check_recorded(first, recorded)
        want = expected_balances(first, recorded)
        got = {b.owner: (b.posted, b.debits_pending, b.credits_pending) for b in await ledger.balances()}
        assert got == want
    stats = Counter(f"{r['op']}{' replay' if r['replay'] else ''} {r['code'] or 'ok'}" for r in requests)
    stats["holds expired"] = sum(t.state == "expired" for t in recorded.values())
    stats["holds settled by another worker"] = sum(r["ok"] and "-x" in r["ids"][0] for r in first.values())
    return stats


@pytest.mark.slow
def test_bank_conserves_money_under_concurrent_retried_requests(
    kernel_url: str, implements: Implements, tmp_path: Path
) -> None:
    requires(implements, multi_process=True)
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    anyio.run(fund, kernel_url)
    lines = run_workers(kernel_url, tmp_path / "go", seed)
    stats = anyio.run(verify, kernel_url, lines)
    print(sorted(stats.items()))
    for case in ("transfer ok", "transfer SOS-7001", "transfer_many ok", "hold ok", "capture ok", "void ok"):
        assert stats[case], f"the run never saw {case!r}"
    assert sum(n for k, n in stats.items() if " replay " in k) > WORKERS * OPS * 0.1
