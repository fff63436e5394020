"""The part of the Heroku Platform API that ``heroku logs``, ``drains`` and ``apps`` use.

Apps, log sessions (read as server-sent events from their secret ``logplex_url``) and log
drains, answered the way api.heroku.com answers, so the official CLI works unmodified with
``HEROKU_HOST`` pointing here. Errors are Heroku's ``{"id": ..., "message": ...}`` bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import sys
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from herolog import drains, timestamps
from herolog.filters import MAX_TERMS, LineFilter, compile_pattern
from herolog.logs import default_num
from herolog.render import STREAM_ENDS, counted
from herolog.server.config import ServeConfig, is_loopback, url_host
from herolog.server.http import (
    LOGPLEX_TYPE_BYTES,
    HTTPError,
    Receive,
    Scope,
    Send,
    from_browser,
    has_key,
    header,
    media_type,
    read_body,
)
from herolog.server.sessions import (
    FAILED_RETRY_MS,
    LogSession,
    Reader,
    SessionError,
    Sessions,
    TooManySessions,
    end_for_restart,
)
from herolog.server.throttle import Throttled
from herolog.store import (
    MAX_HISTORY,
    AppInfo,
    DrainExists,
    SQLiteStore,
    StoreError,
    using_store,
    valid_app_name,
)

T = TypeVar("T")

_ACCOUNT = "/account"
_APPS = "/apps"
_MY_APPS = "/users/~/apps"
"""heroku apps: the apps of the caller, the account of /account, which has every app."""
_APP = re.compile(r"/apps/([^/]+)")
_LOG_SESSIONS = re.compile(r"(?:/apps/([^/]+))?/log-sessions")
_DRAINS = re.compile(r"/apps/([^/]+)/log-drains")
_ALL_DRAINS = "/log-drains"
_DRAIN = re.compile(rb"/apps/([^/]+)/log-drains/(.+)")
_SESSION = re.compile(r"/sessions/([0-9a-f-]{36})")
_API_PATHS = re.compile(
    r"/(?:account|apps|log-sessions|log-drains|oauth|sessions|teams|users)(?:/.*)?", re.DOTALL
)
"""Where the API answers every request, with a JSON 404 for paths it does not know."""
_MAX_JSON_BODY = 64 << 10
_JSON = b"application/json"

CUT_OFF: ContextVar[bool] = ContextVar("CUT_OFF", default=False)
"""Set in a request whose answer was cut off on purpose: uvicorn's error for an answer left
unfinished is then not said (serve's log has said why)."""


def _say_failed_reads(count: int, session_id: str, why: str) -> str:
    if count == 1:
        return f"herolog serve: log session {session_id} failed: {why}"
    return (
        f"herolog serve: {count:,} more reads of log sessions failed (the last, of"
        f" {session_id}: {why})"
    )


class APIError(Exception):
    """An error answered with Heroku's JSON error body."""

    def __init__(
        self,
        status: int,
        error_id: str,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.id = error_id
        self.headers = headers or []


def _app_named(store: SQLiteStore, ref: str) -> str:
    """The name of the app ``ref`` (a name or an id) refers to; 404 if it is no app's."""
    info = drains.find_app(store, ref)
    if info is None:
        raise _not_found("app")
    return info.name


def _not_found(what: str) -> APIError:
    return APIError(404, "not_found", f"Couldn't find that {what}.")


class PlatformAPI:
    """Routes ``/account``, ``/apps/...``, ``/log-sessions``, ``/log-drains`` and
    ``/sessions/...`` for :class:`HerologApp`."""

    def __init__(self, config: ServeConfig, sessions: Sessions) -> None:
        self.config = config
        self.sessions = sessions
        self.failed_reads = Throttled(sys.stderr, _say_failed_reads)
        """Log sessions that could not be read: a tail's client comes back every few
        seconds while the store cannot be read, and each would say so again."""

    @property
    def store_path(self) -> Path:
        return self.config.store_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is an API call; False if the path is not the API's.

        The API's paths are ``/account``, ``/apps``, ``/log-sessions``, ``/log-drains``,
        ``/sessions`` and everything under them, but the intake's ``/apps/APP/logs`` (routed
        before this); and any path asked for Heroku's JSON, as the heroku CLI asks.

        HEAD is answered wherever GET is, as GET is (RFC 9110): :class:`HerologApp` drops the
        body, and a log session is not read (nor used up) by it."""
        path: str = scope["path"]
        head = scope["method"] == "HEAD"
        method: str = "GET" if head else scope["method"]
        try:
            if m := _SESSION.fullmatch(path):
                _allow(method, "GET")
                await self._stream_session(m.group(1), scope, receive, send, head=head)
                return True
            if m := _LOG_SESSIONS.fullmatch(path):
                _allow(method, "POST")
                self._authorize(scope)
                body = await _read_json(receive, scope)
                await _respond(send, 201, await self._create_session(m.group(1), body, scope))
            elif path == _ALL_DRAINS:
                _allow(method, "GET")
                self._authorize(scope)
                await _respond(send, 200, await self._list_drains(None))
            elif m := _DRAINS.fullmatch(path):
                _allow(method, "GET", "POST")
                self._authorize(scope)
                app = _app_name(m.group(1))
                if method == "GET":
                    await _respond(send, 200, await self._list_drains(app))
                else:
                    body = await _read_json(receive, scope)
                    added, warning = await self._add_drain(app, body)
                    # Printed by the heroku CLI (and herolog's) as a warning.
                    extra = [] if warning is None else [(b"warning-message", warning.encode())]
                    await _respond(send, 201, added, extra)
            elif raw := _DRAIN.fullmatch(scope.get("raw_path") or path.encode()):
                _allow(method, "DELETE", "GET")
                self._authorize(scope)
                app = _app_name(unquote(raw.group(1).decode("latin-1")))
                key = unquote(raw.group(2).decode("latin-1"))
                await _respond(send, 200, await self._drain(app, key, remove=method == "DELETE"))
            elif path in (_APPS, _MY_APPS):
                _allow(method, "GET")
                self._authorize(scope)
                found, headers, more = await self._list_apps(_apps_range(scope), scope)
                # 206 while apps remain past the page (Heroku's), with the Next-Range to ask.
                await _respond(send, 206 if more else 200, found, headers)
            elif m := _APP.fullmatch(path):
                _allow(method, "GET")
                self._authorize(scope)
                await _respond(send, 200, await self._app(_app_name(m.group(1)), scope))
            elif path == _ACCOUNT:
                _allow(method, "GET")
                self._authorize(scope)
                await _respond(send, 200, self._account(scope))
            elif _is_api_call(scope):
                self._authorize(scope)  # a caller without the key learns nothing, not even this
                raise APIError(404, "not_found", self._no_endpoint(method, path, scope))
            else:
                return False
        except APIError as error:
            payload = {"id": error.id, "message": str(error)}
            await _respond(send, error.status, payload, error.headers)
        except StoreError as error:
            await _respond(send, 503, {"id": "unavailable", "message": str(error)})
        except sqlite3.Error as error:  # locked past the busy timeout, a full disk
            message = f"cannot use the store: {error}"
            print(f"herolog serve: the Platform API {message}", file=sys.stderr, flush=True)
            await _respond(send, 503, {"id": "unavailable", "message": message})
        return True

    def _authorize(self, scope: Scope) -> None:
        """With ``--api-key``, every call needs it; without, only this machine may call.

        Browsers never may: a web page could otherwise drive an API that needs no key
        (a form POST, or DNS rebinding a name of its own to 127.0.0.1).
        """
        if from_browser(header(scope, b"origin"), header(scope, b"sec-fetch-site")):
            raise APIError(
                403, "forbidden", "The Platform API does not take requests from browsers."
            )
        key = self.config.api_key
        if key is None:
            if is_loopback(self.config.host):
                # A reverse proxy on this machine connects from loopback, often with a
                # loopback Host too (nginx's default): its clients are not this machine's.
                # Said first: behind one, the Host is the proxy's name, and "use a loopback
                # address" would tell its user the wrong thing.
                if any(name in _PROXY_HEADERS for name, _ in scope["headers"]):
                    raise APIError(
                        403,
                        "forbidden",
                        "Without --api-key, the Platform API answers this machine only, not"
                        " requests through a proxy: give herolog serve an --api-key.",
                    )
                if not is_loopback(_host_name(header(scope, b"host"))):
                    raise APIError(
                        403, "forbidden", "Without --api-key, use a loopback address (127.0.0.1)."
                    )
                return
            raise APIError(
                403,
                "forbidden",
                "The Platform API is off: herolog serve listens on a public address"
                " without --api-key.",
            )
        if not has_key(scope, key):
            raise APIError(
                401,
                "unauthorized",
                "Invalid credentials provided: the API key is missing or wrong.",
            )

    def _no_endpoint(self, method: str, path: str, scope: Scope) -> str:
        said = f"No such API endpoint: {method} {path}"
        if not path.startswith("/oauth"):
            return (
                f"{said} (herolog serves the calls of heroku logs, heroku drains, heroku apps"
                " and heroku auth:whoami)."
            )
        # heroku login -i (and logout): the CLI keeps a login in ~/.netrc, under the host
        # and port it was given in HEROKU_HOST, the Host it sent.
        if self.config.api_key is None:
            return f"{said}: herolog serve has no logins, and without --api-key needs none."
        host = (header(scope, b"host") or b"127.0.0.1").decode("latin-1")
        return (
            f"{said}: herolog serve has no logins; give the heroku CLI serve's --api-key in"
            f" HEROKU_API_KEY, or as the password of machine {host} in ~/.netrc."
        )

    def _account(self, scope: Scope) -> dict[str, Any]:
        """Who the caller is, for ``heroku auth:whoami`` (it prints ``email``): whoever holds
        this server's API key (without one, whoever is on this machine). herolog has no
        accounts, so the answer names the server, ``herolog@HOST`` with the host the caller
        reached it at, and claims nothing else."""
        if self.config.public_url:  # checked at start-up: it has a host name
            host = urlsplit(self.config.public_url).hostname or ""
        else:
            host = _host_name(header(scope, b"host")).lower()
        if ":" in host:  # an IPv6 address, as an address literal
            host = f"[{host}]"
        return {"id": drains.app_id("account:herolog"), "email": f"herolog@{host}"}

    async def _in_store(self, work: Callable[[SQLiteStore], T]) -> T:
        return await asyncio.to_thread(using_store, self.store_path, work)

    async def _app(self, ref: str, scope: Scope) -> dict[str, Any]:
        info = await self._in_store(lambda store: drains.find_app(store, ref))
        if info is None:
            raise _not_found("app")
        return _app_object(info, self._account(scope))

    async def _list_apps(
        self, wanted: _Range, scope: Scope
    ) -> tuple[list[dict[str, Any]], list[tuple[bytes, bytes]], bool]:
        """A page of the apps, the headers that say where it is, and whether more follow."""

        # The page alone (and one more, to know whether more follow), from an index of the
        # names or of the ids: the heroku CLI reads thousands of apps 200 at a time, and
        # reading them all for each page took 5 s for 20,000 apps (12.6 s by id).
        def page_of(store: SQLiteStore) -> list[tuple[str, AppInfo]]:
            return store.apps_by(
                wanted.field,
                wanted.first,
                wanted.last,
                first_open=wanted.first_open,
                last_open=wanted.last_open,
                desc=wanted.desc,
                limit=wanted.max + 1,
            )

        inside = await self._in_store(page_of)
        page = inside[: wanted.max]
        headers = [(b"accept-ranges", b"id, name")]
        if page:
            shown = f"{wanted.field} {page[0][0]}..{page[-1][0]}; max={wanted.max}"
            headers.append((b"content-range", shown.encode()))
        more = len(inside) > len(page)
        if more:
            end = f"{wanted.last}{'[' * wanted.last_open}" if wanted.last else ""
            order = ", order=desc" if wanted.desc else ""
            after = f"{wanted.field} ]{page[-1][0]}..{end}; max={wanted.max}{order}"
            headers.append((b"next-range", after.encode()))
        owner = self._account(scope)
        return [_app_object(info, owner) for _, info in page], headers, more

    async def _create_session(
        self, app: str | None, body: dict[str, Any], scope: Scope
    ) -> dict[str, Any]:
        ref = None if app is None else _app_name(app)

        def check(store: SQLiteStore) -> LogSession:
            name = None if ref is None else _app_named(store, ref)
            # Here, off the event loop: the patterns of a body of 64 KB take up to 0.4 s
            # to compile.
            return _session_from(body, name, store.history)

        try:
            session = await self._in_store(check)
            self.sessions.add(session)
        except SessionError as error:
            raise APIError(422, "invalid_params", str(error)) from None
        except TooManySessions as error:  # not the request's fault: it may be tried again
            raise APIError(429, "rate_limit", str(error)) from None
        url = f"{self._base_url(scope)}/sessions/{session.id}?sig={session.secret}"
        return {
            "id": session.id,
            "logplex_url": url,
            "created_at": drains.api_time(session.created_at),
            "updated_at": drains.api_time(session.created_at),
        }

    def _base_url(self, scope: Scope) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host = header(scope, b"host")
        if host:
            where = host.decode("latin-1")
        else:
            address, port = scope.get("server") or (self.config.host, self.config.port)
            where = url_host(address, port)
        return f"{scope.get('scheme', 'http')}://{where}"

    async def _stream_session(
        self, session_id: str, scope: Scope, receive: Receive, send: Send, *, head: bool
    ) -> None:
        secret = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sig", [""])[0]
        session = self.sessions.get(session_id, secret)
        if session is None or (session.used and not session.tail):
            raise APIError(404, "not_found", "This log session does not exist or has expired.")
        # Server-sent events for a client that asks for them (the heroku CLI's EventSource,
        # herolog's own); to any other (curl, an API library reading the URL as Platform
        # API clients were told to), the lines as Logplex sent them: text, one a line.
        plain = b"text/event-stream" not in (header(scope, b"accept") or b"").lower()
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (
                    b"content-type",
                    b"text/%s; charset=utf-8" % (b"plain" if plain else b"event-stream"),
                ),
                (b"cache-control", b"no-cache"),
                (b"vary", b"accept"),
                (b"x-accel-buffering", b"no"),  # nginx: pass events through at once
                *([] if plain else [_ENDS_HEADER]),
            ],
        }
        if head:  # what a GET would get, but the session is neither read nor used up
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        # Now, before any await: a second request for a one-off session is a 404 (a tail's
        # is a reader taking it over).
        session.used = True
        last_event_id = None
        given = (header(scope, b"last-event-id") or b"").strip()
        # One of SQLite's 64-bit ids, or none: int() refuses a number of over 4,300 digits.
        if given.isdigit() and len(given) < 20 and int(given) < 1 << 63:
            last_event_id = int(given)
        await send(start)
        reader = Reader()
        reader.plain = plain
        # herolog's client asks for "mark" events, and sends back its Last-Event-ID's.
        asked = header(scope, b"herolog-mark")
        if asked is not None:
            reader.wants_marks = True
            asked = asked.strip()
            if last_event_id is not None and asked.isdigit() and len(asked) < 20:
                reader.marked = (last_event_id, int(asked))

        async def write(data: bytes) -> None:
            if plain and not (data := plain_lines(data)):
                return
            await send({"type": "http.response.body", "body": data, "more_body": True})

        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            reader.stop()

        watcher = asyncio.create_task(watch())
        failed = False
        try:
            await self.sessions.stream(session, write, reader, last_event_id)
        except OSError:  # the client went away mid-write
            reader.stop()
            return
        except Exception as error:  # the answer has started: all that is left is to end it
            # The store's own errors say what is wrong; anything else is named by its type.
            why = str(error) if isinstance(error, (StoreError, sqlite3.Error)) else ""
            self.failed_reads.add(session.id, why or f"{type(error).__name__}: {error}")
            reader.stop()
            if not session.tail:  # ended properly, part of a history would pass for all of it
                CUT_OFF.set(True)
                return
            # Ended properly, a tail's client comes back and resumes after its last line
            # (the heroku CLI dies on a stream cut off).
            failed = True
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        # Ended for a reader still there too (another took the session over, the server is
        # stopping, a read failed): the answer is ended properly, not cut off with an error.
        if not gone:
            if self.sessions.closing.is_set():
                # Its tails are kept for the next serve, which a client coming back too soon
                # would not find listening yet.
                end = end_for_restart(self.config.drain_timing.flush_s)
            else:
                end = f"retry: {FAILED_RETRY_MS}\n\n".encode() if failed else b""
            end = plain_lines(end) if plain else end
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": end, "more_body": False})

    async def _list_drains(self, ref: str | None) -> list[dict[str, Any]]:
        def work(store: SQLiteStore) -> list[dict[str, Any]]:
            name = None if ref is None else _app_named(store, ref)
            found = drains.counted(store, store.drains(name))
            return [drains.drain_object(drain) for drain in found]

        return await self._in_store(work)

    async def _add_drain(self, ref: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        url = body.get("url")
        if not isinstance(url, str):
            raise APIError(422, "invalid_params", 'url is required: {"url": "https://..."}')
        try:
            drains.check_url(url)
        except drains.DrainURLError as error:
            raise APIError(422, "invalid_params", str(error)) from None

        def work(store: SQLiteStore) -> tuple[dict[str, Any], str | None]:
            info = drains.find_app(store, ref)
            # An id of no app has a typo in it, as likely as not; any other name that is no
            # app's is a new app, which the drain brings into being, with a warning.
            if info is None and drains.looks_like_id(ref):
                raise _not_found("app")
            try:
                added = store.add_drain(info.name if info else ref, url)
            except DrainExists:
                raise APIError(422, "invalid_params", "Url has already been taken") from None
            warning = drains.new_app_warning(ref) if info is None else None
            return drains.drain_object(drains.counted(store, [added])[0]), warning

        return await self._in_store(work)

    async def _drain(self, ref: str, key: str, *, remove: bool) -> dict[str, Any]:
        def work(store: SQLiteStore) -> dict[str, Any]:
            name = _app_named(store, ref)
            if remove:
                drain = store.remove_drain(name, key)
            else:
                drain = store.find_drain(name, key)
            if drain is None:
                raise _not_found("drain")
            return drains.drain_object(drains.counted(store, [drain])[0])

        return await self._in_store(work)


def _app_object(info: AppInfo, owner: dict[str, Any]) -> dict[str, Any]:
    """An app as GET /apps/APP and GET /apps show it: Heroku's fields the heroku CLI reads
    (``heroku apps`` lists those whose ``owner`` is the account of GET /account: whoever holds
    the key, who has every app), and herolog's ``lines``, how many the store holds."""
    created = drains.api_time(info.created_at)
    return {
        "id": drains.app_id(info.name),
        "name": info.name,
        "generation": {"id": drains.app_id("generation:cedar"), "name": "cedar"},
        "created_at": created,
        "updated_at": created,
        "owner": owner,
        "lines": info.lines,
    }


DEFAULT_PAGE = 200
MAX_PAGE = 1000
"""Heroku's page sizes: 200 apps when the Range gives no max, 1000 at most."""


class _Range(NamedTuple):
    """A Platform API Range: ``name ..``, ``id ]LAST..; max=N``, ``name A..B[; order=desc``
    (``]`` and ``[`` leave the bound out)."""

    field: str
    first: str = ""
    first_open: bool = False
    last: str = ""
    last_open: bool = False
    max: int = DEFAULT_PAGE
    desc: bool = False


def _apps_range(scope: Scope) -> _Range:
    """The Range of a GET /apps (all of them by name without one); a 416 for one that is
    not the API's."""
    given = header(scope, b"range")
    if given is None:
        return _Range("name")
    text = given.decode("latin-1").strip()
    bad = APIError(
        416,
        "requested_range_not_satisfiable",
        f"Cannot page the apps by the Range {text[:100]!r}: give 'name ..; max=N' or"
        f" 'id ..; max=N' (N from 1 to {MAX_PAGE}; ', order=desc' for the other way), or a"
        " Next-Range this server sent.",
    )
    spec, _, settings = text.partition(";")
    field, _, bounds = spec.strip().partition(" ")
    bounds = bounds.strip()
    if field not in ("id", "name") or ".." not in bounds or any(c.isspace() for c in bounds):
        raise bad
    first_open, last_open = bounds.startswith("]"), bounds.endswith("[")
    bounds = bounds[first_open : len(bounds) - last_open]
    first, _, last = bounds.partition("..")
    if field == "id":
        first, last = first.lower(), last.lower()
    wanted = _Range(field, first, first_open, last, last_open)
    for setting in filter(None, (s.strip() for s in re.split(r"[;,]", settings))):
        key, _, value = (part.strip() for part in setting.partition("="))
        digits = value.lstrip("0")
        if key == "max" and value.isascii() and value.isdigit() and digits:
            # Past 1000 is 1000; int() would refuse a number of over 4,300 digits.
            wanted = wanted._replace(
                max=MAX_PAGE if len(digits) > 4 else min(int(digits), MAX_PAGE)
            )
        elif key == "order" and value in ("asc", "desc"):
            wanted = wanted._replace(desc=value == "desc")
        else:
            raise bad
    return wanted


def _session_from(body: dict[str, Any], app: str | None, history: int) -> LogSession:
    """The session a log-sessions body asks for: Heroku's fields (``lines``, ``tail``,
    ``source``, ``dyno``, and ``type``, a process type) and herolog's own (``process_type``,
    ``dynos``, ``since``, ``until``, ``grep``, ``exclude``, ``format``, and
    ``record_fields``, the optional fields of records the client reads)."""
    lines = body.get("lines")
    if lines is None:
        lines = default_num(history)
    elif isinstance(lines, float) and lines.is_integer():
        # JSON.stringify writes numbers from 1e21 up with an exponent: the heroku CLI sends
        # -n 1000000000000000000000 as 1e+21, which is a whole number all the same.
        lines = int(lines)
    if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
        raise SessionError("lines must be a whole number, 0 or more")
    output = body.get("format", "text")
    if output not in ("text", "json"):
        raise SessionError('format must be "text" or "json"')
    if lines > history:
        if output == "text":
            # The heroku CLI: Logplex gives what it has, at most 1,500, without an error,
            # and scripts written for Heroku ask for more (heroku logs -n 5000).
            lines = history
        else:  # herolog logs --server: told, as in local mode (exit 2)
            most = min(lines, MAX_HISTORY)
            raise SessionError(
                f"lines: {lines:,} is more than the {counted(history, 'line')} the store keeps"
                " per app"
                f" (raise that on the server: herolog serve --history {most})"
            )
    tail = body.get("tail", False)
    if not isinstance(tail, bool):
        raise SessionError("tail must be true or false")
    fields = body.get("record_fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise SessionError("record_fields must be a list of field names")
    dynos = [(name,) for key in ("dyno", "process_type", "type") if (name := _text(body, key))]
    extra = body.get("dynos", [])
    if not isinstance(extra, list):
        raise SessionError(_DYNOS_ERROR)
    for item in extra:
        if isinstance(item, str) and item:
            dynos.append((item,))
        elif isinstance(item, list) and item and all(isinstance(d, str) and d for d in item):
            dynos.append(tuple(dict.fromkeys(item)))
        else:
            raise SessionError(_DYNOS_ERROR)
    times = {}
    for key in ("since", "until"):
        value = _text(body, key)
        if value is not None:
            try:
                times[key] = timestamps.parse_user_time(value)
            except ValueError as error:
                raise SessionError(f"{key}: {error}") from None
    wanted = LineFilter(
        app=app,
        sources=_sources(body),
        dynos=tuple(dict.fromkeys(dynos)),
        since=times.get("since"),
        until=times.get("until"),
        grep=_patterns(body, "grep"),
        exclude=_patterns(body, "exclude"),
    )
    over = wanted.over_limit()
    if over is not None:
        within = {"sources": "source", "dynos": "dyno, process_type, type and dynos"}.get(
            over, over
        )
        raise SessionError(f"at most {MAX_TERMS} names or patterns in {within} (in all)")
    return LogSession(wanted, lines, tail, as_json=output == "json", msgid="msgid" in fields)


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SessionError(f"{key} must be a string")
    return value


_DYNOS_ERROR = "dynos must be a list of dyno names, or of lists of them (any of a list)"


def _sources(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("source")
    if value is None or value == "":  # the heroku CLI's, as an empty -s: no filter
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SessionError("source must be a string or a list of source names (any of them)")
    return tuple(dict.fromkeys(value))


def _patterns(body: dict[str, Any], key: str) -> tuple[re.Pattern[str], ...]:
    values = body.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SessionError(f"{key} must be a list of regular expressions")
    try:
        return tuple(compile_pattern(v) for v in values)
    except (re.error, OverflowError, RecursionError) as error:
        raise SessionError(f"{key}: bad regular expression: {error}") from None


def _app_name(name: str) -> str:
    if not valid_app_name(name):
        raise _not_found("app")
    return name


_ENDS_HEADER = (STREAM_ENDS[0].encode(), STREAM_ENDS[1].encode())


def plain_lines(events: bytes) -> bytes:
    """The lines that whole SSE ``message`` events carry, one a line (a message of several
    lines in as many), for a client of a log session that did not ask for events: what
    Logplex sent. Ids, retries, comments and herolog's named events carry none."""
    out: list[bytes] = []
    for event in events.split(b"\n\n"):
        fields = event.split(b"\n")
        if not any(field.startswith(b"event:") for field in fields):
            out.extend(field[6:] + b"\n" for field in fields if field.startswith(b"data: "))
    return b"".join(out)


_PROXY_HEADERS = frozenset(
    (
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-real-ip",
        b"via",
    )
)
"""Headers a reverse proxy adds (nginx, Caddy, Traefik, HAProxy, Apache)."""


def _host_name(value: bytes | None) -> str:
    """The host of a Host header, without its port: ``[::1]:8514`` is ``::1``."""
    text = (value or b"localhost").decode("latin-1")
    if text.startswith("["):
        return text[1 : text.find("]")]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _is_api_call(scope: Scope) -> bool:
    """A request to a path of the API's, or asked for Heroku's JSON as the heroku CLI asks
    (heroku addons: GET /addons), unless it carries a drain's batch: a drain URL with a
    wrong path gets the intake's plain-text 404, which says where drains post."""
    if media_type(header(scope, b"content-type")) == LOGPLEX_TYPE_BYTES:
        return False
    if _API_PATHS.fullmatch(scope["path"]):
        return True
    accepted = (header(scope, b"accept") or b"").split(b",")
    return any(media_type(kind) == _HEROKU_JSON for kind in accepted)


_HEROKU_JSON = b"application/vnd.heroku+json"


def _allow(method: str, *allowed: str) -> None:
    """405 unless ``method`` is one of ``allowed``; HEAD goes wherever GET does."""
    if method not in allowed:
        methods = sorted({*allowed, "HEAD"} if "GET" in allowed else allowed)
        listed = f"{', '.join(methods[:-1])} or {methods[-1]}" if len(methods) > 1 else methods[0]
        raise APIError(
            405,
            "method_not_allowed",
            f"Use {listed}.",
            [(b"allow", ", ".join(methods).encode())],  # RFC 9110: a 405 must list them
        )


async def _read_json(receive: Receive, scope: Scope) -> dict[str, Any]:
    try:
        raw = (await read_body(receive, _MAX_JSON_BODY, gzip=False)).strip()
    except HTTPError:  # without gzip, only a body over the limit
        raise APIError(413, "request_too_large", "The request body is too large.") from None
    if not raw:
        return {}
    # Not a form a web page could post without asking first (CORS preflight).
    kind = media_type(header(scope, b"content-type"))
    if kind != _JSON and not kind.endswith(b"+json"):
        raise APIError(415, "unsupported_media_type", "Send the body as application/json.")
    encoding = (header(scope, b"content-encoding") or b"identity").strip().lower()
    if encoding not in (b"", b"identity"):  # RFC 9110: a 415, naming the codings taken
        coding = encoding.decode("latin-1")
        raise APIError(
            415,
            "unsupported_media_type",
            f"Send the body uncompressed (no Content-Encoding: {coding}).",
            [(b"accept-encoding", b"identity")],
        )
    try:
        body = json.loads(raw)
        # Lone surrogates ("\ud800") are valid JSON but not text that can be stored.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise APIError(400, "bad_request", "The request body is not valid JSON text.") from None
    if not isinstance(body, dict):
        raise APIError(400, "bad_request", "The request body must be a JSON object.")
    return body


_HARDENING = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
"""On every answer of the API: drain objects carry their URLs' credentials, and a log
session its secret URL, which no cache on the way (a proxy's, a browser's) may keep."""


async def _respond(
    send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (json.dumps(payload, ensure_ascii=False) + "\n").encode()
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    headers += _HARDENING
    headers += extra or []
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="herolog"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
