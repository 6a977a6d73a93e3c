"""The ledger: exact, idempotent, double-entry money in integer micros (see ``service`` for the guarantees)."""

from .models import (
    AMOUNT_MICROS_MAX,
    Account,
    Balance,
    Price,
    Rate,
    Transfer,
    TransferRequest,
    Transmutation,
    UsageSummaryRow,
)
from .service import BATCH_MAX, EXCHANGE_ACCOUNT, HOLD_TIMEOUT_S_MAX, RATE_TERM_MAX, RATES_PER_PAIR_MAX, Ledger
from .store import Applied, LedgerStore, UsageQuery

__all__ = [
    "AMOUNT_MICROS_MAX",
    "BATCH_MAX",
    "EXCHANGE_ACCOUNT",
    "HOLD_TIMEOUT_S_MAX",
    "RATES_PER_PAIR_MAX",
    "RATE_TERM_MAX",
    "Account",
    "Applied",
    "Balance",
    "Ledger",
    "LedgerStore",
    "Price",
    "Rate",
    "Transfer",
    "TransferRequest",
    "Transmutation",
    "UsageQuery",
    "UsageSummaryRow",
]
