"""The error tree: unique codes in the right bands, SOS v0.4.1's codes and statuses, and the wire round trip."""

from __future__ import annotations

import re

import pytest
from contract_support import REFERENCE_DIR

from sos_kernel import errors
from sos_kernel.errors import (
    AuthError,
    EconomyError,
    InputError,
    KernelRuntimeError,
    SOSError,
    all_error_classes,
    error_class,
    from_wire,
)

BANDS: dict[str, type[SOSError]] = {
    "4": InputError,
    "5": AuthError,
    "6": KernelRuntimeError,
    "7": EconomyError,
}
SOS_V041_CODES = [
    "SOS-4001",
    "SOS-4002",
    "SOS-4003",
    "SOS-4004",
    "SOS-5001",
    "SOS-5002",
    "SOS-5003",
    "SOS-5004",
    "SOS-5005",
    "SOS-6001",
    "SOS-6002",
    "SOS-6003",
    "SOS-6010",
    "SOS-6011",
    "SOS-6012",
    "SOS-6020",
    "SOS-6021",
    "SOS-7001",
    "SOS-7002",
    "SOS-7010",
    "SOS-7020",
    "SOS-7030",
    "SOS-7040",
]


def _reference_statuses() -> dict[str, int]:
    """``{"SOS-4001": 422, ...}`` from the "Error codes" section of the reference README."""
    text = (REFERENCE_DIR.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("## Error codes", 1)[1].split("HTTP error body", 1)[0]
    return {f"SOS-{code}": int(status) for code, status in re.findall(r"(\d{4}) [^()·]*?\((\d{3})\)", section)}


REFERENCE_STATUSES = _reference_statuses()
CLASSES = all_error_classes()


def test_the_readme_parse_found_the_whole_catalogue() -> None:
    assert sorted(REFERENCE_STATUSES) == SOS_V041_CODES


@pytest.mark.parametrize("code", SOS_V041_CODES)
def test_sos_codes_exist_with_sos_http_status(code: str) -> None:
    cls = error_class(code)
    assert cls.code == code
    assert cls.http_status == REFERENCE_STATUSES[code]


def test_codes_are_unique_and_ordered() -> None:
    codes = [cls.code for cls in CLASSES]
    assert len(set(codes)) == len(codes)
    assert codes == sorted(codes)
    assert len({cls.__name__ for cls in CLASSES}) == len(CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_class(cls: type[SOSError]) -> None:
    assert re.fullmatch(r"SOS-\d{4}", cls.code)
    band = BANDS[cls.code[4]]
    assert issubclass(cls, band)
    assert sum(issubclass(cls, base) for base in BANDS.values()) == 1
    assert error_class(cls.code) is cls
    assert 400 <= cls.http_status <= 599
    assert cls.title
    assert cls.__doc__
    if issubclass(cls, InputError):
        assert not cls.retryable
        assert 400 <= cls.http_status < 500
    assert getattr(errors, cls.__name__) is cls
    assert cls.__name__ in errors.__all__


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_wire_round_trip(cls: type[SOSError]) -> None:
    err = cls("something specific happened", details={"limit": "payload_bytes_max", "max": 10, "path": ["a", 1]})
    body = err.to_wire()
    assert body == {
        "error": {
            "code": cls.code,
            "message": "something specific happened",
            "details": {"limit": "payload_bytes_max", "max": 10, "path": ["a", 1]},
        }
    }
    back = from_wire(body)
    assert type(back) is cls
    assert (back.message, back.details) == (err.message, err.details)
    assert str(back) == f"{cls.code} something specific happened"
    # The inner object alone works too.
    assert type(from_wire(body["error"])) is cls


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults(cls: type[SOSError]) -> None:
    err = cls()
    assert err.message == cls.title
    assert err.details == {}
    assert err.doc_url == f"docs/errors.md#{cls.code.lower()}"
    assert cls.__name__ in repr(err)
    with pytest.raises(cls):
        raise err
    with pytest.raises(SOSError):
        raise err


def test_details_are_copied() -> None:
    details = {"a": 1}
    err = errors.LimitExceeded("too big", details=details)
    details["a"] = 2
    assert err.details == {"a": 1}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("SOS-4999", InputError),
        ("SOS-5999", AuthError),
        ("SOS-6999", KernelRuntimeError),
        ("SOS-7999", EconomyError),
        ("SOS-9999", SOSError),
        ("SOS-", SOSError),
        ("bogus", SOSError),
        ("", SOSError),
    ],
)
def test_unknown_codes_map_to_their_band(code: str, expected: type[SOSError]) -> None:
    assert error_class(code) is expected


def test_from_wire_keeps_an_unknown_code_in_details() -> None:
    err = from_wire({"error": {"code": "SOS-4321", "message": "newer server", "details": {"x": 1}}})
    assert type(err) is InputError
    assert err.details == {"x": 1, "code": "SOS-4321"}
    assert err.message == "newer server"


@pytest.mark.parametrize(
    "body",
    [{"error": "boom"}, {"error": None}, {"error": ["SOS-4001"]}],
)
def test_from_wire_survives_a_malformed_envelope(body: dict[str, object]) -> None:
    err = from_wire(body)
    assert type(err) is SOSError
    assert "body" in err.details


def test_from_wire_ignores_non_mapping_details() -> None:
    err = from_wire({"error": {"code": "SOS-4001", "message": "m", "details": ["x"]}})
    assert type(err) is errors.SchemaViolation
    assert err.details == {}


def test_a_code_cannot_be_registered_twice() -> None:
    with pytest.raises(TypeError, match="SOS-4001"):

        class Again(InputError):
            code = "SOS-4001"

    assert error_class("SOS-4001") is errors.SchemaViolation
    assert all_error_classes() == CLASSES


def test_the_tree_drawn_in_the_docstring_matches_the_classes() -> None:
    doc = errors.__doc__ or ""
    drawn = dict(re.findall(r"(\w+)\s+(SOS-\d{4})", doc))
    assert drawn == {cls.__name__: cls.code for cls in CLASSES}


def test_every_code_has_a_section_in_the_error_catalogue() -> None:
    from pathlib import Path

    from sos_kernel.errors import all_error_classes

    page = (Path(__file__).parents[2] / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [c.code for c in all_error_classes() if f"## {c.code} {c.__name__}" not in page]
    assert missing == []
