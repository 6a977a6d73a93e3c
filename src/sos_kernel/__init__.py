"""sos-kernel: the coordination kernel under an agent operating system, as a library you import.

``async with sos_kernel.open("sqlite:///sos.db") as kernel:`` gives the whole kernel in-process: the typed bus,
the agent registry, tenants, tokens, capabilities and checked sessions, and the exact ledger, on one handle.
Contracts (``sos_kernel.contracts``) and one error tree (``sos_kernel.errors``) are shared by every service and by
the remote SDK; ``sos_kernel.api`` holds the service protocols that an in-process session and ``MumegaClient``
both satisfy.
"""

from . import api, contracts, errors, sync
from .api import SessionAPI
from .backends import Backend, Implements
from .bus import Bus, BusLimits, DeadLetter, Delivery, PublishReceipt, Subscription
from .contracts import Message, TypeCatalogue, parse_message
from .errors import SOSError
from .identity import AgentKey, Capability, PublicKey
from .kernel import DEFAULT_URL, Kernel, TenantView, open
from .ledger import Balance, Ledger, Transfer
from .registry import RegisteredAgent, Registry
from .session import Session

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "AgentKey",
    "Backend",
    "Balance",
    "Bus",
    "BusLimits",
    "Capability",
    "DeadLetter",
    "Delivery",
    "Implements",
    "Kernel",
    "Ledger",
    "Message",
    "PublicKey",
    "PublishReceipt",
    "RegisteredAgent",
    "Registry",
    "SOSError",
    "Session",
    "SessionAPI",
    "Subscription",
    "TenantView",
    "Transfer",
    "TypeCatalogue",
    "__version__",
    "api",
    "contracts",
    "errors",
    "open",
    "parse_message",
    "sync",
]
