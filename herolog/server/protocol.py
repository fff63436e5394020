"""uvicorn's httptools protocol with the limits it lacks for a public log intake: time limits
on a request's headers and on its body, and a size limit on the headers.

uvicorn times out idle keep-alive connections, but not a connection that never finishes its
headers or its body: a client sending a byte every few seconds (or nothing at all after
connecting) would hold a connection, and a file descriptor, for ever. Nor does it bound the
headers: httptools gathers a header's value in memory until it ends. Logplex sends a few
hundred bytes of headers and its body at once, so the limits cost drains nothing.

This leans on uvicorn's protocol beyond its public settings (the request cycle it keeps and
its parser callbacks); tests/server/test_abuse.py and test_protocol.py drive each limit
through a real server, so an upgrade of uvicorn that moves them fails there, and
pyproject.toml caps uvicorn at the newest release the suite has passed on.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, ClassVar, Literal, TextIO

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from herolog.server.app import Stats
from herolog.server.syslog import TLS_HANDSHAKE, Throttled, from_peer

MAX_HEADER_BYTES = 64 << 10
"""Request line and headers, at most (nginx allows 32 KiB, Node 16 KiB)."""

Waiting = Literal["headers", "body"]


class RequestLimits:
    """The limits, and one timer for every connection whose request is still arriving (a
    timer each would cost every request something)."""

    def __init__(
        self,
        header_timeout: float,
        body_timeout: float,
        max_body: int,
        max_header_bytes: int = MAX_HEADER_BYTES,
        stats: Stats | None = None,
        log: TextIO | None = None,
    ) -> None:
        self.timeouts: dict[Waiting, float] = {"headers": header_timeout, "body": body_timeout}
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = 2 * max_body + max_header_bytes
        """What a request may send after its headers: its body (the handler refuses one over
        ``max_body``), chunk framing, and trailers, which httptools adds to the headers."""
        self.stats = stats
        """Where refusals are counted (``GET /stats``)."""
        self.tls_clients = Throttled(log if log is not None else sys.stderr, _say_tls_client)
        """Connections that began a TLS handshake: this port serves plain HTTP."""
        self._tick = min(1.0, header_timeout / 4, body_timeout / 4)
        self._waiting: dict[LimitedHttpToolsProtocol, tuple[float, Waiting]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, protocol: LimitedHttpToolsProtocol, what: Waiting) -> None:
        """Start the clock on ``protocol``'s request headers or body (the protocol calls it
        once for each, however many chunks they come in)."""
        loop = asyncio.get_running_loop()
        self._waiting[protocol] = (loop.time() + self.timeouts[what], what)
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
        overdue = [(p, what) for p, (deadline, what) in self._waiting.items() if deadline <= now]
        for protocol, what in overdue:
            if protocol.pipeline:
                # uvicorn reads nothing more from a connection while a request waits behind an
                # unfinished one (a log stream, say): the client cannot be late meanwhile.
                self._waiting[protocol] = (now + self.timeouts[what], what)
                continue
            del self._waiting[protocol]
            late = "the request headers" if what == "headers" else "the body"
            message = f"{late} did not arrive within {self.timeouts[what]:g} s"
            protocol.refuse(408, message, late=what)
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._check)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Answers 408 to headers that take longer than their timeout from the connection (or
    from the first bytes of a later request on it) and to a body that takes longer than its
    timeout from the headers, and 414 or 431 to a request line or headers over the size
    limit; the connection is closed after. See :func:`protocol_class`.

    Two methods are hooked, not httptools' callback for each header, and where a request is
    is read from uvicorn's own state: every Python frame on this path costs each drain
    request something (hooking every callback cost 0.90x the requests/s).
    """

    limits: ClassVar[RequestLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = 0
        """The size of the chunk being parsed."""
        self._first_chunk = 0
        """The size of the chunk in which a request still in its headers began."""
        self._header_bytes = 0
        """What surely belongs to that request's headers among the chunks received since."""
        self._body_bytes = 0
        """What arrived after the chunk in which the current request's headers ended."""
        self._waiting: Waiting | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._chunk = size = len(data)
        scope: object | None = self.scope  # uvicorn's annotations say never None; they are
        if scope is None and data[:1] == TLS_HANDSHAKE:  # as the connection's first request
            # An https:// URL for a serve without --certfile. The plain answer is what tells
            # the client (OpenSSL's "wrong version number") that this port speaks plain HTTP.
            self.limits.tls_clients.add(from_peer(self.transport.get_extra_info("peername")), "")
            self.refuse(400, "this port serves plain HTTP, not TLS: use http://")
            return
        super().data_received(data)
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # the headers are all here
            if cycle.more_body:
                if self._waiting != "body":
                    self._body_bytes = 0
                    self._wait("body")
                else:
                    self._body_bytes += size
                    if self._body_bytes > self.limits.max_body_bytes:
                        limit = f"{self.limits.max_body_bytes:,}-byte limit"
                        self.refuse(413, f"the request is over the {limit}", late="body")
            elif self._waiting is not None:
                self._waiting = None
                self._first_chunk = self._header_bytes = 0
                self.limits.forget(self)
            return
        if self.scope is not scope:  # a request began in this chunk
            self._first_chunk = size
            # All of it is this request's if it is the connection's first and no earlier one
            # ended in it; httptools keeps a header's value in memory until it ends, so what
            # comes is counted as it comes.
            self._header_bytes = size if scope is None and cycle is None else 0
        else:
            self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self.refuse(*self._too_large(url=len(self.url) > self.limits.max_header_bytes // 2))
        elif self._waiting != "headers":
            self._wait("headers")

    def on_headers_complete(self) -> None:
        # The headers are at most what arrived since the request began: counted exactly only
        # when that could be over the limit.
        limit = self.limits.max_header_bytes
        if self._first_chunk + self._header_bytes + self._chunk > limit:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > limit:
                status, message = self._too_large(url=len(self.url) > limit)
                self.limits.count(status)
                # uvicorn parses the URL next, and httptools cannot parse one over 65,535
                # bytes (a 400): the refusal does not need it.
                self.url = b"/"
                # Answered as any request is (the body read and dropped), then closed.
                app, self.app = self.app, _refusal(status, message)
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
                return
        super().on_headers_complete()

    def _wait(self, what: Waiting) -> None:
        self._waiting = what
        self.limits.watch(self, what)

    def _too_large(self, *, url: bool) -> tuple[int, str]:
        limit = f"{self.limits.max_header_bytes:,}-byte limit"
        if url:
            return 414, f"the request line is over the {limit}"
        return 431, f"the request headers are over the {limit}"

    def refuse(self, status: int, message: str, late: Waiting = "headers") -> None:
        """Answer ``status`` unless an answer is under way, and close the connection. A
        handler still waiting for the body is told its client has gone (by uvicorn, as the
        connection closes), so nothing of that request is stored."""
        self._waiting = None
        self.limits.forget(self)
        if self.transport.is_closing():
            return
        self.limits.count(status)
        cycle = self.cycle
        if late == "body":
            answer = not cycle.response_started
        else:
            answer = cycle is None or cycle.response_complete
        if answer:
            text = message.encode() + b"\n"
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(text), text)
            )
        self.transport.close()


_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


def _say_tls_client(count: int, peer: str, _: str) -> str:
    what = "a connection that" if count == 1 else f"{count:,} connections that each"
    where = (f" ({peer})" if count == 1 else f" (the last {peer})") if peer else ""
    return (
        f"herolog serve: closed {what} began a TLS handshake{where}: this port serves plain"
        " HTTP (drain URLs to it start http://; for https://, give serve --certfile and"
        " --keyfile)"
    )


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


def protocol_class(limits: RequestLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for one server (uvicorn's ``http`` setting) with its limits."""
    return type("HerologHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
