"""Syslog drains over TCP and TLS, with hand-made frames and the real `logger` client."""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from herolog import timestamps
from herolog.filters import LineFilter
from herolog.parser import LogLine, format_syslog, frame
from herolog.server.config import Credentials
from tests import web
from tests.helpers import herolog_process, in_namespace
from tests.server.conftest import Running, ServeProcess, ServerFactory
from tests.server.test_process import stored


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def syslog_frames(
    *messages: str, hostname: str = "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"
) -> bytes:
    return frame(
        format_syslog(
            LogLine("2024-03-05T09:14:07.418233+00:00", "", "app", "web.1", m, 190, hostname, None),
            hostname,
        )
        for m in messages
    )


def connect(running: Running) -> socket.socket:
    assert running.syslog_port is not None
    return socket.create_connection(("127.0.0.1", running.syslog_port), timeout=10)


def messages(running: Running) -> list[str]:
    return [x.message for x in running.lines()]


def test_octet_counted_frames_like_heroku_syslog_drains(make_server: ServerFactory) -> None:
    running = make_server(syslog_port=0, syslog_app="myapp")
    with connect(running) as sock:
        sock.sendall(syslog_frames(*[f"line {i}" for i in range(500)]))
    wait_for(lambda: len(running.lines()) == 500)
    lines = running.lines("myapp")
    assert [x.message for x in lines] == [f"line {i}" for i in range(500)]
    assert lines[0].hostname == "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"
    assert (lines[0].source, lines[0].dyno) == ("app", "web.1")


def test_newline_framing_and_both_in_one_connection(served: Running) -> None:
    with connect(served) as sock:
        sock.sendall(b"<13>1 2024-03-05T09:14:07Z myhost user - - - by newline\n")
        sock.sendall(syslog_frames("counted"))
        sock.sendall(b'<13>1 2024-03-05T09:14:07Z myhost user - - [meta seq="1"] with sd\r\n')
    wait_for(lambda: len(served.lines()) == 3)
    assert messages(served) == ["by newline", "counted", "with sd"]
    assert served.lines("default")[2].structured_data == '[meta seq="1"]'


def test_a_nul_ends_a_message_as_a_newline_does(served: Running) -> None:
    """RFC 6587 (3.4.2) names NUL as the other trailer of non-transparent framing, and
    syslog-ng and OpenBSD's syslogd end a message at one: a sender using it had its whole
    stream read as one message until the 64 KiB limit closed the connection."""
    head = b"<13>1 2024-03-05T09:14:07Z myhost user - - - "
    data = head + b"first\x00" + head + b"second\r\x00" + head + b"third\x00\n" + head + b"4th\x00"
    data += head + b"5th\n\x00"  # both trailers, the NUL after: no message between them
    with connect(served) as sock:
        for i in range(len(data)):  # a byte at a time: a NUL is found in any read
            sock.sendall(data[i : i + 1])
        sock.sendall(syslog_frames("counted after"))
        # and in one read; a newline ends the 7th, and what follows it the 8th starts
        sock.sendall(head + b"6th\n\x00" + head + b"7th\n" + head + b"8th\x00")
        wait_for(lambda: len(served.lines()) == 9)
    assert messages(served) == [
        *["first", "second", "third", "4th", "5th", "counted after", "6th", "7th", "8th"]
    ]


def test_a_nul_inside_a_newline_framed_message_keeps_its_text_and_the_connection(
    served: Running,
) -> None:
    """A script logging a C string's buffer, newline-framed, sent a NUL inside a message:
    the text after it was taken for a frame with no octet count and the connection closed
    (`expected an octet count, found 'rest of it...'`), losing it and what came after. It
    is a line of the message, with its header, and the messages after it are stored as
    they come."""
    head = b"<13>1 2024-03-05T09:14:07Z myhost job 42 - - "
    with connect(served) as sock:
        sock.sendall(head + b"name=abc\x00\x00\xff junk after the NUL\n")
        sock.sendall(head + b"next\n")
        wait_for(lambda: len(served.lines()) == 3 or bool(closures(served)))
        sock.sendall(head + b"on the same connection\n")
        wait_for(lambda: len(served.lines()) == 4 or bool(closures(served)))
    assert closures(served) == []
    assert [(x.source, x.dyno, x.hostname, x.message) for x in served.lines()] == [
        ("job", "42", "myhost", "name=abc"),
        ("job", "42", "myhost", "\ufffd junk after the NUL"),
        ("job", "42", "myhost", "next"),
        ("job", "42", "myhost", "on the same connection"),
    ]


def test_a_last_line_of_digits_without_its_newline_is_stored(served: Running) -> None:
    """A script writing a message of several lines to the socket, the last without its
    newline (`printf '<13>... result:\\n42'`), and closing it: the "42" was taken for an
    octet count cut off, lost, and the stream said to be broken."""
    with connect(served) as sock:
        sock.sendall(b"<13>Mar  5 09:14:07 vm job[42]: result:\n42")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # serve has read it all and closed its side
    wait_for(lambda: len(served.lines()) == 2 or bool(closures(served)))
    assert closures(served) == []
    assert [(x.source, x.dyno, x.message) for x in served.lines()] == [
        ("job", "42", "result:"),
        ("job", "42", "42"),
    ]


def test_frames_split_across_packets(served: Running) -> None:
    data = syslog_frames(*[f"piece {i}" for i in range(50)])
    with connect(served) as sock:
        for i in range(0, len(data), 7):
            sock.sendall(data[i : i + 7])
    wait_for(lambda: len(served.lines()) == 50)
    assert messages(served) == [f"piece {i}" for i in range(50)]


def test_garbage_closes_only_that_connection_after_storing_what_parsed(served: Running) -> None:
    with connect(served) as healthy, connect(served) as bad:
        bad.sendall(syslog_frames("before garbage") + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        bad.settimeout(10)
        assert bad.recv(100) == b""  # the server hung up
        healthy.sendall(syslog_frames("still fine"))
        wait_for(lambda: len(served.lines()) == 2)
    assert messages(served) == ["before garbage", "still fine"]


def test_a_connection_closed_for_what_it_sent_is_said_and_counted(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender whose messages are refused (an rsyslog sending some other framing, a line
    after an octet-counted frame that is none) must not lose them without a word: serve
    says why it hung up, at most once an interval, counting the others, as it does
    refusals."""
    from herolog.server import throttle

    # Not a minute, but room enough for the two connections below to come within it on a
    # busy machine (they take milliseconds): they are to be told together.
    monkeypatch.setattr(throttle, "REPORTED_EVERY_S", 1.0)
    running = make_server(syslog_port=0)

    def closures() -> list[str]:
        said = running.log.getvalue().splitlines()
        return [x for x in said if x.startswith("herolog serve: closed")]

    first = b"<13>1 2024-03-05T09:14:07Z myhost user - - - first line"
    framed = b"%d %s" % (len(first), first)
    with connect(running) as sock:  # an octet-counted frame, then a line that is none
        sock.sendall(framed + b"second line\n")
        assert closed_by_server(sock)
    wait_for(lambda: len(closures()) == 1)
    assert re.fullmatch(
        r"herolog serve: closed a syslog connection for what it sent \(from 127\.0\.0\.1 port"
        rf" \d+\): frame 2 at byte {len(framed)}: expected an octet count, found 'second"
        r" line\\n'",
        closures()[0],
    ), closures()
    for _ in range(2):
        with connect(running) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert closed_by_server(sock)
    wait_for(lambda: len(closures()) == 2, 30)  # the two together, once the interval is over
    assert closures()[1].startswith(
        "herolog serve: closed 2 syslog connections for what they sent (the last from"
        " 127.0.0.1 port "
    ), closures()
    assert ": frame 1 at byte 0: expected an octet count, found 'GET / HTTP" in closures()[1]
    assert running.server.stats.as_dict()["syslog_connections_broken"] == 3
    assert messages(running) == ["first line"]


@pytest.mark.parametrize("framing", ["octet-counted", "newline", "crlf", "nul"])
def test_a_message_over_the_limit_is_cut_and_the_connection_goes_on(
    served: Running, framing: str
) -> None:
    """A message over the limit (a Java stack trace with nested causes, a logged JSON
    document) closed the connection, and what the sender logged while it reconnected was lost
    too (log4j2: the next 3 messages). Now its first MAX_FRAME bytes are stored, cut between
    characters, the rest is skipped however many reads it takes, and the connection goes on,
    as rsyslog's oversizeMode="truncate" does. The limit is the message's: the \\r of a CRLF
    sender's line end is framing, and a message at the limit is whole."""
    from herolog.server.syslog import MAX_FRAME

    head = b"<13>1 2024-03-05T09:14:07Z myhost user - - - "
    just_fits = head + b"y" * (MAX_FRAME - len(head))
    # 69,999 bytes, the limit falling inside an "\u00e9" (two bytes): cut before it.
    room = MAX_FRAME - len(head) - 1
    big = head + b"x" * room + "\u00e9".encode() * ((70_000 - len(head) - room) // 2)
    after = [head + b"after %d" % i for i in range(3)]
    if framing == "octet-counted":
        data = frame([just_fits, big, *after[:2]])
    else:
        end = {"newline": b"\n", "crlf": b"\r\n", "nul": b"\0"}[framing]
        data = b"".join(m + end for m in [just_fits, big, *after[:2]])
    with connect(served) as sock:
        for at in range(0, len(data), 1000):  # the big one over 70 sends
            sock.sendall(data[at : at + 1000])
        wait_for(lambda: len(served.lines()) == 4)
        # The connection is still open: what is sent next on it is stored too.
        sock.sendall(frame([after[2]]) if framing == "octet-counted" else after[2] + end)
        wait_for(lambda: len(served.lines()) == 5)
    shown = herolog_process("logs", "-a", "default", "--json")
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(x) for x in shown.stdout.splitlines()]
    assert [x["message"] for x in records] == [
        "y" * (MAX_FRAME - len(head)),
        "x" * room,
        "after 0",
        "after 1",
        "after 2",
    ]
    assert [(x["source"], x["hostname"]) for x in records] == [("user", "myhost")] * 5
    (said,) = [x for x in served.log.getvalue().splitlines() if "syslog message" in x]
    assert re.fullmatch(
        rf"herolog serve: cut a syslog message of {len(big):,} bytes to the {MAX_FRAME:,}-byte"
        r" limit \(from 127\.0\.0\.1 port \d+\)",
        said,
    ), said
    assert "closed" not in served.log.getvalue()
    stats = served.server.stats.as_dict()
    assert (stats["syslog_messages_cut"], stats["syslog_connections_broken"]) == (1, 0)


def test_messages_cut_are_said_at_most_once_an_interval(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender that logs one long message after another must not flood serve's log."""
    from herolog.server import throttle
    from herolog.server.syslog import MAX_FRAME

    monkeypatch.setattr(throttle, "REPORTED_EVERY_S", 1.0)  # not a minute, as above
    running = make_server(syslog_port=0)
    head = b"<13>1 2024-03-05T09:14:07Z myhost user - - - "
    sizes = [70_000, 80_000, 90_000]
    with connect(running) as sock:
        sock.sendall(b"".join(head + b"x" * (size - len(head)) + b"\n" for size in sizes))
        wait_for(lambda: len(running.lines()) == 3)

    def cuts() -> list[str]:
        return [x for x in running.log.getvalue().splitlines() if "syslog message" in x]

    wait_for(lambda: len(cuts()) == 2, 30)  # the last two together, once the interval is over
    assert cuts()[0].startswith("herolog serve: cut a syslog message of 70,000 bytes")
    assert re.fullmatch(
        rf"herolog serve: cut 2 syslog messages to the {MAX_FRAME:,}-byte limit \(the last of"
        r" 90,000 bytes, from 127\.0\.0\.1 port \d+\)",
        cuts()[1],
    ), cuts()
    assert running.server.stats.as_dict()["syslog_messages_cut"] == 3


@pytest.mark.parametrize(
    ("count", "why"),
    [
        (64 << 20, "over the 66,560-byte limit"),  # the largest cut is 64 MiB
        # written as the cut's "to the 66,560-byte limit" writes it, where it said 66560
        ((64 << 20) + 1, "a frame of 67,108,865 bytes is over the 66,560-byte limit"),
        (70_000, "a frame of 70,000 bytes is over the 66,560-byte limit"),  # no PRI follows
    ],
)
def test_an_octet_count_past_any_message_still_closes_the_connection(
    served: Running, count: int, why: str
) -> None:
    """Skipping a frame of such a count would swallow the connection's data for good."""
    from herolog.server.syslog import MAX_FRAME

    head = b"<13>1 2024-03-05T09:14:07Z myhost user - - - "
    message = head if count == 64 << 20 else b"not syslog "
    with connect(served) as sock:
        sock.sendall(frame([head + b"before"]) + b"%d " % count + message)
        if count == 64 << 20:  # cut, the rest of its count skipped, and the connection goes on
            sock.sendall(b"x" * (count - len(message)) + frame([head + b"after"]))
            wait_for(lambda: len(served.lines()) == 3, 60)
            assert messages(served) == ["before", "x" * (MAX_FRAME - len(head)), "after"]
            assert "closed" not in served.log.getvalue()
            return
        sock.sendall(b"x" * 70_000)
        assert closed_by_server(sock)
    wait_for(lambda: "closed a syslog connection" in served.log.getvalue())
    assert why in served.log.getvalue()
    assert messages(served) == ["before"]


@pytest.mark.parametrize("destination", ["syslog", "network"])
def test_the_longest_message_syslog_ng_forwards_is_stored(
    served: Running, destination: str
) -> None:
    """syslog-ng reads messages of up to 64 KiB (log-msg-size()'s default), header and all,
    and forwards them with its own header: a local program's 65,536-byte datagram left its
    syslog() destination as a 65,574-byte frame (its network() one as a 65,539-byte line),
    over the 64 KiB limit serve had, which closed the connection and lost both it and what
    syslog-ng had sent after it. These are the bytes syslog-ng 3.38 sent."""
    text = "x" * (65536 - len("<14>Dec  6 21:56:05 billing[4711]: "))
    if destination == "syslog":
        head = '<14>1 2026-12-06T21:56:05+05:30 vm billing 4711 - [meta sequenceId="{}"] '
        # It ends each frame with a newline, and counts it.
        data = frame([f"{head.format(1)}{text}\n".encode(), f"{head.format(2)}after\n".encode()])
        assert data.startswith(b"65574 ")
    else:
        head = "<14>Dec  6 21:56:05 vm billing[4711]: "
        data = f"{head}{text}\n{head}after\n".encode()
        assert data.index(b"\n") == 65539
    with connect(served) as sock:
        sock.sendall(data)
        wait_for(lambda: len(served.lines()) == 2)
    assert messages(served) == [text, "after"]
    assert "closed" not in served.log.getvalue()


def test_a_message_cut_off_by_a_connection_reset_is_not_stored(served: Running) -> None:
    import struct

    with connect(served) as sock:
        sock.sendall(b"<13>1 2024-03-05T09:14:07Z h user - - - complete\n")
        wait_for(lambda: messages(served) == ["complete"])
        sock.sendall(b"<13>1 2024-03-05T09:14:07Z h user - - - this was cut o")
        # SO_LINGER 0: close() sends a reset, not the end of the stream.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    syslog = served.server.syslog
    assert syslog is not None
    wait_for(lambda: not syslog._connections)  # its handler has finished
    assert messages(served) == ["complete"]


def test_a_message_cut_off_by_the_server_stopping_is_not_stored(herolog_home: Path) -> None:
    import io

    from herolog.server import ServeConfig, Server, run_in_thread
    from herolog.store import SQLiteStore

    path = herolog_home / "logs.db"
    server = Server(ServeConfig(store_path=path, port=0, syslog_port=0), log=io.StringIO())
    stop = run_in_thread(server)
    assert server.syslog_port is not None
    with socket.create_connection(("127.0.0.1", server.syslog_port), timeout=10) as sock:
        sock.sendall(b"<13>1 2024-03-05T09:14:07Z h user - - - complete\n")
        sock.sendall(b"<13>1 2024-03-05T09:14:07Z h user - - - this was cut o")
        wait_for(lambda: server.stats.syslog_lines == 1)
        stop()
    store = SQLiteStore.open(path)
    try:
        assert [x.message for x in store.last(LineFilter(), 10)[0]] == ["complete"]
    finally:
        store.close()


@pytest.mark.slow
def test_a_flood_of_tiny_messages_keeps_a_bounded_share_of_the_writer(
    served: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several connections sending 3-byte messages (21,000 to a read): the lines waiting for
    the writer stay under the budget plus one read's worth, so a drain POST queued behind
    them waits for that much at most, whatever the number of connections."""
    import threading

    from herolog.server import syslog as syslog_module
    from herolog.server.syslog import MAX_LINES_IN_FLIGHT, READ_SIZE

    # Stopping, the server goes on reading what the floods left in its receive buffers
    # (megabytes of 3-byte messages) for STOP_READING_S: 5 s of this test's teardown, which
    # is not what it is about (test_process.py's never-pausing client checks that limit).
    # The teardown still takes seconds: every line serve had read is stored before it stops.
    monkeypatch.setattr(syslog_module, "STOP_READING_S", 0.1)
    syslog = served.server.syslog
    assert syslog is not None
    stop = threading.Event()
    sent = 0
    socks = [connect(served) for _ in range(4)]

    def flood(sock: socket.socket) -> None:
        nonlocal sent
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)  # less to drain
        while not stop.is_set():
            try:
                sock.sendall(b"1 x" * 20_000)
            except OSError:  # shut down under it: the measuring is over
                if stop.is_set():
                    return
                raise
            sent += 20_000

    floods = [threading.Thread(target=flood, args=(sock,), daemon=True) for sock in socks]
    for thread in floods:
        thread.start()
    most = 0
    try:
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            most = max(most, syslog._lines_in_flight)
            time.sleep(0.001)
        response = served.post("demo", syslog_frames("through the flood"))
        assert response.status_code == 204
    finally:
        stop.set()
        # A flood blocked in sendall would otherwise wait for serve to read the seconds of
        # messages queued ahead of it; shutting the socket down ends that send at once.
        for sock in socks:
            sock.shutdown(socket.SHUT_WR)
        for thread in floods:
            thread.join(30)
        for sock in socks:
            sock.close()
    assert sent > 2 * MAX_LINES_IN_FLIGHT  # a flood, not a trickle
    assert 0 < most <= MAX_LINES_IN_FLIGHT + READ_SIZE // 3
    assert [x.message for x in served.lines("demo")] == ["through the flood"]


def test_many_idle_connections_do_not_block_a_working_one(served: Running) -> None:
    idle = [connect(served) for _ in range(300)]
    try:
        with connect(served) as sock:
            sock.sendall(syslog_frames("through the crowd"))
            wait_for(lambda: messages(served) == ["through the crowd"])
        assert served.server.stats.syslog_connections >= 301
    finally:
        for sock in idle:
            sock.close()


def closed_by_server(sock: socket.socket, wait: float | None = None) -> bool:
    """Whether the server closes the connection (without sending anything): waits for that
    up to the socket's timeout, or ``wait`` seconds."""
    if wait is not None:
        sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.slow
def test_connections_over_the_limit_are_closed_and_reported(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herolog.server import throttle

    monkeypatch.setattr(throttle, "REPORTED_EVERY_S", 1.0)  # not a minute
    running = make_server(syslog_port=0, syslog_max_connections=3)
    syslog = running.server.syslog
    assert syslog is not None
    kept = [connect(running) for _ in range(3)]
    try:
        for i, sock in enumerate(kept):
            sock.sendall(syslog_frames(f"kept {i}"))
        wait_for(lambda: len(running.lines()) == 3)  # all three accepted and read
        with connect(running) as extra, connect(running) as another:
            assert closed_by_server(extra)
            assert closed_by_server(another)
        assert running.server.stats.syslog_connections_refused == 2

        def refusals() -> list[str]:
            return [x for x in running.log.getvalue().splitlines() if "refused" in x]

        # The second within the interval is counted, and reported once it is over.
        first = refusals()[0]
        assert first.startswith("herolog serve: refused a syslog connection (the last from")
        assert first.endswith(": 3 are open (--syslog-max-connections)")
        wait_for(lambda: len(refusals()) == 2)
        assert refusals()[1].startswith("herolog serve: refused a syslog connection (the last")
        time.sleep(1.5)  # and no more than that: nothing is left to report
        assert len(refusals()) == 2
        kept.pop().close()  # room for one more, once the server has seen it go
        wait_for(lambda: len(syslog._connections) == 2)
        with connect(running) as later:
            later.sendall(syslog_frames("after one left"))
            wait_for(lambda: "after one left" in messages(running))
        for sock in kept:  # the first ones were never disturbed
            sock.sendall(syslog_frames("still open"))
        wait_for(lambda: messages(running).count("still open") == 2)
    finally:
        for sock in kept:
            sock.close()


def test_a_limit_of_one_connection_is_said_in_the_singular(make_server: ServerFactory) -> None:
    running = make_server(syslog_port=0, syslog_max_connections=1)
    with connect(running) as kept:
        kept.sendall(syslog_frames("kept"))
        wait_for(lambda: len(running.lines()) == 1)
        with connect(running) as extra:
            assert closed_by_server(extra)
        wait_for(lambda: "refused" in running.log.getvalue())
    refused = [x for x in running.log.getvalue().splitlines() if "refused" in x]
    assert refused[0].endswith(": 1 is open (--syslog-max-connections)"), refused


def resolving_localhost_as_debian_does(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    """localhost as Debian's /etc/hosts has it, ::1 first, then 127.0.0.1 (this machine's
    has 127.0.0.1 alone, and no name here resolves to both): in this process only."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "localhost":
            return real(host, port, *args, **kwargs)
        found = []
        for address in addresses:
            found += real(address, port, *args, **kwargs)
        return found

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_host_name_is_listened_on_at_every_address_it_resolves_to(
    make_server: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    certificates: tuple[trustme.CA, Path, Path],
    tls: bool,
) -> None:
    """--host localhost listened on ::1 alone, where Debian's localhost is first, so that
    rsyslog (or curl) sending to 127.0.0.1 was refused: serve listens on each of its
    addresses, as nginx and rsyslog do, both ports on each (one port number for all)."""
    resolving_localhost_as_debian_does(monkeypatch, "::1", "127.0.0.1")
    _, certfile, keyfile = certificates
    files = {"certfile": certfile, "keyfile": keyfile} if tls else {}
    running = make_server(host="localhost", syslog_port=0, syslog_app="demo", **files)
    http, syslog = running.server.http_port, running.syslog_port
    assert http is not None
    assert syslog is not None
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its name is 127.0.0.1
    scheme = "https" if tls else "http"
    for address in ("::1", "127.0.0.1"):
        url = f"{scheme}://{'[::1]' if ':' in address else address}:{http}/apps/demo/logs"
        body = syslog_frames(f"http to {address}")
        response = web.post(
            url, content=body, headers={"Content-Type": "application/logplex-1"}, verify=context
        )
        assert response.status_code == 204, response.text
        with socket.create_connection((address, syslog), timeout=10) as raw:
            if tls:
                with context.wrap_socket(raw) as sock:
                    sock.sendall(syslog_frames(f"syslog to {address}"))
            else:
                raw.sendall(syslog_frames(f"syslog to {address}"))
    wait_for(lambda: len(running.lines("demo")) == 4)
    assert sorted(messages(running)) == [
        "http to 127.0.0.1",
        "http to ::1",
        "syslog to 127.0.0.1",
        "syslog to ::1",
    ]


def test_an_address_of_a_host_name_that_is_taken_is_named(
    herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herolog.server import ServeConfig, Server
    from herolog.server.config import ConfigError

    resolving_localhost_as_debian_does(monkeypatch, "::1", "127.0.0.1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = ServeConfig(store_path=herolog_home / "logs.db", host="localhost", port=port)
        server = Server(config)
        with pytest.raises(ConfigError) as raised:
            server.bind()
    assert str(raised.value) == (
        f"cannot listen on 127.0.0.1:{port} (localhost): Address already in use"
    )
    with socket.socket(socket.AF_INET6) as free:  # and what it bound before is closed
        free.bind(("::1", port))


def test_an_address_of_a_host_name_this_machine_does_not_have_is_passed_over(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container's /etc/hosts names ::1 where IPv6 is off: no client reaches it there."""
    resolving_localhost_as_debian_does(monkeypatch, "192.0.2.1", "127.0.0.1")
    running = make_server(host="localhost")
    assert running.post("demo", syslog_frames("here")).status_code == 204
    assert messages(running) == ["here"]


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return ca, certfile, keyfile


def test_the_banner_gives_the_drain_urls(
    make_server: ServerFactory, certificates: tuple[trustme.CA, Path, Path]
) -> None:
    plain = make_server(syslog_port=0)
    url = f"heroku drains:add syslog://127.0.0.1:{plain.syslog_port} -a APP"
    assert url in "\n".join(plain.server.banner())
    _, certfile, keyfile = certificates
    public = make_server(
        host="0.0.0.0",
        auth=Credentials("drain", "s3cret"),
        syslog_port=0,
        certfile=certfile,
        keyfile=keyfile,
    )
    url = f"heroku drains:add syslog+tls://YOUR-HOST:{public.syslog_port} -a APP"
    assert url in "\n".join(public.server.banner())
    proxied = make_server(
        public_url="https://logs.example.com:8443/herolog/",
        auth=Credentials("drain", "s3cret"),
        syslog_port=0,
    )
    banner = "\n".join(proxied.server.banner())
    assert f"heroku drains:add syslog://logs.example.com:{proxied.syslog_port} -a APP" in banner
    https = "https://drain:PASSWORD@logs.example.com:8443/herolog/apps/APP/logs"
    assert f"heroku drains:add '{https}' -a APP" in banner
    assert "s3cret" not in banner


def test_the_banner_says_the_plain_syslog_port_takes_tcp_only(
    make_server: ServerFactory, certificates: tuple[trustme.CA, Path, Path]
) -> None:
    """util-linux's logger -n HOST -P PORT sends UDP unless given --tcp: its lines were lost
    with exit status 0, and nothing in the banner said which the port takes."""
    plain = make_server(syslog_port=0)
    said = f"syslog drain intake on 127.0.0.1:{plain.syslog_port}, TCP only (lines go to app"
    assert said in "\n".join(plain.server.banner())
    _, certfile, keyfile = certificates
    tls = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
    said = f"syslog+tls drain intake on 127.0.0.1:{tls.syslog_port} (lines go to app"
    assert said in "\n".join(tls.server.banner())


def test_the_banner_gives_heroku_host_only_where_the_heroku_cli_takes_it(
    make_server: ServerFactory,
) -> None:
    """The heroku CLI sends HEROKU_API_KEY to api.heroku.com for a HEROKU_HOST that names
    neither localhost nor 127.0.0.1: the banner must never suggest one."""
    local = make_server(api_key="k3y")
    port = local.server.http_port
    assert f"HEROKU_HOST=http://127.0.0.1:{port} HEROKU_API_KEY=..." in "\n".join(
        local.server.banner()
    )
    public = make_server(host="0.0.0.0", auth=Credentials("drain", "s3cret"), api_key="k3y")
    port = public.server.http_port
    banner = "\n".join(public.server.banner())
    suggested = re.findall(r"HEROKU_HOST=(\S+)", banner)
    assert suggested == [f"http://127.0.0.1:{port},"]
    assert "sends HEROKU_API_KEY to api.heroku.com" in banner
    assert "k3y" not in banner
    # One address the heroku CLI does not take: a tunnel to it, named 127.0.0.1 at its end.
    other = make_server(host="127.0.0.2", api_key="k3y")
    port = other.server.http_port
    banner = "\n".join(other.server.banner())
    assert re.findall(r"HEROKU_HOST=(\S+)", banner) == ["http://127.0.0.1:8514)"]
    assert f"the heroku CLI only through a tunnel (ssh -N -L 8514:127.0.0.2:{port} HOST," in banner
    assert "k3y" not in banner


def test_syslog_over_tls_and_https_intake(
    make_server: ServerFactory, certificates: tuple[trustme.CA, Path, Path]
) -> None:
    ca, certfile, keyfile = certificates
    running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert running.syslog_port is not None
    with (
        socket.create_connection(("127.0.0.1", running.syslog_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(syslog_frames("over tls"))
    wait_for(lambda: messages(running) == ["over tls"])
    # the HTTP intake is HTTPS with the same certificate

    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    response = web.post(
        f"https://127.0.0.1:{running.server.http_port}/apps/demo/logs",
        content=syslog_frames("over https", hostname="host"),
        headers={"Content-Type": "application/logplex-1"},
        verify=verify,
    )
    assert response.status_code == 204
    assert "over https" in messages(running)
    assert "syslog+tls drain intake" in running.log.getvalue()
    # a plain-text client gets nothing stored
    with connect(running) as plain:
        plain.sendall(syslog_frames("not over tls"))
        assert closed_by_server(plain)  # its handshake failed
    assert "not over tls" not in messages(running)


def test_a_tls_client_that_sends_and_closes_at_once_has_all_it_sent_stored(
    make_server: ServerFactory, certificates: tuple[trustme.CA, Path, Path]
) -> None:
    """A TLS client that logs a few messages and closes its socket without reading
    (Python's rfc5424-logging-handler closed, a script): had serve sent TLS 1.3 session
    tickets after the handshake, those unread bytes would make the client's kernel reset
    the connection, and Linux then drops what serve had not read yet. Of 20 such
    connections, without the change, most lost every message after their first."""
    ca, certfile, keyfile = certificates
    running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert running.syslog_port is not None
    for n in range(20):
        raw = socket.create_connection(("127.0.0.1", running.syslog_port), timeout=10)
        tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
        for i in range(3):
            tls.sendall(syslog_frames(f"connection {n} message {i}"))
        tls.close()  # without close_notify, and without reading anything
    syslog = running.server.syslog
    assert syslog is not None
    wait_for(lambda: running.server.stats.syslog_connections == 20 and not syslog._connections)
    expected = [f"connection {n} message {i}" for n in range(20) for i in range(3)]
    assert sorted(messages(running)) == sorted(expected)


@pytest.mark.parametrize("port", ["syslog", "https"])
def test_a_tls_handshake_that_stalls_is_cut_off_after_the_header_timeout(
    make_server: ServerFactory, certificates: tuple[trustme.CA, Path, Path], port: str
) -> None:
    """One byte of a ClientHello and then nothing: the connection is closed after
    --header-timeout, not after asyncio's (and uvloop's) 60 s default; on the HTTPS port as
    on the syslog one, where such clients would hold a file each for a minute."""
    _, certfile, keyfile = certificates
    running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile, header_timeout=0.5)
    number = running.syslog_port if port == "syslog" else running.server.http_port
    with socket.create_connection(("127.0.0.1", number), timeout=10) as sock:
        sock.sendall(b"\x16")
        sock.settimeout(20)
        # Closed (an end of stream or a reset): what matters is that it did not take 60 s.
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""


def test_a_client_that_has_not_begun_its_tls_handshake_does_not_hold_up_the_stop(
    herolog_home: Path,
    certificates: tuple[trustme.CA, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client connected to the syslog+tls port that has sent nothing (a health check, a
    port scan) has nothing to store: serve stopping closes it once it is quiet, as it does
    a connection past its handshake, where it waited for it until STOP_READING_S (5 s at
    every stop) or the handshake's timeout, both made long here."""
    import io

    from herolog.server import ServeConfig, Server, run_in_thread
    from herolog.server import syslog as syslog_module

    monkeypatch.setattr(syslog_module, "STOP_READING_S", 600.0)
    _, certfile, keyfile = certificates
    config = ServeConfig(
        store_path=herolog_home / "logs.db",
        port=0,
        syslog_port=0,
        certfile=certfile,
        keyfile=keyfile,
        header_timeout=600.0,
    )
    server = Server(config, log=io.StringIO())
    stop = run_in_thread(server)
    syslog = server.syslog
    assert syslog is not None
    assert server.syslog_port is not None
    try:
        with socket.create_connection(("127.0.0.1", server.syslog_port), timeout=20) as idle:
            wait_for(lambda: bool(syslog._handshakes))
            server.stop()
            with contextlib.suppress(ConnectionResetError):
                assert idle.recv(100) == b""
    finally:
        stop()


VANISHING_CLIENT = """
import gc, io, socket, ssl, subprocess, sys, time
from pathlib import Path
import herolog.server
from herolog.server import ServeConfig, Server, run_in_thread
from herolog.server.config import tls_context

herolog.server.syslog_tls_context = tls_context  # one that sends session tickets

def sh(command):
    subprocess.run(command, shell=True, check=True)

sh("ip link set lo up; ip addr add 10.1.1.1/32 dev lo; ip addr add 10.1.1.2/32 dev lo")
sh("sysctl -qw net.ipv4.tcp_retries2=1")  # what serve sends times out in a second, not 15 min
config = ServeConfig(
    store_path=Path(sys.argv[1]), host="10.1.1.1", insecure_no_auth=True, port=0,
    syslog_port=0, certfile=Path(sys.argv[2]), keyfile=Path(sys.argv[3]),
)
server = Server(config, log=io.StringIO())
stop = run_in_thread(server)
client = ssl.create_default_context()
client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = client.wrap_bio(incoming, outgoing)
raw = socket.socket()
raw.bind(("10.1.1.2", 0))
raw.connect(("10.1.1.1", server.syslog_port))
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    raw.sendall(outgoing.read())
while True:
    incoming.write(raw.recv(65536))
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        pass
# The client's network goes: nothing serve sends reaches it from now on (local addresses are
# looked up in table local, rule 0, before any other rule unless it is moved after them).
sh("ip rule add pref 100 lookup local; ip rule del pref 0")
sh("ip rule add pref 5 to 10.1.1.2 lookup 50; ip route add blackhole default table 50")
raw.sendall(outgoing.read())  # its Finished: serve answers with TLS 1.3 session tickets
deadline = time.monotonic() + 20
while server.syslog._connections and time.monotonic() < deadline:
    time.sleep(0.05)
print("finished" if not server.syslog._connections else "still open", flush=True)
gc.collect()
stop()
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_tls_client_whose_network_goes_after_its_handshake_leaves_no_traceback(
    tmp_path: Path, certificates: tuple[trustme.CA, Path, Path]
) -> None:
    """Serve writes on a syslog+tls connection (its handshake; TLS 1.3 session tickets
    until it stopped sending them, which this test has it send, as something written after
    the handshake): a client whose network goes (no reset) has that time out, and the read
    raised TimeoutError, which is no ConnectionError, out of the handler: `Task exception
    was never retrieved` and a traceback on serve's stderr. It is the end of that stream, as
    a reset is. Run in a network namespace of its own, where its routes cannot affect
    anyone."""
    _, certfile, keyfile = certificates
    done = in_namespace(VANISHING_CLIENT, str(tmp_path / "logs.db"), str(certfile), str(keyfile))
    assert done.stdout == "finished\n"
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.subprocess
def test_a_client_hello_sent_before_serve_accepts_the_connection_reaches_the_handshake(
    herolog_home: Path, certificates: tuple[trustme.CA, Path, Path]
) -> None:
    """A TLS client speaks first, and its ClientHello is often in the kernel's buffer by the
    time serve accepts the connection (always, while serve is busy: stopped here). It must
    reach the handshake, not be read as plain syslog while the handshake waits for it until
    --header-timeout ends the connection (what 1 connection in 4 did, serve idle)."""
    ca, certfile, keyfile = certificates
    context = ssl.create_default_context()
    ca.configure_trust(context)
    tls = ["--certfile", str(certfile), "--keyfile", str(keyfile), "--header-timeout", "5"]
    server = ServeProcess("--port", "0", "--syslog-port", "0", *tls)
    try:
        m = re.search(r"syslog\+tls drain intake on 127\.0\.0\.1:(\d+)", "".join(server.banner))
        assert m, server.banner
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()  # the ClientHello, in outgoing
        pid = server.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(
                lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
            )
            raw = socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=10)
            raw.sendall(outgoing.read())  # queued by the kernel, with the connection
        finally:
            os.kill(pid, signal.SIGCONT)
        with raw:
            while True:
                try:
                    client.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    data = raw.recv(1 << 16)
                    assert data, "serve closed the connection in the TLS handshake"
                    incoming.write(data)
            client.write(syslog_frames("after an early ClientHello"))
            raw.sendall(outgoing.read())  # the client's Finished, then the frame
        wait_for(lambda: stored(herolog_home) == ["after an early ClientHello"])
    finally:
        server.proc.terminate()
        code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err


def logger_path() -> str:
    path = shutil.which("logger")
    assert path, "the syslog tests use util-linux's `logger`: install it (apt-get install bsdutils)"
    return path


@pytest.mark.parametrize("framing", [["--octet-count"], []], ids=["octet-count", "newline"])
def test_the_real_logger_client(served: Running, framing: list[str]) -> None:
    subprocess.run(
        [
            logger_path(),
            "--tcp",
            *framing,
            "--rfc5424",
            "-n",
            "127.0.0.1",
            "-P",
            str(served.syslog_port),
            "-t",
            "billing",
            "--id=4711",
            "--sd-id",
            "meta@32473",
            "--sd-param",
            'seq="7"',
            "invoice 88 paid [ok]",
        ],
        check=True,
        timeout=10,
    )
    wait_for(lambda: len(served.lines()) == 1)
    (line,) = served.lines("default")
    assert (line.source, line.dyno, line.message) == ("billing", "4711", "invoice 88 paid [ok]")
    assert line.structured_data is not None
    assert '[meta@32473 seq="7"]' in line.structured_data


@contextlib.contextmanager
def pythons_syslog_handler(
    served: Running, name: str
) -> Iterator[tuple[logging.Logger, logging.handlers.SysLogHandler]]:
    """The logger ``name``, logging through Python's own SysLogHandler over TCP to serve's
    syslog port (and nowhere else), and the handler; taken off it at the end."""
    assert served.syslog_port is not None
    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", served.syslog_port), socktype=socket.SOCK_STREAM
    )
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_rfc3164_lines_from_logger_and_pythons_syslog_handler(served: Running) -> None:
    """BSD syslog (what rsyslog forwards by default, `logger --rfc3164`, Python's
    SysLogHandler) was stored whole as unknown[unknown] lines, `<13>` and all: its TAG and
    PID are the line's source and dyno, as rsyslog reads them."""
    port = str(served.syslog_port)
    logger = [logger_path(), "--tcp", "--rfc3164", "-n", "127.0.0.1", "-P", port, "-t", "billing"]
    done = subprocess.run(
        [*logger, "--id=4711", "-p", "local3.err", "bsd style"], check=True, timeout=10
    )
    wait_for(lambda: len(served.lines()) == 1)
    with pythons_syslog_handler(served, "test_syslog.handler") as (python, handler):
        handler.ident = "worker: "  # what the Python docs suggest for a tag
        python.warning("from python")
    wait_for(lambda: len(served.lines()) == 2)
    with connect(served) as sock:
        sock.sendall(b"<13>Mar  5 09:14:07 myhost billing[42]: on this connection\n")
        sock.sendall(b"<13>1 2024-03-05T09:14:07Z myhost billing 42 - - and 5424 after it\n")
        wait_for(lambda: len(served.lines()) == 4)
    first, second, third, fourth = served.lines("default")
    assert (first.source, first.dyno, first.pri) == ("billing", "4711", 155)
    assert (first.message, first.hostname) == ("bsd style", socket.gethostname().split(".")[0])
    # logger's time has no zone: read in this machine's, it is when the line came
    sent = timestamps.from_instant(first.time)
    assert abs((sent - timestamps.from_instant(first.received_at)).total_seconds()) < 5
    assert done.returncode == 0
    assert (second.source, second.dyno, second.pri, second.hostname) == ("worker", "-", 12, None)
    assert second.message == "from python"
    assert (third.source, third.dyno, third.hostname) == ("billing", "42", "myhost")
    assert third.message == "on this connection"
    assert third.timestamp[4:19] == "-03-05T09:14:07"
    assert (fourth.source, fourth.dyno, fourth.message) == ("billing", "42", "and 5424 after it")


def closures(running: Running) -> list[str]:
    said = running.log.getvalue().splitlines()
    return [x for x in said if x.startswith("herolog serve: closed")]


def test_tls_sent_to_the_plain_port_is_named_as_such(
    served: Running, certificates: tuple[trustme.CA, Path, Path]
) -> None:
    """A syslog+tls:// drain (or rsyslog with gtls) pointed at a serve without --certfile
    was told of as 'expected an octet count, found '\\x16\\x03\\x01...'', binary and all."""
    ca = certificates[0]
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with connect(served) as healthy, connect(served) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            context.wrap_socket(raw, server_hostname="127.0.0.1")
        healthy.sendall(syslog_frames("still fine"))
        wait_for(lambda: messages(served) == ["still fine"])
    wait_for(lambda: len(closures(served)) == 1)
    assert re.fullmatch(
        r"herolog serve: closed a syslog connection for what it sent \(from 127\.0\.0\.1 port"
        r" \d+\): a TLS handshake, but this port takes plain syslog \(serve syslog over TLS"
        r" with --certfile and --keyfile\)",
        closures(served)[0],
    ), closures(served)
    assert served.server.stats.as_dict()["syslog_connections_broken"] == 1


def test_plain_syslog_and_failed_handshakes_on_the_tls_port_are_said_and_counted(
    make_server: ServerFactory,
    certificates: tuple[trustme.CA, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`logger --tcp` or a syslog:// drain sent to the syslog+tls port, and a client that
    refuses serve's certificate, had their connections closed without a word: nothing
    stored, nothing on serve's stderr, nothing in /stats."""
    from herolog.server import throttle

    monkeypatch.setattr(throttle, "REPORTED_EVERY_S", 0.0)
    ca, certfile, keyfile = certificates
    running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
    with connect(running) as plain:
        plain.sendall(syslog_frames("not over tls"))
        assert closed_by_server(plain)
    wait_for(lambda: len(closures(running)) == 1)
    assert re.fullmatch(
        r"herolog serve: closed a syslog connection for what it sent \(from 127\.0\.0\.1 port"
        r" \d+\): not TLS, and this port takes syslog over TLS only \(syslog\+tls://\)",
        closures(running)[0],
    ), closures(running)
    distrusting = ssl.create_default_context()  # the system's CAs, not the test's own
    with connect(running) as raw, pytest.raises(ssl.SSLCertVerificationError):
        distrusting.wrap_socket(raw, server_hostname="127.0.0.1")
    wait_for(lambda: len(closures(running)) == 2)
    assert closures(running)[1].endswith(
        ": TLS handshake failed: SSLV3_ALERT_BAD_CERTIFICATE"
    ) or closures(running)[1].endswith(": TLS handshake failed: TLSV1_ALERT_UNKNOWN_CA"), closures(
        running
    )
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    with (
        connect(running) as raw,
        trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(syslog_frames("over tls"))
    wait_for(lambda: messages(running) == ["over tls"])
    assert running.server.stats.as_dict()["syslog_connections_broken"] == 2
    assert "Traceback" not in running.log.getvalue()


def test_pythons_syslog_handler_logging_a_traceback(served: Running) -> None:
    """Python's SysLogHandler ends each message with a NUL, newlines and all: an exception
    it logged (a traceback after the message) was cut at its first newline, the rest taken
    for garbage, and the connection closed, so that the handler, which does not reconnect,
    lost every line the program logged after it. Once a connection has ended a message
    with a NUL, a line after a newline that starts no message is the message's."""
    with pythons_syslog_handler(served, "billing") as (python, handler):
        handler.setFormatter(logging.Formatter("%(name)s[%(process)d]: %(message)s"))
        python.warning("starting")
        try:
            raise ValueError("no such invoice")
        except ValueError:
            python.exception("invoice 88 failed")
        python.warning("still logging")
        wait_for(lambda: len(served.lines()) == 3)
    first, failed, after = served.lines("default")
    assert first.message == "starting"
    assert (failed.source, failed.dyno, failed.pri) == ("billing", str(os.getpid()), 11)
    assert failed.message.startswith("invoice 88 failed\nTraceback (most recent call last):\n")
    assert failed.message.endswith("\nValueError: no such invoice")
    assert (after.source, after.message) == ("billing", "still logging")
    assert closures(served) == []


def test_pythons_syslog_handler_logging_a_chained_exception(served: Running) -> None:
    """A chained exception (``raise ... from``, or one raised while handling another) has
    blank lines between its tracebacks: Python's SysLogHandler's message was cut at the
    first of them, the rest taken for garbage and the connection closed, so that every line
    the program logged after it was lost. A blank line does not end a NUL-ending sender's
    message; only its NUL does."""
    with pythons_syslog_handler(served, "billing") as (python, handler):
        handler.setFormatter(logging.Formatter("%(name)s[%(process)d]: %(message)s"))
        python.warning("starting")
        try:
            try:
                raise KeyError("invoice 88")
            except KeyError as error:
                raise ValueError("no such invoice") from error
        except ValueError:
            python.exception("invoice 88 failed")
        python.warning("still logging")
        wait_for(lambda: len(served.lines()) == 3 or bool(closures(served)))
    assert closures(served) == [], messages(served)
    first, failed, after = served.lines("default")
    assert first.message == "starting"
    assert (failed.source, failed.dyno, failed.pri) == ("billing", str(os.getpid()), 11)
    assert failed.message.startswith("invoice 88 failed\nTraceback (most recent call last):\n")
    assert "\nKeyError: 'invoice 88'\n\nThe above exception was the direct cause" in failed.message
    assert failed.message.endswith("\nValueError: no such invoice")
    assert (after.source, after.message) == ("billing", "still logging")


@pytest.mark.subprocess
def test_closures_and_refusals_held_back_are_said_when_serve_stops(herolog_home: Path) -> None:
    """What waits for the end of its minute to be said is said when serve stops before
    then: a serve restarted within the minute would otherwise never tell of it."""
    server = ServeProcess("--port", "0", "--syslog-port", "0", "--syslog-max-connections", "1")
    try:
        m = re.search(r"syslog drain intake on 127\.0\.0\.1:(\d+)", "".join(server.banner))
        assert m, server.banner
        port = int(m.group(1))
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as bad:
                bad.sendall(b"GET / HTTP/1.1\r\n\r\n")
                assert closed_by_server(bad)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            kept.sendall(syslog_frames("kept"))
            wait_for(lambda: stored(herolog_home) == ["kept"])
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                    assert closed_by_server(extra)
            server.proc.send_signal(signal.SIGTERM)
            code, err = server.finish()
    finally:
        server.proc.kill()
        server.finish()
    assert code == 0, err
    said = [x for x in err.splitlines() if "closed" in x or "refused" in x]
    assert len(said) == 4, said
    assert said[0].startswith("herolog serve: closed a syslog connection for what it sent")
    assert said[1].startswith("herolog serve: refused a syslog connection (the last from")
    # the ones within the minute, said as serve stops
    assert sorted(x.split(" (")[0] for x in said[2:]) == [
        "herolog serve: closed 2 syslog connections for what they sent",
        "herolog serve: refused 2 syslog connections",
    ], said


def test_a_nil_hostname_is_no_hostname(served: Running) -> None:
    """RFC 5424's NILVALUE says the sender has no HOSTNAME to give (Vector's syslog source
    leaves the field out): it was stored as the host name "-", which `herolog logs --json`
    printed as "hostname": "-"."""
    with connect(served) as sock:
        sock.sendall(b"<13>1 2024-03-05T09:14:07Z - billing 42 - - no host\n")
        sock.sendall(frame([b"<13>1 - - a - - -"]))  # every nil field there is, octet-counted
        wait_for(lambda: len(served.lines()) == 2)
    lines = served.lines("default")
    assert [(x.source, x.hostname) for x in lines] == [("billing", None), ("a", None)]
    shown = herolog_process("logs", "-a", "default", "--json")
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(x) for x in shown.stdout.splitlines()]
    assert [(x["message"], x["hostname"]) for x in records] == [("no host", None), ("", None)]
