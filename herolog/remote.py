"""Talking to a ``herolog serve`` instead of the local store.

``herolog logs --server`` reads the same lines over the Platform API. It does what the
official heroku CLI does (create a log session, read it as server-sent events) and asks for
herolog's JSON records, so the lines are rendered by the same renderer as local mode, and
filtered on the server by the same filter as local mode. A tail outlives a server restart
or a network drop: it reconnects and resumes after the last line it got.

``herolog run --server`` sends lines the way Logplex does, to the server's drain intake:
see :class:`IntakeSender`.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlsplit

from herolog import __version__, timestamps
from herolog.logs import LogsRequest, may_yet_come
from herolog.parser import LogLine, format_syslog, frame
from herolog.render import OPENING_RETRY_MS, STREAM_ENDS, Renderer, decode_record

if TYPE_CHECKING:
    import ssl

    import httpx

    from herolog.store import AppInfo

SEND_TRIES = 3
"""Tries for a batch sent to a drain intake, as Logplex makes them."""
SEND_RETRY_S = 0.25
"""The wait before the second try; it doubles for each one after."""
SEND_TIMEOUT_S = 5.0
"""How long a batch's request may take, as Logplex's (which has 3 s to connect)."""
STOPPED_SEND_S = 5.0
"""Once a command stopped by a signal herolog passed on (Ctrl-C, SIGTERM) has exited, how
long the lines left have to reach the server, as serve gives its drains as it stops."""
SEND_BATCH_BYTES = 100_000
"""A batch is closed once its messages reach this size (Logplex batches about 100 KB)."""
READ_TIMEOUT_S = 45.0
"""The server sends a keep-alive every 5 s: this much silence means the connection is dead."""
BACKOFF_START_S = 0.25
BACKOFF_CAP_S = 5.0
WAIT_FOR_APP_S = 1.0
"""How often a tail of an app the server has not had yet asks again (as a local tail waits)."""


class RemoteError(Exception):
    """What went wrong, in one line. ``usage``: the request itself was refused (422);
    ``final``: retrying cannot help (the API key was refused)."""

    def __init__(self, message: str, *, usage: bool = False, final: bool = False) -> None:
        super().__init__(message)
        self.usage = usage
        self.final = final or usage
        self.no_app = False
        """The server has no app of the name asked for."""
        self.not_found = False
        """Heroku's 404 for an app or a drain that is not there (``Couldn't find that
        drain.``), not the 404 of a path the API does not have (a --server URL with a wrong
        path: a drain URL, say)."""
        self.unsent: int | None = None
        """For lines being sent: how many of them the server did not take."""
        self.status: int | None = None
        """The HTTP status the server refused them with, if it answered."""


def session_body(request: LogsRequest, *, lines: int | None = None) -> dict[str, Any]:
    """The log-sessions request for ``request``: Heroku's fields and herolog's own filters."""
    wanted = request.wanted
    # A serve older than MSGIDs ignores record_fields; a newer one sends them only if asked.
    body: dict[str, Any] = {"tail": request.tail, "format": "json", "record_fields": ["msgid"]}
    num = request.num if lines is None else lines
    if num is not None:
        body["lines"] = num
    # Several names go as a list, which a serve from before repeated filters refuses (422)
    # rather than take for a name, or for names that must all match.
    if wanted.sources:
        body["source"] = _one_or_list(wanted.sources)
    if wanted.dynos:
        body["dynos"] = [_one_or_list(names) for names in wanted.dynos]
    if wanted.since is not None:
        body["since"] = wanted.since
    if wanted.until is not None:
        body["until"] = wanted.until
    if wanted.grep:
        body["grep"] = [p.pattern for p in wanted.grep]
    if wanted.exclude:
        body["exclude"] = [p.pattern for p in wanted.exclude]
    return body


def _one_or_list(names: tuple[str, ...]) -> str | list[str]:
    return names[0] if len(names) == 1 else list(names)


class Proxy(NamedTuple):
    url: str
    variable: str
    """The environment variable it came from, as it is spelt there: ``$HTTPS_PROXY``."""


def proxy_for(server: str, proxies: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy the environment names for ``server`` ($HTTPS_PROXY or $HTTP_PROXY by its
    scheme, else $ALL_PROXY; none for a host $NO_PROXY names), as curl and httpx choose it;
    none for this machine's loopback, which a proxy cannot reach (its own is another).
    ``proxies``: urllib's getproxies_environment() read once for many servers (serve's
    drains): it goes through the whole environment."""
    import ipaddress
    import os
    import urllib.request

    parts = urlsplit(server)
    host = (parts.hostname or "").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if proxies is None:
        proxies = urllib.request.getproxies_environment()
    scheme = next((name for name in (parts.scheme, "all") if proxies.get(name)), None)
    if loopback or scheme is None or _no_proxy(host, port, proxies.get("no", "")):
        return None
    # getproxies_environment reads both spellings, the lower-case one winning.
    variable = next(
        (name for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY") if os.environ.get(name)),
        f"{scheme.upper()}_PROXY",
    )
    url = proxies[scheme]
    return Proxy(url if "://" in url else f"http://{url}", f"${variable}")


def _no_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether $NO_PROXY names ``host``, as curl reads it: ``*``, or a host and the domains
    under it (``example.com`` and ``.example.com`` alike), either with a ``:PORT``."""
    for entry in (item.strip() for item in no_proxy.lower().split(",")):
        if entry == "*":
            return True
        name, only_port = entry, None
        head, _, tail = entry.rpartition(":")
        if tail.isdigit() and (entry.count(":") == 1 or head.endswith("]")):
            name, only_port = head, int(tail)
        name = name.strip("[]").lstrip(".")
        if name and only_port in (None, port) and (host == name or host.endswith("." + name)):
            return True
    return False


def usable_proxy(server: str, proxies: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy :func:`proxy_for` names for ``server``; a RemoteError for one herolog
    cannot use (httpx's own choice raised a traceback for those)."""
    from herolog.drains import mask_url

    proxy = proxy_for(server, proxies)
    if proxy is None:
        return None
    scheme = proxy.url.partition("://")[0].lower()
    why = None
    if scheme.startswith("socks"):
        why = "herolog cannot use SOCKS proxies"
    elif scheme not in ("http", "https"):
        why = "not an http:// or https:// URL"
    else:
        import httpx

        try:
            httpx.Proxy(proxy.url)
        except (ValueError, httpx.InvalidURL) as error:
            why = str(error)
    if why is not None:
        raise RemoteError(
            f"cannot use the proxy {mask_url(proxy.url)} from {proxy.variable}: {why}", final=True
        )
    return proxy


def http_client(server: str, **settings: Any) -> httpx.Client:
    """An httpx client for ``server``, through the proxy :func:`usable_proxy` names."""
    import httpx

    proxy = usable_proxy(server)
    # Not httpx's own choice from the environment (trust_env), as serve's drains do too.
    return httpx.Client(
        proxy=None if proxy is None else proxy.url, trust_env=False, verify=_trusted(), **settings
    )


def _trusted() -> ssl.SSLContext:
    """:func:`trusting_context`, once $SSL_CERT_FILE, when set, is known to be readable: one
    that is not is a RemoteError, not a traceback."""
    problem = ssl_cert_file_problem()
    if problem is not None:
        raise RemoteError(problem, final=True)
    return trusting_context()


def ssl_cert_file_problem() -> str | None:
    """Why $SSL_CERT_FILE, when set, cannot be used (OpenSSL would pass over it unsaid),
    in one line; None if it can, or is not set."""
    import os
    import ssl

    cafile = os.environ.get("SSL_CERT_FILE") or None
    if cafile is None:
        return None
    # The context connections are checked with holds the file's certificates if OpenSSL
    # could read them, and is kept: no second reading of the file (a system's CAs take
    # 20-30 ms), which every `logs --server` and every serve's start paid.
    with contextlib.suppress(OSError):
        if trusting_context().cert_store_stats()["x509"]:
            return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cafile)
    except OSError as error:  # ssl.SSLError too: a file that holds no certificate
        return f"cannot use $SSL_CERT_FILE ({cafile}): {error.strerror or error}"
    return None


def trusting_context(insecure: bool = False) -> ssl.SSLContext:
    """The client context every https:// and syslog+tls:// connection herolog makes is
    checked with: the system's CAs, as curl checks them (not certifi's bundle, which httpx
    would trust), with $SSL_CERT_FILE and $SSL_CERT_DIR in place of the system's file and
    directory of them, as OpenSSL reads them. One context for all (serve's drains share it:
    each holds its own copy of the CAs, 0.8 MB, so that hundreds of drains cost hundreds of
    MB), and a new one once those change (update-ca-certificates, say)."""
    import ssl
    from pathlib import Path

    paths = ssl.get_default_verify_paths()
    stamps = []
    for where in (paths.cafile, paths.capath):
        try:
            info = Path(where).stat() if where else None
        except OSError:
            info = None
        stamps.append(None if info is None else (info.st_ino, info.st_mtime_ns, info.st_size))
    return _trusting(paths.cafile, paths.capath, tuple(stamps), insecure)


@functools.lru_cache(maxsize=4)
def _trusting(
    cafile: str | None, capath: str | None, stamps: tuple[object, ...], insecure: bool
) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cafile and stamps[0] is not None and not context.cert_store_stats()["x509"]:
        # OpenSSL passes over a file it cannot open: a serve out of open files would keep
        # (here, and in its drains) a context without the CAs, which rejects every
        # certificate until they change. Raised, it is not kept, and the next call loads them.
        import errno

        try:
            context.load_verify_locations(cafile=cafile)
        except OSError as error:  # ssl.SSLError is one: a file that holds no certificate
            if not isinstance(error, ssl.SSLError) and error.errno in (
                errno.EMFILE,
                errno.ENFILE,
            ):
                raise
    return context


def api_client(server: str, api_key: str | None, read_timeout: float = 30.0) -> httpx.Client:
    """An HTTP client that talks to a herolog serve's Platform API as the heroku CLI does."""
    import httpx

    headers = {
        "Accept": "application/vnd.heroku+json; version=3",
        "User-Agent": f"herolog/{__version__}",
    }
    # The spaces around a header's value are not part of it (RFC 9110; serve reads the key
    # without them), and httpx refuses to send a value that ends in one, in an error that
    # quotes the key: a key set with a space after it is sent without.
    api_key = api_key.strip(" ") if api_key else api_key
    if api_key:
        if not api_key.isascii() or not api_key.isprintable():
            raise RemoteError(
                "HEROLOG_API_KEY must be printable ASCII, as API keys are", final=True
            )
        headers["Authorization"] = f"Bearer {api_key}"
    # httpx turns a URL's user-info into Basic auth over the header unless the client has an
    # auth of its own: $HEROLOG_URL may carry the intake's --auth for herolog run, and the
    # key must still be what the API gets. httpx.Auth() itself adds nothing.
    auth = httpx.Auth() if api_key else None
    return http_client(
        server, headers=headers, auth=auth, timeout=httpx.Timeout(10.0, read=read_timeout)
    )


def refused(base: str, response: httpx.Response, doing: str, app: str | None) -> RemoteError:
    """The one-line error for an API answer that is not a success."""
    error_id = None
    status = response.status_code
    shown_status = str(status)
    web_page = False
    try:
        error = response.json()
        message, error_id = str(error["message"]), error.get("id")
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not herolog's JSON (another server's, a proxy's): one line, and no page of HTML.
        if web_page := _is_web_page(response):
            shown_status = f"{status} {response.reason_phrase}".strip()
            message = WEB_PAGE
        else:
            message = (response.text.strip().splitlines() or [response.reason_phrase])[0][:200]
    message = _unquoted(message, response.request)
    if status == 401 and web_page:  # not serve's: a proxy asking for its own credentials
        return RemoteError(
            f"{base} asked for credentials of its own ({shown_status}), with a web page, not as"
            " herolog serve does: a proxy in front that checks the drains' credentials"
            " (nginx's auth_basic) must leave the API to serve's --api-key",
            final=True,
        )
    # The key goes as a Bearer token; Basic auth is a URL's user-info (the intake's --auth).
    sent_key = response.request.headers.get("Authorization", "").startswith("Bearer ")
    if status == 401 and not sent_key:
        return RemoteError(
            f"{base} needs an API key (401): set HEROLOG_API_KEY to its --api-key", final=True
        )
    if status == 401:
        return RemoteError(f"{base} refused the API key (401): check HEROLOG_API_KEY", final=True)
    not_found = (
        status == 404 and error_id == "not_found" and message.startswith("Couldn't find that ")
    )
    if not_found and app is not None and _no_such_app(message):
        from herolog.drains import looks_like_id
        from herolog.store import APP_NAME_RULE, valid_app_name

        if looks_like_id(app):
            why = ", nor one with that id"
        elif not valid_app_name(app):
            why = f", and no app can have that name ({APP_NAME_RULE})"
        else:
            why = ""
        error = RemoteError(f"{base} has no app named {app!r}{why}")
        error.no_app = True
    elif status == 422:
        error = RemoteError(message, usage=True)
    else:
        error = RemoteError(f"{base} could not {doing} ({shown_status}): {message}")
    error.not_found = not_found
    return error


WEB_PAGE = "it answered with a web page, not as herolog serve does"


def _unquoted(text: str, request: httpx.Request) -> str:
    """``text``, from the server's answer to ``request``, without the credentials the
    request carried: a server that echoes requests (a proxy's debug page) quotes them."""
    import base64
    import binascii
    import contextlib

    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    secrets = [token]
    if scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            secrets.append(base64.b64decode(token, validate=True).decode().partition(":")[2])
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _is_web_page(response: httpx.Response) -> bool:
    """An error page (a proxy's, another server's): HTML over many lines, not a reason."""
    return str(response.headers.get("content-type", "")).startswith("text/html")


def _no_such_app(message: str) -> bool:
    return message.startswith("Couldn't find that app")


def unreachable(base: str, error: Exception) -> RemoteError:
    """What to say of a request to ``base`` that failed with ``error``: a transport error
    (it could not be reached, or its answer was cut off), or an answer that could not be
    decoded (:func:`unreadable`)."""
    import httpx

    from herolog.drains import mask_url

    if isinstance(error, httpx.DecodingError):
        return unreadable(base, error)
    reason = _reason(error)
    proxy = proxy_for(base)
    via = "" if proxy is None else f" through the proxy {mask_url(proxy.url)} ({proxy.variable})"
    if isinstance(error, httpx.ReadTimeout):  # it is there, but hung (or stopped with Ctrl-Z)
        return RemoteError(f"{base} took the connection{via} but did not answer (timed out)")
    if proxy is not None:  # what could not be reached may well be the proxy
        return RemoteError(f"cannot reach {base}{via}: {reason}")
    if "Hostname mismatch" in reason or "IP address mismatch" in reason:
        # Trusted, but for other names: trusting it again would not help.
        host = httpx.URL(base).host
        reason += f" (the certificate is not for {host}: use a name it is for in the URL)"
    elif "certificate has expired" in reason:  # trusted, maybe, but out of its dates
        reason += (
            " (a certificate the server sent is past its expiry date: renew it and restart"
            " the server, or check this machine's clock)"
        )
    elif "certificate is not yet valid" in reason:
        reason += " (a certificate the server sent is not valid yet: check this machine's clock)"
    elif "CERTIFICATE_VERIFY_FAILED" in reason:
        # serve --certfile with a certificate of one's own is the usual way to get here.
        reason += " (to trust your own CA or certificate, set SSL_CERT_FILE to its PEM file)"
    elif "WRONG_VERSION_NUMBER" in reason and base.startswith("https:"):
        reason += " (it answers plain HTTP: use http://)"
    elif base.startswith("https:") and ("UNEXPECTED_EOF" in reason or "reset by peer" in reason):
        # Closed on the ClientHello: a port of something else, a syslog listener's say; or a
        # serve with no file left to take the connection with.
        reason += (
            " (it closed the connection during the TLS handshake: is this its HTTPS port? a"
            " herolog serve out of open files does so too, which its log says)"
        )
    elif base.startswith("http:") and (
        "without sending a response" in reason or "reset by peer" in reason
    ):
        # What a TLS server does with a plain-HTTP request: it closes or resets. So does a
        # serve with no file left to take the connection with, whatever the scheme.
        reason += (
            " (a server of HTTPS closes a plain-HTTP connection so: try https://; so does a"
            " herolog serve out of open files, which its log says)"
        )
    return RemoteError(f"cannot reach {base}: {reason}")


def unreadable(base: str, error: Exception) -> RemoteError:
    """An answer whose body is not what its Content-Encoding says (gzip of a plain page)."""
    return RemoteError(f"{base} answered with a body that is not in its Content-Encoding: {error}")


APPS_PAGE = 1000
"""Apps asked for in each GET /apps (the Platform API's largest page)."""


def list_apps(server: str, api_key: str | None) -> list[AppInfo]:
    """The apps of a herolog serve (``herolog apps --server``), by name, through its
    ``GET /apps``, page after page as its Next-Range says."""
    import httpx

    from herolog.drains import mask_url

    base = server.rstrip("/")
    shown = mask_url(base)
    wanted = f"name ..; max={APPS_PAGE}"
    asked = {wanted}
    found: list[AppInfo] = []
    with api_client(base, api_key) as client:
        while True:
            try:
                response = client.get(base + "/apps", headers={"Range": wanted})
            except httpx.InvalidURL as error:
                raise RemoteError(f"not a server URL: {shown} ({error})") from None
            except (httpx.TransportError, httpx.DecodingError) as error:
                raise unreachable(shown, error) from None
            if response.status_code not in (200, 206):
                raise _apps_refused(shown, response)
            found += _apps_in(shown, response)
            after = response.headers.get("next-range")
            if response.status_code == 200 or not after:
                return sorted(found, key=lambda app: app.name)
            if after in asked:  # it would go round for ever
                raise RemoteError(f"{shown} sent the same page of apps again ({after!r})")
            asked.add(after)
            wanted = after


def _apps_refused(shown: str, response: httpx.Response) -> RemoteError:
    """A herolog serve from before GET /apps answers it as a path of its API it does not
    serve: that, rather than the 404 itself, is what to say."""
    try:
        error = response.json()
        message = str(error["message"]) if error.get("id") == "not_found" else ""
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        message = ""
    said = "No such API endpoint: GET /apps"
    if response.status_code == 404 and (message == said or message.startswith(said + " ")):
        return RemoteError(
            f"{shown} cannot list its apps (GET /apps is a 404 there): it is a herolog serve"
            " older than this herolog, without that call; upgrade it (logs and drain --server"
            " work with it as it is)"
        )
    return refused(shown, response, "list the apps", None)


def _apps_in(shown: str, response: httpx.Response) -> list[AppInfo]:
    from herolog.store import AppInfo, valid_app_name

    try:
        answer = response.json()
        apps = [AppInfo(obj["name"], obj["lines"], obj["created_at"]) for obj in answer]
    except (ValueError, KeyError, TypeError, RecursionError):
        apps = None
    if apps is None or not all(
        isinstance(app.name, str)
        and valid_app_name(app.name)
        and type(app.lines) is int
        and isinstance(app.created_at, str)
        for app in apps
    ):
        raise RemoteError(f"{shown} did not answer with a list of apps: is it a herolog serve?")
    return apps


class RemoteLogs:
    """One ``herolog logs --server`` run."""

    def __init__(
        self,
        server: str,
        api_key: str | None,
        request: LogsRequest,
        renderer: Renderer,
        *,
        on_reconnecting: Callable[[str], None] = lambda reason: None,
        on_begun: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from herolog.drains import mask_url

        self.base = server.rstrip("/")
        self.shown = mask_url(self.base)
        """The server's URL for messages: without its password."""
        self.api_key = api_key
        self.request = request
        self.renderer = renderer
        self.on_reconnecting = on_reconnecting
        self.on_begun = on_begun
        """Called once a stream is open, or a tail waits for its app: from then on the
        output's reader going ends herolog (an error found before keeps its status)."""
        self.sleep = sleep
        self.last_id: str | None = None
        self.mark: tuple[str, str] | None = None
        """An id and its mark, from the server's "mark" event: sent back with the id as the
        tail resumes, so that the lines trimmed meanwhile are counted as the app's alone."""
        self.ended = False
        """The server said the stream is over (the history is whole, or a tail's --until
        passed): no reconnecting."""
        self.opened = False
        """The stream read last was answered (200): a cut after that is a drop of its own,
        not the outage before it going on."""
        self.stream_events = 0
        """Events read of the stream read last, but for the retry it opens with."""
        self.waits = 0
        """Events of the stream read last that only asked the client to wait before it came
        back (SSE's retry field): a serve that is stopping, or that cannot read its store,
        sends nothing else."""

    def run(self) -> None:
        import httpx

        with api_client(self.base, self.api_key, READ_TIMEOUT_S) as client:
            reason = "the server closed the stream"
            url = None  # stays so if --until passes while waiting for the app
            try:
                url = self._first_session(client)
                if url is not None:
                    self._read(client, url)
            except httpx.InvalidURL as error:
                raise RemoteError(f"not a server URL: {self.shown} ({error})") from None
            except httpx.DecodingError as error:  # not a drop: the same again would follow
                raise unreadable(self.shown, error) from None
            except httpx.TransportError as error:
                # A tail that has started carries on through a drop; anything else ends here.
                if not (self.request.tail and self.last_id is not None):
                    raise self._unreachable(url, error) from None
                reason = _dropped(error)
            if self.request.tail and url is not None and not self.ended:
                try:
                    self._keep_tailing(client, url, reason)
                except httpx.DecodingError as error:
                    raise unreadable(self.shown, error) from None

    def _keep_tailing(self, client: httpx.Client, url: str, reason: str) -> None:
        """Reconnect after every end of the stream, resuming after the last line received."""
        import httpx

        delay = BACKOFF_START_S
        announce = True  # once per outage, not once per attempt
        while not (self.ended or self._until_passed()):
            if announce:
                self.on_reconnecting(reason)
            self.sleep(delay)
            self.opened, self.stream_events, self.waits = False, 0, 0
            try:
                if not self._read(client, url, resuming=True):  # gone: the server restarted
                    # Without a line id to resume after, nothing was shown yet: start over.
                    lines = 0 if self.last_id is not None else None
                    url = self._create_session(client, session_body(self.request, lines=lines))
                    if not self._read(client, url, resuming=True):
                        raise RemoteError(f"{self.shown} lost the new log session at once")
            except httpx.TransportError as error:
                reason = _dropped(error)
                if self.opened:  # cut once answered: a proxy's idle timeout on a quiet app
                    announce, delay = True, BACKOFF_START_S
                else:
                    announce, delay = False, min(delay * 2, BACKOFF_CAP_S)
                continue
            except RemoteError as error:
                if error.final:
                    raise
                reason, announce = str(error), False
                delay = min(delay * 2, BACKOFF_CAP_S)
                continue
            if self.stream_events and self.waits == self.stream_events:
                # Nothing but "come back later", from a serve that is stopping (its listener
                # still open while it hands its sessions over) or that cannot read its store:
                # the same outage, not the end of one and the start of the next. A stream
                # ended with no event but the retry it opens with (a proxy's idle timeout on a
                # quiet app) is not that.
                announce, delay = False, min(delay * 2, BACKOFF_CAP_S)
                continue
            reason, announce, delay = "the server closed the stream", True, BACKOFF_START_S

    def _first_session(self, client: httpx.Client) -> str | None:
        """The session's URL; a tail of an app the server has not had yet waits for its
        first line, as in local mode (None if --until passes first)."""
        import httpx

        app = self.request.wanted.app
        waits = self.request.tail and (app is None or may_yet_come(app))
        waited = False
        # Once the server has said it has no such app, a tail waiting for it outlives a
        # drop or a restart (backing off as below), as a tail that has started does.
        wait, down = WAIT_FOR_APP_S, False
        while True:
            try:
                if not waited:
                    return self._create_session(client, session_body(self.request))
                # Every line the app has came after the tail started, and a local tail shows
                # them all: not only the -n last of those stored in the second before this
                # ask. Read from after line 0, the session leaves none out.
                url = self._create_session(client, session_body(self.request, lines=0))
                self.last_id = "0"
                return url
            except httpx.TransportError as error:
                if not waited:
                    raise
                lost: str | None = _dropped(error)
            except RemoteError as error:
                if not (waits and (error.no_app or (waited and not error.final))):
                    raise
                lost = None if error.no_app else str(error)
            waited = True
            if lost is None:
                wait, down = WAIT_FOR_APP_S, False
            else:
                if not down:
                    self.on_reconnecting(lost)
                wait = min(wait * 2, BACKOFF_CAP_S) if down else BACKOFF_START_S
                down = True
            if self._until_passed():
                return None
            self.on_begun()
            self.sleep(wait)

    def _create_session(self, client: httpx.Client, body: dict[str, Any]) -> str:
        app = self.request.wanted.app
        path = f"/apps/{quote(app, safe='')}/log-sessions" if app is not None else "/log-sessions"
        response = client.post(self.base + path, json=body)
        if response.status_code != 201:
            error = self._refused(response, "create a log session")
            if error.usage and str(error) in _BEFORE_REPEATED_FILTERS:
                raise RemoteError(
                    f"{self.shown} takes -s, -d and -p once each ({error}): it is a herolog"
                    " serve older than this herolog, from before they could be repeated;"
                    " upgrade it, or give each of them once",
                    final=True,
                )
            raise error
        try:
            return str(response.json()["logplex_url"])
        except (ValueError, KeyError, TypeError, RecursionError):
            raise RemoteError(f"{self.shown} is not a herolog server (no log session)") from None

    def _read(self, client: httpx.Client, url: str, *, resuming: bool = False) -> bool:
        """Stream the session at ``url`` to the renderer; False if it no longer exists
        (when ``resuming`` it: a session read before)."""
        import httpx
        import httpx_sse

        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.request.tail and self.request.wanted.app is not None:
            headers["Herolog-Mark"] = "-"  # "mark" events, please
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
            if self.mark is not None and self.mark[0] == self.last_id:
                headers["Herolog-Mark"] = self.mark[1]
        # The session URL carries its own secret, and may be on another host (a proxy's
        # --public-url): the API key is not sent there, as the heroku CLI sends none.
        request = client.build_request("GET", url, headers=headers)
        request.headers.pop("Authorization", None)
        response = client.send(request, stream=True)
        try:
            if response.status_code == 404 and resuming:
                return False
            if response.status_code != 200:
                response.read()
                raise self._session_refused(response, url)
            self.opened = True
            self.on_begun()
            try:
                for lines in self._events(httpx_sse.EventSource(response).iter_sse()):
                    self.renderer.write(lines)
            except httpx_sse.SSEError as error:
                raise RemoteError(
                    f"{self.shown} did not answer with a log stream: {error}"
                ) from None
            except httpx.TransportError as error:
                if self.request.tail:
                    raise  # it reconnects and resumes
                raise self._cut_short(_dropped(error)) from None
            # herolog's streams say their end: one that just stops was cut off (the server
            # stopped). Other servers' end as the heroku CLI takes them, whole.
            if not (self.request.tail or self.ended) and _says_its_end(response):
                raise self._cut_short("the stream ended")
        finally:
            response.close()
        return True

    def _cut_short(self, why: str) -> RemoteError:
        return RemoteError(
            f"{self.shown} stopped sending the history before its end ({why}): the lines"
            " printed are not all of it"
        )

    def _events(self, events: Iterator[Any]) -> Iterator[list[Any]]:
        for event in events:
            opening = self.stream_events == 0 and event.retry == OPENING_RETRY_MS
            if opening and not (event.data or event.id or event.event != "message"):
                continue
            self.stream_events += 1
            if event.retry is not None and not event.data:
                self.waits += 1
            if event.id.isascii() and event.id.isdigit():  # herolog's ids; a header value
                self.last_id = event.id
            if event.event == "end":
                self.ended = True
            if event.event == "mark":
                line_id, _, mark = event.data.partition(" ")
                if all(x.isascii() and x.isdigit() for x in (line_id, mark)):
                    self.mark = (line_id, mark)
            if event.event in ("", "message") and event.data:
                try:
                    yield [decode_record(data) for data in event.data.split("\n") if data]
                except (ValueError, TypeError, RecursionError):  # deep nesting too
                    raise RemoteError(f"{self.shown} sent a line herolog cannot read") from None

    def _refused(self, response: httpx.Response, doing: str) -> RemoteError:
        return refused(self.shown, response, doing, self.request.wanted.app)

    def _session_refused(self, response: httpx.Response, url: str) -> RemoteError:
        """The error for a session URL that did not answer: where it is, when that is not
        under the --server URL (without its secret)."""
        import httpx

        from herolog.drains import mask_url

        here, there = httpx.URL(self.base), httpx.URL(url)
        prefix = here.path.rstrip("/")
        under = there.path.startswith(prefix + "/")
        if (there.scheme, there.host, there.port) == (here.scheme, here.host, here.port) and under:
            return self._refused(response, "read the log session")
        where = str(there.copy_with(query=None, fragment=None))
        error = self._refused(response, f"read the log session at {mask_url(where)}")
        # serve makes session URLs from the Host it was asked at, without a proxy's path.
        if prefix and not under:
            hint = f"behind a proxy at {prefix}, give serve --public-url {self.shown}"
            error.args = (f"{error} ({hint})",)
        return error

    def _unreachable(self, session_url: str | None, error: Exception) -> RemoteError:
        """The server, or the session's own host when that is another one (the server's
        --public-url, or the Host a proxy passed it): the API has answered, so naming its
        URL would mislead."""
        import httpx

        if session_url is not None:
            here, there = httpx.URL(self.base), httpx.URL(session_url)
            if (there.scheme, there.host, there.port) != (here.scheme, here.host, here.port):
                origin = httpx.URL(scheme=there.scheme, host=there.host, port=there.port)
                # Behind a proxy without --public-url, that Host is the proxy's upstream
                # (127.0.0.1:8514 for a bare proxy_pass), which no client elsewhere reaches.
                return RemoteError(
                    f"cannot reach {origin}, where {self.shown} serves its log sessions:"
                    f" {_reason(error)} (serve makes their URLs from its --public-url, or"
                    " without one from the Host it is asked at: behind a proxy, give it"
                    f" --public-url {self.shown})"
                )
        return unreachable(self.shown, error)

    def _until_passed(self) -> bool:
        until = self.request.wanted.until
        return until is not None and timestamps.seconds_until(until) <= 0


_BEFORE_REPEATED_FILTERS = frozenset(
    {"source must be a string", "dynos must be a list of dyno names"}
)
"""How a serve from before repeated filters refuses the lists that carry them (see
session_body): its 422 alone reads as a mistake of the command line's, which the same
command line against a newer serve is not."""


def _says_its_end(response: httpx.Response) -> bool:
    name, value = STREAM_ENDS
    return bool(response.headers.get(name) == value)


def _reason(error: Exception) -> str:
    import httpx

    if isinstance(error, httpx.ConnectError):
        text = str(error)
        return "connection refused" if "refused" in text.lower() else text or "cannot connect"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return str(error) or type(error).__name__


def _dropped(error: Exception) -> str:
    """Why a tail's connection counts as dropped, as it says so: a server that has sent
    nothing for READ_TIMEOUT_S (not even the keep-alive it sends every 5 s) is gone quiet,
    which a bare "timed out" does not tell."""
    import httpx

    if isinstance(error, httpx.ReadTimeout):
        return f"the server has said nothing for {READ_TIMEOUT_S:g} s"
    return _reason(error)


class IntakeSender:
    """Sends lines to a ``herolog serve``'s drain intake, ``POST /apps/APP/logs``, as Logplex
    posts to an HTTPS drain: one ``application/logplex-1`` body a batch. Credentials go in
    the server URL (``https://USER:PASSWORD@host``), as in a drain URL.

    A batch keeps its Logplex-Frame-Id through its retries, so one that the server stored
    but could not acknowledge is not stored twice. It is tried three times (network errors,
    408, 429 and 5xx are retried) and then given up with a RemoteError.
    """

    def __init__(
        self, server: str, app: str, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        import httpx

        from herolog.drains import mask_url

        base = server.rstrip("/")
        self.target = f"{base}/apps/{quote(app, safe='')}/logs"
        self.shown = mask_url(base)
        """The server's URL for messages: without its password."""
        self.has_credentials = "@" in urlsplit(base).netloc
        self.sleep = sleep
        self._deadline: float | None = None
        """Set by :meth:`hurry`: no try starts after it, and none lasts past it."""
        self._stopped = "the command"
        """What was stopped, for the message of lines the deadline cost."""
        self.client = http_client(
            base,
            timeout=httpx.Timeout(SEND_TIMEOUT_S, connect=3.0),
            headers={
                "Content-Type": "application/logplex-1",
                "User-Agent": f"herolog/{__version__}",
            },
            follow_redirects=False,
        )

    def check(self) -> None:
        """Post an empty batch: RemoteError unless the server takes this app's lines."""
        if self._post(b"", 0) != 204:  # a herolog serve's answer; any server may say 200
            raise RemoteError(
                f"{self.shown} took the lines but did not answer as herolog serve does"
                " (204): is it a herolog serve?"
            )

    def hurry(self, stopped: str = "the command") -> None:
        """``stopped`` (the command, or herolog once the command had exited) was stopped:
        what is left has STOPPED_SEND_S to be sent, where a server that has stopped
        answering would hold herolog for every batch's tries."""
        self._stopped = stopped
        self._deadline = time.monotonic() + STOPPED_SEND_S

    def send(self, lines: Sequence[LogLine]) -> None:
        """Post ``lines``, in batches of about 100 KB as Logplex makes them; RemoteError
        once the server has not taken one, with ``unsent`` the lines of that batch and the
        ones after it (those before it are stored). A batch the server refuses as too large
        (413) is sent again line by line: only lines too large on their own are lost."""
        frames = [frame([message]) for message in map(format_syslog, lines)]
        start = 0
        too_large: RemoteError | None = None
        lost = 0
        while start < len(frames):
            end, size = start, 0
            while end < len(frames) and (
                end == start or size + len(frames[end]) <= SEND_BATCH_BYTES
            ):
                size += len(frames[end])
                end += 1
            batch = frames[start:end]
            try:
                self._post(b"".join(batch), len(batch))
            except RemoteError as error:
                if error.status != 413:
                    error.unsent = lost + len(frames) - start
                    raise
                if len(batch) == 1:
                    too_large, lost = error, lost + 1
                else:  # over the server's --max-body: line by line, to lose only the too large
                    for i, one in enumerate(batch):
                        try:
                            self._post(one, 1)
                        except RemoteError as alone:
                            if alone.status != 413:
                                alone.unsent = lost + len(frames) - start - i
                                raise
                            too_large, lost = alone, lost + 1
            start = end
        if too_large is not None:
            too_large.unsent = lost
            raise too_large

    def _post(self, body: bytes, count: int) -> int:
        """Post one batch (retrying what may pass later); the status of the answer."""
        import httpx

        headers = {"Logplex-Msg-Count": str(count), "Logplex-Frame-Id": uuid.uuid4().hex.upper()}
        for attempt in range(1, SEND_TRIES + 1):
            timeout = self.client.timeout
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise RemoteError(
                        f"{self.shown} had not taken them {STOPPED_SEND_S:g} s after"
                        f" {self._stopped} was stopped"
                    )
                usual = self.client.timeout  # None: no limit of its own, so ``left``
                timeout = httpx.Timeout(
                    min(usual.read or left, left), connect=min(usual.connect or left, left)
                )
            try:
                response = self.client.post(
                    self.target, content=body, headers=headers, timeout=timeout
                )
            except httpx.InvalidURL as error:
                raise RemoteError(f"not a server URL: {self.shown} ({error})") from None
            # An answer that cannot be decoded is a proxy's glitch, maybe: as a network error.
            except (httpx.TransportError, httpx.DecodingError) as error:
                failure, retry = unreachable(self.shown, error), True
            else:
                if response.is_success:
                    return response.status_code
                failure = self._refused(response)
                retry = response.status_code in (408, 429) or response.status_code >= 500
            if not retry or attempt == SEND_TRIES:
                raise failure
            wait = SEND_RETRY_S * 2 ** (attempt - 1)
            if self._deadline is not None:
                wait = max(0.0, min(wait, self._deadline - time.monotonic()))
            self.sleep(wait)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()

    def _refused(self, response: httpx.Response) -> RemoteError:
        error = self._refusal(response)
        error.status = response.status_code
        return error

    def _refusal(self, response: httpx.Response) -> RemoteError:
        status = response.status_code
        message = (response.text.strip().splitlines() or ["no reason"])[0][:200]
        if _is_web_page(response):
            message = WEB_PAGE
        message = _unquoted(message, response.request)
        reason = f"{status} {response.reason_phrase}".strip()
        if status == 401:
            if self.has_credentials:
                return RemoteError(
                    f"{self.shown} refused the lines ({reason}): the credentials in the URL"
                    " are not those of its --auth"
                )
            return RemoteError(
                f"{self.shown} refused the lines ({reason}): give the credentials of its --auth"
                " in the URL, https://USER:PASSWORD@HOST"
            )
        if status == 404:
            return RemoteError(f"{self.shown} has no drain intake (404): is it a herolog serve?")
        return RemoteError(f"{self.shown} refused the lines ({reason}): {message}")
