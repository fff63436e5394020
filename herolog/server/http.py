"""ASGI types and the HTTP helpers the intake and the Platform API share: errors, auth,
reading a body within a limit."""

from __future__ import annotations

import base64
import binascii
import hmac
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


class ClientGone(Exception):
    """The client disconnected before its request was complete."""


LOGPLEX_TYPE = "application/logplex-1"
"""What Heroku's HTTPS drains post."""
LOGPLEX_TYPE_BYTES = LOGPLEX_TYPE.encode()


def media_type(content_type: bytes | None) -> bytes:
    """The media type of a Content-Type value, without its parameters, in lower case."""
    return (content_type or b"").split(b";")[0].strip().lower()


def headers_only(send: Send) -> Send:
    """``send`` for a HEAD request: the answer GET would get, status and headers (its
    Content-Length too), without the body (RFC 9110 section 9.3.2). uvicorn drops a HEAD
    answer's body as well, but the app does not lean on its server for it."""

    async def send_headers(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return send_headers


def from_browser(origin: bytes | None, fetch_site: bytes | None) -> bool:
    """Whether a request comes from a web page, by its ``Origin`` and ``Sec-Fetch-Site``
    headers: browsers send an Origin with every POST (a same-origin one too, as a page whose
    name an attacker rebound to 127.0.0.1 makes), and say cross-site in Sec-Fetch-Site;
    drains and API clients send neither."""
    return origin is not None or fetch_site not in (None, b"none", b"same-origin")


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


def has_key(scope: Scope, key: str) -> bool:
    """Whether the request carries ``key``: ``Bearer KEY``, or Basic with KEY as password."""
    token = bearer_or_basic_password(header(scope, b"authorization"))
    return token is not None and same_secret(token, key)


MAX_GZIP_MEMBERS = 1000
"""Most members a gzip body may have: each costs the event loop a decoder of its own, and
zlib copies what follows each one (5 MB of empty members took seconds)."""


def gunzip(
    decoder: Any, data: bytes, room: int, limit: int, members: int = 1
) -> tuple[bytes, Any, int]:
    """Decompress the next bytes of a gzip body, across members (``cat a.gz b.gz`` is a
    gzip body too); at most ``room`` bytes of output (413 past it, naming ``limit``), and
    at most :data:`MAX_GZIP_MEMBERS` members, ``members`` of them begun already (400 past
    them). Returns the output, the decoder to use for what comes next, and the members
    begun."""
    out = []
    while True:
        if room <= 0:  # over the limit already; and a max_length of 0 would mean no limit
            raise body_too_large(limit)
        try:
            chunk = decoder.decompress(data, room)
        except zlib.error as error:
            raise HTTPError(400, f"the gzip body is corrupt: {error}") from None
        if decoder.unconsumed_tail:  # more output than the limit allows: a gzip bomb
            raise body_too_large(limit)
        out.append(chunk)
        room -= len(chunk)
        if not decoder.eof or not decoder.unused_data:
            return b"".join(out), decoder, members
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise HTTPError(400, f"the gzip body has more than {MAX_GZIP_MEMBERS:,} members")
        data = decoder.unused_data
        decoder = zlib.decompressobj(wbits=31)


def body_too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"the body is over the {limit:,}-byte limit")


async def read_body(receive: Receive, limit: int, *, gzip: bool) -> bytes:
    """The whole request body, refusing (413) past ``limit`` bytes, after gzip decoding."""
    message = await receive()
    if not gzip and message["type"] == "http.request" and not message.get("more_body"):
        # The usual drain POST: one message, the whole body (uvicorn has its length).
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise body_too_large(limit)
        return body
    chunks: list[bytes] = []
    received = 0  # bytes on the wire
    total = 0  # bytes of body, after decoding
    decoder = zlib.decompressobj(wbits=31) if gzip else None
    members = 1
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone
        data: bytes = message.get("body", b"")
        received += len(data)
        if decoder is not None:
            data, decoder, members = gunzip(decoder, data, limit + 1 - total, limit, members)
        total += len(data)
        if total > limit or received > limit:
            raise body_too_large(limit)
        chunks.append(data)
        if not message.get("more_body", False):
            break
        message = await receive()
    if decoder is not None and not decoder.eof:
        raise HTTPError(400, "the gzip body is truncated")
    return b"".join(chunks)
