"""sos-kernel: the coordination kernel under an agent operating system, as a library you import.

``async with sos_kernel.open("sqlite:///sos.db") as kernel:`` gives the whole kernel in-process: the typed bus
today, with the registry, identity, ledger and skills on the same handle. Contracts (``sos_kernel.contracts``)
and one error tree (``sos_kernel.errors``) are shared by every service and by the remote SDK.
"""

from . import contracts, errors, sync
from .backends import Backend, Implements
from .bus import Bus, BusLimits, DeadLetter, Delivery, PublishReceipt, Subscription
from .contracts import Message, TypeCatalogue, parse_message
from .errors import SOSError
from .kernel import DEFAULT_URL, Kernel, TenantView, open

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "Backend",
    "Bus",
    "BusLimits",
    "DeadLetter",
    "Delivery",
    "Implements",
    "Kernel",
    "Message",
    "PublishReceipt",
    "SOSError",
    "Subscription",
    "TenantView",
    "TypeCatalogue",
    "__version__",
    "contracts",
    "errors",
    "open",
    "parse_message",
    "sync",
]
