"""A2A (the Agent2Agent protocol, ``a2a-sdk``): kernel agents served as A2A agents, and A2A agents as kernel peers.

Serving: an agent opts in with ``await registry.register(card, a2a=True)``; ``sos serve`` (or :func:`mount` on an
app from :func:`sos_kernel.server.create_app`) then serves it at ``/a2a/{tenant}/{agent name}/``, its card at that
base plus ``a2a.utils.AGENT_CARD_WELL_KNOWN_PATH``. A message to it is an ``ask`` to its inbox from the caller's
agent; its reply is the answer. A message with ``metadata.sos_task`` is a kernel task the caller creates (or
attaches to) and the A2A task follows it (see :mod:`._kernel_tasks`). Tasks are kept in the kernel's store.
See :mod:`._server` for the guarantees and :mod:`._limits` for the bounds.

Calling: :class:`A2AAgent` is a remote A2A agent as a peer (``ask``, ``send``, ``get_task``, and ``serve`` to
answer a kernel address on its behalf).

Needs the ``a2a`` extra: ``pip install 'sos-kernel[a2a]'``.
"""

from __future__ import annotations

from ...errors import MissingDependency

try:
    import a2a.server.request_handlers  # noqa: F401  (the SDK, not this package: imports here are absolute)
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependency(
        f"A2A needs the 'a2a' extra ({exc.name} is missing)",
        details={"pip": "pip install 'sos-kernel[a2a]'"},
    ) from exc

from ._client import A2AAgent
from ._kernel_tasks import SQUAD_TASK_STATES, TASK_CREATE_FIELDS, TASK_HEADER, TASK_KEY
from ._limits import (
    A2A_ANSWER_BYTES_MAX,
    A2A_ASK_TIMEOUT_S,
    A2A_ASK_TIMEOUT_S_MAX,
    A2A_ASKS_PER_TENANT_MAX,
    A2A_PATH,
    A2A_REQUESTS_PER_TENANT_MAX,
    A2A_TASK_POLL_S,
    A2A_TASKS_PER_TENANT_MAX,
)
from ._server import A2AEndpoint, mount
from ._store import KernelTaskStore

__all__ = [
    "A2A_ANSWER_BYTES_MAX",
    "A2A_ASKS_PER_TENANT_MAX",
    "A2A_ASK_TIMEOUT_S",
    "A2A_ASK_TIMEOUT_S_MAX",
    "A2A_PATH",
    "A2A_REQUESTS_PER_TENANT_MAX",
    "A2A_TASKS_PER_TENANT_MAX",
    "A2A_TASK_POLL_S",
    "SQUAD_TASK_STATES",
    "TASK_CREATE_FIELDS",
    "TASK_HEADER",
    "TASK_KEY",
    "A2AAgent",
    "A2AEndpoint",
    "KernelTaskStore",
    "mount",
]
