"""sos-kernel: the coordination kernel under an agent operating system, as a library you import.

Typed messages (``sos_kernel.contracts``) and one error tree (``sos_kernel.errors``) are the contracts every
service and the remote SDK share.
"""

from . import contracts, errors
from .contracts import Message, parse_message
from .errors import SOSError

__version__ = "0.1.0"

__all__ = [
    "Message",
    "SOSError",
    "__version__",
    "contracts",
    "errors",
    "parse_message",
]
