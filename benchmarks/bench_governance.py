"""Governance and audit: the policy check against a bare dict lookup floor and against agent-os-kernel 3.7's
check, and the audit record's cost inside a SQLite transfer, measured in the same run.

- policy check: one allow rule with a glob (``tool.search*``) and 20 deny patterns (globs), asked about a tool
  action. ``warm``: the compiled policy's decision memo answers (the steady state: agents repeat their
  actions); ``cold``: every question is new (the memo is emptied before each), so every pattern is matched;
  ``+content``: a warm decision plus the 20 patterns scanned over the call's arguments (content rules).
  Floor: ``dict.get`` of the same key.
- agent-os-kernel 3.7 (``PolicyInterceptor.intercept``: ``allowed_tools`` plus 20 glob ``blocked_patterns``
  over the arguments), in a virtual environment of the benchmark's own (``<tmp>/sos-bench-venvs/``, made on first
  run with ``pip install agent-os-kernel==3.7.0 pyyaml``: it imports yaml without declaring it; it is not a
  dependency of ours). If it cannot be installed the pip
  error is printed and that row is skipped.
- audit append: ``Ledger.transfer`` on SQLite with its ``ledger.write`` record appended in the same transaction,
  against the same transfer with the record switched off (``audits_writes = False`` and no audit hook),
  interleaved rounds, by wall clock and by the process's CPU time (steadier on a shared machine). Target: at most
  15% slower.

Targets (governance issue): warm check ≥ 0.5x the dict floor; ≥ 10x agent-os-kernel's rate.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

import sos_kernel
from sos_kernel.governance import compile_policy
from sos_kernel.governance.policy import blocked_content

N_CHECKS = 200_000
N_COLD = 20_000
N_TRANSFERS = 3000
ROUNDS = 7
VENV = Path(tempfile.gettempdir()) / "sos-bench-venvs" / "agent-os-kernel-3.7"
DENY = [f"*secret{i}*" for i in range(20)]
ARGS = {"query": "weather in paris", "limit": 10}

POLICY = {
    "name": "bench",
    "rules": [
        {"id": "deny", "effect": "deny", "actions": [f"tool.danger{i}*" for i in range(20)]},
        {"id": "search", "effect": "allow", "actions": ["tool.search*"]},
    ],
    "content": [{"id": "blocked", "blocked": DENY}],
}

AGENT_OS = f"""
import time
from agent_os.integrations.base import GovernancePolicy, PolicyInterceptor, ToolCallRequest, PatternType
policy = GovernancePolicy(allowed_tools=["tool.search_web"],
                          blocked_patterns=[(p, PatternType.GLOB) for p in {DENY!r}], max_tool_calls=10**9)
check = PolicyInterceptor(policy).intercept
request = ToolCallRequest(tool_name="tool.search_web", arguments={ARGS!r})
n = 20000
best = 0.0
for _ in range(3):
    t = time.perf_counter()
    for _ in range(n):
        if not check(request).allowed:
            raise SystemExit("refused")
    best = max(best, n / (time.perf_counter() - t))
print(best)
"""


def rate(fn: object, n: int) -> float:
    """Calls per second of ``fn()`` (best of 3)."""
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            fn()  # type: ignore[operator]
        best = max(best, n / (time.perf_counter() - started))
    return best


def check_rates() -> dict[str, float]:
    policy = compile_policy(POLICY)
    nobody: frozenset[str] = frozenset()
    floor = {("tool.search_web", None, None, nobody): True}
    key = ("tool.search_web", None, None, nobody)
    texts = [str(v) for v in ARGS.values()]

    def cold() -> None:
        policy._memo.clear()
        policy.decide("tool.search_web", None, None, nobody)

    return {
        "dict floor": rate(lambda: floor.get(key), N_CHECKS),
        "warm": rate(lambda: policy.decide("tool.search_web", None, None, nobody), N_CHECKS),
        "cold": rate(cold, N_COLD),
        "+content": rate(lambda: blocked_content(policy.decide("tool.search_web", None, None, nobody), texts), N_COLD),
    }


def agent_os_rate() -> float | str:
    """agent-os-kernel's checks per second, or why it could not be measured."""
    python = VENV / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
        if made.returncode:
            return f"venv failed: {made.stderr.strip()[-300:]}"
        pip = subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "agent-os-kernel==3.7.0", "pyyaml"],
            capture_output=True,
            text=True,
        )
        if pip.returncode:
            return f"pip install agent-os-kernel==3.7.0 failed: {pip.stderr.strip()[-500:]}"
    run = subprocess.run([str(python), "-c", AGENT_OS], capture_output=True, text=True, timeout=300)
    if run.returncode:
        return f"agent-os-kernel check failed: {run.stderr.strip()[-500:]}"
    return float(run.stdout.strip())


async def transfers(path: Path, audited: bool) -> tuple[float, float]:
    async with sos_kernel.open(f"sqlite:///{path}") as kernel:
        ledger = kernel.ledger
        if not audited:
            kernel.backend.ledger.audits_writes = False
            ledger.audit = None
        await ledger.open_account("system:bank", "USD", allow_negative=True)
        await ledger.open_account("agent:a", "USD")
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(N_TRANSFERS):
            await ledger.transfer(id=f"t{i}", debit="system:bank", credit="agent:a", amount=1, currency="USD")
        return N_TRANSFERS / (time.perf_counter() - started), N_TRANSFERS / (time.process_time() - cpu)


async def audit_cost() -> tuple[float, float, float, tuple[float, float], float, tuple[float, float]]:
    """Medians over the rounds: rate with the record, rate without, wall-clock ratio (and its range over the
    rounds), CPU-time ratio (and its range)."""
    ratios, cpu_ratios, with_audit, without = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ROUNDS):
            a, a_cpu = await transfers(Path(tmp) / f"a{i}.db", audited=True)
            b, b_cpu = await transfers(Path(tmp) / f"b{i}.db", audited=False)
            with_audit.append(a)
            without.append(b)
            ratios.append(a / b)
            cpu_ratios.append(a_cpu / b_cpu)
    return (
        statistics.median(with_audit),
        statistics.median(without),
        statistics.median(ratios),
        (min(ratios), max(ratios)),
        statistics.median(cpu_ratios),
        (min(cpu_ratios), max(cpu_ratios)),
    )


def main() -> None:
    rates = check_rates()
    floor = rates["dict floor"]
    print("policy check (1 allow glob + 20 deny globs)        checks/s    vs dict floor")
    for name, value in rates.items():
        print(f"  {name:<46} {value:>10,.0f}    {value / floor:5.2f}x")
    other = agent_os_rate()
    if isinstance(other, float):
        print(f"  {'agent-os-kernel 3.7 intercept':<46} {other:>10,.0f}    {other / floor:5.2f}x")
        for name in ("warm", "cold", "+content"):
            print(f"  ours {name} / agent-os-kernel: {rates[name] / other:6.1f}x   (target >= 10x)")
    else:
        print(f"  agent-os-kernel 3.7: not measured: {other}")
    a, b, ratio, (low, high), cpu, (cpu_low, cpu_high) = anyio.run(audit_cost)
    slower = (1 - ratio) * 100
    print(
        f"SQLite transfer with its audit record in the transaction: {a:,.0f}/s vs {b:,.0f}/s without;"
        f" ratio {ratio:.3f} ({slower:+.1f}% slower; rounds {low:.3f}..{high:.3f}; target <= 15% slower);"
        f" CPU time ratio {cpu:.3f} (rounds {cpu_low:.3f}..{cpu_high:.3f}: what a loaded machine's wall clock hides)"
    )


if __name__ == "__main__":
    main()
