"""Generate and check the JSON Schema (Draft 2020-12) files under ``schemas/``.

``python -m sos_kernel.contracts.schemas export [DIR]`` writes them; ``... check [DIR]`` exits 1 when any file is
missing, stale or extra. The models are the source of truth; the files are for other languages and tools.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ._types import WireRequired
from .cards import AgentCard, ProviderCard, SkillCard, UsageEvent
from .messages import CORE_TYPES, EXTENSION_TYPES

__all__ = ["SCHEMA_DIALECT", "check_schemas", "export_schemas", "generate_schemas"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE = "https://sos-kernel.dev/schemas/"


def _wire_required_models() -> dict[str, type[WireRequired]]:
    found: dict[str, type[WireRequired]] = {}
    todo = list(WireRequired.__subclasses__())
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return found


def _schema_for(model: type[WireRequired], rel_path: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    # The wire requires what the reference requires, even where Python construction fills a default; that
    # holds for nested models too (a send payload's content_type).
    schema["required"] = sorted(model.wire_required)
    nested = _wire_required_models()
    for name, sub in schema.get("$defs", {}).items():
        if name in nested and nested[name].wire_required:
            sub["required"] = sorted(nested[name].wire_required)
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID_BASE + rel_path, **schema}


def generate_schemas() -> dict[str, dict[str, Any]]:
    """Every schema, keyed by its path relative to ``schemas/``."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in {**CORE_TYPES, **EXTENSION_TYPES}.items():
        rel = f"messages/{name}_v1.json"
        out[rel] = _schema_for(model, rel)
    for rel, card in (
        ("agent_card_v1.json", AgentCard),
        ("skill_card_v1.json", SkillCard),
        ("usage_event_v1.json", UsageEvent),
        ("provider_card_v1.json", ProviderCard),
    ):
        out[rel] = _schema_for(card, rel)
    return out


def _render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema under ``directory`` (removing stale ``*.json`` there); returns the paths written."""
    wanted = generate_schemas()
    written = []
    for rel, schema in wanted.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(schema), encoding="utf-8")
        written.append(path)
    for old in directory.rglob("*.json"):
        if old.relative_to(directory).as_posix() not in wanted:
            old.unlink()
    return written


def check_schemas(directory: Path) -> list[str]:
    """Problems with the files under ``directory``: missing, stale or extra. Empty when fresh."""
    wanted = generate_schemas()
    problems = []
    for rel, schema in wanted.items():
        path = directory / rel
        if not path.exists():
            problems.append(f"missing: {rel}")
        elif path.read_text(encoding="utf-8") != _render(schema):
            problems.append(f"stale: {rel}")
    if directory.exists():
        for found in directory.rglob("*.json"):
            rel = found.relative_to(directory).as_posix()
            if rel not in wanted:
                problems.append(f"extra: {rel}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``export [DIR]`` or ``check [DIR]``; DIR defaults to ``schemas``."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "check"
    directory = Path(args[1]) if len(args) > 1 else Path("schemas")
    if command == "export":
        paths = export_schemas(directory)
        print(f"wrote {len(paths)} schemas to {directory}/")
        return 0
    if command == "check":
        problems = check_schemas(directory)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("schemas are stale: run `python -m sos_kernel.contracts.schemas export`", file=sys.stderr)
            return 1
        print(f"schemas in {directory}/ are fresh")
        return 0
    print("usage: python -m sos_kernel.contracts.schemas export|check [DIR]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
