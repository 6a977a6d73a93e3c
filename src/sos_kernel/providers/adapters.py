"""Adapters: one wire format each, over httpx, streaming and not; usage read from each provider's own fields.

- ``openai-adapter`` / ``openai-agents-sdk``: the chat-completions format (``POST <base>/chat/completions``), which
  vLLM, Ollama, llama.cpp servers and OpenRouter speak too; usage from ``prompt_tokens`` / ``completion_tokens``.
- ``claude-adapter``: Anthropic Messages (``POST <base>/messages``); usage from ``input_tokens`` / ``output_tokens``.
- ``gemini-adapter``: ``POST <base>/models/<model>:generateContent`` (``:streamGenerateContent?alt=sse``); usage
  from ``usageMetadata.promptTokenCount`` / ``candidatesTokenCount``.
- ``local``: no network. ``local://echo`` (the default) answers the last user message; ``local://fail`` always
  fails like an unreachable provider (to demonstrate failover).

An adapter builds the request and reads answers; the engine sends it, so limits, breakers and keys are applied in
one place. A key only ever travels in a request header, never in a URL.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .._json import loads
from ..contracts import ProviderCard

__all__ = ["ADAPTERS", "WIRE_ADAPTERS", "Adapter", "Answer", "Request", "StreamState", "WireAdapter", "local_answer"]


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request an adapter built (its headers may hold the key: never logged nor shown)."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]

    def __repr__(self) -> str:
        return f"Request({self.url!r})"


@dataclass(frozen=True, slots=True)
class Answer:
    """The text and token counts read from an answer."""

    text: str
    input_tokens: int
    output_tokens: int


@dataclass(slots=True)
class StreamState:
    """Usage seen so far in a stream (providers send it in the first, last or every event)."""

    input_tokens: int = 0
    output_tokens: int = 0
    done: bool = False
    parts: list[str] = field(default_factory=list)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class Adapter:
    """Where a provider answers: its ``base`` URL and the ``headers`` that carry its key."""

    default_base = ""
    key_header = ""

    def base(self, card: ProviderCard) -> str:
        """The base URL: the card's endpoint, else the vendor's."""
        return (card.endpoint or self.default_base).rstrip("/")

    def headers(self, key: str | None) -> dict[str, str]:
        found = {"content-type": "application/json"}
        if key is not None:
            found[self.key_header] = key
        return found


class WireAdapter(Adapter, ABC):
    """A wire format over HTTP: ``build`` a request, ``parse`` an answer, ``event`` reads one streamed event's data."""

    @abstractmethod
    def build(
        self, card: ProviderCard, messages: Sequence[Mapping[str, str]], max_tokens: int, stream: bool, key: str | None
    ) -> Request:
        """The HTTP request that asks ``card``'s model (streamed when ``stream``)."""

    @abstractmethod
    def parse(self, data: Any) -> Answer:
        """The answer in a whole (non-streamed) response body."""

    @abstractmethod
    def event(self, data: Any, state: StreamState) -> str:
        """The text piece one streamed event carries ("" for none); usage found on the way goes into ``state``."""


class OpenAIAdapter(WireAdapter):
    """The chat-completions format."""

    default_base = "https://api.openai.com/v1"
    key_header = "authorization"

    def headers(self, key: str | None) -> dict[str, str]:
        found = super().headers(None)
        if key is not None:
            found["authorization"] = f"Bearer {key}"
        return found

    def build(
        self, card: ProviderCard, messages: Sequence[Mapping[str, str]], max_tokens: int, stream: bool, key: str | None
    ) -> Request:
        body: dict[str, Any] = {"model": card.model, "messages": [dict(m) for m in messages], "max_tokens": max_tokens}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return Request(self.base(card) + "/chat/completions", self.headers(key), body)

    def parse(self, data: Any) -> Answer:
        message = data["choices"][0]["message"]
        usage = data.get("usage") or {}
        return Answer(
            _text(message.get("content")), _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        )

    def event(self, data: Any, state: StreamState) -> str:
        usage = data.get("usage")
        if isinstance(usage, dict):
            state.input_tokens = _int(usage.get("prompt_tokens"))
            state.output_tokens = _int(usage.get("completion_tokens"))
        choices = data.get("choices") or []
        if not choices:
            return ""
        return _text((choices[0].get("delta") or {}).get("content"))


class AnthropicAdapter(WireAdapter):
    """Anthropic Messages."""

    default_base = "https://api.anthropic.com/v1"
    key_header = "x-api-key"
    version = "2023-06-01"

    def build(
        self, card: ProviderCard, messages: Sequence[Mapping[str, str]], max_tokens: int, stream: bool, key: str | None
    ) -> Request:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        body: dict[str, Any] = {"model": card.model, "max_tokens": max_tokens, "messages": turns}
        if system:
            body["system"] = system
        if stream:
            body["stream"] = True
        headers = {**self.headers(key), "anthropic-version": self.version}
        return Request(self.base(card) + "/messages", headers, body)

    def parse(self, data: Any) -> Answer:
        text = "".join(_text(b.get("text")) for b in data["content"] if b.get("type") == "text")
        usage = data.get("usage") or {}
        return Answer(text, _int(usage.get("input_tokens")), _int(usage.get("output_tokens")))

    def event(self, data: Any, state: StreamState) -> str:
        kind = data.get("type")
        if kind == "message_start":
            usage = (data.get("message") or {}).get("usage") or {}
            state.input_tokens = _int(usage.get("input_tokens"))
            state.output_tokens = _int(usage.get("output_tokens"))
        elif kind == "message_delta":
            state.output_tokens = _int((data.get("usage") or {}).get("output_tokens")) or state.output_tokens
        elif kind == "message_stop":
            state.done = True
        elif kind == "content_block_delta":
            return _text((data.get("delta") or {}).get("text"))
        return ""


class GeminiAdapter(WireAdapter):
    """Gemini ``generateContent``."""

    default_base = "https://generativelanguage.googleapis.com/v1beta"
    key_header = "x-goog-api-key"

    def build(
        self, card: ProviderCard, messages: Sequence[Mapping[str, str]], max_tokens: int, stream: bool, key: str | None
    ) -> Request:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        contents = [
            {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
            for m in messages
            if m["role"] != "system"
        ]
        body: dict[str, Any] = {"contents": contents, "generationConfig": {"maxOutputTokens": max_tokens}}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return Request(f"{self.base(card)}/models/{quote(card.model, safe='')}:{method}", self.headers(key), body)

    @staticmethod
    def _parts(data: Any) -> str:
        candidates = data.get("candidates") or []
        if not candidates:
            return ""
        parts = (candidates[0].get("content") or {}).get("parts") or []
        return "".join(_text(p.get("text")) for p in parts)

    def parse(self, data: Any) -> Answer:
        if "candidates" not in data:
            raise KeyError("candidates")
        usage = data.get("usageMetadata") or {}
        return Answer(self._parts(data), _int(usage.get("promptTokenCount")), _int(usage.get("candidatesTokenCount")))

    def event(self, data: Any, state: StreamState) -> str:
        usage = data.get("usageMetadata")
        if isinstance(usage, dict):
            state.input_tokens = _int(usage.get("promptTokenCount")) or state.input_tokens
            state.output_tokens = _int(usage.get("candidatesTokenCount")) or state.output_tokens
        return self._parts(data)


class LocalAdapter(Adapter):
    """No network and no wire format: the engine answers with :func:`local_answer`."""

    default_base = "local://echo"


def local_answer(card: ProviderCard, messages: Sequence[Mapping[str, str]], max_tokens: int) -> Answer | None:
    """The ``local`` provider's answer (None for ``local://fail``); tokens are counted as words."""
    if (card.endpoint or "local://echo") == "local://fail":
        return None
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    words = last.split()[:max_tokens]
    return Answer(" ".join(words), sum(len(m["content"].split()) for m in messages), len(words))


WIRE_ADAPTERS: dict[str, WireAdapter] = {
    "openai-adapter": OpenAIAdapter(),
    "openai-agents-sdk": OpenAIAdapter(),
    "claude-adapter": AnthropicAdapter(),
    "gemini-adapter": GeminiAdapter(),
}
"""The backends the engine calls over HTTP, by wire format."""
ADAPTERS: dict[str, Adapter] = {**WIRE_ADAPTERS, "local": LocalAdapter()}
"""Every backend a card may name."""
"""Card backend -> adapter. ``claude-managed-agents`` and ``langgraph`` cards are refused at registration: they name
agent runtimes, not a model wire format this kernel speaks."""


def decode_json(raw: bytes) -> Any:
    """A JSON answer (ValueError when it is not JSON, SOS-4001 ``SchemaViolation`` when it repeats a key)."""
    return loads(raw)
