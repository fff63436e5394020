"""``herolog serve``: receive Heroku drains (HTTPS and syslog) into the store.

:class:`Server` puts the pieces in one event loop: the ASGI app under uvicorn, the syslog
listener, and the serve end of the writer process they both hand batches to
(:mod:`herolog.server.writer`). ``Server(config).run()`` is what
the command does; tests run the same object in a thread on port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import uvicorn

from herolog.faults import Fault
from herolog.interrupt import die_of_sigint, has_terminal, release_stops, unless_stopped
from herolog.remote import ssl_cert_file_problem
from herolog.render import counted
from herolog.server.api import CUT_OFF
from herolog.server.app import HerologApp, Stats
from herolog.server.config import (
    CertificateDates,
    ConfigError,
    ServeConfig,
    TLSFiles,
    is_loopback,
    resolve,
    syslog_tls_context,
    tls_context,
    url_host,
)
from herolog.server.protocol import RequestLimits, protocol_class
from herolog.server.syslog import BACKLOG, SyslogServer
from herolog.server.systemd import notify
from herolog.server.writer import Writer
from herolog.store import (
    LeaseUnseen,
    SQLiteStore,
    StoreError,
    file_identity,
    open_to_everyone,
)

__all__ = ["ConfigError", "ServeConfig", "Server"]

GRACEFUL_SHUTDOWN_S = 30
STORE_WATCH_S = 1.0
"""How often serve checks that its store's file is still at the store's path."""
OPEN_FILES_WATCH_S = 1.0
"""How often serve looks whether it has run out of open files."""
CERTIFICATE_WATCH_S = 3600.0
"""The longest between two looks at the certificate's dates (see _watch_certificate)."""
LEASE_WAIT_S = 60.0
"""The longest serve waits at start for an older serve's lease to run out (LeaseUnseen)."""
FORCED_EXIT_S = 2
MIN_OPEN_FILES = 32
"""The fewest open files serve starts with: about 15 are its own (the store, the writer's
pipes, the listeners, the event loop's), the rest for connections. With fewer it failed
half-way, on a traceback (its event loop could not be made) or a store it 'cannot use'."""


class _DropStartupFailure(logging.Filter):
    """uvicorn's own line for an application that could not start: Server.run says why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Application startup failed. Exiting."


class _DropCutOff(logging.Filter):
    """uvicorn's error for an answer left unfinished, where herolog cut it off on purpose
    (a log session's history that could not be read) and has said why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            CUT_OFF.get() and record.getMessage().startswith("ASGI callable returned without")
        )


class _QuietRepeats(logging.Filter):
    """uvicorn's warning for each bad request, which a scanner sends thousands of: the first
    of each kind, then at most one every ``every`` seconds, saying how many were held back;
    and not its advice to install a WebSocket library, which herolog has no use for."""

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._every = every
        self._clock = clock
        self._shown_until: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        if message.startswith("No supported WebSocket library detected."):
            return False
        now = self._clock()
        if now < self._shown_until.get(message, now):
            self._held[message] = self._held.get(message, 0) + 1
            return False
        if len(self._shown_until) > 100:  # messages that name something: forget them
            self._shown_until.clear()
        self._shown_until[message] = now + self._every
        if held := self._held.pop(message, 0):
            record.msg, record.args = f"{message} (and {held:,} more since the last one)", None
        return True


class _OpenFiles:
    """Says on serve's log that it has run out of open files, and that it has them again:
    new connections cannot be taken meanwhile, and neither event loop says so (uvloop's
    libuv accepts and closes them unsaid; asyncio's leaves them waiting and logs a traceback
    for every accept it tries, thousands a second, which this takes the place of). Looked at
    every OPEN_FILES_WATCH_S, with a file opened and closed (its own: closing a copy of
    another's descriptor, whose number a closed listener may have passed on to the store,
    would drop the process's locks on that file); said once a minute at most."""

    def __init__(self, log: TextIO, limit: int | None) -> None:
        self.log = log
        self.limit = limit
        self._short = Fault(60)

    def exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's exception handler: its accept loop out of files is this."""
        error = context.get("exception")
        message = str(context.get("message", ""))
        if message == "socket.accept() out of system resource" and isinstance(error, OSError):
            self.out(error)
        elif isinstance(error, ValueError) and message.startswith(
            "Exception in callback BaseSelectorEventLoop._start_serving("
        ):
            # An accept it put off for a second, tried on a listener closed since (serve
            # stopping): nothing to accept. One for every accept of the backlog that failed
            # (cpython#151615), thousands of tracebacks at a stop.
            pass
        else:
            loop.default_exception_handler(context)

    def look(self) -> None:
        try:
            os.close(os.open(os.devnull, os.O_RDONLY))
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE):
                self.out(error)
            return
        if self._short.ended():
            print(
                "herolog serve: open files to spare again: taking new connections",
                file=self.log,
                flush=True,
            )

    def out(self, error: OSError) -> None:
        if not self._short.began():
            return
        if error.errno == errno.ENFILE:
            which = "the system's are all open: raise fs.file-max"
        elif self.limit is not None:
            which = (
                f"all {self.limit:,} this process may have open: raise its limit, ulimit -n,"
                " or LimitNOFILE= in a systemd unit"
            )
        else:
            which = "ulimit -n"
        print(
            f"herolog serve: out of open files ({which}): new connections cannot be taken"
            " until others close",
            file=self.log,
            flush=True,
        )


class _Uvicorn(uvicorn.Server):
    """uvicorn, minus re-raising the signal after a graceful shutdown (serve exits 0), and
    ending log streams first: uvicorn waits for open responses, and a tail never ends.

    A second Ctrl-C makes uvicorn stop waiting for the requests under way and skip the
    application's shutdown. herolog's shutdown stops the writer after its last commit and
    hands the drains back, so it runs all the same, but the drains stop delivering (what
    they have not delivered is reported and left to the next server), and the requests under
    way are cut off at once (each ends as a client gone away, not cancelled half-way with a
    traceback when the loop closes). A third Ctrl-C exits there and then.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        end_streams: Callable[[], Awaitable[None]],
        handshake_timeout: float = 60.0,
    ):
        super().__init__(config)
        self._end_streams = end_streams
        self._handshake_timeout = handshake_timeout
        self.on_force_exit: list[Callable[[], None]] = []
        """Called in the event loop at the second Ctrl-C: stop waiting for anything else."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None

    async def main_loop(self) -> None:
        """uvicorn's, which looks at ``should_exit`` every 0.1 s, woken by :meth:`wake` too:
        a stop starts at once, not up to a tick later."""
        self._woken = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's, but the listeners' TLS handshakes time out after ``handshake_timeout``
        (uvicorn leaves asyncio's 60 s: a client that never finishes its handshake would
        hold a file for a minute, before the header timeout starts)."""
        await super().startup(sockets=[])  # the application's startup; no listener
        if self.should_exit or sockets is None:
            return
        config = self.config
        loop = asyncio.get_running_loop()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )
            return protocol

        for sock in sockets:
            self.servers.append(
                await loop.create_server(
                    create_protocol,
                    sock=sock,
                    ssl=config.ssl,
                    backlog=config.backlog,
                    ssl_handshake_timeout=self._handshake_timeout if config.ssl else None,
                )
            )

    def wake(self) -> None:
        """Have the main loop look at ``should_exit`` now (from any thread)."""
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: it has stopped
                loop.call_soon_threadsafe(woken.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        notify("STOPPING=1")
        await self._end_streams()
        # A client that does not read what it was sent would hold its connection open (a
        # transport closes only once its buffer is sent): cut those off.
        self._cut_off(unsent_only=True)
        await self._close_gracefully(sockets)
        if self.force_exit:
            self._cut_off()  # any that came before the listeners closed
            if not self.lifespan.shutdown_event.is_set():
                await self.lifespan.shutdown()
            if self.server_state.tasks:
                await asyncio.wait(self.server_state.tasks, timeout=FORCED_EXIT_S)

    async def _close_gracefully(self, sockets: list[socket.socket] | None) -> None:
        """uvicorn's own shutdown, but for its pauses: it slept 0.1 s after asking the
        connections to close, and looked every 0.1 s whether they and the requests under way
        had ended, so that a stop took 0.1 to 0.3 s with nothing to wait for."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while (state.connections or state.tasks) and not self.force_exit:
                    await asyncio.sleep(0.01)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            logging.getLogger("uvicorn.error").error(
                "Cancel %s running task(s), timeout graceful shutdown exceeded", len(state.tasks)
            )
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.force_exit and sig == signal.SIGINT:
            print(
                "herolog serve: stopped before its shutdown was done (what it answered is"
                " committed)",
                file=sys.stderr,
                flush=True,
            )
            die_of_sigint()  # by the signal, as every command ends on a Ctrl-C
        forced = self.force_exit
        super().handle_exit(sig, frame)
        self.wake()
        if self.force_exit and not forced and self._loop is not None:
            # Now, not once uvicorn's shutdown is done: without uvloop, that waits for every
            # connection to close.
            self._loop.call_soon_threadsafe(self._cut_off)
            for hurry in self.on_force_exit:
                self._loop.call_soon_threadsafe(hurry)

    def _hung_up(self, sig: int, frame: FrameType | None) -> None:
        """The terminal closed (or someone sent SIGHUP): stop. Where serve's output went to
        that terminal, every write now fails with EIO, its "stopping" line first, which cut
        the shutdown short: it goes to /dev/null, as nobody is left to read it."""
        for fd in (1, 2):  # stdout, stderr
            try:
                os.write(fd, b"")
            except OSError as error:
                if error.errno == errno.EIO:
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, fd)
                    os.close(devnull)
        self.handle_exit(sig, frame)

    def _no_reload(self, sig: int, frame: FrameType | None) -> None:
        def say() -> None:
            print(
                "herolog serve: SIGHUP, with no terminal to have hung up: nothing to reload,"
                " serve goes on (its options and certificate are read at start: restart it"
                " for new ones)",
                file=sys.stderr,
                flush=True,
            )

        if self._loop is not None:  # from the loop: the signal may have interrupted a print
            self._loop.call_soon_threadsafe(say)

    def _cut_off(self, *, unsent_only: bool = False) -> None:
        """Abort the open connections (only those with a reply not yet sent, if asked)."""
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None and (not unsent_only or transport.get_write_buffer_size()):
                transport.abort()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        # SIGCHLD ignored by a parent (so as not to reap its children) is kept so across exec:
        # the kernel would then reap the store writer as it exits, its status unread.
        if signal.getsignal(signal.SIGCHLD) is signal.SIG_IGN:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # SIGHUP too: a closed terminal (an ssh session ending) would otherwise kill serve
        # before it commits its drains' positions and hands back their lease. Unless it is
        # ignored already: under nohup, serve is to outlive the terminal. Without a
        # terminal (systemd), a SIGHUP is an operator asking for a reload, as of rsyslog.
        # SIGINT likewise: a shell script's `herolog serve &` starts it with Ctrl-C ignored,
        # so that the Ctrl-C that stops the script leaves it serving, as it does a C program.
        handlers: dict[int, Callable[[int, FrameType | None], None]] = {
            signal.SIGTERM: self.handle_exit
        }
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            handlers[signal.SIGINT] = self.handle_exit
        hangup = getattr(signal, "SIGHUP", None)
        if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
            handlers[hangup] = self._hung_up if has_terminal() else self._no_reload
        originals = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        release_stops(handlers)  # one that came while serve started stops it now
        try:
            yield
        finally:
            for sig, handler in originals.items():
                # Stopped (by a signal or stop()), the process is about to exit: a second
                # Ctrl-C coming once the shutdown is done must not make a clean stop a death
                # by SIGINT (it did for two Ctrl-Cs 20 ms apart).
                signal.signal(sig, signal.SIG_IGN if self.should_exit else handler)


class _Config(uvicorn.Config):
    """uvicorn's settings, serving HTTPS with herolog's TLS context, the syslog port's, not
    one uvicorn makes: before uvicorn 0.48, its own took the cipher string "TLSv1", which
    for TLS 1.2 is CBC ciphers with SHA-1 only (unencrypted and anonymous ones among them),
    none that a client of today offers."""

    tls: ssl.SSLContext | None = None

    def load(self) -> None:
        super().load()
        if self.tls is not None:
            self.ssl = self.tls


class Server:
    """One ``herolog serve``: HTTP intake and syslog listener in this process, and the
    store writer process it starts."""

    def __init__(self, config: ServeConfig, *, log: TextIO | None = None) -> None:
        config.check()
        self.config = config
        self.log = log if log is not None else sys.stderr
        self.stats = Stats()
        self.writer = Writer(config.store_path, config.history, config.max_body)
        self.app = HerologApp(config, self.writer, self.stats)
        self.app.forwarder.log = self.log
        self.syslog: SyslogServer | None = None
        self.http_port: int | None = None
        self.syslog_port: int | None = None
        self.started = threading.Event()
        self._sockets: list[socket.socket] = []
        self._syslog_sockets: list[socket.socket] = []
        self._tls: ssl.SSLContext | None = None
        self._syslog_tls: ssl.SSLContext | None = None
        self._certificate: CertificateDates | None = None
        self._certificate_state = "valid"
        """What serve last said of its certificate's dates (CertificateDates.state): the
        banner's, as the watch starts just before it, then the watch's."""
        self._certificate_watch: asyncio.TimerHandle | None = None
        self._trust_warning: str | None = None
        self._store_warning: str | None = None
        limits = RequestLimits(
            config.header_timeout,
            config.body_timeout,
            config.max_body,
            stats=self.stats,
            log=self.log,
        )
        self.http_protocol = protocol_class(limits, self.app)
        """The HTTP protocol, which answers the app's drain POSTs itself."""
        self._uvicorn_config = uvicorn_config = _Config(
            self.app,
            http=self.http_protocol,
            lifespan="on",
            log_level="warning",
            access_log=False,  # URLs may carry secrets (dd-api-key=...); never log them
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        # The header timeout bounds the TLS handshake too, as on the syslog+tls port.
        self._uvicorn = _Uvicorn(uvicorn_config, self._stopping, config.header_timeout)
        self._stopping_said = False
        self._uvicorn.on_force_exit.append(self.app.forwarder.hurry)
        if config.syslog_port is not None:
            self.syslog = SyslogServer(
                config.syslog_app,
                self.writer,
                self.stats,
                lambda: self.app.forwarder.tokens,
                self.app.forwarder.loops_back,
                max_connections=config.syslog_max_connections,
                log=self.log,
            )
            self.app.on_startup(self._start_syslog)
            self.app.on_shutdown(self.syslog.stop)
            self._uvicorn.on_force_exit.append(self.syslog.hang_up)
        self.app.on_startup(self._watch_store_file)
        self.app.on_shutdown(self._stop_watching_store_file)
        self._open_files = _OpenFiles(self.log, None)
        self._open_files_watch: asyncio.TimerHandle | None = None
        self.app.on_startup(self._watch_open_files)
        self.app.on_shutdown(self._stop_watching_open_files)
        self.app.on_startup(self._watch_certificate)
        self.app.on_shutdown(self._stop_watching_certificate)
        self.app.on_startup(self._announce)
        self.failure: str | None = None
        """Why serve stopped of its own accord (run raises StoreError with it)."""
        self._store_watch: asyncio.TimerHandle | None = None

    def bind(self) -> None:
        """Open the listening sockets now, so a busy port is a clear error before anything
        runs (ConfigError), as is an unusable store (StoreError)."""
        files = raise_open_file_limit()
        if files is not None and files < MIN_OPEN_FILES:
            raise ConfigError(
                f"serve may have only {files} files open (ulimit -Hn), and needs at least"
                f" {MIN_OPEN_FILES}, about 15 of them its own: raise the limit (ulimit -n, or"
                " LimitNOFILE= in a systemd unit)"
            )
        self._open_files.limit = files
        if self.syslog is not None and files is not None:
            # Half the files at most, so that a flood of syslog connections leaves the
            # HTTP intake, the store and the drains theirs.
            self.syslog.max_connections = max(1, min(self.syslog.max_connections, files // 2))
        if self.config.certfile and self.config.keyfile:
            # Here, not once uvicorn runs: a bad pair is a ConfigError, not a traceback.
            tls_files = TLSFiles.read(self.config.certfile, self.config.keyfile)
            self._tls = tls_context(tls_files)
            self._uvicorn_config.tls = self._tls
            if self.syslog is not None:
                self._syslog_tls = syslog_tls_context(tls_files)
            self._certificate = CertificateDates.of(tls_files)
        self._trust_warning = ssl_cert_file_problem()
        try:
            store = SQLiteStore.open(self.config.store_path)
        except LeaseUnseen as unseen:
            # A serve restarted after its older self was killed (the OOM killer, kill -9)
            # with a newer herolog installed: refused until the lease ran out, systemd's
            # restarts in the meantime would hit its start limit. One in another container
            # renews its lease meanwhile, and is refused then.
            self._await_lease(unseen)
            store = SQLiteStore.open(self.config.store_path)
        self._store_warning = open_to_everyone(self.config.store_path)
        try:
            # What the store writer reads first: a store broken inside fails here, in one
            # line (sqlite3.DatabaseError for the command to report), not in the writer.
            store.history  # noqa: B018
            store.check_writable()
        finally:
            store.close()
        self._sockets = listen(self.config.host, self.config.port)
        self.http_port = int(self._sockets[0].getsockname()[1])
        if self.config.syslog_port is not None:
            try:
                self._syslog_sockets = listen(
                    self.config.host, self.config.syslog_port, "--syslog-port"
                )
            except ConfigError:
                for sock in self._sockets:
                    sock.close()
                raise
            self.syslog_port = int(self._syslog_sockets[0].getsockname()[1])

    def _await_lease(self, unseen: LeaseUnseen) -> None:
        """Wait for the lease of the older serve that ``unseen`` tells of to run out (up to
        LEASE_WAIT_S), saying so; a stop that comes meanwhile ends it (StopCame)."""
        until = datetime.fromisoformat(unseen.until.replace("Z", "+00:00"))
        wait = min(LEASE_WAIT_S, max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
        print(
            f"herolog serve: an older herolog serve (pid {unseen.pid or '?'}) that this process"
            f" cannot see holds the store's lease until {until:%H:%M:%S} UTC: waiting"
            f" {wait:.0f} s for it to run out before upgrading the store (if that serve runs in"
            " another container, restart it with this herolog instead)",
            file=self.log,
            flush=True,
        )
        unless_stopped(lambda: time.sleep(wait))

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM/SIGHUP or :meth:`stop`; then finish requests and commit."""
        if not self._sockets:
            self.bind()
        filters = (_DropStartupFailure(), _DropCutOff(), _QuietRepeats())
        for log_filter in filters:
            logging.getLogger("uvicorn.error").addFilter(log_filter)
        try:
            self._uvicorn.run(sockets=self._sockets)
        except SystemExit:
            # uvicorn exits (status 3) when the application cannot start: say why, once.
            if self.app.startup_error is None:
                raise
            error = self.app.startup_error
            path = str(self.config.store_path)
            message = error if path in error else f"cannot use the store {path}: {error}"
            raise StoreError(message) from None
        finally:
            for log_filter in filters:
                logging.getLogger("uvicorn.error").removeFilter(log_filter)
            for sock in self._sockets + self._syslog_sockets:
                sock.close()
        if self.failure is not None:
            raise StoreError(self.failure)

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._uvicorn.wake()

    async def _stopping(self) -> None:
        """The first step of the shutdown: say so, since it can take a while, then end the
        log sessions' streams."""
        if not self._stopping_said:
            # Not when SIGINT is ignored (a script's `herolog serve &`): no Ctrl-C reaches it.
            ctrl_c = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
            again = " (Ctrl-C again to stop at once)" if ctrl_c and has_terminal() else ""
            print(
                "herolog serve: stopping: answering the requests under way (up to"
                f" {GRACEFUL_SHUTDOWN_S} s) and handing the drains what they hold (up to"
                f" {self.config.drain_timing.flush_s:g} s){again}",
                file=self.log,
                flush=True,
            )
        await self.app.sessions.close()

    async def _watch_store_file(self) -> None:
        """Stop if the store's file is moved or deleted under serve (`mv` of a store a
        command called corrupt, say): the writer would go on committing to a file that no
        reader, and no next serve, would find, answering 204 all the same."""
        path = self.config.store_path
        identity = file_identity(path)  # the writer has it open by now
        loop = asyncio.get_running_loop()

        def look() -> None:
            if file_identity(path) == identity:
                self._store_watch = loop.call_later(STORE_WATCH_S, look)
                return
            self._store_watch = None
            self.failure = (
                f"the store {path} was moved or deleted while serve ran: serve stopped rather"
                " than store lines where nothing reads them (what it stored before is in the"
                " file moved; start serve again for a new store)"
            )
            print(f"herolog serve: stopping: the store {path} is gone", file=self.log, flush=True)
            self._stopping_said = True
            self.stop()

        self._store_watch = loop.call_later(STORE_WATCH_S, look)

    async def _stop_watching_store_file(self) -> None:
        if self._store_watch is not None:
            self._store_watch.cancel()

    async def _watch_open_files(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(self._open_files.exception)

        def look() -> None:
            self._open_files.look()
            self._open_files_watch = loop.call_later(OPEN_FILES_WATCH_S, look)

        self._open_files_watch = loop.call_later(OPEN_FILES_WATCH_S, look)

    async def _stop_watching_open_files(self) -> None:
        if self._open_files_watch is not None:
            self._open_files_watch.cancel()

    async def _watch_certificate(self) -> None:
        """Say when the certificate comes within EXPIRY_NOTICE_S of its expiry, and when it
        expires, while serve runs: it reads the certificate only as it starts, so a renewal
        that did not restart it would go on serving the old one, and every drain that checks
        it (Heroku's) would stop, with nothing said on this side."""
        certificate = self._certificate
        if certificate is None:
            return
        loop = asyncio.get_running_loop()
        self._certificate_state = certificate.state(datetime.now(UTC))  # what the banner says

        def look() -> None:
            now = datetime.now(UTC)
            state = certificate.state(now)
            if state != self._certificate_state:
                self._certificate_state = state
                warning = certificate.warning(now)
                if warning is not None:
                    print(f"herolog serve: {warning}", file=self.log, flush=True)
            later(certificate.next_change(now))

        def later(wait: float | None) -> None:
            # Looked at within the hour whatever the wait: the wall clock may be set, or the
            # machine suspended, meanwhile.
            if wait is not None:
                self._certificate_watch = loop.call_later(min(wait, CERTIFICATE_WATCH_S), look)

        later(certificate.next_change())

    async def _stop_watching_certificate(self) -> None:
        if self._certificate_watch is not None:
            self._certificate_watch.cancel()

    async def _start_syslog(self) -> None:
        assert self.syslog is not None
        # The header timeout also bounds the handshake: a silent client holds no connection.
        await self.syslog.start(self._syslog_sockets, self._syslog_tls, self.config.header_timeout)

    async def _announce(self) -> None:
        lines = self.banner()
        for line in lines:
            print(f"herolog serve: {line}", file=self.log, flush=True)
        # Last of the startup steps: the writer is up and every listener open.
        notify(f"READY=1\nSTATUS={lines[0]}")
        self.started.set()

    def banner(self) -> list[str]:
        """Where it listens, where the store is, the drain URL for ``heroku drains:add``.

        Passwords never appear: the drain URL shows a placeholder.
        """
        config = self.config
        scheme = "https" if config.tls else "http"
        shown_host = url_host(config.host)
        lines = [
            f"{scheme.upper()} drain intake on {scheme}://{shown_host}:{self.http_port}/apps/APP/logs"
        ]
        if self._certificate is not None and (warning := self._certificate.warning()):
            lines.append(warning)
        if self._trust_warning is not None:
            lines.append(
                f"{self._trust_warning}: https:// and syslog+tls:// drains are checked without it"
            )
        public = "YOUR-HOST" if not is_loopback(config.host) else shown_host
        # Percent-encoded, as a URL must carry them (and as Logplex and httpx decode them).
        userinfo = f"{quote(config.auth.user, safe='')}:PASSWORD@" if config.auth else ""
        intake = f"{scheme}://{userinfo}{public}:{self.http_port}"
        if config.public_url is not None:  # a proxy in front: the address Heroku is given
            parts = urlsplit(config.public_url)
            host = parts.hostname or "YOUR-HOST"  # check() made sure there is one
            public = url_host(host)
            where = url_host(host, parts.port)
            intake = f"{parts.scheme}://{userinfo}{where}{parts.path.rstrip('/')}"
        if self.syslog_port is not None:
            kind = "syslog+tls" if config.tls else "syslog"
            where = f"{shown_host}:{self.syslog_port}"
            # logger -n HOST sends UDP unless told --tcp, and a datagram nobody takes is lost
            # unsaid: the sender exits 0 and the line is nowhere.
            transport = "" if config.tls else ", TCP only"
            lines.append(
                f"{kind} drain intake on {where}{transport}"
                f" (lines go to app {config.syslog_app!r}):"
                f" heroku drains:add {kind}://{public}:{self.syslog_port} -a APP"
            )
            allowed = self.syslog.max_connections if self.syslog else 0
            if allowed < config.syslog_max_connections:
                lines.append(
                    f"at most {allowed:,} syslog connections at once, half the open-file limit"
                    " (raise its hard limit: ulimit -Hn, or LimitNOFILE= in a systemd unit)"
                )
        history = self.writer.history
        assert history is not None  # the writer has started, and said what it is
        lines.append(f"store {config.store_path}, keeping {counted(history, 'line')} per app")
        if self._store_warning is not None:
            lines.append(self._store_warning)
        api = f"{scheme}://{shown_host}:{self.http_port}"
        # One address, not 127.0.0.1: the CLI takes no HEROKU_HOST naming it.
        tunnel = (
            f"only through a tunnel (ssh -N -L 8514:{shown_host}:{self.http_port} HOST,"
            f" then HEROKU_HOST={scheme}://127.0.0.1:8514)"
        )
        if config.api_key is not None and heroku_cli_takes(api):
            lines.append(
                f"Platform API on {api}: HEROKU_HOST={api} HEROKU_API_KEY=... heroku logs -a APP"
            )
        elif config.api_key is not None:
            local = f"{scheme}://127.0.0.1:{self.http_port}"
            if config.host in ("0.0.0.0", "::"):  # 127.0.0.1 among the addresses
                cli = f"only as HEROKU_HOST={local}, on this machine or through ssh -L"
            else:
                cli = tunnel
            lines.append(
                f"Platform API on {api}: HEROLOG_API_KEY=... herolog logs --server URL -a APP;"
                f" the heroku CLI {cli} (with any other HEROKU_HOST it sends HEROKU_API_KEY to"
                " api.heroku.com)"
            )
        elif is_loopback(config.host):
            line = f"Platform API on {api} (no --api-key: open to this machine only)"
            if heroku_cli_takes(api):
                line += f": HEROKU_HOST={api} heroku logs -a APP"
            else:
                line += f": the heroku CLI {tunnel}"
            lines.append(line)
        else:
            lines.append("Platform API off: give --api-key to read logs from other machines")
        add = f"add a drain with: heroku drains:add '{intake}/apps/APP/logs' -a APP"
        if config.auth and quote(config.auth.password, safe="") != config.auth.password:
            add += " (with PASSWORD percent-encoded: @ as %40, : as %3A, / as %2F, ...)"
        lines.append(add)
        if is_loopback(config.host) and config.public_url is None:
            lines.append(
                "only this machine can reach it; Heroku can once it listens on a public"
                " address (--host 0.0.0.0 --auth USER:PASSWORD, with TLS)"
            )
        return lines


def heroku_cli_takes(url: str) -> bool:
    """Whether the heroku CLI uses ``url`` as its HEROKU_HOST: only an address naming
    localhost or 127.0.0.1 (or Heroku's own); for any other it warns and talks to
    api.heroku.com instead, sending it HEROKU_API_KEY (@heroku-cli/command, vars.js)."""
    host = url.split("://", 1)[-1]
    return "localhost" in host or "127.0.0.1" in host


def raise_open_file_limit() -> int | None:
    """Lift the soft limit on open files to the hard one, as servers do: a file a connection.
    Returns the limit now in force (None: no limit)."""
    try:
        import resource
    except ImportError:  # Windows has no such limit
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # Some systems refuse an unlimited soft limit (macOS): keep what there is.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def listen(host: str, port: int, option: str = "--port") -> list[socket.socket]:
    """Listening TCP sockets for ``host:port``, one for each address ``host`` resolves to,
    as nginx and rsyslog listen (Debian's localhost is ::1, then 127.0.0.1: a client may
    connect to either), on one port (0 picks a free one); ConfigError if not, about
    ``--host`` and ``option``, the port's. An address this machine does not have (::1 in a
    container without IPv6) is passed over if another is not."""
    about = ("--host", option)
    addresses = resolve(host, port, about)
    several = len(addresses) > 1
    retries = 4 if port == 0 and several else 0
    while True:
        sockets: list[socket.socket] = []
        chosen: int = port
        unavailable: tuple[OSError, str] | None = None
        for family, address in addresses:
            try:
                sockets.append(_listening(family, (address[0], chosen, *address[2:]), several))
            except OSError as error:
                if several and error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    unavailable = unavailable or (error, str(address[0]))
                    continue
                for sock in sockets:
                    sock.close()  # an embedder (run_in_thread) goes on: not left to the collector
                # The free port the first address got may be taken at another: pick again.
                if error.errno == errno.EADDRINUSE and chosen != port and retries > 0:
                    retries -= 1
                    break
                raise _cannot(host, str(address[0]), chosen, error, about, several) from None
            chosen = int(sockets[-1].getsockname()[1])
        else:
            if sockets:
                return sockets
            assert unavailable is not None
            raise _cannot(host, unavailable[1], chosen, unavailable[0], about, several) from None


def _listening(family: int, address: tuple[Any, ...], v6only: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only and family == socket.AF_INET6:  # :: beside 0.0.0.0: each its own family
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _cannot(
    host: str, address: str, port: int, error: OSError, about: tuple[str, ...], several: bool
) -> ConfigError:
    """The error of an address ``host`` resolved to: named, when it has several."""
    where = f"{url_host(address, port)} ({host})" if several else url_host(host, port)
    return ConfigError(f"cannot listen on {where}: {_why(error, port)}", about)


def _why(error: OSError, port: int) -> str:
    why = error.strerror or str(error)
    if error.errno == errno.EACCES and 0 < port < 1024:
        why += (
            " (a port below 1024 needs root or CAP_NET_BIND_SERVICE: in a systemd unit,"
            " AmbientCapabilities=CAP_NET_BIND_SERVICE; or listen above 1023 behind a proxy)"
        )
    return why


def run_in_thread(server: Server, timeout: float = 30.0) -> Callable[[], None]:
    """Start ``server`` in a background thread; returns a function that stops it.

    For tests and embedding: the real uvicorn server, without signal handling.
    """
    server.bind()
    thread = threading.Thread(target=server.run, name="herolog-serve", daemon=True)
    thread.start()
    if not server.started.wait(timeout):
        raise RuntimeError("herolog serve did not start")

    def stop() -> None:
        server.stop()
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"herolog serve did not stop within {timeout} s")

    return stop
