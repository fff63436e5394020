"""``herolog logs --server``: the same lines, read from a ``herolog serve`` over its Platform API.

It does what the official heroku CLI does (create a log session, read it as server-sent
events) and asks for herolog's JSON records, so the lines are rendered by the same renderer
as local mode, and filtered on the server by the same filter as local mode. A tail outlives
a server restart or a network drop: it reconnects and resumes after the last line it got.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from herolog import __version__, timestamps
from herolog.logs import LogsRequest
from herolog.render import Renderer, decode_record

if TYPE_CHECKING:
    import httpx

READ_TIMEOUT_S = 45.0
"""The server sends a keep-alive every 15 s: this much silence means the connection is dead."""
BACKOFF_START_S = 0.25
BACKOFF_CAP_S = 5.0


class RemoteError(Exception):
    """What went wrong, in one line. ``usage``: the request itself was refused (422);
    ``final``: retrying cannot help (the API key was refused)."""

    def __init__(self, message: str, *, usage: bool = False, final: bool = False) -> None:
        super().__init__(message)
        self.usage = usage
        self.final = final or usage


def session_body(request: LogsRequest, *, lines: int | None = None) -> dict[str, Any]:
    """The log-sessions request for ``request``: Heroku's fields and herolog's own filters."""
    wanted = request.wanted
    body: dict[str, Any] = {"tail": request.tail, "format": "json"}
    num = request.num if lines is None else lines
    if num is not None:
        body["lines"] = num
    if wanted.source is not None:
        body["source"] = wanted.source
    if wanted.dynos:
        body["dynos"] = list(wanted.dynos)
    if wanted.since is not None:
        body["since"] = wanted.since
    if wanted.until is not None:
        body["until"] = wanted.until
    if wanted.grep:
        body["grep"] = [p.pattern for p in wanted.grep]
    if wanted.exclude:
        body["exclude"] = [p.pattern for p in wanted.exclude]
    return body


def api_client(api_key: str | None, read_timeout: float = 30.0) -> httpx.Client:
    """An HTTP client that talks to a herolog serve's Platform API as the heroku CLI does."""
    import httpx

    headers = {
        "Accept": "application/vnd.heroku+json; version=3",
        "User-Agent": f"herolog/{__version__}",
    }
    if api_key:
        if not api_key.isascii() or not api_key.isprintable():
            raise RemoteError(
                "HEROLOG_API_KEY must be printable ASCII, as API keys are", final=True
            )
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.Client(headers=headers, timeout=httpx.Timeout(10.0, read=read_timeout))


def refused(base: str, response: httpx.Response, doing: str, app: str | None) -> RemoteError:
    """The one-line error for an API answer that is not a success."""
    error_id = None
    try:
        error = response.json()
        message, error_id = str(error["message"]), error.get("id")
    except (ValueError, KeyError, TypeError, AttributeError):
        message = response.text.strip()[:200] or response.reason_phrase
    status = response.status_code
    if status == 401:
        return RemoteError(f"{base} refused the API key (401): check HEROLOG_API_KEY", final=True)
    if status == 404 and error_id == "not_found" and app is not None:
        return RemoteError(f"{base} has no app named {app!r}")
    if status == 422:
        return RemoteError(message, usage=True)
    return RemoteError(f"{base} could not {doing} ({status}): {message}")


def unreachable(base: str, error: Exception) -> RemoteError:
    return RemoteError(f"cannot reach {base}: {_reason(error)}")


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base = server.rstrip("/")
        self.api_key = api_key
        self.request = request
        self.renderer = renderer
        self.on_reconnecting = on_reconnecting
        self.sleep = sleep
        self.last_id: str | None = None

    def run(self) -> None:
        import httpx

        with api_client(self.api_key, READ_TIMEOUT_S) as client:
            reason = "the server closed the stream"
            try:
                url = self._create_session(client, session_body(self.request))
                self._read(client, url)
            except httpx.InvalidURL as error:
                raise RemoteError(f"not a server URL: {self.base} ({error})") from None
            except httpx.TransportError as error:
                # A tail that has started carries on through a drop; anything else ends here.
                if not (self.request.tail and self.last_id is not None):
                    raise unreachable(self.base, error) from None
                reason = _reason(error)
            if self.request.tail:
                self._keep_tailing(client, url, reason)

    def _keep_tailing(self, client: httpx.Client, url: str, reason: str) -> None:
        """Reconnect after every end of the stream, resuming after the last line received."""
        import httpx

        delay = BACKOFF_START_S
        announce = True  # once per outage, not once per attempt
        while not self._until_passed():
            if announce:
                self.on_reconnecting(reason)
            self.sleep(delay)
            try:
                if not self._read(client, url):  # the session is gone: the server restarted
                    url = self._create_session(client, session_body(self.request, lines=0))
                    if not self._read(client, url):
                        raise RemoteError(f"{self.base} lost the new log session at once")
            except httpx.TransportError as error:
                reason, announce = _reason(error), False
                delay = min(delay * 2, BACKOFF_CAP_S)
                continue
            except RemoteError as error:
                if error.final:
                    raise
                reason, announce = str(error), False
                delay = min(delay * 2, BACKOFF_CAP_S)
                continue
            reason, announce, delay = "the server closed the stream", True, BACKOFF_START_S

    def _create_session(self, client: httpx.Client, body: dict[str, Any]) -> str:
        app = self.request.wanted.app
        path = f"/apps/{quote(app, safe='')}/log-sessions" if app is not None else "/log-sessions"
        response = client.post(self.base + path, json=body)
        if response.status_code != 201:
            raise self._refused(response, "create a log session")
        try:
            return str(response.json()["logplex_url"])
        except (ValueError, KeyError, TypeError):
            raise RemoteError(f"{self.base} is not a herolog server (no log session)") from None

    def _read(self, client: httpx.Client, url: str) -> bool:
        """Stream the session at ``url`` to the renderer; False if it no longer exists."""
        import httpx_sse

        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        with httpx_sse.connect_sse(client, "GET", url, headers=headers) as source:
            response = source.response
            if response.status_code == 404 and self.last_id is not None:
                return False
            if response.status_code != 200:
                response.read()
                raise self._refused(response, "read the log session")
            try:
                for lines in self._events(source.iter_sse()):
                    self.renderer.write(lines)
            except httpx_sse.SSEError as error:
                raise RemoteError(
                    f"{self.base} did not answer with a log stream: {error}"
                ) from None
        return True

    def _events(self, events: Iterator[Any]) -> Iterator[list[Any]]:
        for event in events:
            if event.id:
                self.last_id = event.id
            if event.event in ("", "message") and event.data:
                try:
                    yield [decode_record(data) for data in event.data.split("\n") if data]
                except (ValueError, TypeError):
                    raise RemoteError(f"{self.base} sent a line herolog cannot read") from None

    def _refused(self, response: httpx.Response, doing: str) -> RemoteError:
        return refused(self.base, response, doing, self.request.wanted.app)

    def _until_passed(self) -> bool:
        until = self.request.wanted.until
        return until is not None and timestamps.seconds_until(until) <= 0


def _reason(error: Exception) -> str:
    import httpx

    if isinstance(error, httpx.ConnectError):
        text = str(error)
        return "connection refused" if "refused" in text.lower() else text or "cannot connect"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return str(error) or type(error).__name__
