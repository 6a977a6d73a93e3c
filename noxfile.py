"""Every check has one entry point: ``nox -s tests lint typecheck imports schemas pydantic_latest`` (and ``bench``,
not run in CI)."""

import nox

nox.options.sessions = ["lint", "typecheck", "imports", "schemas", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite: every backend (a redis-server is started when SOS_TEST_REDIS_URL is unset)."""
    session.install("-e", ".[dev,server]")
    session.run("pytest", *session.posargs)


@nox.session
def crewai(session: nox.Session) -> None:
    """The CrewAI tools and example, in an environment of their own: crewai's dependency set is heavy and pins
    ``mcp<2``, which the ``dev`` extra's MCP server cannot use, so this environment has no ``dev`` and no ``mcp``."""
    session.install("-e", ".[server,redis,crewai]", "pytest>=8", "pytest-timeout>=2.3")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/crewai", "tests/test_examples.py", "-k", "crewai")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/."""
    session.install("-e", ".[dev,server]")
    session.run("mypy")


@nox.session
def imports(session: nox.Session) -> None:
    """The import layers (import-linter contracts in pyproject.toml) and a graph with no cycle."""
    session.install("-e", ".[dev]")
    session.run("lint-imports")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/test_structure.py")


@nox.session
def schemas(session: nox.Session) -> None:
    """Fail when schemas/ is stale; regenerate with `python -m sos_kernel.contracts.schemas export`."""
    session.install("-e", ".")
    session.run("python", "-m", "sos_kernel.contracts.schemas", "check", "schemas")


@nox.session
def pgvector(session: nox.Session) -> None:
    """Memory on PostgreSQL + pgvector, against a real server the pgserver package bundles (started by the tests)."""
    session.install("-e", ".[dev,server,pgvector]", "pgserver>=0.1.4")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "-s", "tests/memory/test_pgvector.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks with their raw floors and ratios (not part of CI)."""
    session.install("-e", ".[dev,server]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def pydantic_latest(session: nox.Session) -> None:
    """The contract tests against the newest pydantic, in a venv of its own: only public pydantic APIs are used."""
    session.install("-e", ".[dev]")
    session.install("-U", "pydantic")
    session.run("python", "-c", "import pydantic; print('pydantic', pydantic.VERSION)")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/contracts", *session.posargs)


@nox.session
def bench_peers(session: nox.Session) -> None:
    """The in-process bus against amb-core and autogen-core, installed here only (they are no dependency); a peer
    pip cannot install is reported with pip's error and left out of the table."""
    session.install("-e", ".")
    for peer in ("amb-core", "autogen-core"):
        try:
            session.install(peer, silent=False)
        except nox.command.CommandFailed:
            session.warn(f"{peer} could not be installed (pip's error above); its rows say 'not installed'")
    session.run("python", "-m", "benchmarks", "peers")
