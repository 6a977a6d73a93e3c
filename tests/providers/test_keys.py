"""Provider keys: read only from the operator's mapping or ``SOS_PROVIDER_KEY_<ID>``, sent only to allowed hosts,
and never found in logs, errors, stores, reprs or the OpenAPI document."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import sos_kernel
from sos_kernel.errors import InvalidArgument, ProviderRejected, ProviderUnavailable
from sos_kernel.providers.runtime import ProviderRuntime
from sos_kernel.server import create_app

from ..conftest import OpenApi
from .conftest import card
from .fake_providers import Fakes

pytestmark = pytest.mark.anyio

SECRET = "sk-live-7f3a9c1e5b2d4068a1c3e5f7091b2d4f"
HI = [{"role": "user", "content": "hi"}]


def _listed(fakes: Fakes) -> str:
    """The fakes' exact ``host:port``: plain http reaches a key only there, because the operator listed it."""
    return fakes.base.removeprefix("http://")


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
    async with open_api(provider_keys={"main": SECRET}, provider_hosts=[_listed(fakes)]) as api:
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
    async with open_api(provider_hosts=[_listed(fakes)]) as api:
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
    if url.startswith(("redis://", "redis+cluster://")):
        from ..redis_cluster import sync_client

        client = sync_client(url)
        found = b"".join(k + (client.dump(k) or b"") for k in client.scan_iter())
        client.close()
        return found
    return repr(vars(kernel.backend.providers)).encode()  # memory: the store's own dicts


async def test_keys_are_nowhere_but_the_request_header(
    kernel_url: str, fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[Any] = []
    async with sos_kernel.open(kernel_url, provider_keys={"main": SECRET}, provider_hosts=[_listed(fakes)]) as kernel:
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


@pytest.mark.parametrize(
    "url",
    [
        "http://api.openai.com/v1",  # cleartext
        "https://api.openai.com:8080/v1",  # another port
        "https://api.openai.com:1/v1",
        "http://api.openai.com:443/v1",
    ],
)
def test_no_vendor_endpoint_but_https_on_its_default_port_is_allowed_or_given_a_key(url: str) -> None:
    runtime = ProviderRuntime({"main": SECRET}, hosts=[])
    with pytest.raises(InvalidArgument):
        runtime.check_url("openai-adapter", url, "endpoint")
    assert runtime.key("openai-adapter", "main", url) is None
    runtime.check_url("openai-adapter", "https://api.openai.com/v1", "endpoint")
    assert runtime.key("openai-adapter", "main", "https://api.openai.com/v1") == SECRET
    assert runtime.key("openai-adapter", "main", "https://api.openai.com:443/v1") == SECRET


def test_a_key_is_bound_to_its_backend_and_its_tenants() -> None:
    bound = {"key": SECRET, "backend": "openai-adapter", "tenants": ["acme"]}
    runtime = ProviderRuntime({"oai": bound, "plain": SECRET, "everyone": {**bound, "tenants": ["*"]}}, hosts=[])
    openai, anthropic = "https://api.openai.com/v1", "https://api.anthropic.com/v1"
    assert runtime.key("openai-adapter", "oai", openai, "acme") == SECRET
    assert runtime.key("claude-adapter", "oai", anthropic, "acme") is None  # never to another vendor
    assert runtime.key("openai-adapter", "oai", openai, "evil") is None  # never to a tenant not listed
    assert runtime.key("openai-adapter", "everyone", openai, "evil") == SECRET
    assert runtime.key("claude-adapter", "plain", anthropic, "default") == SECRET  # the operator's own tenant
    assert runtime.key("claude-adapter", "plain", anthropic, "evil") is None
    with pytest.raises(InvalidArgument):
        ProviderRuntime({"oai": {"key": SECRET}})  # a mapping entry names its backend


async def test_a_tenant_card_draws_an_operator_key_only_when_the_operator_gave_it_that_tenant(
    kernel_url: str, fakes: Fakes
) -> None:
    keys: dict[str, Any] = {"main": SECRET, "spare": {"key": SECRET, "backend": "openai-adapter", "tenants": ["acme"]}}
    async with sos_kernel.open(kernel_url, provider_keys=keys, provider_hosts=[_listed(fakes)]) as kernel:
        for slug in ("acme", "evil"):
            await kernel.tenants.create(slug, plan="scale")
            view = kernel.tenant(slug)
            await view.providers.register(card(fakes, "main"))
            await view.providers.register(card(fakes, "spare", tier="fallback"))
            await view.engine.chat(HI)
            await view.engine.chat(HI, tier="fallback")
    assert _sent_keys(fakes, "main") == [None, None]  # the operator's plain key is the default tenant's only
    assert _sent_keys(fakes, "spare") == [f"Bearer {SECRET}", None]
