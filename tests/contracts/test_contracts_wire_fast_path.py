"""The callback-free wire validator the catalogue tries first judges every input as the models do."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from contract_support import CORE_TYPE_NAMES, del_path, iter_properties, reference_schema, set_path
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from test_contracts_mutations import ENVELOPE, VALID

from sos_kernel.contracts import CORE_TYPES, DEFAULT_CATALOGUE, SendMessage, SendPayload, TypeCatalogue, WireModel
from sos_kernel.contracts.catalogue import _WIRE

BAD_TIMESTAMPS = [
    1769860800,
    "2026-01-31 12:00:00Z",
    "2026-01-31T12:00:00",
    "2026-01-31",
    "\uff11\uff19\uff17\uff10-01-01T00:00:00Z",
]  # full-width digits


def _models_verdict(catalogue: TypeCatalogue, data: Any) -> Any:
    try:
        return catalogue._adapter.validate_python(data, context=_WIRE)
    except ValidationError:
        return "refused"


def _fast_verdict(catalogue: TypeCatalogue, data: Any) -> Any:
    assert catalogue._wire is not None
    try:
        return catalogue._wire.validate_python(data)
    except ValidationError:
        return "refused"


def _mutations(name: str) -> list[dict[str, Any]]:
    valid = VALID[name]
    out = [copy.deepcopy(valid)]
    for path, _ in iter_properties(reference_schema(name)):
        out.append(del_path(copy.deepcopy(valid), path))
        out.append(set_path(copy.deepcopy(valid), path, None))
    out += [{**copy.deepcopy(valid), "timestamp": bad} for bad in BAD_TIMESTAMPS]
    return out


@pytest.mark.parametrize("name", CORE_TYPE_NAMES)
def test_the_fast_path_agrees_with_the_models_on_every_field_dropped_or_nulled(name: str) -> None:
    assert _fast_verdict(DEFAULT_CATALOGUE, VALID[name]) != "refused"  # it does take valid messages
    for data in _mutations(name):
        fast, models = _fast_verdict(DEFAULT_CATALOGUE, data), _models_verdict(DEFAULT_CATALOGUE, data)
        if fast != "refused":  # never accepts what the models refuse, and then gives the same message
            assert fast == models, data
            assert type(fast) is type(models) is CORE_TYPES[name]
            assert fast.model_fields_set == models.model_fields_set


def test_the_fast_path_is_used_and_leaves_the_models_complete() -> None:
    assert DEFAULT_CATALOGUE._wire is not None
    for model in (SendMessage, SendPayload, *CORE_TYPES.values()):
        assert model.__pydantic_complete__ is True
    assert SendMessage(source="agent:a", target="agent:b", payload=SendPayload(text="x")).payload.text == "x"


class _Deploy(WireModel):
    service: str
    note: str | None = None


class _Open(BaseModel):  # not a WireModel: a null is this model's to accept
    model_config = ConfigDict(extra="forbid")
    service: str
    note: str | None = Field(default=None)


@pytest.mark.parametrize("payload", [_Deploy, _Open, {"type": "object", "properties": {"service": {"type": "string"}}}])
def test_custom_types_get_a_fast_path_that_agrees_too(payload: Any) -> None:
    catalogue = TypeCatalogue()
    catalogue.register("acme.deploy", payload)
    assert catalogue._wire is not None
    base = {**ENVELOPE, "type": "acme.deploy", "payload": {"service": "api"}}
    assert _fast_verdict(catalogue, base) == _models_verdict(catalogue, base) != "refused"
    for data in ({**base, "payload": {"service": "api", "note": None}}, del_path(dict(base), ("message_id",))):
        fast, models = _fast_verdict(catalogue, data), _models_verdict(catalogue, data)
        assert fast == "refused" or fast == models  # never accepts what the models refuse
    if isinstance(payload, type):
        assert payload.__pydantic_complete__ is True
