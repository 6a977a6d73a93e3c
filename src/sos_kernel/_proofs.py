"""Proofs, checked by mypy only: the trusted services, a tenant view, a session and a subscription have the
surfaces of the Protocols in :mod:`sos_kernel.api`. Nothing imports this module; it exists to be type-checked."""

from __future__ import annotations

from .api import (
    AuditAPI,
    BusAPI,
    ChatStreamAPI,
    EngineAPI,
    GovernanceAPI,
    LedgerAPI,
    MemoryAPI,
    ProvidersAPI,
    RegistryAPI,
    ServicesAPI,
    SessionAPI,
    SkillsAPI,
    SubscriptionAPI,
    TasksAPI,
)
from .audit import Audit
from .bus import Bus, Subscription
from .governance import Governance
from .kernel import TenantView
from .ledger import Ledger
from .memory import Memory
from .providers import ChatStream, Engine, Providers
from .registry import Registry
from .session import Session
from .skills import Skills
from .tasks import Tasks

__all__: list[str] = []


def _session_is_an_api(session: Session) -> SessionAPI:
    return session


def _tenant_view_has_the_services(view: TenantView) -> ServicesAPI:
    return view


def _trusted_services(
    bus: Bus, registry: Registry, ledger: Ledger, skills: Skills
) -> tuple[BusAPI, RegistryAPI, LedgerAPI, SkillsAPI]:
    return bus, registry, ledger, skills


def _subscription(sub: Subscription) -> SubscriptionAPI:
    return sub


def _providers_and_engine(providers: Providers, engine: Engine) -> tuple[ProvidersAPI, EngineAPI]:
    return providers, engine


def _chat_stream(stream: ChatStream) -> ChatStreamAPI:
    return stream


def _trusted_tasks(tasks: Tasks) -> TasksAPI:
    return tasks


def _trusted_memory(memory: Memory) -> MemoryAPI:
    return memory


def _governance_services(governance: Governance, audit: Audit) -> tuple[GovernanceAPI, AuditAPI]:
    return governance, audit
