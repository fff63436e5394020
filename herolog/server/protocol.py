"""uvicorn's httptools protocol with the two limits it lacks for a public log intake: a time
limit on a request's headers, and a size limit on them.

uvicorn times out idle keep-alive connections, but not a connection that never finishes its
headers: a client sending a byte every few seconds (or nothing at all after connecting)
would hold a connection, and a file descriptor, for ever. Nor does it bound the headers:
httptools gathers a header's value in memory until it ends. Logplex sends a few hundred
bytes of headers at once, so the limits cost drains nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from herolog.server.app import Stats

MAX_HEADER_BYTES = 64 << 10
"""Request line and headers, at most (nginx allows 32 KiB, Node 16 KiB)."""


class HeaderLimits:
    """The limits, and one timer for every connection whose headers are still arriving
    (a timer each would cost every request something; as BodyDeadlines)."""

    def __init__(self, timeout: float, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.stats: Stats | None = None
        self._tick = min(1.0, timeout / 4)
        self._waiting: dict[LimitedHttpToolsProtocol, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, protocol: LimitedHttpToolsProtocol) -> None:
        """Start the clock on ``protocol``'s headers (the protocol calls it once for each
        request's headers, however many chunks they come in)."""
        loop = asyncio.get_running_loop()
        self._waiting[protocol] = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._check)

    def forget(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._waiting.pop(protocol, None)

    def count(self, status: int) -> None:
        if self.stats is not None:
            self.stats.responses[status] += 1

    def _check(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        overdue = [protocol for protocol, deadline in self._waiting.items() if deadline <= now]
        for protocol in overdue:
            del self._waiting[protocol]
            protocol.refuse(408, f"the request headers did not arrive within {self.timeout:g} s")
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._check)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Answers 408 to headers that take longer than ``limits.timeout`` from the connection
    (or from the first bytes of a later request on it), and 414 or 431 to a request line or
    headers over ``limits.max_bytes``; the connection is closed after. See
    :func:`protocol_class`.

    Two methods are hooked, not httptools' callback for each header, and whether a request
    is in its headers is read from uvicorn's own state: every Python frame on this path
    costs each drain request something (hooking every callback cost 0.90x the requests/s).
    """

    limits: ClassVar[HeaderLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = 0
        """The size of the chunk being parsed."""
        self._first_chunk = 0
        """The size of the chunk in which a request still in its headers began."""
        self._header_bytes = 0
        """What surely belongs to that request's headers among the chunks received since."""
        self._watched = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watched = True
        self.limits.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._chunk = size = len(data)
        scope = self.scope
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # the headers are all here
            if self._watched:
                self._watched = False
                self._first_chunk = self._header_bytes = 0
                self.limits.forget(self)
            return
        if self.scope is not scope:  # a request began in this chunk
            self._first_chunk = size
            # All of it is this request's if it is the connection's first; httptools keeps a
            # header's value in memory until it ends, so what comes is counted as it comes.
            self._header_bytes = size if scope is None else 0
        else:
            self._header_bytes += size
        if self._header_bytes > self.limits.max_bytes:
            self.refuse(*self._too_large(url=not self.headers))
        elif not self._watched:
            self._watched = True
            self.limits.watch(self)

    def on_headers_complete(self) -> None:
        # The headers are at most what arrived since the request began: counted exactly only
        # when that could be over the limit.
        if self._first_chunk + self._header_bytes + self._chunk > self.limits.max_bytes:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.limits.max_bytes:
                status, message = self._too_large(url=len(self.url) > self.limits.max_bytes)
                self.limits.count(status)
                # Answered as any request is (the body read and dropped), then closed.
                app, self.app = self.app, _refusal(status, message)
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
                return
        super().on_headers_complete()

    def _too_large(self, *, url: bool) -> tuple[int, str]:
        limit = f"{self.limits.max_bytes:,}-byte limit"
        if url:
            return 414, f"the request line is over the {limit}"
        return 431, f"the request headers are over the {limit}"

    def refuse(self, status: int, message: str) -> None:
        """Answer ``status`` before a request has started, unless an answer to an earlier
        one is under way, and close the connection."""
        self._watched = False
        self.limits.forget(self)
        if self.transport.is_closing():
            return
        self.limits.count(status)
        if self.cycle is None or self.cycle.response_complete:
            text = message.encode() + b"\n"
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(text), text)
            )
        self.transport.close()


_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


def _refusal(status: int, message: str) -> Any:
    """An ASGI app that answers ``status`` with ``message`` and closes the connection."""
    text = message.encode() + b"\n"

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(text)),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text})

    return refuse


def protocol_class(limits: HeaderLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for one server (uvicorn's ``http`` setting) with its limits."""
    return type("HerologHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
