"""The operator dashboard (``/ui/``) and the public marketplace (``/marketplace``), served by ``sos serve``.

Server-rendered HTML (Jinja2, autoescaped) with the package's own CSS and a little JavaScript; nothing is loaded
from anywhere else. The dashboard signs in a tenant admin token once and keeps a server-side session (see
:mod:`._sessions`); every page reads through that admin's kernel session, so the declared operations' checks,
tenant boundary, policies and audit apply to each read and to the one write (replaying a dead letter). The
marketplace shows only the ``marketplace_listed`` skills of active tenants (see :mod:`._market`). See
docs/dashboard.md.
"""

from __future__ import annotations

from ._data import UI_ADDRESSES_SCAN_MAX, UI_AGENTS_MAX
from ._market import (
    MARKETPLACE_CACHE_S,
    MARKETPLACE_PER_TENANT_MAX,
    MARKETPLACE_QUERY_CHARS_MAX,
    MARKETPLACE_RESULTS_MAX,
    MARKETPLACE_TENANTS_MAX,
    Marketplace,
)
from ._money import format_micros, parse_micros
from ._routes import COOKIE, CSRF_COOKIE, FORM_BYTES_MAX, FORM_FIELDS_MAX, SECURITY_HEADERS, UIState, router
from ._sessions import UI_SESSION_IDLE_S, UI_SESSION_TTL_S, UI_SESSIONS_MAX, UI_SESSIONS_PER_TENANT_MAX, UISessions

__all__ = [
    "COOKIE",
    "CSRF_COOKIE",
    "FORM_BYTES_MAX",
    "FORM_FIELDS_MAX",
    "MARKETPLACE_CACHE_S",
    "MARKETPLACE_PER_TENANT_MAX",
    "MARKETPLACE_QUERY_CHARS_MAX",
    "MARKETPLACE_RESULTS_MAX",
    "MARKETPLACE_TENANTS_MAX",
    "SECURITY_HEADERS",
    "UI_ADDRESSES_SCAN_MAX",
    "UI_AGENTS_MAX",
    "UI_SESSIONS_MAX",
    "UI_SESSIONS_PER_TENANT_MAX",
    "UI_SESSION_IDLE_S",
    "UI_SESSION_TTL_S",
    "Marketplace",
    "UISessions",
    "UIState",
    "format_micros",
    "parse_micros",
    "router",
]
