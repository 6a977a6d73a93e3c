"""A matrix file (YAML or JSON) is validated whole before any card is registered or called."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sos_kernel
from sos_kernel.errors import InvalidArgument, SchemaViolation
from sos_kernel.providers import load_matrix, register_matrix

pytestmark = pytest.mark.anyio

YAML = """
providers:
  - schema_version: "1"
    id: claude
    name: Claude
    backend: claude-adapter
    tier: primary
    model: claude-sonnet-4-6
    circuit_breaker: {failure_threshold: 3, recovery_window_seconds: 60}
  - schema_version: "1"
    id: echo
    name: Echo
    backend: local
    tier: local
    model: echo
"""


async def test_a_yaml_matrix_registers_in_selection_order(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text(YAML)
    async with sos_kernel.open("memory://") as kernel:
        cards = await register_matrix(kernel.providers, path)
        assert [c.id for c in cards] == ["claude", "echo"]
        assert [c.id for c in await kernel.providers.list()] == ["claude", "echo"]
        assert (await kernel.engine.chat([{"role": "user", "content": "hi"}], tier="local")).text == "hi"


@pytest.mark.parametrize(
    ("cards", "error", "says"),
    [
        ([{"id": "a"}], SchemaViolation, "provider 1"),
        ({"matrix": []}, SchemaViolation, "a list of provider cards"),
        (
            [{"schema_version": "1", "id": "a", "name": "A", "backend": "local", "tier": "local", "model": "m"}] * 2,
            InvalidArgument,
            "appears twice",
        ),
        (
            [
                {
                    "schema_version": "1",
                    "id": "b",
                    "name": "B",
                    "backend": "openai-adapter",
                    "tier": "primary",
                    "model": "m",
                    "endpoint": "http://192.168.1.1/v1",
                }
            ],
            InvalidArgument,
            "not allowed",
        ),
    ],
)
async def test_a_wrong_matrix_is_refused_whole_before_any_call(
    tmp_path: Path, cards: object, error: type[Exception], says: str
) -> None:
    good = {"schema_version": "1", "id": "good", "name": "G", "backend": "local", "tier": "local", "model": "m"}
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps([good, *cards] if isinstance(cards, list) else cards))
    with pytest.raises(error, match=says):
        load_matrix(path)
    async with sos_kernel.open("memory://") as kernel:
        with pytest.raises(error):
            await register_matrix(kernel.providers, path)
        assert await kernel.providers.list() == []


MATRIX_REPEATS = [
    ("json", '[{"schema_version":"1","id":"a","name":"A","backend":"local","tier":"local","model":"m","model":"n"}]'),
    ("yaml", "- schema_version: '1'\n  id: a\n  name: A\n  backend: local\n  tier: local\n  model: m\n  model: n\n"),
]


@pytest.mark.parametrize(("suffix", "text"), MATRIX_REPEATS, ids=[m[0] for m in MATRIX_REPEATS])
async def test_a_matrix_file_repeating_a_key_is_refused_whole(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"matrix.{suffix}"
    path.write_text(text)
    with pytest.raises(SchemaViolation) as info:
        load_matrix(path)
    assert info.value.details["errors"][0] == {
        "loc": "0.model",
        "msg": "repeated key 'model'",
        "type": "json_duplicate_key",
    }
    async with sos_kernel.open("memory://") as kernel:
        with pytest.raises(SchemaViolation):
            await register_matrix(kernel.providers, path)
        assert await kernel.providers.list() == []


async def test_a_yaml_matrix_file_with_an_alias_or_a_merge_key_is_refused_before_it_expands(tmp_path: Path) -> None:
    # read as a policy is: plain data only, so a merged card cannot mean two things and aliases cannot expand
    card = "schema_version: '1', id: a, name: A, backend: local, tier: local"
    for text, kind in (
        (f"- &c {{{card}, model: m}}\n- <<: *c\n  id: b\n", "yaml_anchor"),
        ("- {" + card + ", model: m}\n- <<: {model: n}\n  id: b\n", "yaml_merge"),
    ):
        path = tmp_path / "matrix.yaml"
        path.write_text(text)
        with pytest.raises(SchemaViolation) as info:
            load_matrix(path)
        assert info.value.details["errors"][0]["type"] == kind
