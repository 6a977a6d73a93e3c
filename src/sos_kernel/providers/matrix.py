"""A provider matrix from a file: a YAML or JSON list of ProviderCard v1 objects (or ``{"providers": [...]}``).

Every card is validated — its schema (SOS-4001), an adapter for its backend and the operator's URL policy
(SOS-4005), ids unique — before any is registered or called, so a wrong matrix is refused whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._json import loads
from ..contracts import ProviderCard
from ..errors import InvalidArgument, MissingDependency, SchemaViolation
from ..governance.policy import plain_yaml
from .runtime import ProviderRuntime
from .service import PROVIDERS_PER_TENANT_MAX, Providers, check_card

__all__ = ["MATRIX_BYTES_MAX", "load_matrix", "register_matrix"]

MATRIX_BYTES_MAX = 1024 * 1024


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return loads(text)  # a card naming a key twice is SOS-4001, as any JSON from outside
        except ValueError as exc:
            raise SchemaViolation(f"{path}: not JSON ({exc})") from None
    try:
        import yaml
    except ModuleNotFoundError as exc:
        pip = "pip install 'sos-kernel[providers]'"
        raise MissingDependency(f"reading a YAML matrix needs PyYAML: {pip}", details={"pip": pip}) from exc
    try:
        return plain_yaml(yaml, text)  # plain data, each key once: as a policy is read
    except yaml.YAMLError as exc:
        raise SchemaViolation(f"{path}: not YAML ({exc})") from None


def load_matrix(path: str | Path, runtime: ProviderRuntime | None = None) -> list[ProviderCard]:
    """The cards of the matrix file at ``path``, each validated against ``runtime``'s policy (an embedded kernel's
    by default); raises before returning any when one is wrong."""
    runtime = runtime or ProviderRuntime()
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) > MATRIX_BYTES_MAX:
        raise InvalidArgument(f"{path} is over {MATRIX_BYTES_MAX} bytes")
    data = _parse(path, raw.decode("utf-8"))
    if isinstance(data, Mapping) and set(data) == {"providers"}:
        data = data["providers"]
    if not isinstance(data, list) or not all(isinstance(c, Mapping) for c in data):
        raise SchemaViolation(f"{path}: a matrix is a list of provider cards (or {{providers: [...]}})")
    if len(data) > PROVIDERS_PER_TENANT_MAX:
        raise InvalidArgument(f"{path}: at most {PROVIDERS_PER_TENANT_MAX} providers")
    cards, seen = [], set()
    for i, item in enumerate(data):
        try:
            card = check_card(item, runtime)
        except (SchemaViolation, InvalidArgument) as exc:
            raise type(exc)(f"{path}: provider {i}: {exc.message}", details=exc.details) from None
        if card.id in seen:
            raise InvalidArgument(f"{path}: provider id {card.id!r} appears twice")
        seen.add(card.id)
        cards.append(card)
    return cards


async def register_matrix(providers: Providers, path: str | Path) -> list[ProviderCard]:
    """Validate the whole matrix at ``path`` against the kernel's policy (see :func:`load_matrix`), then register
    each card (``kernel.providers`` or ``kernel.tenant(slug).providers``)."""
    cards = load_matrix(path, providers._runtime)
    return [await providers.register(card) for card in cards]
