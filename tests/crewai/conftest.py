"""The CrewAI tests need the ``crewai`` extra, whose dependency set is too heavy for the default environment: they
run in their own environment, ``nox -s crewai`` (which ``.ci/run`` runs). Without crewai they are not collected."""

from __future__ import annotations

import importlib.util
import warnings

from ..integrations.conftest import Acme, acme

__all__ = ["Acme", "acme"]

collect_ignore_glob = [] if importlib.util.find_spec("crewai") else ["test_*.py"]

if not collect_ignore_glob:
    with warnings.catch_warnings():
        # crewai's own package layout warns once at import (a submodule set on a lazy module); not ours to fix
        warnings.simplefilter("ignore", ImportWarning)
        import crewai  # noqa: F401
