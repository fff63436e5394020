"""The HTTP side of ``herolog serve``: the Heroku HTTPS-drain intake, health and stats.

A plain ASGI application: the intake is the hot path of every deployment (Logplex posts
one small batch at a time under light load), so it is handled without a framework layer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from herolog.server.api import PlatformAPI
from herolog.server.broadcast import MAX_BEHIND, Broadcaster
from herolog.server.config import ServeConfig
from herolog.server.forwarder import Forwarder
from herolog.server.http import (
    LOGPLEX_TYPE,
    LOGPLEX_TYPE_BYTES,
    ClientGone,
    HTTPError,
    Receive,
    Scope,
    Send,
    basic_credentials,
    body_too_large,
    from_browser,
    has_key,
    header,
    headers_only,
    media_type,
    read_body,
    same_secret,
)
from herolog.server.sessions import Sessions
from herolog.server.writer import BadBody, BodyTooLarge, Stored, Writer, WriterStopped
from herolog.store import APP_NAME_RULE, StoreError, valid_app_name

MAX_FRAME_ID = 64
"""Longer Logplex-Frame-Ids are remembered by their SHA-256: the store writer keeps every
id it remembers in memory, and a sender's ids of kilobytes would take gigabytes of it
(Logplex's are 32 hex digits)."""
MAX_QUERY = 8 << 10
"""Longest drain URL query string: its parameters are attached to every line."""
_INTAKE_PATH = re.compile(r"/apps/([^/]+)/logs/?")


@dataclass
class Stats:
    """What the intake has done since it started; ``GET /stats`` shows it."""

    requests: int = 0
    lines_stored: int = 0
    batches_stored: int = 0
    duplicate_batches: int = 0
    msg_count_mismatches: int = 0
    syslog_connections: int = 0
    syslog_connections_refused: int = 0
    syslog_connections_broken: int = 0
    """Closed for what they sent: not syslog, an octet count past any message, a cut-off
    frame."""
    syslog_lines: int = 0
    syslog_messages_cut: int = 0
    """Stored cut to the limit, the rest of them skipped (herolog.server.syslog.MAX_FRAME)."""
    responses: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "lines_stored": self.lines_stored,
            "batches_stored": self.batches_stored,
            "duplicate_batches": self.duplicate_batches,
            "msg_count_mismatches": self.msg_count_mismatches,
            "syslog_connections": self.syslog_connections,
            "syslog_connections_refused": self.syslog_connections_refused,
            "syslog_connections_broken": self.syslog_connections_broken,
            "syslog_lines": self.syslog_lines,
            "syslog_messages_cut": self.syslog_messages_cut,
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
        }


class HerologApp:
    """The ASGI application of ``herolog serve``."""

    def __init__(self, config: ServeConfig, writer: Writer, stats: Stats | None = None) -> None:
        self.config = config
        self.writer = writer
        self.stats = stats or Stats()
        # Never skipping lines a drain's buffer would have room for.
        self.broadcaster = Broadcaster(
            config.store_path, max_behind=max(MAX_BEHIND, 2 * config.drain_buffer)
        )
        self.sessions = Sessions(
            config.store_path, broadcaster=self.broadcaster, api_key=config.api_key
        )
        self.api = PlatformAPI(config, self.sessions)
        self.forwarder = Forwarder(
            config.store_path,
            self.broadcaster,
            writer.write_notice,
            capacity=config.drain_buffer,
            timing=config.drain_timing,
        )
        self.startup_error: str | None = None
        """Why the writer (or a startup hook) could not start, if it could not."""
        self._on_startup: list[Callable[[], Awaitable[None]]] = []
        self._on_shutdown: list[Callable[[], Awaitable[None]]] = []

    def on_startup(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._on_startup.append(hook)

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._on_shutdown.append(hook)

    async def startup(self) -> None:
        await self.writer.start()
        await self.forwarder.start()
        await self.sessions.start()
        for hook in self._on_startup:
            await hook()

    async def shutdown(self) -> None:
        await self.sessions.close()
        self.api.failed_reads.flush()
        for hook in reversed(self._on_shutdown):
            await hook()
        # The intake is closed: forward what it stored, while the writer can still store
        # the drains' own notices (L10).
        await self.forwarder.stop()
        await self.writer.stop()
        await self.broadcaster.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "HEAD":  # answered as GET is, without the body
            send = headers_only(send)
        # Time limits on the request's arrival are the HTTP protocol's (server/protocol.py).
        try:
            await self._route(scope, receive, send)
        except HTTPError as error:
            await self._respond(send, error.status, str(error), error.headers)
        except ClientGone:
            self.stats.responses[499] += 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except (StoreError, OSError) as error:
                    # Server.run reports it, in one line naming the store.
                    self.startup_error = str(error)
                    await send({"type": "lifespan.startup.failed", "message": ""})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The handler's coroutine for this request (a plain function: one frame less to
        resume on the intake's hot path)."""
        path: str = scope["path"]
        method: str = scope["method"]
        if m := _INTAKE_PATH.fullmatch(path):
            if method != "POST":
                raise HTTPError(405, "use POST", [(b"allow", b"POST")])
            return self._intake(m.group(1), scope, receive, send)  # the path is decoded
        if path == "/healthz":
            _read_only(method)
            if not self.writer.running:  # a load balancer should send drains elsewhere
                raise HTTPError(503, "the store writer is not running", [(b"retry-after", b"1")])
            if stalled := self.writer.stalled_for:
                self.writer.report_stall()
                message = f"the store writer has not answered for {stalled:.0f} s"
                raise HTTPError(503, message, [(b"retry-after", b"5")])
            if self.writer.failure is not None:
                return self._healthy_again(send)
            return self._respond(send, 200, "ok")
        if path == "/stats":
            _read_only(method)
            self._check_api_access(scope)
            body = json.dumps(self.stats.as_dict(), indent=2) + "\n"
            return self._respond(send, 200, body, content_type=b"application/json")
        return self._api_or_404(scope, receive, send)

    async def _healthy_again(self, send: Send) -> None:
        """The store refused the last batch: 200 only once a write goes through again.

        A write, not the last answer: a load balancer that took this server out of rotation
        sends it no batches, and would never learn that the disk has room again."""
        try:
            await self.writer.probe()
        except (WriterStopped, StoreError) as error:
            raise HTTPError(503, str(error), [(b"retry-after", b"5")]) from None
        await self._respond(send, 200, "ok")

    async def _api_or_404(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self.api(scope, receive, send):
            path = scope["path"]
            raise HTTPError(404, f"no such path: {path} (drains post to /apps/APP/logs)")

    def _check_api_access(self, scope: Scope) -> None:
        """Operational endpoints need the API key, else the intake credentials, if any."""
        if self.config.api_key is not None:
            if not has_key(scope, self.config.api_key):
                raise _unauthorized("this needs the API key (Authorization: Bearer KEY)")
        elif self.config.auth is not None:
            self._check_intake_auth(
                header(scope, b"authorization"),
                "this needs the credentials given to --auth (or give the server an --api-key)",
            )

    def _check_intake_auth(
        self,
        authorization: bytes | None,
        refusal: str = "this drain needs the credentials given to --auth",
    ) -> None:
        expected = self.config.auth
        if expected is None:
            return
        given = basic_credentials(authorization)
        # Compare both parts every time so the timing says nothing about which was wrong.
        ok_user = same_secret(given[0] if given else "", expected.user)
        ok_password = same_secret(given[1] if given else "", expected.password)
        if not (given and ok_user and ok_password):
            raise _unauthorized(refusal)

    def admit(self, app: str, headers: dict[bytes, bytes], query: bytes) -> Admitted:
        """The checks a drain POST passes before its body is read: HTTPError for the first
        it fails. ``headers`` has the first of any repeated header (as :func:`header`)."""
        if not valid_app_name(app):
            raise HTTPError(400, APP_NAME_RULE)
        if from_browser(headers.get(b"origin"), headers.get(b"sec-fetch-site")):
            # A web page open on this machine could otherwise write to a loopback intake
            # without --auth (through a name of its own rebound to 127.0.0.1).
            raise HTTPError(403, "the drain intake does not take requests from browsers")
        self._check_intake_auth(headers.get(b"authorization"))
        content_type = headers.get(b"content-type", b"")
        if content_type != LOGPLEX_TYPE_BYTES:
            content_type = media_type(content_type)
            if content_type != LOGPLEX_TYPE_BYTES:
                shown = content_type.decode("latin-1") or "none"
                raise HTTPError(415, f"Content-Type must be {LOGPLEX_TYPE} (got {shown})")
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"identity", b"gzip"):
            raise HTTPError(415, "Content-Encoding must be gzip or none")
        if len(query) > MAX_QUERY:
            raise HTTPError(414, f"the query string is over the {MAX_QUERY:,}-byte limit")
        declared = headers.get(b"content-length")
        if declared is not None and encoding == b"identity":
            if not declared.isdigit():
                raise HTTPError(400, "Content-Length is not a number")
            digits = declared.lstrip(b"0")  # int() refuses over 4,300 digits, zeros too
            if len(digits) > 19 or int(digits or b"0") > self.config.max_body:
                raise body_too_large(self.config.max_body)
        token = headers.get(b"logplex-drain-token")
        if token is not None and token.decode("latin-1") in self.forwarder.tokens:
            # Stored, it would be forwarded again, for ever: refused, the drain drops it.
            raise HTTPError(
                422,
                f"this batch came from this store's own drain {token.decode('latin-1')}:"
                " a drain must not point back at a server of the store it forwards from",
            )
        frame_id = headers.get(b"logplex-frame-id")
        if frame_id is not None and len(frame_id) > MAX_FRAME_ID:
            frame_id = b"sha256:" + hashlib.sha256(frame_id).hexdigest().encode()
        return Admitted(
            app,
            encoding == b"gzip",
            dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) or None
            if query
            else None,
            frame_id.decode("latin-1") if frame_id else None,
            headers.get(b"logplex-msg-count"),
        )

    def stored(self, batch: Admitted, stored: Stored) -> None:
        """Count a drain POST whose body the writer has stored (or found stored before)."""
        count = batch.msg_count
        # A count of over 4,300 digits, which int() refuses, is as wrong as any other.
        if count is not None and (
            not count.isdigit() or len(count) > 20 or int(count) != stored.parsed
        ):
            self.stats.msg_count_mismatches += 1
        if stored.lines:
            self.broadcaster.nudge()
        if stored.parsed and stored.lines == 0:
            self.stats.duplicate_batches += 1
        else:
            self.stats.batches_stored += 1
            self.stats.lines_stored += stored.lines

    async def _intake(self, app: str, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.requests += 1
        # One pass over the headers (the first of a repeated one counts, as in header()).
        batch = self.admit(app, dict(reversed(scope["headers"])), scope.get("query_string", b""))
        body = await read_body(receive, self.config.max_body, gzip=batch.gzip)
        try:
            stored = await self.writer.write_body(app, body, batch.attributes, batch.frame_id)
        except (BadBody, WriterStopped, StoreError) as error:
            raise not_stored(error) from None
        except Exception:
            # uvicorn answers it 500, without telling the app: counted as the protocol's
            # drain POST path counts it.
            self.stats.responses[500] += 1
            raise
        self.stored(batch, stored)
        await self._respond(send, 204, "")

    async def _respond(
        self,
        send: Send,
        status: int,
        text: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = b"text/plain; charset=utf-8",
    ) -> None:
        self.stats.responses[status] += 1
        out, body = plain_answer(status, text, headers, content_type)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


def plain_answer(
    status: int,
    text: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of an answer of ``text`` (none for a 204), ended by a newline."""
    body = b"" if status == 204 else (text if text.endswith("\n") else text + "\n").encode()
    out = list(headers or [])
    if status != 204:
        out += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    return out, body


class Admitted(NamedTuple):
    """A drain POST that passed :meth:`HerologApp.admit`: what storing its body needs."""

    app: str
    gzip: bool
    attributes: dict[str, str] | None
    """Of the drain URL's query, for every line."""
    frame_id: str | None
    msg_count: bytes | None


def not_stored(error: BadBody | WriterStopped | StoreError) -> HTTPError:
    """The answer to a drain POST whose body the writer did not store."""
    if isinstance(error, BodyTooLarge):
        return HTTPError(413, str(error))
    if isinstance(error, BadBody):
        return HTTPError(400, f"bad logplex framing: {error}")
    if isinstance(error, WriterStopped):
        return HTTPError(503, f"{error}; retry", [(b"retry-after", b"1")])
    # The store refused the batch (a full disk): Logplex should retry.
    return HTTPError(503, str(error), [(b"retry-after", b"5")])


def _read_only(method: str) -> None:
    if method not in ("GET", "HEAD"):
        raise HTTPError(405, "use GET or HEAD", [(b"allow", b"GET, HEAD")])


def _unauthorized(message: str) -> HTTPError:
    return HTTPError(401, message, [(b"www-authenticate", b'Basic realm="herolog"')])
