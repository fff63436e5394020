"""serve with peers whose network goes silent: a host that dies, a cable pulled, a firewall
that drops, a NAT that forgets the connection. No reset, no end of stream: packets go
nowhere. Loopback answers a dead peer with a reset at once, so each test runs in a network
namespace of its own (a user namespace too: no root needed), where the peer's address is
routed into a blackhole and out of it again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from herolog.server import protocol
from herolog.store import SQLiteStore
from tests.helpers import fill, herolog_env, in_namespace
from tests.server.conftest import ServerFactory, own_certificate

# Each waits out a silence (keepalive probes, a write deadline): seconds apiece.
pytestmark = pytest.mark.slow

SILENCE = """
import socket, subprocess, threading

def sh(command):
    subprocess.run(command, shell=True, check=True)

# serve at 10.1.1.1, its peer at 10.1.1.2; local addresses are looked up in table local
# (rule 0) before any other rule unless it is moved after them.
sh("ip link set lo up; ip addr add 10.1.1.1/32 dev lo; ip addr add 10.1.1.2/32 dev lo")
sh("ip rule add pref 100 lookup local; ip rule del pref 0")

def silent():
    # Whatever is sent to the peer goes nowhere, its answers included (it sends from 10.1.1.2).
    sh("ip rule add pref 5 to 10.1.1.2 lookup 50; ip route add blackhole default table 50")

def heard():
    sh("ip rule del pref 5; ip route del blackhole default table 50")

def last_words(data, received):
    # the last word of each whole octet-counted frame of data onto received; returns the rest
    while b" " in data:
        size, rest = data.split(b" ", 1)
        if len(rest) < int(size):
            break
        received.append(rest[: int(size)].split()[-1].decode())
        data = rest[int(size):]
    return data

def each_connection(listener, handle):
    # handle(conn) for each connection to listener, in a thread of its own
    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
"""

DEAD_RECEIVER = (
    SILENCE
    + """
import io, os, sys, threading, time
from pathlib import Path
from herolog.server import ServeConfig, Server, run_in_thread
from herolog.server.config import DrainTiming

LAST = int(os.environ["BURST_LAST"])  # the last line of the burst sent into the silence
PAD = "x" * 150 + " " if LAST > 10 else ""  # long lines: a burst of several batches
from herolog.store import SQLiteStore

store_path = Path(sys.argv[1])
receiver = socket.create_server(("10.1.1.2", 0))
received, connections, dead, gone = [], [], set(), threading.Event()

tls = None
if len(sys.argv) > 2:
    import ssl
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(sys.argv[2], sys.argv[3])

def read(conn):
    data = b""
    if tls is not None:
        conn.settimeout(10)
        conn = tls.wrap_socket(conn, server_side=True)
    connections.append(conn)
    conn.settimeout(0.05)
    try:
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                if conn in dead:  # closed here, where no recv() holds it open
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\1" + bytes(7))
                    conn.close()
                    gone.set()
                    return
                continue
            if not chunk:
                return
            data = last_words(data + chunk, received)
    except OSError:
        pass

each_connection(receiver, read)
store = SQLiteStore.open(store_path)
scheme, fragment = ("syslog+tls", "#insecure") if tls else ("syslog", "")
store.add_drain("default", f"{scheme}://10.1.1.2:{receiver.getsockname()[1]}{fragment}")
store.close()
timing = DrainTiming(timeout_s=0.5, backoff_base_s=0.05, backoff_cap_s=0.2)
config = ServeConfig(store_path=store_path, port=0, syslog_port=0, drain_timing=timing)
log = io.StringIO()
server = Server(config, log=log)
stop = run_in_thread(server)
sender = socket.create_connection(("127.0.0.1", server.syslog_port))

def send(first, last):
    for n in range(first, last + 1):
        message = f"<14>1 - host app web.1 - - {PAD}line{n}".encode()
        sender.sendall(b"%d %s" % (len(message), message))

def until(done, seconds):
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    return done()

(worker,) = server.app.forwarder.workers.values()
send(1, 5)
assert until(lambda: len(received) == 5, 10), received
silent()
send(6, LAST)
# The receiver's host dies: what it had not acknowledged is gone with it, and its
# connection, whose reset goes nowhere either.
said = until(lambda: worker.last_error is not None, 8)
dead.add(connections[0])
assert gone.wait(5)
heard()
more = LAST + 1
while not until(lambda: any(int(x[4:]) > LAST for x in received), 0.5) and more < LAST + 70:
    send(more, more)
    more += 1
stop()
failing = [x.split(": ", 2)[-1] for x in log.getvalue().splitlines() if "is failing" in x]
print(failing[0] if said else "nothing told")
print(" ".join(x for x in received if int(x[4:]) <= LAST))
"""
)


@pytest.mark.subprocess
@pytest.mark.parametrize("scheme", ["syslog", "syslog+tls"])
@pytest.mark.parametrize("last", [10, 1000], ids=["a batch", "a burst of batches"])
def test_a_syslog_drain_whose_receiver_goes_silent_loses_no_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str, last: int
) -> None:
    """A syslog drain's batch went into the kernel's send queue and counted as delivered:
    with the receiver's host gone silent, every batch after it too, for as long as the queue
    took them (minutes at a few lines a second), and none of them ever arrived: no error, no
    L10 line, the drain "ok". A batch is delivered once the receiver's TCP has acknowledged
    it, or, while more lines wait (a burst, here 200 KB), once the next batch finds it
    acknowledged: one that is not within the drain's timeout is told as a failure, and sent
    again on a new connection once the receiver is back, with those after it."""
    monkeypatch.setenv("BURST_LAST", str(last))
    tls = [str(path) for path in own_certificate(tmp_path)[:2]] if scheme == "syslog+tls" else []
    done = in_namespace(DEAD_RECEIVER, str(tmp_path / "logs.db"), *tls)
    told, lines = done.stdout.splitlines()
    assert told == "connection lost: timed out", done.stdout
    assert lines.split() == [f"line{n}" for n in range(1, last + 1)], done.stdout


STOPPED_IN_SILENCE = (
    SILENCE
    + """
import io, sys, threading, time
from pathlib import Path
from herolog.server import ServeConfig, Server, run_in_thread
from herolog.server.config import DrainTiming
from herolog.store import SQLiteStore

store_path = Path(sys.argv[1])
receiver = socket.create_server(("10.1.1.2", 0))
received = []

def read(conn):
    data = b""
    with conn:
        while chunk := conn.recv(65536):
            data = last_words(data + chunk, received)

each_connection(receiver, read)
store = SQLiteStore.open(store_path)
store.add_drain("default", f"syslog://10.1.1.2:{receiver.getsockname()[1]}")
store.close()
timing = DrainTiming(timeout_s=0.5, backoff_base_s=0.05, backoff_cap_s=0.2, flush_s=1.0)

def serve():
    config = ServeConfig(store_path=store_path, port=0, syslog_port=0, drain_timing=timing)
    log = io.StringIO()
    server = Server(config, log=log)
    return server, log, run_in_thread(server)

def until(done, seconds):
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    return done()

server, log, stop = serve()
sender = socket.create_connection(("127.0.0.1", server.syslog_port))
for n in range(1, 1001):
    message = f"<14>1 - host app web.1 - - {'x' * 150} line{n}".encode()
    sender.sendall(b"%d %s" % (len(message), message))
    if n == 5:
        assert until(lambda: len(received) == 5, 10), received
        silent()
(worker,) = server.app.forwarder.workers.values()
assert until(lambda: worker.last_error is not None, 8)
stop()
print([x.split("): ", 1)[-1].split(":")[0] for x in log.getvalue().splitlines() if "yet" in x])
heard()
server, log, stop = serve()
until(lambda: len(received) >= 1000, 10)
stop()
print(len(set(received)))
"""
)


@pytest.mark.subprocess
def test_a_syslog_drain_stopped_while_its_receiver_is_silent_leaves_its_lines_to_the_next(
    tmp_path: Path,
) -> None:
    """A batch sent while more lines waited was counted as delivered before the receiver's
    TCP had acknowledged it, and the drain's position passed it: stopped while the receiver
    was silent, serve saved it as delivered, and its lines (385 here) were never sent
    again. They are left to the next serve, told on the log as not delivered yet."""
    done = in_namespace(STOPPED_IN_SILENCE, str(tmp_path / "logs.db"))
    assert done.stdout.splitlines() == ["['995 lines not delivered yet']", "1000"], done.stdout


DEAD_SENDER = (
    SILENCE
    + """
import io, ssl, sys, time
from pathlib import Path
from herolog.server import ServeConfig, Server, run_in_thread
from herolog.filters import LineFilter
from herolog.server import syslog
from herolog.store import SQLiteStore

syslog.KEEPALIVE_IDLE_S, syslog.KEEPALIVE_INTERVAL_S, syslog.KEEPALIVE_PROBES = 1, 1, 2
tls = dict(certfile=Path(sys.argv[2]), keyfile=Path(sys.argv[3])) if len(sys.argv) > 2 else {}
config = ServeConfig(
    store_path=Path(sys.argv[1]), host="10.1.1.1", insecure_no_auth=True, port=0,
    syslog_port=0, **tls
)
server = Server(config, log=io.StringIO())
stop = run_in_thread(server)

def until(done, seconds):
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    return done()

def stored():
    store = SQLiteStore.open(config.store_path)
    try:
        return len(store.last(LineFilter(), 10)[0])
    finally:
        store.close()

sender = socket.socket()
sender.bind(("10.1.1.2", 0))
sender.connect(("10.1.1.1", server.syslog_port))
if tls:
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    sender = client.wrap_socket(sender)
sender.sendall(b"<14>1 - host app web.1 - - before the sender's host died\\n")
assert until(lambda: stored() == 1, 10)
assert len(server.syslog._connections) == 1
silent()  # and the sender sends nothing more: serve only reads, and hears nothing
print("released" if until(lambda: not server.syslog._connections, 10) else "still held")
stop()
"""
)


@pytest.mark.subprocess
@pytest.mark.parametrize("scheme", ["syslog", "syslog+tls"])
def test_a_syslog_sender_whose_host_dies_is_let_go(tmp_path: Path, scheme: str) -> None:
    """A sender whose host died, or whose network or NAT forgot the connection, sends no
    reset: serve, which only reads a syslog connection, held it for ever (its file, what it
    had half-sent, one of --syslog-max-connections, which enough of them would fill). TCP
    keep-alives now find such a peer gone once it has been quiet a while."""
    tls = [str(path) for path in own_certificate(tmp_path)[:2]] if scheme == "syslog+tls" else []
    done = in_namespace(DEAD_SENDER, str(tmp_path / "logs.db"), *tls)
    assert done.stdout == "released\n", done.stdout


VANISHED_READER = (
    SILENCE
    + """
import io, sys, time
from pathlib import Path
import httpx
from herolog.server import ServeConfig, Server, protocol, run_in_thread, sessions
from tests.helpers import line, store_lines

protocol.UNACKNOWLEDGED_S, sessions.KEEPALIVE_S = 1.0, 0.2
store_lines(Path(sys.argv[1]), "demo", line("a line before the tail"))
config = ServeConfig(
    store_path=Path(sys.argv[1]), host="10.1.1.1", insecure_no_auth=True, port=0, api_key="k"
)
server = Server(config, log=io.StringIO())
stop = run_in_thread(server)
base = f"http://10.1.1.1:{server.http_port}"
answer = httpx.post(  # no proxy from the environment: none is in this namespace
    f"{base}/apps/demo/log-sessions",
    json={"tail": True},
    headers={"Authorization": "Bearer k"},
    trust_env=False,
)
path = answer.json()["logplex_url"].split(str(server.http_port), 1)[1]
reader = socket.socket()
reader.bind(("10.1.1.2", 0))
reader.connect(("10.1.1.1", server.http_port))
reader.sendall(f"GET {path} HTTP/1.1\\r\\nHost: 10.1.1.1\\r\\nAccept: text/event-stream\\r\\n\\r\\n".encode())
got = b""
while b"a line before the tail" not in got:
    got += reader.recv(65536)
readers = server.app.sessions._readers
assert len(readers) == 1
silent()  # the reader's host is gone: its keep-alives go unacknowledged

deadline = time.monotonic() + 10
while readers and time.monotonic() < deadline:
    time.sleep(0.05)
print("released" if not readers else "still held")
stop()
"""
)


@pytest.mark.subprocess
def test_a_tail_whose_reader_vanished_is_let_go(tmp_path: Path) -> None:
    """A tail's reader whose host vanished (a laptop closed, a network gone silent) sends no
    reset: serve kept its stream, its session and a tail buffer of lines until the kernel
    gave up retransmitting, about 15 minutes. What serve sends now times out on its own."""
    done = in_namespace(VANISHED_READER, str(tmp_path / "logs.db"))
    assert done.stdout == "released\n", done.stdout


@pytest.mark.subprocess
def test_a_history_whose_reader_pauses_is_sent_whole(
    make_server: ServerFactory, herolog_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``herolog logs --server -n 30000 | less``, its reader on the first page a while: the
    client stops reading, its window shuts, and its system answers serve's probes of it.
    TCP_USER_TIMEOUT cut such a connection off all the same (Linux counts a shut window as
    unacknowledged), and the history ended in "stopped sending the history before its end".
    Only a client whose system answers nothing is let go. (Here a 2 s timeout and a 3.5 s
    pause: longer than the timeout, and short enough that the probes' doubling gap, on
    loopback, is still under it; with a 0.4 s timeout the gap outgrows it and the history is
    cut off.)"""
    monkeypatch.setattr(protocol, "UNACKNOWLEDGED_S", 2.0)
    herolog_home.mkdir()
    store = SQLiteStore.open(herolog_home / "logs.db")
    store.set_history(100_000)
    fill(store, "demo", [f"line {n} " + "x" * 300 for n in range(30_000)])
    store.close()
    running = make_server(insecure_no_auth=True, api_key="k")
    command = ["logs", "--server", running.url, "-a", "demo", "-n", "30000"]
    with subprocess.Popen(
        [sys.executable, "-m", "herolog", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=herolog_env(HEROLOG_API_KEY="k"),
    ) as logs:
        assert logs.stdout is not None
        assert logs.stderr is not None
        first = logs.stdout.readline()
        time.sleep(3.5)  # the reader of the first page; serve fills the client's window
        rest = logs.stdout.read()  # not communicate(): it passes by what readline() buffered
        said = logs.stderr.read()
    assert (logs.returncode, said.decode()) == (0, "")
    assert (first + rest).count(b"\n") == 30_000
