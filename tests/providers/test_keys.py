"""Provider keys: read only from the operator's mapping or ``SOS_PROVIDER_KEY_<ID>``, sent only to allowed hosts,
and never found in logs, errors, stores, reprs or the OpenAPI document."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.errors import ProviderRejected, ProviderUnavailable
from sos_kernel.server import create_app

from ..conftest import OpenApi
from .conftest import card
from .fake_providers import Fakes

pytestmark = pytest.mark.anyio

SECRET = "sk-live-7f3a9c1e5b2d4068a1c3e5f7091b2d4f"
HI = [{"role": "user", "content": "hi"}]


def _sent_keys(fakes: Fakes, name: str) -> list[str | None]:
    return [
        h.get("authorization") or h.get("x-api-key") or h.get("x-goog-api-key")
        for n, h, _ in fakes.requests
        if n == name
    ]


@pytest.mark.parametrize(
    ("kind", "header"), [("openai", f"Bearer {SECRET}"), ("anthropic", SECRET), ("gemini", SECRET)]
)
async def test_a_key_travels_in_its_formats_header_to_an_allowed_host(
    open_api: OpenApi, fakes: Fakes, kind: str, header: str
) -> None:
    async with open_api(provider_keys={"main": SECRET}, provider_hosts=["127.0.0.1"]) as api:
        await api.providers.register(card(fakes, "main", kind))
        await api.engine.chat(HI)
    assert _sent_keys(fakes, "main") == [header]
    assert all(SECRET not in url for url in (fakes.url("main", kind),))


async def test_no_key_goes_to_loopback_unless_the_operator_lists_it(open_api: OpenApi, fakes: Fakes) -> None:
    async with open_api(provider_keys={"main": SECRET}) as api:
        await api.providers.register(card(fakes, "main"))
        await api.engine.chat(HI)
    assert _sent_keys(fakes, "main") == [None]


async def test_a_card_cannot_name_an_environment_variable(
    open_api: OpenApi, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-operator-secret")
    monkeypatch.setenv("SOS_PROVIDER_KEY_MAIN", SECRET)
    async with open_api(provider_hosts=["127.0.0.1"]) as api:
        await api.providers.register(card(fakes, "aws-secret-access-key"))
        await api.providers.register(card(fakes, "main", tier="fallback"))
        await api.engine.chat(HI, model="aws-secret-access-key")
        await api.engine.chat(HI, tier="fallback")
    assert _sent_keys(fakes, "aws-secret-access-key") == [None]
    assert _sent_keys(fakes, "main") == [f"Bearer {SECRET}"]


def _stored_bytes(kernel: sos_kernel.Kernel, url: str) -> bytes:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    if url.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(url)
        found = b"".join(k + (client.dump(k) or b"") for k in client.scan_iter())
        client.close()
        return found
    return repr(vars(kernel.backend.providers)).encode()  # memory: the store's own dicts


async def test_keys_are_nowhere_but_the_request_header(
    kernel_url: str, fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[Any] = []
    async with sos_kernel.open(kernel_url, provider_keys={"main": SECRET}, provider_hosts=["127.0.0.1"]) as kernel:
        await kernel.providers.register(card(fakes, "main"))
        await kernel.providers.register(card(fakes, "spare", tier="fallback"))
        await kernel.ledger.set_price("main", "openai-model", input_per_mtok_micros=1)
        reply = await kernel.engine.chat(HI, id="one")
        seen += [reply, await kernel.providers.list(), await kernel.providers.health(), await kernel.ledger.usage()]
        seen += [kernel, kernel.provider_runtime, kernel.providers, kernel.engine]
        fakes.modes.update(main="echo400")
        with pytest.raises(ProviderRejected) as rejected:
            await kernel.engine.chat(HI)
        fakes.modes.update(main="500", spare="500")
        with pytest.raises(ProviderUnavailable) as unavailable:
            await kernel.engine.chat(HI)
        seen += [rejected.value, rejected.value.to_wire(), unavailable.value, unavailable.value.to_wire()]
        openapi = json.dumps(create_app(kernel).openapi())
        stored = _stored_bytes(kernel, kernel_url)
    assert SECRET in str(fakes.requests[0][1])  # it was sent...
    assert "***" in str(rejected.value.details)  # ...quoted back by the provider, and scrubbed
    for text in [*(repr(x) for x in seen), *(str(x) for x in seen), caplog.text, openapi]:
        assert SECRET not in text
    assert SECRET.encode() not in stored
