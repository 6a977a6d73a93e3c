"""Operations: the wake runner, the watcher, and the kernel's logs, metrics and traces (see docs/operations.md).

Everything here sits on the public API (a kernel, a tenant view, a session or a ``MumegaClient``), so it runs
embedded or against a remote server alike.
"""

from __future__ import annotations

from ._actions import (
    Action,
    CallableAction,
    CommandAction,
    Job,
    Outcome,
    WebhookAction,
    sign_webhook,
    verify_webhook,
)
from .wake import WakeConfig, WakeRunner

__all__ = [
    "Action",
    "CallableAction",
    "CommandAction",
    "Job",
    "Outcome",
    "WakeConfig",
    "WakeRunner",
    "WebhookAction",
    "sign_webhook",
    "verify_webhook",
]
