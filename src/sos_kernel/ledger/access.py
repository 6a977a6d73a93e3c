"""The ledger's access rules that need the store, and so cannot be declarations (see :mod:`sos_kernel.operations`).

Each rule runs after the declared checks (token, scope) and makes the call itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, SettlementRejected
from ..operations import reserved_free, scoped_id

if TYPE_CHECKING:
    from ..guard import Caller
    from .models import Transfer
    from .service import Ledger

__all__ = ["capture", "get_transfer", "transfer_many", "void"]

ADMIN = "ledger:admin"


def _id(caller: Caller, id: Any) -> Any:
    """An id the caller records: in its namespace, never one the kernel reserves."""
    return id if caller.principal.allows(ADMIN) else scoped_id(caller.principal.agent, reserved_free(id))


def _read_id(caller: Caller, id: Any) -> Any:
    """An id the caller looks up: its own namespace first."""
    return id if caller.principal.allows(ADMIN) else scoped_id(caller.principal.agent, id)


async def transfer_many(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> list[Transfer]:
    """Every debit is the caller's own and every id in its namespace (``ledger:admin``: any)."""
    transfers = arguments["transfers"]
    if not isinstance(transfers, Sequence) or caller.principal.allows(ADMIN):
        return await ledger.transfer_many(transfers)  # the ledger refuses what is not a batch
    scoped: list[Any] = []
    for t in transfers:
        if isinstance(t, Mapping):
            caller.own("account", "debit", t.get("debit", ""))
            t = {**t, "id": _id(caller, t["id"])} if "id" in t else t
        scoped.append(t)
    return await ledger.transfer_many(scoped)


async def _party_transfer(caller: Caller, ledger: Ledger, id: Any) -> Transfer | None:
    """The transfer ``id`` names for the caller (its own namespace first), if the caller is a party to it."""
    principal = caller.principal
    scoped = _read_id(caller, id)
    for candidate in (scoped, id) if scoped != id else (id,):
        try:
            found = await ledger.get_transfer(candidate)
        except NotFound:
            continue
        if principal.allows(ADMIN) or principal.agent in (found.debit, found.credit):
            return found
    return None


async def get_transfer(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> Transfer:
    """A party to the transfer, or ``ledger:admin``; to anyone else a transfer is answered as a missing one."""
    id = arguments["id"]
    found = await _party_transfer(caller, ledger, id)
    if found is None:
        raise NotFound(f"no transfer {id}", details={"id": id})
    return found


async def _hold_of(caller: Caller, ledger: Ledger, hold_id: Any) -> Any:
    """The id of the hold the caller may settle: the payer's own, or any for ``ledger:admin``."""
    if caller.principal.allows(ADMIN):
        return hold_id  # the ledger itself refuses (and records) a missing hold
    hold = await _party_transfer(caller, ledger, hold_id)
    if hold is None:  # missing and not the caller's are answered alike
        raise SettlementRejected(f"no hold {hold_id}", details={"hold_id": hold_id})
    caller.own("account", "debit", hold.debit)
    return hold.id


async def capture(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> Transfer:
    """Only the payer of the hold (or ``ledger:admin``) settles it."""
    hold_id = await _hold_of(caller, ledger, arguments["hold_id"])
    op_id = arguments.get("id")
    return await ledger.capture(hold_id, arguments.get("amount"), id=None if op_id is None else _id(caller, op_id))


async def void(caller: Caller, ledger: Ledger, arguments: dict[str, Any]) -> Transfer:
    """Only the payer of the hold (or ``ledger:admin``) releases it."""
    hold_id = await _hold_of(caller, ledger, arguments["hold_id"])
    op_id = arguments.get("id")
    return await ledger.void(hold_id, id=None if op_id is None else _id(caller, op_id))
