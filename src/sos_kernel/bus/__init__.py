"""The bus: typed, validated, at-least-once messaging between agents (see ``service`` for the guarantees)."""

from .models import BusLimits, DeadLetter, PublishReceipt
from .service import (
    DEFAULT_INBOX_GROUP,
    NACK_REASON_CHARS_MAX,
    SETTLED_REPLY,
    UNHELD_REPLY,
    Bus,
    Delivery,
    Subscription,
    SubscriptionSpec,
    check_address,
    check_nack_delay,
    check_nack_reason,
    resolve_subscription,
    split_message,
)
from .store import BusStore

__all__ = [
    "DEFAULT_INBOX_GROUP",
    "NACK_REASON_CHARS_MAX",
    "SETTLED_REPLY",
    "UNHELD_REPLY",
    "Bus",
    "BusLimits",
    "BusStore",
    "DeadLetter",
    "Delivery",
    "PublishReceipt",
    "Subscription",
    "SubscriptionSpec",
    "check_address",
    "check_nack_delay",
    "check_nack_reason",
    "resolve_subscription",
    "split_message",
]
