"""The ledger: exact, idempotent, double-entry money in integer micros (see ``service`` for the guarantees)."""

from .models import (
    AMOUNT_MICROS_MAX,
    Account,
    Balance,
    Price,
    Transfer,
    TransferRequest,
    Transmutation,
    UsageSummaryRow,
)
from .service import BATCH_MAX, HOLD_TIMEOUT_S_MAX, Ledger
from .store import Applied, LedgerStore, UsageQuery

__all__ = [
    "AMOUNT_MICROS_MAX",
    "BATCH_MAX",
    "HOLD_TIMEOUT_S_MAX",
    "Account",
    "Applied",
    "Balance",
    "Ledger",
    "LedgerStore",
    "Price",
    "Transfer",
    "TransferRequest",
    "Transmutation",
    "UsageQuery",
    "UsageSummaryRow",
]
