"""A paid invocation on SQLite is one transaction: the charge and the count commit together or not at all.

The failure is a real one, raised by the engine in the invocation's last step (a trigger on the invocation ids
table), after the ledger's linked batch has been written in the same transaction. (SQLite only: the other engines'
steps are held by ``test_invocation_step.py`` and ``test_invocation_redis.py``; see ``SkillStore.invoke``.)
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import sos_kernel
from sos_kernel.errors import BackendFailure, IdempotencyConflict, NotFound

pytestmark = pytest.mark.anyio

CARD = {
    "schema_version": "1",
    "id": "paid",
    "name": "Paid",
    "version": "1.0.0",
    "author_agent": "agent:author",
    "created_at": "2026-11-01T00:00:00Z",
    "input_schema": {"type": "object"},
    "output_schema": {"type": "object"},
    "runtime": {"entry_point": "paid.py"},
    "commerce": {
        "price_per_call_micros": 1_000,
        "currency": "USD",
        "revenue_split": {"author": 0.85, "operator": 0.10, "network": 0.05},
    },
}
FUNDS = 1_000_000
COUNT_FAILS = (
    "CREATE TRIGGER count_fails BEFORE INSERT ON skill_invocations BEGIN SELECT RAISE(ABORT, 'count failed'); END"
)


def sql(path: Path, statement: str) -> None:
    """Run one statement on the file from a connection of its own."""
    with closing(sqlite3.connect(path)) as c:
        c.execute(statement)
        c.commit()


async def test_a_failure_in_the_count_leaves_no_transfer_and_a_retry_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "sos.db"
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        led, skills = kernel.ledger, kernel.skills
        await led.open_account("system:treasury", "USD", allow_negative=True)
        for owner in ("agent:caller", "agent:author", "system:operator", "system:network"):
            await led.open_account(owner, "USD")
        await led.transfer(id="fund", debit="system:treasury", credit="agent:caller", amount=FUNDS, currency="USD")
        await skills.publish(CARD)
        sql(path, COUNT_FAILS)
        with pytest.raises(BackendFailure):
            await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="i1")
        assert (await led.balance("agent:caller", "USD")).posted == FUNDS
        for part in ("author", "operator", "network"):
            with pytest.raises(NotFound):
                await led.get_transfer(f"skill:i1:{part}")
        assert (await skills.get("paid")).earnings.total_invocations == 0  # type: ignore[union-attr]
        await led.check()

        sql(path, "DROP TRIGGER count_fails")
        first = await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="i1")
        again = await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="i1")
        assert (first.replayed, again.replayed) == (False, True)
        assert first.payouts == again.payouts == {"author": 850, "operator": 100, "network": 50}
        assert [t.id for t in first.transfers] == [t.id for t in again.transfers]
        assert (await led.balance("agent:caller", "USD")).posted == FUNDS - 1_000
        earnings = (await skills.get("paid")).earnings
        assert earnings is not None
        assert (earnings.total_invocations, earnings.total_earned_micros) == (1, 1_000)
        await led.check()


async def test_a_charge_for_an_id_counted_before_bindings_existed_is_undone_with_4009(tmp_path: Path) -> None:
    path = tmp_path / "sos.db"
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        led, skills = kernel.ledger, kernel.skills
        await led.open_account("system:treasury", "USD", allow_negative=True)
        await led.open_account("agent:caller", "USD")
        await led.transfer(id="fund", debit="system:treasury", credit="agent:caller", amount=FUNDS, currency="USD")
        await skills.publish(CARD)
        # an id counted by a release that kept no binding: only its row in the counted ids
        sql(path, "INSERT INTO skill_invocations VALUES ('default', 'old', NULL, 1)")
        with pytest.raises(IdempotencyConflict) as caught:
            await skills.record_invocation("paid", caller="agent:caller", tenant="default", invocation_id="old")
        assert caught.value.code == "SOS-4009"
        assert (await led.balance("agent:caller", "USD")).posted == FUNDS
        for part in ("author", "operator", "network"):
            with pytest.raises(NotFound):
                await led.get_transfer(f"skill:old:{part}")
        assert (await skills.get("paid")).earnings.total_invocations == 0  # type: ignore[union-attr]
        await led.check()
