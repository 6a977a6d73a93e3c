"""The bus: typed, validated, at-least-once messaging between agents (see ``service`` for the guarantees)."""

from .models import BusLimits, DeadLetter, Delivery, PublishReceipt
from .service import Bus, Subscription, check_address
from .store import BusStore

__all__ = [
    "Bus",
    "BusLimits",
    "BusStore",
    "DeadLetter",
    "Delivery",
    "PublishReceipt",
    "Subscription",
    "check_address",
]
