"""rsyslog forwarding to herolog serve as a user's rsyslog.conf has it: its standard
templates, newline and octet-counted framing, plain TCP and TLS (gtls).

rsyslog is Debian's own package, fetched with `apt-get download` and unpacked into a cache
folder (bench/tools.py), run in the foreground with a configuration written here, and
stopped by its own pid."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import trustme

from bench.tools import library_env
from herolog import timestamps
from herolog.parser import frame
from tests.helpers import herolog_process
from tests.interop.conftest import debian_package, free_port, wait_listening
from tests.server.conftest import Running, ServerFactory

PACKAGES = ["rsyslog", "rsyslog-gnutls", "libestr0", "libfastjson4"]


@pytest.fixture(scope="session")
def rsyslog_root() -> Path:
    return debian_package("rsyslog", PACKAGES, "usr/sbin/rsyslogd", "Debian's rsyslog")


@contextlib.contextmanager
def forwarding_to(
    root: Path,
    work: Path,
    port: int,
    action: str,
    ca: Path | None = None,
    *,
    escape_control_characters: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """rsyslogd taking syslog on ``port`` (newline-framed or octet-counted) and forwarding
    it with ``action``, stopped at the end; without ``escape_control_characters``, as a
    user has it who wants a traceback's line breaks kept (rsyslog writes them as #012)."""
    modules = next(root.rglob("imptcp.so")).parent
    ca_file = f' DefaultNetstreamDriverCAFile="{ca}"' if ca else ""
    if not escape_control_characters:
        ca_file += ' parser.escapeControlCharactersOnReceive="off"'
    (work / "rsyslog.conf").write_text(
        f'global(workDirectory="{work}"{ca_file})\n'
        f'module(load="{modules}/imptcp.so")\n'
        f'input(type="imptcp" address="127.0.0.1" port="{port}")\n'
        f'action(type="omfwd" protocol="tcp" target="127.0.0.1" {action})\n'
    )
    with (work / "rsyslog.err").open("wb") as err:  # the child has its own copy
        proc = subprocess.Popen(
            [
                str(root / "usr/sbin/rsyslogd"),
                *("-n", "-M", str(modules), "-f", str(work / "rsyslog.conf")),
                *("-i", str(work / "rsyslog.pid")),
            ],
            env=library_env(root),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    wait_listening(proc, port, lambda: (work / "rsyslog.err").read_text())
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def send_both_kinds(port: int) -> None:
    """An RFC 5424 message and a BSD one, as local programs give them to rsyslog."""
    now = datetime.now().astimezone()
    bsd = f"{now:%b} {now.day:2} {now:%H:%M:%S}"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f'<156>1 {now.isoformat()} myhost billing 4711 - [meta@1 a="b"] from 5424\n'
            f"<156>{bsd} myhost billing[4711]: from bsd\n".encode()
        )


def check_stored(running: Running, work: Path, template: str) -> None:
    # rsyslog's MSG of a BSD message keeps the space after its TAG's colon, and RFC 5424
    # has it sent as it is (its other templates drop it): content, which herolog keeps.
    bsd = " from bsd" if template == "RSYSLOG_SyslogProtocol23Format" else "from bsd"
    deadline = time.monotonic() + 30
    while len(running.lines()) < 2:
        assert time.monotonic() < deadline, (work / "rsyslog.err").read_text()
        time.sleep(0.05)
    lines = running.lines("default")
    assert sorted([x.message for x in lines], key=str.strip) == ["from 5424", bsd], lines
    for line in lines:
        assert (line.source, line.dyno, line.pri, line.hostname) == (
            "billing",
            "4711",
            156,
            "myhost",
        )
        arrived = timestamps.from_instant(line.received_at)
        assert abs((timestamps.from_instant(line.time) - arrived).total_seconds()) < 60, line


@pytest.mark.parametrize(
    ("template", "framing"),
    [
        ("RSYSLOG_TraditionalForwardFormat", ""),  # omfwd's default
        ("RSYSLOG_ForwardFormat", ""),
        ("RSYSLOG_SyslogProtocol23Format", ""),
        ("RSYSLOG_SyslogProtocol23Format", 'TCP_Framing="octet-counted"'),
        ("RSYSLOG_ForwardFormat", 'TCP_Framing="octet-counted"'),
    ],
)
def test_rsyslog_forwards_over_tcp(
    make_server: ServerFactory, rsyslog_root: Path, tmp_path: Path, template: str, framing: str
) -> None:
    """What rsyslog forwards by default (RFC 3164) was stored whole as unknown[unknown]
    lines, `<156>` and all, and RSYSLOG_ForwardFormat's too, whose time has its zone."""
    running = make_server(syslog_port=0)
    port = free_port()
    action = f'port="{running.syslog_port}" template="{template}" {framing}'
    with forwarding_to(rsyslog_root, tmp_path, port, action):
        send_both_kinds(port)
        check_stored(running, tmp_path, template)


@pytest.mark.parametrize(
    "template", ["RSYSLOG_SyslogProtocol23Format", "RSYSLOG_TraditionalForwardFormat"]
)
def test_rsyslog_forwards_over_tls(
    make_server: ServerFactory, rsyslog_root: Path, tmp_path: Path, template: str
) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(certfile))
    issued.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
    port = free_port()
    action = (
        f'port="{running.syslog_port}" template="{template}" TCP_Framing="octet-counted"'
        ' StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"'
        ' StreamDriverPermittedPeers="localhost"'  # rsyslog checks DNS names, not addresses
    )
    with forwarding_to(rsyslog_root, tmp_path, port, action, cafile):
        send_both_kinds(port)
        check_stored(running, tmp_path, template)
    assert "closed" not in running.log.getvalue()


@pytest.mark.parametrize("template", ["RSYSLOG_TraditionalForwardFormat", "RSYSLOG_ForwardFormat"])
def test_rsyslog_forwards_a_message_with_no_procid(
    make_server: ServerFactory, rsyslog_root: Path, tmp_path: Path, template: str
) -> None:
    """An RFC 5424 sender's message with the nil PROCID (util-linux's logger --rfc5424
    without --id) goes out of rsyslog's RFC 3164 templates with its APP-NAME alone as the
    TAG, no brackets and no colon (`<13>Mar  5 09:14:07 myhost billing invoice paid`),
    which herolog stored whole as an unknown[unknown] line, `<13>` and all."""
    running = make_server(syslog_port=0)
    port = free_port()
    now = datetime.now().astimezone()
    with forwarding_to(
        rsyslog_root, tmp_path, port, f'port="{running.syslog_port}" template="{template}"'
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"<13>1 {now.isoformat()} myhost billing - - - invoice paid\n".encode())
        deadline = time.monotonic() + 30
        while not running.lines():
            assert time.monotonic() < deadline, (tmp_path / "rsyslog.err").read_text()
            time.sleep(0.05)
    (line,) = running.lines("default")
    got = (line.source, line.dyno, line.pri, line.hostname, line.message)
    assert got == ("billing", "-", 13, "myhost", "invoice paid")


def test_rsyslog_forwards_a_message_of_several_lines_newline_framed(
    make_server: ServerFactory, rsyslog_root: Path, tmp_path: Path
) -> None:
    """rsyslog keeping control characters forwards a message of several lines with its
    default framing (TCP_Framing="traditional") as it is, newline-framed: each line is
    stored with the message's header. A line that started with `<` (an HTML body) was taken
    for a message of its own, with no header, and so were the lines after it; one that
    started with digits and `<` (an asyncio task listed) for an octet count, which ate what
    followed and closed the connection, losing the messages rsyslog sent after it."""
    running = make_server(syslog_port=0)
    port = free_port()
    now = datetime.now().astimezone().replace(microsecond=0)
    stamp = f"{now:%b} {now.day:2} {now:%H:%M:%S}"
    body = [
        "GET /orders failed, body:",
        "<html>",
        "  <body>Not Found</body>",
        "</html>",
        "tasks still pending:",
        "0 <Task pending name='Task-1' coro=<main() running>>",
        "12 <Task pending name='Task-2'>",
    ]
    messages = [(11, "\n".join(body)), (14, "after it")]
    action = f'port="{running.syslog_port}" TCP_Framing="traditional"'
    with forwarding_to(
        rsyslog_root, tmp_path, port, action, escape_control_characters=False
    ) as proc:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # octet-counted into rsyslog, so that the line breaks reach it as they are
            sock.sendall(
                frame(
                    f"<{pri}>{stamp} myhost worker[12]: {text}".encode() for pri, text in messages
                )
            )
        deadline = time.monotonic() + 30
        while len(running.lines()) < len(body) + 1 and "closed" not in running.log.getvalue():
            said = (tmp_path / "rsyslog.err").read_text()
            assert proc.poll() is None, said
            assert time.monotonic() < deadline, said
            time.sleep(0.05)
    assert "closed" not in running.log.getvalue(), running.log.getvalue()
    shown = herolog_process("logs", "--json", "-n", "100")
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(record) for record in shown.stdout.splitlines()]
    got = [(r["source"], r["dyno"], r["pri"], r["hostname"], r["message"]) for r in records]
    assert got == [
        *[("worker", "12", 11, "myhost", line) for line in body],
        ("worker", "12", 14, "myhost", "after it"),
    ]
    assert {r["timestamp"] for r in records} == {now.isoformat()}
