"""The A2A endpoint's bounds, per tenant (re-exported by :mod:`sos_kernel.integrations.a2a`)."""

from __future__ import annotations

from ...a2a_tasks import A2A_RUNNING_TASKS_PER_CALLER_MAX, A2A_TASKS_PER_CALLER_MAX

__all__ = ["A2A_ANSWER_BYTES_MAX", "A2A_ASKS_PER_TENANT_MAX", "A2A_ASK_TIMEOUT_S", "A2A_ASK_TIMEOUT_S_MAX", "A2A_PATH"]
__all__ += ["A2A_REQUESTS_PER_TENANT_MAX", "A2A_RUNNING_TASKS_PER_CALLER_MAX", "A2A_TASKS_PER_CALLER_MAX"]
__all__ += ["A2A_TASKS_PER_TENANT_MAX", "A2A_TASK_POLL_S", "A2A_TASK_RUNNING_MARGIN_S"]

A2A_PATH = "/a2a"
"""Where ``sos serve`` serves A2A agents: ``/a2a/{tenant}/{agent name}/``."""
A2A_REQUESTS_PER_TENANT_MAX = 32
"""A2A HTTP requests one tenant may have in flight on the server (a blocking send or a stream holds one)."""
A2A_ASKS_PER_TENANT_MAX = 32
"""A2A tasks one tenant may have waiting on an agent's reply, including those sent with ``returnImmediately``."""
A2A_TASKS_PER_TENANT_MAX = 1_000
"""A2A tasks kept per tenant for ``tasks/get``; past this the tenant's oldest finished or stale task is forgotten.
One caller keeps at most :data:`A2A_TASKS_PER_CALLER_MAX` of them (its own oldest finished or stale goes first) and
has at most :data:`A2A_RUNNING_TASKS_PER_CALLER_MAX` running."""
A2A_ASK_TIMEOUT_S = 30.0
"""How long a task waits for the agent's reply unless the request's metadata says ``timeout_s``."""
A2A_ASK_TIMEOUT_S_MAX = 300.0
"""The longest ``timeout_s`` a request may ask for."""
A2A_ANSWER_BYTES_MAX = 20 * 1024 * 1024
"""The largest answer body (raw, and once decoded) ``A2AAgent`` reads from a remote agent: the bound the server puts on
a request body (``REQUEST_BYTES_MAX``), since the answer is read whole to check its JSON before the SDK reads it."""
A2A_TASK_POLL_S = 0.25
"""How often an A2A task in task mode reads its kernel task while it follows it."""
A2A_TASK_RUNNING_MARGIN_S = 60.0
"""A task not saved again within the longest timeout plus this is stale (nobody follows it: its follow ended, or
its server is gone) and is forgotten like a finished one when room is needed; ``tasks/get`` still finds it until."""
