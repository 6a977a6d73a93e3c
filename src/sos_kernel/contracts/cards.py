"""Cards: AgentCard v1, SkillCard v1, UsageEvent v1 and ProviderCard v1, compatible with the SOS v0.4.1 schemas.

Each validates what its reference schema validates, plus the invariants SOS enforces beside the schema:
a SkillCard's ``revenue_split`` fields that are set sum to 1.0 ± 0.001, and a ``marketplace_listed`` skill
names its ``runtime.entry_point``. (Publishing asks more of a split: see ``sos_kernel.skills.check_split``.)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, StringConstraints, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._types import (
    AgentAddress,
    AgentName,
    Bool,
    Currency,
    Int,
    IntegralFloat,
    JsonObject,
    KeepsNulls,
    NonNegInt,
    Number,
    Str,
    Timestamp,
    WireModel,
    WireRequired,
    utcnow,
)
from .a2a import agent_card_to_a2a

__all__ = [
    "REVENUE_SPLIT_TOLERANCE",
    "AgentCard",
    "ProviderCard",
    "ProviderCircuitBreaker",
    "SkillCard",
    "SkillCommerce",
    "SkillEarnings",
    "SkillLineage",
    "SkillRevenueSplit",
    "SkillRuntime",
    "SkillVerification",
    "UsageEvent",
]

REVENUE_SPLIT_TOLERANCE = 0.001
"""How far the set ``revenue_split`` fields may sum from 1.0."""

_USAGE_TIME_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def _usage_time_shape(value: Any) -> Any:
    # UsageEvent's timestamps also carry a pattern: an upper-case 'T' and whole seconds up front.
    if isinstance(value, str) and not _USAGE_TIME_PREFIX.match(value):
        raise PydanticCustomError("timestamp_shape", "timestamp must look like YYYY-MM-DDTHH:MM:SS...")
    return value


def _new_uuid() -> str:
    return str(uuid.uuid4())


SemVer3 = Annotated[str, StringConstraints(strict=True, pattern=r"^\d+\.\d+\.\d+$")]
NullableStr = Str | None


class AgentCard(KeepsNulls, WireRequired):
    """An agent's published self-description (SOS Agent Card v1).

    ``registered_at`` and ``last_seen`` default to now when built in Python; fields SOS allows to be ``null``
    keep an explicit ``null`` on the wire.
    """

    wire_required: ClassVar[frozenset[str]] = frozenset(
        {"agent_card_version", "name", "tool", "type", "role", "registered_at", "last_seen"}
    )
    nullable: ClassVar[frozenset[str]] = frozenset(
        {
            "model",
            "session",
            "project",
            "tenant_subdomain",
            "plan",
            "last_cache_hit_rate",
            "pid",
            "host",
            "cwd",
            "summary",
        }
    )

    agent_card_version: SemVer3 = "1.0.0"
    name: Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z][a-z0-9-]*$", min_length=2, max_length=64)]
    tool: Literal["claude-code", "codex", "gemini-cli", "openclaw", "hermes", "custom-http", "sdk", "cron", "service"]
    type: Literal["tmux", "openclaw", "remote", "webhook", "service"]
    role: Literal["coordinator", "executor", "specialist", "oracle", "medic", "service", "human"]
    model: NullableStr = None
    session: NullableStr = None
    skills: list[Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z][a-z0-9_-]*$")]] | None = None
    squads: list[AgentName] | None = None
    project: NullableStr = None
    tenant_subdomain: NullableStr = None
    plan: Literal["starter", "growth", "scale", "enterprise"] | None = None
    warm_policy: Literal["warm", "cold"] | None = None
    cache_ttl_s: Annotated[int, Field(strict=True, ge=0, le=86400), IntegralFloat] | None = None
    last_cache_hit_rate: Annotated[float, Field(strict=True, ge=0, le=1)] | None = None
    pid: Int | None = None
    host: NullableStr = None
    cwd: NullableStr = None
    registered_at: Timestamp = Field(default_factory=utcnow)
    last_seen: Timestamp = Field(default_factory=utcnow)
    summary: Annotated[str, StringConstraints(strict=True, max_length=280)] | None = None

    @field_validator("skills", "squads")
    @classmethod
    def _unique_items(cls, items: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # A field validator, so the error is located at the list, not at the card.
        if items is not None and len(set(items)) != len(items):
            raise PydanticCustomError("unique_items", "{field} must not repeat an item", {"field": info.field_name})
        return items

    def to_a2a(
        self,
        *,
        url: str | None = None,
        endpoints: Sequence[Mapping[str, str]] = (),
        public_key: str | None = None,
        key_id: str | None = None,
    ) -> dict[str, Any]:
        """This card as an A2A AgentCard (a JSON dict the ``a2a-sdk`` parses); see ``sos_kernel.contracts.a2a``.

        An A2A card needs somewhere to reach the agent: give ``url`` or ``endpoints`` (SOS-4005 otherwise).
        """
        return agent_card_to_a2a(self, url=url, endpoints=endpoints, public_key=public_key, key_id=key_id)


class SkillLineage(WireModel):
    """One upstream skill this one derives from, and how."""

    parent_skill_id: Str
    relation: Literal["forked", "refined", "composed", "inspired_by"]
    notes: Annotated[str, StringConstraints(strict=True, max_length=500)] | None = None


class SkillEarnings(WireModel):
    """Running totals (a materialised view; the ledger is the source of truth)."""

    total_invocations: NonNegInt | None = None
    total_earned_micros: NonNegInt | None = None
    currency: Currency = "USD"
    last_invocation_at: Timestamp | None = None
    invocations_by_tenant: dict[str, NonNegInt] | None = None


class SkillVerification(WireModel):
    """How the skill's outputs have been checked."""

    status: Literal["unverified", "auto_verified", "human_verified", "disputed"] = "unverified"
    sample_output_refs: (
        Annotated[list[Annotated[str, StringConstraints(strict=True, min_length=1)]], Field(max_length=50)] | None
    ) = None
    verified_by: (
        list[Annotated[str, StringConstraints(strict=True, pattern=r"^(agent|human):[a-z][a-z0-9-]*$")]] | None
    ) = None
    verified_at: Timestamp | None = None
    dispute_reason: Annotated[str, StringConstraints(strict=True, max_length=2000)] | None = None


Fraction = Annotated[Number, Field(ge=0, le=1)]


class SkillRevenueSplit(WireModel):
    """Fractions of the price for author, operator and network; the fields set sum to 1.0 ± 0.001.

    The tolerance is the SOS schema's, so a card another SOS node wrote still parses; paying by it is stricter.
    ``skills.publish`` refuses a split whose operator and network sum over 1 as exact decimals (0.5005 + 0.5005 is
    within the tolerance but would charge more than the price), and the author is paid the rest of the price.
    """

    author: Fraction | None = None
    operator: Fraction | None = None
    network: Fraction | None = None

    @model_validator(mode="after")
    def _sums_to_one(self) -> SkillRevenueSplit:
        parts = [p for p in (self.author, self.operator, self.network) if p is not None]
        total = sum(parts)
        if abs(total - 1.0) > REVENUE_SPLIT_TOLERANCE:
            raise PydanticCustomError(
                "revenue_split_sum",
                "revenue_split fields must sum to 1.0 (±{tol}), got {total}",
                {"tol": REVENUE_SPLIT_TOLERANCE, "total": round(total, 6)},
            )
        return self


class SkillCommerce(WireModel):
    """Price per call in integer micros and how it is split."""

    price_per_call_micros: NonNegInt | None = None
    currency: Currency = "USD"
    revenue_split: SkillRevenueSplit | None = None
    marketplace_listed: Bool = False


class SkillRuntime(WireModel):
    """Where and how the skill executes."""

    entry_point: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=500)] | None = None
    backend: (
        Literal["claude-code", "cma", "openai-agents-sdk", "langgraph", "crewai", "local-python", "custom"] | None
    ) = None
    timeout_seconds: Annotated[int, Field(strict=True, ge=1, le=3600), IntegralFloat] | None = None
    memory_mb: Annotated[int, Field(strict=True, ge=64), IntegralFloat] | None = None


def _is_schema_document(value: Any) -> Any:
    if isinstance(value, dict) and not ({"$schema", "type"} & value.keys()):
        raise PydanticCustomError("schema_document", "a JSON Schema document needs '$schema' or 'type'")
    return value


SchemaDocument = Annotated[JsonObject, BeforeValidator(_is_schema_document)]


class SkillCard(WireRequired):
    """A skill with its provenance, verification, earnings and commerce terms (SkillCard v1)."""

    wire_required: ClassVar[frozenset[str]] = frozenset(
        {"schema_version", "id", "name", "version", "author_agent", "created_at", "input_schema", "output_schema"}
    )

    schema_version: Literal["1"] = "1"
    id: Annotated[
        str,
        StringConstraints(
            strict=True,
            pattern=r"^[a-z0-9][a-z0-9_-]{2,63}$|^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        ),
    ]
    name: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]
    version: Annotated[
        str,
        StringConstraints(strict=True, pattern=r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"),
    ]
    description: Annotated[str, StringConstraints(strict=True, max_length=4000)] | None = None
    tags: (
        Annotated[
            list[Annotated[str, StringConstraints(strict=True, min_length=1, max_length=40)]], Field(max_length=20)
        ]
        | None
    ) = None
    author_agent: AgentAddress
    authored_by_ai: Bool = False
    lineage: Annotated[list[SkillLineage], Field(max_length=20)] | None = None
    created_at: Timestamp = Field(default_factory=utcnow)
    updated_at: Timestamp | None = None
    earnings: SkillEarnings | None = None
    verification: SkillVerification | None = None
    input_schema: SchemaDocument
    output_schema: SchemaDocument
    required_tools: list[Annotated[str, StringConstraints(strict=True, min_length=1)]] | None = None
    required_models: list[Annotated[str, StringConstraints(strict=True, min_length=1)]] | None = None
    commerce: SkillCommerce | None = None
    runtime: SkillRuntime | None = None
    metadata: JsonObject | None = None

    @model_validator(mode="after")
    def _listed_needs_entry_point(self) -> SkillCard:
        listed = self.commerce is not None and self.commerce.marketplace_listed
        if listed and (self.runtime is None or not self.runtime.entry_point):
            raise PydanticCustomError(
                "listed_needs_entry_point", "a marketplace_listed skill needs runtime.entry_point"
            )
        return self


UsageTimestamp = Annotated[Timestamp, BeforeValidator(_usage_time_shape)]


class UsageEvent(WireRequired):
    """One model call's telemetry (UsageEvent v1). Idempotent by ``id``; cost in integer micros."""

    wire_required: ClassVar[frozenset[str]] = frozenset(
        {"schema_version", "id", "tenant", "provider", "model", "occurred_at"}
    )

    schema_version: Literal["1"] = "1"
    id: Annotated[
        str,
        StringConstraints(strict=True, pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    ] = Field(default_factory=_new_uuid)
    tenant: Annotated[str, StringConstraints(strict=True, min_length=1)]
    provider: Annotated[str, StringConstraints(strict=True, min_length=1)]
    model: Annotated[str, StringConstraints(strict=True, min_length=1)]
    endpoint: Str | None = None
    input_tokens: NonNegInt | None = None
    output_tokens: NonNegInt | None = None
    image_count: NonNegInt | None = None
    cost_micros: NonNegInt | None = None
    cost_currency: Currency = "USD"
    metadata: JsonObject | None = None
    occurred_at: UsageTimestamp = Field(default_factory=utcnow)
    received_at: UsageTimestamp | None = None


ProviderBackend = Literal[
    "claude-adapter",
    "claude-managed-agents",
    "openai-adapter",
    "openai-agents-sdk",
    "gemini-adapter",
    "langgraph",
    "local",
]
ProviderTier = Literal["primary", "fallback", "cheap", "premium", "local"]


class ProviderCircuitBreaker(WireModel):
    """Static thresholds of a provider's circuit breaker (absent fields take the kernel's defaults)."""

    failure_threshold: NonNegInt | None = None
    recovery_window_seconds: NonNegInt | None = None
    half_open_max_requests: NonNegInt | None = None


class ProviderCard(WireRequired):
    """One row of the provider matrix (ProviderCard v1): an adapter, its tier, its model, and no secret."""

    wire_required: ClassVar[frozenset[str]] = frozenset({"schema_version", "id", "name", "backend", "tier", "model"})

    schema_version: Literal["1"] = "1"
    id: Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z][a-z0-9-]*$")]
    name: Annotated[str, StringConstraints(strict=True, min_length=1)]
    backend: ProviderBackend
    tier: ProviderTier
    model: Annotated[str, StringConstraints(strict=True, min_length=1)]
    endpoint: Str | None = None
    health_probe_url: Str | None = None
    timeout_seconds: Annotated[int, Field(strict=True, ge=1, le=3600), IntegralFloat] | None = None
    circuit_breaker: ProviderCircuitBreaker | None = None
    cost_per_call_estimate_micros: NonNegInt | None = None
