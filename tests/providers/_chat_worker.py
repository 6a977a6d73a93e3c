"""One process of the engine's multi-process test (``test_processes.py``).

    python _chat_worker.py URL GO_FILE CALLS [TOKEN]

Prints ``READY`` once the kernel is open, waits for ``GO_FILE``, then chats ``CALLS`` times as ``agent:bob`` with
the ids ``c0`` .. ``c<CALLS-1>`` (every worker uses the same ids), retrying a call that another process is running.
With ``TOKEN``, it chats through that token's session instead (governed by the tenant's policy), with ids of its
own and ``max_tokens`` 50. Prints one JSON object per call: ``{"id", "provider", "replayed", "cost"}`` or
``{"id", "code"}``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import anyio

import sos_kernel
from sos_kernel.errors import CallInProgress, SOSError

HI = [{"role": "user", "content": "hi"}]


async def main(url: str, go_file: str, calls: int, token: str | None) -> None:
    async with sos_kernel.open(url) as kernel:
        if token is None:
            chat = functools.partial(kernel.engine.chat, agent="agent:bob")
        else:
            chat = functools.partial((await kernel.session(token)).engine.chat, max_tokens=50)
        prefix = "" if token is None else f"p{os.getpid()}-"
        print("READY", flush=True)
        while not await anyio.Path(go_file).exists():  # noqa: ASYNC110 (a file from another process)
            await anyio.sleep(0.01)
        for i in range(calls):
            deadline = time.monotonic() + 30
            while True:
                try:
                    reply = await chat(HI, id=f"{prefix}c{i}")
                    line = {
                        "id": reply.id,
                        "provider": reply.provider,
                        "replayed": reply.replayed,
                        "cost": reply.cost_micros,
                    }
                except CallInProgress:
                    if time.monotonic() < deadline:
                        await anyio.sleep(0.01)
                        continue
                    line = {"id": f"c{i}", "code": CallInProgress.code}
                except SOSError as exc:
                    line = {"id": f"c{i}", "code": exc.code}
                print(json.dumps(line), flush=True)
                break


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
