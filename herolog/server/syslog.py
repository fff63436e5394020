"""The syslog side of ``herolog serve``: RFC 6587 over TCP or TLS, into the store.

Each connection may use octet counting (what Heroku's syslog drains send) or newline
framing, message by message. A connection that sends something that is neither is closed
once what parsed cleanly before it is stored; other connections do not notice.

Streams are parsed here, as they are read, and the writer process only stores their lines:
one fast connection is limited by the writer's core, so its work is split between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import socket
import ssl
import sys
from collections import deque
from collections.abc import Callable
from operator import attrgetter
from typing import TextIO

from herolog.parser import FrameDecoder, FramingError, LogLine, Received
from herolog.server.app import Stats
from herolog.server.config import DEFAULT_SYSLOG_MAX_CONNECTIONS
from herolog.server.throttle import Throttled
from herolog.server.writer import Stored, Writer

_hostname = attrgetter("hostname")
READ_SIZE = 1 << 16
BACKLOG = 2048
"""Connections the kernel queues before they are accepted (uvicorn's default, for HTTP)."""
MAX_FRAME = (64 << 10) + (1 << 10)
"""The longest syslog message stored: a longer one is cut to its first MAX_FRAME bytes, the
rest of it skipped, and the connection goes on (rsyslog's oversizeMode="truncate"; closing
it lost what the sender logged next while it reconnected). Logplex splits lines at about
10 KB and rsyslog's default is 8 KiB; syslog-ng reads messages of up to 64 KiB, header and
all (its log-msg-size()), and forwards them with a header of its own, which may be longer (a
local program's 65,536-byte datagram left its syslog() destination as a 65,574-byte frame):
64 KiB and 1 KiB for that header. This bounds what an idle connection may hold in memory
half-received."""
MAX_LINES_IN_FLIGHT = 20_000
"""Lines of every syslog connection together waiting for the writer, at most (give or take
one read's worth): drain POSTs share the writer, and must not wait behind a flood of tiny
messages on the syslog port for longer than Logplex waits for an answer."""
QUIET_AT_STOP_S = 0.1
"""Stopping, serve reads each connection until it has been quiet this long (what the client
sent before the stop is in the kernel's buffers), then closes it..."""
STOP_READING_S = 5.0
"""...or after this long, for a client that does not pause."""
MAX_IN_FLIGHT = 8
"""Batches a connection may have waiting for the writer before it stops reading: enough
to keep the writer busy, few enough that a fast sender cannot fill memory."""
KEEPALIVE_IDLE_S = 60
"""A syslog connection quiet this long is probed with TCP keep-alives: a sender whose host
died, whose network went silent or whose NAT forgot the connection sends no reset, and serve,
which only reads, would hold its connection (a file, its half-read message, a place among
--syslog-max-connections) for ever..."""
KEEPALIVE_INTERVAL_S = 15
KEEPALIVE_PROBES = 4
"""...and closed once this many probes, this far apart, got no answer: about 2 minutes after
the sender went. A live sender's system answers them however long its program is quiet."""
ACCEPT_RETRY_S = 1.0
"""Out of file descriptors (or memory), the TLS listener tries accepting again after this
long, as asyncio's own listener does; the connection waits in the kernel's queue."""
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST"}
"""OpenSSL's reasons for a handshake whose first bytes are not TLS (plain syslog, HTTP)."""
TLS_HANDSHAKE = b"\x16"
"""The first byte of a TLS client's stream (a handshake record), which no syslog stream
starts with."""


class SyslogServer:
    def __init__(
        self,
        app: str,
        writer: Writer,
        stats: Stats,
        own_drains: Callable[[], frozenset[str]] = frozenset,
        loops_back: Callable[[str], object] = lambda token: None,
        *,
        max_connections: int = DEFAULT_SYSLOG_MAX_CONNECTIONS,
        log: TextIO | None = None,
    ) -> None:
        self.app = app
        self.writer = writer
        self.stats = stats
        self.max_connections = max_connections
        """Connections open at once, at most: each holds a file descriptor, and the HTTP
        intake needs some too (rsyslog and syslog-ng have such a limit as well)."""
        self.log = log if log is not None else sys.stderr
        self._refusals = Throttled(self.log, self._say_refused)
        self._closures = Throttled(self.log, _say_closed)
        self._cuts = Throttled(self.log, _say_cut)
        self.own_drains = own_drains
        """The tokens of the store's drains, which herolog's syslog drains send as their
        HOSTNAME: lines carrying one were forwarded from this same store."""
        self.loops_back = loops_back
        """Told the token of each such line's drain."""
        self._servers: list[asyncio.Server] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        """The TLS connections still in their handshake, which hang_up() cancels."""
        self._streams: dict[int, asyncio.BaseTransport] = {}
        self._ids = itertools.count(1)
        self._lines_in_flight = 0
        self._waiting_for_room: deque[asyncio.Future[None]] = deque()
        """Connections holding a read until there is room, let in one by one, in turn."""
        self._stop_reading: set[asyncio.Future[None]] = set()
        """One for each connection (a shared one would cost each wait for it a scan of every
        connection's callback), done once stop() is called: then it reads until quiet."""
        self._stopping = False
        self._hanging_up = False
        self._tls: ssl.SSLContext | None = None
        self._handshake_timeout = 60.0

    async def start(
        self,
        sockets: list[socket.socket],
        context: ssl.SSLContext | None,
        handshake_timeout: float = 60.0,
    ) -> None:
        """Serve connections on listening sockets (bound by serve before it starts, one for
        each address of --host); a TLS handshake not done within ``handshake_timeout``
        seconds closes the connection."""
        self._tls, self._handshake_timeout = context, handshake_timeout
        for sock in sockets:
            await self._start(sock)

    async def _start(self, sock: socket.socket) -> None:
        if self._tls is None:
            # start_server listens again, with asyncio's backlog of 100 unless told otherwise.
            self._servers.append(
                await asyncio.start_server(
                    self._connection, sock=sock, limit=READ_SIZE, backlog=BACKLOG
                )
            )
        else:
            # A TLS connection counts from when it is accepted (one in its handshake holds a
            # file descriptor too), so the server cannot do the handshakes (ssl=). Nor can
            # StreamWriter.start_tls once the connection is counted: a plain stream reads
            # from the socket as soon as it is accepted, before the handler runs, and a
            # ClientHello it reads is lost to the handshake, which waits for it until the
            # timeout (asyncio and uvloop alike: cpython#142352, uvloop#707). So serve
            # accepts them itself, and the handshake is the first to read each socket.
            self._accepting.append(asyncio.ensure_future(self._accept(sock)))

    async def stop(self) -> None:
        """Stop accepting; read each connection until it is quiet (what was sent before the
        stop), and close it once what it sent is stored."""
        for server in self._servers:
            server.close()
        for accepting in self._accepting:
            accepting.cancel()  # and the listener is closed, as Server.close() does
        if self._accepting:
            await asyncio.wait(self._accepting)
        self._stopping = True
        for stop in self._stop_reading:
            if not stop.done():
                stop.set_result(None)
        if self._handshakes and not self._hanging_up:
            # A client still in its handshake has sent nothing to store yet: one whose next
            # flight was sent before the stop finishes it now, and reads until quiet; one
            # quiet as long (a health check) would hold the stop until STOP_READING_S.
            await asyncio.wait(self._handshakes, timeout=QUIET_AT_STOP_S)
            for handshake in list(self._handshakes):
                handshake.cancel()
        if self._connections and not self._hanging_up:
            await asyncio.wait(self._connections, timeout=STOP_READING_S)
        self.hang_up()
        if self._connections:
            await asyncio.wait(self._connections, timeout=10)
        # Those held back for the rest of their interval: a serve started again within it
        # would never say them.
        self._refusals.flush()
        self._closures.flush()
        self._cuts.flush()

    def hang_up(self) -> None:
        """Close every connection now, without reading what is left (a second Ctrl-C)."""
        self._hanging_up = True  # the ends of stream that follow are ours, not the clients'
        for handshake in list(self._handshakes):
            handshake.cancel()
        for transport in list(self._streams.values()):
            transport.close()  # its reader sees the end of the stream and the handler finishes

    async def _connection(self, reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        """A plain connection, from start_server."""
        if len(self._connections) >= self.max_connections:
            out.transport.abort()  # at once: close() holds the descriptor until sent
            self._refused(out.get_extra_info("peername"))
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        keep_alive(out.get_extra_info("socket"))
        try:
            await self._read(reader, out.transport)
        finally:
            self._connections.discard(task)

    async def _accept(self, sock: socket.socket) -> None:
        """Accept TLS connections until cancelled; then close the listener."""
        loop = asyncio.get_running_loop()
        short = False  # of file descriptors or memory: said once, until it is over
        try:
            while True:
                try:
                    conn, peer = await loop.sock_accept(sock)
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue  # gone before it was accepted
                except OSError as error:
                    if error.errno not in _OUT_OF_RESOURCES:
                        print(
                            f"herolog serve: stopped accepting syslog connections: {error}",
                            file=self.log,
                            flush=True,
                        )
                        return
                    if not short:
                        print(
                            f"herolog serve: cannot accept syslog connections for now: {error}",
                            file=self.log,
                            flush=True,
                        )
                    short = True
                    await asyncio.sleep(ACCEPT_RETRY_S)
                    continue
                short = False
                if len(self._connections) >= self.max_connections:
                    conn.close()  # before its handshake, which would cost more than this
                    self._refused(peer)
                    continue
                keep_alive(conn)
                connection = asyncio.ensure_future(self._tls_connection(conn, peer))
                self._connections.add(connection)
                connection.add_done_callback(self._connections.discard)
        finally:
            sock.close()

    async def _tls_connection(self, conn: socket.socket, peer: tuple[str, int] | None) -> None:
        """An accepted TLS connection (counted): the handshake, then its stream."""
        if self._hanging_up:
            conn.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handshakes.add(task)  # hang_up() cancels it, and the transport is closed
        reader = asyncio.StreamReader(limit=READ_SIZE)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except ssl.SSLError as error:  # what the client sent: said, as garbage is
            self.stats.syslog_connections_broken += 1
            self._closures.add(from_peer(peer), _handshake_failed(error))
            return
        except OSError:  # a late handshake, or a client gone before it: closed
            return
        finally:
            self._handshakes.discard(task)
        await self._read(reader, transport)

    async def _read(self, reader: asyncio.StreamReader, transport: asyncio.BaseTransport) -> None:
        """Read a counted connection's stream and store its lines, until it ends."""
        why: str | None = None  # what the client sent that closed the connection
        stream_id = next(self._ids)
        self._streams[stream_id] = transport  # hang_up() closes it
        self.stats.syslog_connections += 1
        # Cut, not refused: a message over the limit costs its own tail, not the connection.
        decoder = FrameDecoder(MAX_FRAME, newline_framing=True, cut_long=True)
        peer = from_peer(transport.get_extra_info("peername"))
        pending: set[asyncio.Future[Stored]] = set()
        read: asyncio.Future[bytes] | None = None
        held: bytes | None = None  # read, and waiting for room among the lines in flight
        room: asyncio.Future[None] | None = None
        stop = asyncio.get_running_loop().create_future()
        if self._stopping:
            stop.set_result(None)
        self._stop_reading.add(stop)
        try:
            while True:
                if held is None and read is None and len(pending) < MAX_IN_FLIGHT:
                    read = asyncio.ensure_future(reader.read(READ_SIZE))
                waiting = pending | {f for f in (read, room) if f is not None}
                stopping = stop.done()
                if not stopping:
                    waiting.add(stop)
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=QUIET_AT_STOP_S if stopping else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stop in done:
                    continue  # from now on, quiet for QUIET_AT_STOP_S ends the connection
                if not done and read is not None:
                    break  # stopping, and nothing more has come: what it sent is read
                written = {write for write in pending if write in done}
                pending -= written
                closing = [x for x in map(self._count, written) if x is not None]
                if closing:
                    why = next(filter(None, closing), None)
                    break  # garbage: what came before it is stored; hang up
                if read is not None and read in done:
                    held, read = read.result(), None
                    if not held and self._hanging_up:
                        break  # a last message without its newline may be cut off: not kept
                let_in = room is not None and room in done
                if let_in:
                    room = None
                elif held is not None and room is None:
                    if self._lines_in_flight < MAX_LINES_IN_FLIGHT and not self._waiting_for_room:
                        let_in = True
                    else:  # in turn behind the others, once lines in flight are stored
                        room = asyncio.get_running_loop().create_future()
                        self._waiting_for_room.append(room)
                if let_in and held is not None:
                    # The writer stores the chunks of a connection in the order they are sent.
                    data, held = held, None
                    pending.add(self._send(decoder, data, peer))
                    self._let_in()  # the next in turn, if there is still room
                    if not data:
                        break
        except OSError:  # a reset, a TLS error, or what serve sent on it timing out: its end
            pass
        finally:
            self._stop_reading.discard(stop)
            if read is not None:
                read.cancel()
            if room is not None:
                if room.done():  # let in, and gone: the next one's turn
                    self._let_in()
                room.cancel()
            # A newline-framed message without its newline is complete only at the client's
            # clean end of the stream (sent above as b""); a reset may have cut it off.
            if pending:
                flushed, _ = await asyncio.wait(pending)
                for finished in flushed:
                    closing_why = self._count(finished)
                    why = why or closing_why
            transport.close()
            self._streams.pop(stream_id, None)
            if why:  # once a connection: the chunks after a break repeat it
                self.stats.syslog_connections_broken += 1
                self._closures.add(peer, why)

    def _refused(self, peer: tuple[str, int] | None) -> None:
        """Say that a connection over the limit was closed before reading from it (or its
        handshake): counted, at most once a minute (Throttled)."""
        self.stats.syslog_connections_refused += 1
        self._refusals.add(from_peer(peer), "")

    def _say_refused(self, count: int, peer: str, _: str) -> str:
        what = "a syslog connection" if count == 1 else f"{count:,} syslog connections"
        last = f" (the last {peer})" if peer else ""
        are = "is" if self.max_connections == 1 else "are"
        return (
            f"herolog serve: refused {what}{last}: {self.max_connections:,} {are} open"
            " (--syslog-max-connections)"
        )

    def _send(self, decoder: FrameDecoder, data: bytes, peer: str) -> asyncio.Future[Stored]:
        """Parse the next bytes of a stream (b"" at its end) and store what they complete."""
        received = Received.at()
        broken = None
        try:
            lines = decoder.feed(data, received) if data else decoder.close(received)
        except FramingError as error:
            lines, broken = [], str(error)
        for size in decoder.take_cuts():
            self.stats.syslog_messages_cut += 1
            self._cuts.add(peer, f"{size:,}")
        if decoder.error is not None:  # the lines before it are stored; the rest is refused
            broken = str(decoder.error)
        if broken is not None and decoder.consumed == 0 and data[:1] == TLS_HANDSHAKE:
            broken = (
                "a TLS handshake, but this port takes plain syslog"
                " (serve syslog over TLS with --certfile and --keyfile)"
            )
        tokens = self.own_drains()
        if tokens and not tokens.isdisjoint(map(_hostname, lines)):
            # Stored, it would be forwarded again, for ever: the connection is closed.
            index = next(i for i, line in enumerate(lines) if line.hostname in tokens)
            broken = f"a line from this store's own drain {lines[index].hostname}"
            self.loops_back(lines[index].hostname or "")
            del lines[index:]
        self._lines_in_flight += len(lines)
        return asyncio.ensure_future(self._store(lines, broken))

    def _let_in(self) -> None:
        """Let the next connection waiting for room send what it holds, if there is room."""
        while self._waiting_for_room and self._lines_in_flight < MAX_LINES_IN_FLIGHT:
            turn = self._waiting_for_room.popleft()
            if not turn.done():  # not a connection that has gone
                turn.set_result(None)
                return

    async def _store(self, lines: list[LogLine], broken: str | None) -> Stored:
        try:
            stored = await self.writer.write_lines(self.app, lines) if lines else Stored(0, 0)
        finally:
            self._lines_in_flight -= len(lines)
            self._let_in()
        return Stored(stored.lines, len(lines), broken)

    def _count(self, write: asyncio.Future[Stored]) -> str | None:
        """Count what a chunk stored; None if the stream goes on, else why it must be
        closed: what the client sent, or "" when storing failed (said where that is)."""
        if write.cancelled() or write.exception() is not None:
            return ""
        result = write.result()
        self.stats.syslog_lines += result.lines
        return result.broken


def from_peer(peer: tuple[str, int] | None) -> str:
    return f"from {peer[0]} port {peer[1]}" if peer else ""


def _handshake_failed(error: ssl.SSLError) -> str:
    if error.reason in _NOT_TLS:
        return "not TLS, and this port takes syslog over TLS only (syslog+tls://)"
    return f"TLS handshake failed: {error.reason or error}"


def _say_cut(count: int, peer: str, size: str) -> str:
    limit = f"to the {MAX_FRAME:,}-byte limit"
    if count == 1:
        where = f" ({peer})" if peer else ""
        return f"herolog serve: cut a syslog message of {size} bytes {limit}{where}"
    where = f", {peer}" if peer else ""
    return f"herolog serve: cut {count:,} syslog messages {limit} (the last of {size} bytes{where})"


def _say_closed(count: int, peer: str, why: str) -> str:
    if count == 1:
        where = f" ({peer})" if peer else ""
        return f"herolog serve: closed a syslog connection for what it sent{where}: {why}"
    where = f" (the last {peer})" if peer else ""
    return f"herolog serve: closed {count:,} syslog connections for what they sent{where}: {why}"


def keep_alive(sock: socket.socket | None) -> None:
    """Have the system probe ``sock``'s peer while it is quiet, and end the connection once
    it does not answer (KEEPALIVE_IDLE_S), where it can."""
    if sock is None:
        return
    with contextlib.suppress(OSError):  # a socket already reset; an option not known here
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
            ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
