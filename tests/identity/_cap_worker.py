"""One client of the concurrent capability-use test (``test_capabilities.py``), run as a separate process.

    python _cap_worker.py URL TENANT TRUSTED_KEY_HEX CHAIN_JSON TRIES GO_FILE

``CHAIN_JSON`` is a JSON array of capabilities (each one ``model_dump_json()``), root first. The worker trusts the
issuer key, prints ``READY`` once connected, waits for ``GO_FILE`` to exist, then tries ``use`` TRIES times and
prints one line per try: ``ok`` or the error code. It decides nothing: the test counts.
"""

from __future__ import annotations

import json
import sys
import time

import anyio

import sos_kernel
from sos_kernel.errors import SOSError
from sos_kernel.identity import Capability, PublicKey

ACTION = "bus:write"
RESOURCE = "sos:channel:jobs"


def say(line: str) -> None:
    print(line, flush=True)


async def run(url: str, tenant: str, key_hex: str, chain_json: str, tries: int, go_file: anyio.Path) -> None:
    chain = [Capability.model_validate(item) for item in json.loads(chain_json)]
    async with sos_kernel.open(url) as kernel:
        capabilities = kernel.tenant(tenant).capabilities
        capabilities.trust(PublicKey.from_hex(key_hex))
        say("READY")
        deadline = time.monotonic() + 60
        while not await go_file.exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal")
            await anyio.sleep(0.005)
        for _ in range(tries):
            try:
                await capabilities.use(chain, action=ACTION, resource=RESOURCE)
            except SOSError as exc:
                say(exc.code)
            else:
                say("ok")


def main() -> None:
    url, tenant, key_hex, chain_json, tries, go_file = sys.argv[1:7]
    anyio.run(run, url, tenant, key_hex, chain_json, int(tries), anyio.Path(go_file))


if __name__ == "__main__":
    main()
