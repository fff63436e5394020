"""Drains: where an app's lines are forwarded. The registry lives in the store; this module
holds what every path that touches it shares: URL rules and the Heroku-shaped objects."""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

if TYPE_CHECKING:
    import httpx  # imported where used: herolog logs starts without it

from herolog.store import FORWARDING_LEASE as FORWARDING_LEASE  # an older serve's, too
from herolog.store import (
    AppInfo,
    Delivery,
    Drain,
    DrainExists,
    SQLiteStore,
    StoredLine,
    read_existing,
    using_store,
)
from herolog.store import app_id as app_id  # made in the store, which indexes it

HTTP_SCHEMES = ("https", "http")
SYSLOG_SCHEMES = ("syslog", "syslog+tcp", "syslog+tls")
SCHEMES = HTTP_SCHEMES + SYSLOG_SCHEMES


class DrainURLError(ValueError):
    """A drain URL herolog cannot deliver to; the message says why."""


def is_overflow_notice(line: StoredLine) -> bool:
    """herolog's own L10 line is for the one drain that dropped lines: it is not forwarded
    to the app's drains again (Heroku's own L10 lines, and another herolog's, arriving as
    input, are)."""
    return bool(line.own)


def unaccounted(
    store: SQLiteStore, app: str, after: int, upto: int, mark: int | None = None
) -> int:
    """``app``'s lines with ids in (``after``, ``upto``] that a drain at ``after`` (whose mark
    is ``mark``: see SQLiteStore.lines_through) has yet to deliver or count as dropped: those
    the store holds (but herolog's own L10 lines, which are not forwarded), and those the
    ring buffer trimmed, which catching up counts as dropped."""
    kept = store.count_app_lines(app, after, upto, notices=False)
    return kept + store.trimmed_past(app, after, upto, mark)[0]


def counted(store: SQLiteStore, found: list[Drain]) -> list[Drain]:
    """``found`` with each drain's :attr:`Drain.waiting` counted: its app's lines past its
    position (those the ring buffer trimmed since too, which the next server to forward
    counts as dropped), less the drops already counted past it. Not counted (None) in an
    older herolog's store not upgraded yet: its drains have no position to count from."""
    if not store.keeps_positions():
        return found
    result = []
    with store.snapshot():  # a trim between the counts would count its lines twice
        newest = store.newest_id()
        for drain in found:
            state = drain.delivery
            past = unaccounted(store, drain.app, state.through, newest, state.through_lines)
            result.append(drain._replace(waiting=max(0, past - state.dropped_ahead)))
    return result


MAX_URL = 8 << 10
"""Longest drain URL: what a query string of attributes may need, and no more."""


def check_url(url: str) -> str:
    """``url`` if herolog can deliver to it, else DrainURLError naming what is wrong (with
    its secrets masked: the message may end up on a screen or in a log)."""
    shown = mask_loosely(url)
    if len(url) > MAX_URL:
        raise DrainURLError(f"the drain URL is over {MAX_URL:,} characters: {shown[:60]}...")
    if not url:
        raise DrainURLError("not a URL: ''")
    if spaced(url):
        # Said, not only shown: a masked secret hides the space that ends it (?token=abc ).
        raise DrainURLError(f"not a URL (it holds a space or a control character): {shown!r}")
    try:
        url.encode("utf-8")
        parts = urlsplit(url)
    except (ValueError, UnicodeError):
        raise DrainURLError(f"not a valid URL: {shown}") from None
    scheme = parts.scheme.lower()
    # HOST:PORT, as Papertrail gives its destinations, urlsplit reads as a scheme of HOST.
    if not scheme or (scheme not in SCHEMES and url[len(scheme) + 1 :].isdigit()):
        raise DrainURLError(
            f"not a URL: {shown} (no scheme; use {', '.join(s + '://' for s in SCHEMES)})"
        )
    if scheme not in SCHEMES:
        raise DrainURLError(
            f"unsupported drain URL scheme {parts.scheme!r} in {shown}:"
            f" use {', '.join(s + '://' for s in SCHEMES)}"
        )
    if not parts.hostname:
        raise DrainURLError(f"the drain URL has no host: {shown}")
    at_after_host = DrainURLError(
        f"the drain URL has an @ after its host: {shown} (write #, / and ? in a password"
        " as %23, %2F and %3F)"
    )
    if "@" in parts.fragment or "@" in parts.path:
        # Most likely a password holding "#" or "/", which ends the host early.
        raise at_after_host
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        if "@" in parts.query:  # a password holding "?", the rest of it taken for a port
            raise at_after_host from None
        raise DrainURLError(f"the drain URL's port must be 1 to 65535: {shown}") from None
    if port == 0:
        raise DrainURLError(f"the drain URL's port must be 1 to 65535: {shown}")
    if not valid_host(parts.hostname) or (
        scheme in HTTP_SCHEMES and not _http_host(parts.hostname)
    ):
        raise DrainURLError(f"the drain URL's host is not a valid host name: {shown}")
    if scheme in SYSLOG_SCHEMES:
        if parts.path not in ("", "/") or parts.query:
            raise DrainURLError(f"a syslog drain URL takes no path or query: {shown}")
        if port is None and scheme != "syslog+tls":
            raise DrainURLError(f"a {scheme} drain URL needs a port: {shown}")
    return url


SYSLOG_TLS_PORT = 6514
"""RFC 5425's port for syslog over TLS: what a syslog+tls drain URL without a port means."""
_DEFAULT_PORTS = {"https": 443, "http": 80, "syslog+tls": SYSLOG_TLS_PORT}
_ESCAPED = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def find_drain(drains: Sequence[Drain], key: str) -> Drain | None:
    """The drain of ``drains`` (one app's) whose URL, token or id is ``key``, or None. A URL
    written another way (:func:`drain_key`) finds the drain too, unless two are alike so (a
    store of an older herolog may hold such): then only the one written so is found. So does a
    URL with its runs of slashes merged (``https:/host/x``), as nginx passes a path when its
    proxy_pass has one of its own (``proxy_pass http://127.0.0.1:8514/;``), unless two drains
    are alike so. An id is found in upper case too, as an app's is (:func:`find_app`)."""
    drain = next((d for d in drains if key in (d.url, d.token, d.id)), None)
    if drain is None and looks_like_id(key):
        drain = next((d for d in drains if d.id == key.lower()), None)
    if drain is None and (same := drain_key(key)) is not None:
        alike = [d for d in drains if drain_key(d.url) == same]
        drain = alike[0] if len(alike) == 1 else None
    if drain is None and _MERGED.match(key):
        merged = _SLASHES.sub("/", key)
        alike = [d for d in drains if _SLASHES.sub("/", d.url) == merged]
        drain = alike[0] if len(alike) == 1 else None
    return drain


_SLASHES = re.compile("/+")
"""A run of slashes, which nginx merges in a path it passes decoded..."""
_MERGED = re.compile("[A-Za-z][A-Za-z0-9+.-]*:/(?!/)")
"""...so that a URL's ``scheme://`` arrives as ``scheme:/``, as no URL is written."""


def drain_key(url: str) -> tuple[str, ...] | None:
    """What makes two drain URLs the same drain: ``url`` normalized as RFC 3986 (6.2.2,
    6.2.3) says, the scheme and host in lower case (a name IDNA-encoded as its drain's
    connection encodes it, without a trailing dot; an IPv6 address compressed), without its
    scheme's default port, unreserved characters unescaped, an empty HTTP path ``/``, and
    ``syslog+tcp`` as ``syslog``. The user-info, path, query and fragment are otherwise
    compared as written: case matters there. None for a URL :func:`check_url` refuses."""
    try:
        check_url(url)
    except DrainURLError:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "syslog+tcp":
        scheme = "syslog"  # as syslog://, plain TCP
    host = (parts.hostname or "").rstrip(".")
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        try:
            if scheme in HTTP_SCHEMES:  # as httpx encodes it (IDNA 2008)
                import httpx

                host = httpx.URL(f"https://{host}/").raw_host.decode("ascii")
            else:  # as the resolver does (IDNA 2003)
                host = host.encode("idna").decode("ascii")
        except (ValueError, UnicodeError):
            pass  # check_url took it: compared as it is
        host = host.lower()
    port = parts.port
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else None
    path = parts.path
    if scheme in HTTP_SCHEMES:
        path = path or "/"
    elif path == "/":
        path = ""
    return (
        scheme,
        "" if userinfo is None else "@" + _unescaped(userinfo),
        host,
        "" if port is None else str(port),
        _unescaped(path),
        _unescaped(parts.query),
        _unescaped(parts.fragment),
    )


def _unescaped(text: str) -> str:
    """``text`` with its escaped unreserved characters unescaped, and the hex digits of the
    other escapes in upper case (RFC 3986, 6.2.2.1 and 6.2.2.2)."""

    def one(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return _ESCAPED.sub(one, text)


def mask_loosely(url: str) -> str:
    """``url`` masked for an error message: as it may not be a URL at all, everything from
    its scheme (or its start) to its last ``@`` goes (a password may hold ``/``, ``?``,
    ``#`` or ``@``)."""
    if m := _TO_LAST_AT.match(url):
        url = f"{m.group(1)}***@{url[m.end() :]}"
    return mask_url(url)


# Greedy: up to the last "@" of all.
_TO_LAST_AT = re.compile(r"(\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?).*@", re.DOTALL)
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")


def spaced(text: str) -> bool:
    """Whether ``text`` holds a space or a control character, as no URL or host name does
    (an env file's trailing space; urlsplit passes tabs and newlines over without a word)."""
    return any(ch.isspace() or not ch.isprintable() for ch in text)


def valid_host(host: str) -> bool:
    """Whether ``host`` is an IP address or a name a resolver takes (IDNA, labels of 1 to 63
    characters)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii").rstrip(".")
        labels = ascii_host.split(".")
        for label in labels:
            if label.lower().startswith("xn--"):
                label.encode("ascii").decode("idna")  # a punycode label must decode
        if not all(_LABEL.fullmatch(label) for label in labels):
            return False
    except UnicodeError:
        return False
    if _NUMBER.fullmatch(labels[-1]):
        # No top-level domain is a number: an IPv4 address, as a resolver reads one (127.1
        # too), or a typo of one (10.0.0.256), which no resolver finds.
        import socket

        try:
            socket.inet_aton(ascii_host)
        except OSError:
            return False
    return True


def _http_host(host: str) -> bool:
    """Whether the HTTP stack takes ``host``: it reads a name that is not ASCII by IDNA 2008,
    which refuses some that the resolver's IDNA 2003 maps (logs in full-width letters)."""
    if host.isascii():
        return True
    import httpx

    try:
        httpx.URL(f"https://{host}/")
    except httpx.InvalidURL:
        return False
    return True


_ID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_TOKEN = re.compile(r"d\." + _ID.pattern)


def looks_like_id(ref: str) -> bool:
    return _ID.fullmatch(ref) is not None


def find_app(store: SQLiteStore, ref: str) -> AppInfo | None:
    """The app named ``ref``, else the one whose ``id`` it is: Heroku takes either
    (``/apps/{app_id_or_name}``). A name comes first, as herolog's names may look like ids."""
    info = store.app(ref)
    if info is None and looks_like_id(ref):
        info = store.app_by_id(ref)
    return info


def _named(store: SQLiteStore, ref: str) -> str:
    """The name of the app ``ref`` names, or whose id it is (as the API and ``herolog logs
    -a`` take it); ``ref`` itself for an app the store has not had yet."""
    info = find_app(store, ref)
    return ref if info is None else info.name


def api_time(instant: str) -> str:
    """An instant the way the Platform API writes times: seconds, ``Z``."""
    return instant[:19] + "Z"


def drain_object(
    drain: Drain, *, show_secrets: bool = True, forwarded: bool = True
) -> dict[str, Any]:
    """A drain as the Platform API (and ``herolog drain --json``) shows it: Heroku's fields,
    and herolog's ``delivery``: what the server has done for it, and ``forwarded``, whether
    a herolog serve forwards the store's drains now (one answering the API does)."""
    delivery = drain.delivery
    return {
        "id": drain.id,
        "token": drain.token,
        "url": drain.url if show_secrets else mask_url(drain.url),
        "addon": None,
        "app": {"id": app_id(drain.app), "name": drain.app},
        "created_at": api_time(drain.created_at),
        "updated_at": api_time(drain.updated_at),
        "delivery": {
            "delivered": delivery.delivered,
            "dropped": delivery.dropped,
            "retrying": delivery.retrying,
            "last_error": delivery.last_error,
            "last_error_at": delivery.last_error_at and api_time(delivery.last_error_at),
            "waiting": drain.waiting,
            "forwarded": forwarded,
        },
    }


def drain_from_object(obj: dict[str, Any]) -> Drain:
    """The inverse of :func:`drain_object` (ValueError for anything else)."""
    try:
        delivery = obj.get("delivery") or {}
        return Drain(
            str(obj["id"]),
            str(obj["token"]),
            str(obj["app"]["name"]),
            str(obj["url"]),
            str(obj["created_at"]),
            str(obj["updated_at"]),
            Delivery(
                int(delivery.get("delivered", 0)),
                int(delivery.get("dropped", 0)),
                bool(delivery.get("retrying", False)),
                delivery.get("last_error"),
                delivery.get("last_error_at"),
            ),
            None if delivery.get("waiting") is None else int(delivery["waiting"]),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not a drain object: {error}") from None


class DrainError(Exception):
    """A drain command that cannot be done; ``usage``: the input itself is wrong (exit 2)."""

    def __init__(
        self,
        message: str,
        *,
        usage: bool = False,
        status: int | None = None,
        missing: bool = False,
        exists: bool = False,
    ) -> None:
        super().__init__(message)
        self.usage = usage
        self.status = status
        self.missing = missing
        """The app or drain is not there (a server said so: not that it has no such path)."""
        self.exists = exists
        """The app has the drain already."""
        self.no_app = False
        """The server has no app of the name asked for."""


def new_app_warning(app: str) -> str:
    """What adding a drain to an app the store has not had yet says: Heroku would refuse a
    name of no app (a typo); herolog takes it, for an app whose lines are to come."""
    return (
        f"{app} has no lines yet: the drain forwards them once they come"
        " (check the app name if it should have some)"
    )


class Registry(Protocol):
    """Where ``herolog drain`` registers drains: the local store, or a server's API."""

    def add(self, app: str, url: str) -> tuple[Drain, str | None]:
        """The drain added, and a warning to show, if any."""
        ...

    def list(self, app: str | None) -> list[Drain]: ...

    def find(self, app: str, key: str) -> Drain:
        """The app's drain whose URL (written any way add takes as the same), token or id is
        ``key``."""
        ...

    def remove(self, app: str, key: str) -> Drain: ...

    def forwarded(self) -> bool: ...


def not_there(app: str, key: str, drains: list[Drain]) -> str:
    """The error for removing a drain ``app`` does not have: naming the apps that have it,
    since ``-a`` defaults to one app and a token is easily taken for the drain's own name."""
    message = f"{app} has no drain {mask_url(key)}"
    owners = sorted({d.app for d in drains if key in (d.url, d.token, d.id)})
    if owners:
        message += f" ({' and '.join(owners)} {'has' if len(owners) == 1 else 'have'} it:"
        message += f" herolog drain remove ... -a {owners[0]})"
    return message


def already_has(app: str, known: str, url: str) -> str:
    """The error for adding ``url`` to ``app``, which has the drain ``known`` already (the
    same URL, or the same written another way)."""
    message = f"{app} already has the drain {mask_url(known)}"
    if known != url:
        message += f" ({mask_url(url)} is the same URL written another way)"
    return message


def _checked(url: str) -> str:
    try:
        return check_url(url)
    except DrainURLError as error:
        raise DrainError(str(error), usage=True) from None


class LocalRegistry:
    def __init__(
        self, store_path: Path, lock_wait: Callable[[float], object] | None = None
    ) -> None:
        self.store_path = store_path
        self.lock_wait = lock_wait
        """The stores' lock_wait (see SQLiteStore.lock_wait) for the changes it makes."""

    def add(self, app: str, url: str) -> tuple[Drain, str | None]:
        _checked(url)

        def add(store: SQLiteStore) -> tuple[Drain, str | None]:
            info = find_app(store, app)
            if info is None and looks_like_id(app):
                # As the API: an id of no app has a typo in it, as likely as not; a new
                # app named after it would never get a line.
                raise DrainError(f"the store has no app named {app!r}, nor one with that id")
            name = app if info is None else info.name
            try:
                added = counted(store, [store.add_drain(name, url)])[0]
            except DrainExists as exists:
                raise DrainError(already_has(name, exists.url, url), exists=True) from None
            return added, new_app_warning(name) if info is None else None

        return using_store(self.store_path, add, create=True, lock_wait=self.lock_wait)

    def list(self, app: str | None) -> list[Drain]:
        def drains(store: SQLiteStore) -> list[Drain]:
            return counted(store, store.drains(None if app is None else _named(store, app)))

        return read_existing(self.store_path, drains, [])

    def find(self, app: str, key: str) -> Drain:
        def find(store: SQLiteStore, name: str) -> Drain | None:
            drain = store.find_drain(name, key)
            return None if drain is None else counted(store, [drain])[0]

        return self._one(app, key, find)

    def remove(self, app: str, key: str) -> Drain:
        return self._one(app, key, lambda store, name: store.remove_drain(name, key))

    def _one(self, app: str, key: str, work: Callable[[SQLiteStore, str], Drain | None]) -> Drain:
        """What ``work`` does with the app's drain ``key`` (given the app's name), or the
        error naming the apps that have it."""

        def one(store: SQLiteStore) -> tuple[str, Drain | None]:
            name = _named(store, app)
            return name, work(store, name)

        if _missing(self.store_path):  # no drains: a remove makes no store to say so
            name, drain = app, None
        else:
            name, drain = using_store(self.store_path, one, create=True, lock_wait=self.lock_wait)
        if drain is None:
            raise DrainError(not_there(name, key, self.list(None)), missing=True)
        return drain

    def forwarded(self) -> bool:
        """Whether a herolog serve forwards this store's drains now."""
        return read_existing(self.store_path, lambda store: store.leased(FORWARDING_LEASE), False)


def _missing(path: Path) -> bool:
    """Whether there is no file at ``path`` (not: one that cannot be looked at, which
    opening it says)."""
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        pass
    return False


class RemoteRegistry:
    """The drains of a herolog serve, through its Platform API."""

    def __init__(self, base: str, api_key: str | None) -> None:
        self.base = base.rstrip("/")
        self.shown = mask_url(self.base)
        """The server's URL for messages: without its password."""
        self.api_key = api_key

    def add(self, app: str, url: str) -> tuple[Drain, str | None]:
        _checked(url)
        path = f"/apps/{quote(app, safe='')}/log-drains"
        try:
            response = self._response("POST", path, app, "add the drain", {"url": url})
        except DrainError as error:
            if not error.exists:
                raise
            # The API's words are Heroku's, "Url has already been taken": say which app and
            # drain, as locally, for the log of a script that adds several.
            try:
                known = self.find(app, url)
            except DrainError:  # removed since: the server's words, then
                raise error from None
            message = already_has(known.app, known.url, url)
            raise DrainError(message, status=error.status, exists=True) from None
        # The warning the heroku CLI prints from the same header: a server's text, for a
        # terminal (see printable).
        warning = response.headers.get("warning-message")
        return self._drain(self._json(response)), None if warning is None else printable(warning)

    def list(self, app: str | None, doing: str = "list the drains") -> list[Drain]:
        path = f"/apps/{quote(app, safe='')}/log-drains" if app is not None else "/log-drains"
        try:
            answer = self._call("GET", path, app, doing)
        except DrainError as error:
            if error.no_app:  # as locally: an app comes into being with its first drain
                return []
            raise
        if not isinstance(answer, list):
            raise DrainError(
                f"{self.shown} did not answer with a list of drains: is it a herolog serve?"
            )
        return [self._drain(obj) for obj in answer]

    def find(self, app: str, key: str) -> Drain:
        return self._one("GET", app, key, "look up the drain")

    def remove(self, app: str, key: str) -> Drain:
        return self._one("DELETE", app, key, "remove the drain")

    def _one(self, method: str, app: str, key: str, doing: str) -> Drain:
        named = key
        if not (looks_like_id(key) or _TOKEN.fullmatch(key)):
            # A URL goes in no request's path, where a proxy in front would write its
            # secrets to its access log (and a long one, escaped, would be over what a proxy
            # or httpx takes): it is looked for in the app's list, as the server finds it,
            # and the drain named by its id.
            drain = find_drain(self.list(app, doing), key)
            if drain is None:
                raise DrainError(not_there(app, key, self.list(None)), missing=True)
            if method == "GET":
                return drain
            named = drain.id
        path = f"/apps/{quote(app, safe='')}/log-drains/{quote(named, safe='')}"
        try:
            answer = self._call(method, path, None, doing)
        except DrainError as error:
            if error.missing:
                raise DrainError(not_there(app, key, self.list(None)), missing=True) from None
            raise
        return self._drain(answer)

    def forwarded(self) -> bool:
        return True  # a server answered: it, or the one it leaves forwarding to, forwards

    def _drain(self, obj: Any) -> Drain:
        try:
            return drain_from_object(obj)
        except ValueError as error:
            raise DrainError(
                f"{self.shown} did not answer with a drain ({error}): is it a herolog serve?"
            ) from None

    def _call(self, method: str, path: str, app: str | None, doing: str, body: Any = None) -> Any:
        return self._json(self._response(method, path, app, doing, body))

    def _response(
        self, method: str, path: str, app: str | None, doing: str, body: Any = None
    ) -> httpx.Response:
        import httpx

        from herolog.remote import RemoteError, api_client, refused, unreachable

        try:
            with api_client(self.base, self.api_key) as client:
                response = client.request(method, self.base + path, json=body)
        except RemoteError as error:
            raise DrainError(str(error)) from None
        except httpx.InvalidURL as error:
            raise DrainError(f"not a server URL: {self.shown} ({error})") from None
        except (httpx.TransportError, httpx.DecodingError) as error:
            raise DrainError(str(unreachable(self.shown, error))) from None
        if not 200 <= response.status_code < 300:
            problem: RemoteError = refused(self.shown, response, doing, app)
            # A URL the app already has is a conflict, not a usage error: exit 1, as locally.
            exists = "already been taken" in str(problem)
            failed = DrainError(
                str(problem),
                usage=problem.usage and not exists,
                status=response.status_code,
                missing=problem.not_found,
                exists=exists,
            )
            failed.no_app = problem.no_app
            raise failed
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (ValueError, RecursionError):
            raise DrainError(
                f"{self.shown} did not answer with JSON: is it a herolog serve?"
            ) from None


# InfluxDB 1.x takes its password as ?p=, others as ?pass=.
_SECRET_PARAM = re.compile(r"(?i)(key|token|secret|pass|pwd|auth|sig)|^p$")
_SCHEME = r"[A-Za-z][A-Za-z0-9+.-]*://"
# Up to the netloc's last "@", as urlsplit and httpx read it: a password may hold "@".
_USERINFO = re.compile(rf"^({_SCHEME})([^/?#]*)@")
_PARAM = re.compile(r"([?&;#])([^=&;#]*)=([^&;#]*)")
_PATH = re.compile(rf"^({_SCHEME}[^/?#]*)([^?#]*)")
# A path segment that is a token (Sumo Logic's and Loggly's drain URLs carry theirs there):
# 32 or more URL-safe characters, letters and digits among them, as no word of a path has.
_PATH_TOKEN = re.compile(r"(?<=/)(?=[^/]*[0-9])(?=[^/]*[A-Za-z])[A-Za-z0-9_=-]{32,}(?=/|$)")


def _secrets(url: str) -> list[str]:
    """The secret parts of ``url``: the user-info's password (or a lone token), the Basic
    credentials it is sent as, and the values of secret-looking query or fragment
    parameters."""
    found = []
    if m := _USERINFO.match(url):
        user, _, password = m.group(2).partition(":")
        # An empty password leaves the user as the secret: a token sent as curl -u TOKEN:.
        found.append(password or user)
        basic = unquote_to_bytes(user) + b":" + unquote_to_bytes(password)  # as sent
        found.append(base64.b64encode(basic).decode())  # a drain may quote its headers
    for m in _PARAM.finditer(url):
        if _SECRET_PARAM.search(unquote(m.group(2))):
            found.append(m.group(3))
    if m := _PATH.match(url):
        found += _PATH_TOKEN.findall(m.group(2))
    return [value for value in found if value]


def mask_url(url: str) -> str:
    """``url`` with its password, secret-looking parameter values (``dd-api-key``,
    ``api_key``, ``token``...) and token-like path segments replaced by ``***``, for
    showing to people. Works on the text as it is, so that a URL too broken to parse is
    masked as well."""

    def userinfo(m: re.Match[str]) -> str:
        user, sep, password = m.group(2).partition(":")
        if password:
            return f"{m.group(1)}{user}:***@"
        return f"{m.group(1)}***{sep}@"  # a lone token, or one with an empty password

    def param(m: re.Match[str]) -> str:
        if m.group(3) and _SECRET_PARAM.search(unquote(m.group(2))):
            return f"{m.group(1)}{m.group(2)}=***"
        return m.group(0)

    def path(m: re.Match[str]) -> str:
        return m.group(1) + _PATH_TOKEN.sub("***", m.group(2))

    return _PATH.sub(path, _PARAM.sub(param, _USERINFO.sub(userinfo, url, count=1)), count=1)


def scrub(text: str, url: str) -> str:
    """``text`` (an error a drain answered, say) without the secrets of ``url`` in it, and
    without a character that is not printable (see :func:`printable`)."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        for form in {secret, unquote(secret)}:
            if len(form) >= 3:
                text = text.replace(form, "***")
    return printable(text)


def printable(text: str) -> str:
    """``text`` with each character that is not printable written as an escape (``\\x1b``,
    ``\\u202e``): a drain's answer is quoted in serve's log and in drain list, read in a
    terminal, which its escape sequences would otherwise drive (write the clipboard, clear
    the screen, set the title), as its bidirectional controls would reorder what is shown."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
