"""A client that records paid and free invocations until it is killed (``test_invocation_step.py``).

    python _invoke_worker.py URL PREFIX

Prints ``GO`` once connected, then invokes without end: ids ``<PREFIX>-<n>``, every third one on the free skill,
every fifth one a retry of the previous id.
"""

from __future__ import annotations

import sys

import anyio

import sos_kernel


async def main(url: str, prefix: str) -> None:
    async with sos_kernel.open(url) as kernel:
        skills = kernel.skills
        print("GO", flush=True)
        n = 0
        while True:
            n += 1
            i = n - 1 if n % 5 == 0 else n
            skill_id = "free" if i % 3 == 0 else "paid"
            await skills.record_invocation(
                skill_id, caller="agent:caller", tenant="default", invocation_id=f"{prefix}-{i}"
            )


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
