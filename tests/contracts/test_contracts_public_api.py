"""The public surface is checked: every public module's ``__all__`` is sorted, unique, resolvable and complete.

Add a module to ``PUBLIC_MODULES`` when it becomes public. "Sorted" is ruff's RUF022 order (isort-style):
SCREAMING_CASE constants, then CamelCase classes, then everything else, each group in natural order.
"""

from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType

import pytest

PUBLIC_MODULES = [
    "sos_kernel",
    "sos_kernel.api",
    "sos_kernel.backends",
    "sos_kernel.bus",
    "sos_kernel.contracts",
    "sos_kernel.errors",
    "sos_kernel.identity",
    "sos_kernel.kernel",
    "sos_kernel.ledger",
    "sos_kernel.registry",
    "sos_kernel.session",
    "sos_kernel.sync",
    "sos_kernel.server",
    "sos_kernel.wire",
    "mumega_sdk",
    "mumega_sdk.blocking",
    "mumega_sdk.client",
]


def _isort_key(name: str) -> tuple[int, list[int | str]]:
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural: list[int | str] = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


def _module(name: str) -> ModuleType:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    return module


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_unique(name: str) -> None:
    exported = list(_module(name).__all__)
    assert len(set(exported)) == len(exported), [n for n in exported if exported.count(n) > 1]
    assert exported == sorted(exported, key=_isort_key)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_exported_name_resolves(name: str) -> None:
    module = _module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_complete(name: str) -> None:
    """Every public class or function defined in the module (or re-exported from its own submodules) is listed."""
    module = _module(name)
    own = (name, f"{name}.")
    unlisted = [
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and (value.__module__ == name or value.__module__.startswith(own[1]))
        and attr not in module.__all__
    ]
    assert not unlisted, f"{name}.__all__ misses {unlisted}"


def test_sdk_shares_the_kernel_errors() -> None:
    import mumega_sdk
    import sos_kernel

    assert mumega_sdk.SOSError is sos_kernel.SOSError
    assert mumega_sdk.errors is sos_kernel.errors
    assert mumega_sdk.contracts is sos_kernel.contracts


@pytest.mark.parametrize(
    ("names", "ordered"),
    [
        (["b", "A", "C_D", "Ab", "a2", "a10", "__version__"], ["C_D", "A", "Ab", "__version__", "a2", "a10", "b"]),
        (["parse_message", "SOSError", "MESSAGE_MAX"], ["MESSAGE_MAX", "SOSError", "parse_message"]),
    ],
)
def test_the_sort_key(names: list[str], ordered: list[str]) -> None:
    assert sorted(names, key=_isort_key) == ordered
