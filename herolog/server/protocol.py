"""uvicorn's httptools protocol with the limits it lacks for a public log intake: time limits
on a request's headers and on its body, and a size limit on the headers.

uvicorn times out idle keep-alive connections, but not a connection that never finishes its
headers or its body: a client sending a byte every few seconds (or nothing at all after
connecting) would hold a connection, and a file descriptor, for ever. Nor does it bound the
headers: httptools gathers a header's value in memory until it ends. Logplex sends a few
hundred bytes of headers and its body at once, so the limits cost drains nothing.

It also answers the commonest request itself, a drain POST that passes the intake's checks
(see _DrainPost).

This leans on uvicorn's protocol beyond its public settings (the request cycle it keeps, its
parser callbacks, its status lines and default headers); tests/server/test_abuse.py,
test_protocol.py and test_drain_post.py drive each limit and the drain POST path through a
real server, so an upgrade of uvicorn that moves them fails there, and pyproject.toml caps
uvicorn at the newest release the suite has passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import struct
import sys
from typing import Any, ClassVar, Literal, TextIO

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from herolog.server import tcp
from herolog.server.app import Admitted, HerologApp, Stats, not_stored, plain_answer
from herolog.server.http import HTTPError
from herolog.server.syslog import TLS_HANDSHAKE, from_peer
from herolog.server.throttle import Throttled
from herolog.server.writer import BadBody, Stored, WriterStopped
from herolog.store import StoreError

UNACKNOWLEDGED_S = 180.0
"""serve lets an HTTP connection go once what it sent there has waited this long with nothing
at all heard from the client's system: a tail's reader whose host vanished (a laptop closed,
a network gone silent) sends no reset, and its stream, with the session and up to a tail
buffer of lines, was held until the kernel gave up retransmitting, about 15 minutes. A client
that only stopped reading (a pager paused on a history) is kept however long it pauses: its
system answers the probes of its closed window, at most 2 minutes apart. (TCP_USER_TIMEOUT
would not tell the two apart: it cuts off a closed window too.)"""
MAX_HEADER_BYTES = 64 << 10
"""Request line and headers, at most (nginx allows 32 KiB, Node 16 KiB)."""

Waiting = Literal["headers", "body"]
_DRAIN_POST_URL = re.compile(rb"/apps/([^/?#%\x00-\x20\x7f-\xff]+)/logs/?(?:\?([^#]*))?")
"""A drain URL with nothing in it that uvicorn would decode (``%``)."""


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
        self._open: set[LimitedHttpToolsProtocol] = set()
        self._silence_timer: asyncio.TimerHandle | None = None

    def watch(self, protocol: LimitedHttpToolsProtocol, what: Waiting) -> None:
        """Start the clock on ``protocol``'s request headers or body (the protocol calls it
        once for each, however many chunks they come in)."""
        loop = asyncio.get_running_loop()
        self._waiting[protocol] = (loop.time() + self.timeouts[what], what)
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._check)

    def forget(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._waiting.pop(protocol, None)

    def opened(self, protocol: LimitedHttpToolsProtocol) -> None:
        """Watch ``protocol``'s connection for a client gone silent (UNACKNOWLEDGED_S)."""
        if not tcp.TELLS:
            return
        self._open.add(protocol)
        if self._silence_timer is None:
            loop = asyncio.get_running_loop()
            self._silence_timer = loop.call_later(UNACKNOWLEDGED_S / 6, self._let_silent_go)

    def closed(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._open.discard(protocol)

    def _let_silent_go(self) -> None:
        self._silence_timer = None
        for protocol in list(self._open):
            sock = protocol.transport.get_extra_info("socket")
            told = None if sock is None else tcp.sending(sock)
            if told is not None and told.unacknowledged and told.unheard_s >= UNACKNOWLEDGED_S:
                with contextlib.suppress(OSError):  # a reset: its send queue is freed now
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                protocol.transport.abort()
        if self._open:
            loop = asyncio.get_running_loop()
            self._silence_timer = loop.call_later(UNACKNOWLEDGED_S / 6, self._let_silent_go)

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
    intake: ClassVar[HerologApp | None] = None

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
        self._drain_post: Admitted | None = None
        """The drain POST whose body is arriving, when the protocol answers it."""
        self._drain_body: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.limits.opened(self)
        self._wait("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drain_post is not None and self.intake is not None:
            self._drain_post = None  # its body never came whole: nothing of it is stored
            self._drain_body.clear()
            self.intake.stats.responses[499] += 1
        self.limits.forget(self)
        self.limits.closed(self)
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
        if self.intake is None or not self._take_drain_post(self.intake):
            super().on_headers_complete()

    def _take_drain_post(self, intake: HerologApp) -> bool:
        """Whether this request is a drain POST that passes the intake's checks, which the
        protocol then answers itself (see :class:`_DrainPost`)."""
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.expect_100_continue:
            return False  # uvicorn queues a pipelined request; 100-continue is its to send
        if self.flow.write_paused:
            return False  # a client not reading its answers: the app's send waits for it
        parser = self.parser
        if (
            parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or parser.should_upgrade()
        ):
            return False
        url = _DRAIN_POST_URL.fullmatch(self.url)
        if url is None:
            return False
        headers = dict(reversed(self.headers))  # the first of a repeated header, as the app
        if b"content-length" not in headers or b"transfer-encoding" in headers:
            return False
        try:
            batch = intake.admit(url[1].decode("ascii"), headers, url[2] or b"")
        except HTTPError:
            return False  # the app answers it, after the same checks
        if batch.gzip:
            return False
        intake.stats.requests += 1
        self.cycle = _DrainPost(self.scope, parser.should_keep_alive())  # type: ignore[assignment]
        self._drain_post = batch
        return True

    def on_body(self, body: bytes) -> None:
        if self._drain_post is None:
            super().on_body(body)
        else:
            self._drain_body.append(body)

    def on_message_complete(self) -> None:
        batch = self._drain_post
        if batch is None:
            super().on_message_complete()
            return
        assert self.intake is not None
        self._drain_post = None
        cycle: _DrainPost = self.cycle  # type: ignore[assignment]
        cycle.more_body = False
        body = b"".join(self._drain_body)
        self._drain_body.clear()
        stored = self.intake.writer.write_body(batch.app, body, batch.attributes, batch.frame_id)
        stored.add_done_callback(functools.partial(self._answer_drain_post, cycle, batch))

    def _answer_drain_post(
        self, cycle: _DrainPost, batch: Admitted, stored: asyncio.Future[Stored]
    ) -> None:
        assert self.intake is not None
        error: BaseException | None
        if stored.cancelled():  # nothing cancels them today; a hung connection if it did
            error = WriterStopped("the store writer stopped")
        else:
            error = stored.exception()
        if error is None:
            self.intake.stored(batch, stored.result())
            status = 204
        elif isinstance(error, BadBody | WriterStopped | StoreError):
            refusal = not_stored(error)
            status = refusal.status
        else:  # answered as uvicorn answers an application's exception, and counted
            self.logger.error("Exception in the drain intake", exc_info=error)
            status = 500
            cycle.keep_alive = False
        self.intake.stats.responses[status] += 1
        # uvicorn marks only the newest cycle of a connection gone: with a request queued
        # behind this one, this cycle never hears of it.
        if cycle.disconnected or self.transport.is_closing():
            return
        if status == 204:
            answer = self._no_content(cycle.keep_alive)
        elif status == 500:
            answer = self._answer(
                500, _SERVER_ERROR_HEADERS, b"Internal Server Error", keep_alive=True
            )
        else:
            headers, body = plain_answer(status, str(refusal), refusal.headers)
            answer = self._answer(status, headers, body, keep_alive=cycle.keep_alive)
        cycle.response_started = True
        self.transport.write(answer)
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _answer(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, keep_alive: bool
    ) -> bytes:
        """The bytes uvicorn would write for this answer (its status line and default
        headers first, ``connection: close`` when the connection is not kept)."""
        parts = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        return b"".join(parts)

    def _no_content(self, keep_alive: bool) -> bytes:
        """The 204 answer, made again only when uvicorn's default headers change (its
        ``date`` header, every second)."""
        defaults = self.server_state.default_headers
        made = _NO_CONTENT.get(keep_alive)
        if made is None or made[0] is not defaults:
            answer = self._answer(204, [], b"", keep_alive=keep_alive)
            made = _NO_CONTENT[keep_alive] = (defaults, answer)
        return made[1]

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


class _DrainPost:
    """The request cycle of a drain POST that the protocol answers itself.

    A drain POST that passes the intake's checks (``HerologApp.admit``), with its body's
    length declared and not gzipped, is answered here rather than by an ASGI task: its body
    goes to the writer when it is in, and the answer is written when the writer's future is
    done. Logplex posts one small batch at a time under light load, and for such a POST an
    ASGI request cycle (a task, a scope, receive and send coroutines, uvicorn's checks of
    each message) cost serve about as much CPU as everything else it does for it. Every
    other request, and a drain POST that fails a check, goes to the app, which makes the
    same checks and answers the same bytes.

    Has what uvicorn's protocol and :class:`LimitedHttpToolsProtocol` read of a cycle.
    """

    __slots__ = (
        "disconnected",
        "keep_alive",
        "more_body",
        "response_complete",
        "response_started",
        "scope",
    )

    def __init__(self, scope: object, keep_alive: bool) -> None:
        self.scope = scope
        self.keep_alive = keep_alive
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.disconnected = False

    @property
    def message_event(self) -> _NoWaiter:
        return _NO_WAITER


class _NoWaiter:
    """A cycle's event, which uvicorn sets when the connection goes: no task waits here."""

    def set(self) -> None:
        pass


_NO_WAITER = _NoWaiter()
_SERVER_ERROR_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"21"),
    (b"connection", b"close"),
]
"""uvicorn's answer to an application's exception (RequestResponseCycle.send_500_response)."""
_NO_CONTENT: dict[bool, tuple[object, bytes]] = {}
"""The 204 answer, by whether the connection is kept, and the default headers it has."""


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


def protocol_class(
    limits: RequestLimits, intake: HerologApp | None = None
) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for one server (uvicorn's ``http`` setting) with its limits, and
    the app whose drain POSTs it answers itself (see :class:`_DrainPost`)."""
    return type(
        "HerologHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits, "intake": intake}
    )


_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on, 0 s: closing sends a reset and frees what the send queue holds."""
