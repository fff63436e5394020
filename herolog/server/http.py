"""ASGI types and the small HTTP helpers the intake and the Platform API share."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def basic_credentials(value: bytes | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header, or None."""
    if not value:
        return None
    scheme, _, encoded = value.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def bearer_or_basic_password(value: bytes | None) -> str | None:
    """The token of ``Authorization: Bearer TOKEN``, or the password of Basic (for curl)."""
    if value and value[:7].lower() == b"bearer ":
        return value[7:].decode("latin-1").strip()
    creds = basic_credentials(value)
    return creds[1] if creds else None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, so the time taken says nothing about the secret."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
