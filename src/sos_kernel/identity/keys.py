"""Ed25519 keys for agents and capability issuers (pynacl).

A key id is the first 16 hex digits of the SHA-256 of the raw public key, so an issuer can rotate keys and a
verifier can tell which trusted key a signature claims. Signatures travel as ``ed25519:<hex>``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..errors import InvalidArgument

__all__ = ["SIGNATURE_PREFIX", "AgentKey", "PublicKey", "key_id_of"]

SIGNATURE_PREFIX = "ed25519:"


@functools.lru_cache(maxsize=4096)
def _verify_key(hex_key: str) -> VerifyKey:
    # Building a VerifyKey costs a few microseconds; keys repeat across chains and calls.
    return VerifyKey(bytes.fromhex(hex_key))


@functools.lru_cache(maxsize=4096)
def _parsed_public_key(hex_key: str) -> PublicKey:
    # PublicKey is frozen, so one parsed instance can be shared; a bad key raises and is not cached.
    return PublicKey._parse(hex_key)


def key_id_of(public_key: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verifying key and its id; safe to publish (e.g. on an agent card)."""

    key_id: str
    hex: str

    @classmethod
    def from_hex(cls, value: str) -> PublicKey:
        """Parse a 64-hex-digit Ed25519 public key; raises SOS-4005 for anything else."""
        if cls is PublicKey and type(value) is str:
            return _parsed_public_key(value)  # keys repeat across chains and calls: parse each once
        return cls._parse(value)

    @classmethod
    def _parse(cls, value: str) -> PublicKey:
        try:
            raw = bytes.fromhex(value)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"not an Ed25519 public key: {value!r}") from exc
        if len(raw) != 32:
            raise InvalidArgument("an Ed25519 public key is 32 bytes (64 hex digits)")
        return cls(key_id_of(raw), value.lower())

    def verify(self, message: bytes, signature: str) -> bool:
        """True when ``signature`` (``ed25519:<hex>``) signs ``message`` with this key."""
        if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
            return False
        try:
            _verify_key(self.hex).verify(message, bytes.fromhex(signature[len(SIGNATURE_PREFIX) :]))
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True


class AgentKey:
    """An Ed25519 signing key. Keep it secret; share :attr:`public`."""

    __slots__ = ("_signing", "public")

    def __init__(self, signing: SigningKey) -> None:
        self._signing = signing
        raw = bytes(signing.verify_key)
        self.public = PublicKey(key_id_of(raw), raw.hex())

    @classmethod
    def generate(cls) -> AgentKey:
        """A new random key."""
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> AgentKey:
        """The key for a 32-byte seed (for keys kept in a secret store)."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise InvalidArgument("an Ed25519 seed is 32 bytes")
        return cls(SigningKey(seed))

    @property
    def key_id(self) -> str:
        """The public key's id."""
        return self.public.key_id

    def seed(self) -> bytes:
        """The 32-byte seed (secret)."""
        return bytes(self._signing)

    def sign(self, message: bytes) -> str:
        """``ed25519:<hex>`` signature of ``message``."""
        return SIGNATURE_PREFIX + self._signing.sign(message).signature.hex()

    def __repr__(self) -> str:
        return f"AgentKey(key_id={self.key_id!r})"
