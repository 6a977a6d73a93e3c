"""Operations: the wake runner, the watcher, and the kernel's logs, metrics and traces (see docs/operations.md).

Everything here sits on the public API (a kernel, a tenant view, a session or a ``MumegaClient``), so it runs
embedded or against a remote server alike.
"""

from __future__ import annotations

import logging

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
from .watch import (
    AgentsRule,
    AuditRule,
    BreakersRule,
    Condition,
    DeadLettersRule,
    LedgerRule,
    PendingRule,
    Rule,
    TenantLimitsRule,
    Watcher,
    WatchView,
    default_rules,
)

__all__ = [
    "Action",
    "AgentsRule",
    "AuditRule",
    "BreakersRule",
    "CallableAction",
    "CommandAction",
    "Condition",
    "DeadLettersRule",
    "Job",
    "LedgerRule",
    "Outcome",
    "PendingRule",
    "Rule",
    "TenantLimitsRule",
    "WakeConfig",
    "WakeRunner",
    "WatchView",
    "Watcher",
    "WebhookAction",
    "default_rules",
    "sign_webhook",
    "verify_webhook",
]

# A library stays silent until its user configures logging (see ops.logs.configure_logging).
logging.getLogger("sos_kernel").addHandler(logging.NullHandler())
