"""mumega_sdk: reach a remote sos-kernel deployment.

It shares the kernel's contracts and its error tree, so a message or an error means the same thing on both sides
of HTTP: ``mumega_sdk.errors.SOSError`` *is* ``sos_kernel.errors.SOSError``. :class:`MumegaClient` and its
blocking twin :class:`SyncMumegaClient` (which need httpx, from ``pip install 'sos-kernel[client]'``) are imported
on first use, so the contracts and errors work without it.
"""

from typing import TYPE_CHECKING, Any

from sos_kernel import contracts, errors
from sos_kernel.errors import SOSError, from_wire

if TYPE_CHECKING:
    from .blocking import SyncMumegaClient
    from .client import MumegaClient

__all__ = ["MumegaClient", "SOSError", "SyncMumegaClient", "contracts", "errors", "from_wire"]


def __getattr__(name: str) -> Any:
    if name in ("MumegaClient", "SyncMumegaClient"):
        try:
            from . import blocking, client
        except ImportError as exc:
            raise errors.MissingDependency(
                f"{name} needs httpx ({exc.name} is missing)",
                details={"pip": "pip install 'sos-kernel[client]'"},
            ) from exc
        return client.MumegaClient if name == "MumegaClient" else blocking.SyncMumegaClient
    raise AttributeError(f"module 'mumega_sdk' has no attribute {name!r}")
