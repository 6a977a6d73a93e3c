"""mumega_sdk: reach a remote sos-kernel deployment.

It shares the kernel's contracts and its error tree, so a message or an error means the same thing on both sides
of HTTP: ``mumega_sdk.errors.SOSError`` *is* ``sos_kernel.errors.SOSError``.
"""

from sos_kernel import contracts, errors
from sos_kernel.errors import SOSError, from_wire

__all__ = ["SOSError", "contracts", "errors", "from_wire"]
