"""syslog-ng relaying to herolog serve as a user's syslog-ng.conf has it: its syslog()
destination (RFC 5424, octet-counted) over TCP and TLS, and its network() one (RFC 3164,
newline-framed) over TCP.

syslog-ng is Debian's own package, fetched with `apt-get download` and unpacked into a cache
folder (bench/tools.py), run in the foreground with a configuration written here, and
stopped by its own pid. Local programs' messages go in as syslog(3) writes them to /dev/log
(a unix-dgram source), an RFC 5424 application's over syslog-ng's syslog() source, so that
what reaches herolog is syslog-ng's own output; what landed is read with `herolog logs
--json`, as a user would."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from bench.tools import library_env
from herolog.parser import frame
from tests.helpers import herolog_process
from tests.interop.conftest import debian_package, free_port, wait_listening
from tests.server.conftest import Running, ServerFactory, own_certificate

PACKAGES = ["syslog-ng-core", "libivykis0", "libnet1", "libwrap0"]
ZONE = "IST-5:30"
"""syslog-ng's and serve's zone (POSIX, so no tzdata is needed): half an hour off any whole
hour, so that a time read in the wrong zone, or as UTC, is off."""
LOG_MSG_SIZE = 65536
"""syslog-ng's default log-msg-size(): the longest message it reads, header and all."""
RELAYED_HOST = "app1.example.com"


@pytest.fixture(scope="session")
def syslog_ng_root() -> Path:
    what = "Debian's syslog-ng (syslog-ng-core)"
    return debian_package("syslog-ng", PACKAGES, "usr/sbin/syslog-ng", what)


class Relay(NamedTuple):
    """A running syslog-ng: where programs log to, and its RFC 5424 syslog() port."""

    proc: subprocess.Popen[bytes]
    dev_log: Path
    port: int
    errors: Path

    def said(self) -> str:
        return self.errors.read_text(errors="replace")


@contextlib.contextmanager
def relaying(root: Path, work: Path, destination: str) -> Iterator[Relay]:
    """syslog-ng taking local programs' messages on a unix-dgram socket and RFC 5424 ones on
    a syslog() source, and forwarding both with ``destination``; stopped at the end."""
    modules = next(root.rglob("libafsocket.so")).parent
    dev_log, port = work / "log", free_port()
    conf = work / "syslog-ng.conf"
    conf.write_text(
        "@version: 3.38\n"
        # A relay's usual options: the HOSTNAME its senders gave, no DNS look-ups.
        "options { keep-hostname(yes); use-dns(no); };\n"
        f'source programs {{ unix-dgram("{dev_log}"); }};\n'
        f'source relayed {{ syslog(ip("127.0.0.1") port({port}) transport("tcp")); }};\n'
        f"destination herolog {{ {destination} }};\n"
        "log { source(programs); source(relayed); destination(herolog); };\n"
    )
    errors = work / "syslog-ng.err"
    with errors.open("wb") as err:  # the child has its own copy
        # Its files named from where it runs: syslog-ng takes no argument that is not ASCII
        # ('Invalid byte sequence in conversion input'), and TMPDIR's path may have some.
        proc = subprocess.Popen(
            [
                str(root / "usr/sbin/syslog-ng"),
                *("-F", "-e", "-f", conf.name, "--module-path", str(modules)),
                *("-p", "syslog-ng.pid", "-R", "syslog-ng.persist", "-c", "syslog-ng.ctl"),
            ],
            cwd=work,
            env={**library_env(root), "TZ": ZONE},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    relay = Relay(proc, dev_log, port, errors)
    wait_listening(
        proc,
        port,
        lambda: (
            "syslog-ng did not start (one of its libraries missing? apt-get install"
            f" syslog-ng-core brings them):\n{relay.said()}"
        ),
        dev_log.exists,
    )
    try:
        yield relay
    finally:
        proc.terminate()
        proc.wait(10)


class Sent(NamedTuple):
    """A message a program logged, and the fields its line should have."""

    message: str
    source: str
    dyno: str
    pri: int
    hostname: str
    msgid: str | None = None
    structured_data: dict[str, dict[str, str]] | None = None


def local_hostname() -> str:
    """The HOSTNAME syslog-ng gives local programs' messages (use-fqdn(no), its default)."""
    return socket.gethostname().partition(".")[0]


def log_locally(relay: Relay, moment: datetime) -> list[Sent]:
    """Log what local programs do, as glibc's syslog(3) writes it to /dev/log
    (``<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE``, no HOSTNAME)."""
    stamp = f"{moment:%b} {moment.day:2} {moment:%H:%M:%S}"
    host = local_hostname()
    programs = [
        ("billing[4711]", Sent("invoice 88 paid", "billing", "4711", 14, host)),
        ("billing", Sent("no pid in this tag", "billing", "-", 13, host)),
        (
            "postfix/smtpd[7301]",
            Sent("connect from unknown[10.0.0.7]", "postfix/smtpd", "7301", 22, host),
        ),
        ("web[3]", Sent("[INFO] GET /orders [200] 12ms", "web", "3", 14, host)),
        ("web[3]", Sent('[x@1 a="b"] is no structured data', "web", "3", 14, host)),
        ("billing[4711]", Sent("reçu 42 € — 東京 ✓", "billing", "4711", 14, host)),
    ]
    traceback = 'Traceback (most recent call last):\n  File "job.py", line 3\nValueError: bad'
    programs.append(("worker[12]", Sent(traceback, "worker", "12", 11, host)))
    # The longest message syslog-ng reads by default: its datagram is LOG_MSG_SIZE bytes.
    head = f"<14>{stamp} billing[4711]: ".encode()
    long = "x" * (LOG_MSG_SIZE - len(head) - len("end.")) + "end."
    programs.append(("billing[4711]", Sent(long, "billing", "4711", 14, host)))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(str(relay.dev_log))
        for tag, sent in programs:
            sock.send(f"<{sent.pri}>{stamp} {tag}: {sent.message}".encode())
    # syslog-ng numbers a local source's messages from 1, in its RFC 5424 output's
    # structured data: a gap would be a message lost on the way.
    return [
        sent._replace(structured_data={"meta": {"sequenceId": str(number)}})
        for number, (_, sent) in enumerate(programs, 1)
    ]


def relay_rfc5424(relay: Relay, moment: datetime) -> Sent:
    """Send an RFC 5424 application's message, with structured data, to syslog-ng's
    syslog() source (octet-counted): its time with microseconds, which syslog-ng's
    default frac-digits(0) leaves out."""
    stamp = moment.replace(microsecond=123456).isoformat()
    sd = '[exampleSDID@32473 iut="3" eventSource="Application"]'
    message = f"<165>1 {stamp} {RELAYED_HOST} billing 4711 ID47 {sd} with structured data"
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(frame([message.encode()]))
    elements = {"exampleSDID@32473": {"iut": "3", "eventSource": "Application"}}
    return Sent("with structured data", "billing", "4711", 165, RELAYED_HOST, "ID47", elements)


def stored_as_json(running: Running, relay: Relay, count: int) -> list[dict[str, Any]]:
    """What `herolog logs --json` shows once ``count`` lines are stored."""
    deadline = time.monotonic() + 30
    while len(running.lines()) < count:
        assert time.monotonic() < deadline, (
            f"{len(running.lines())} of {count} lines stored\nsyslog-ng said:\n{relay.said()}"
            f"\nserve said:\n{running.log.getvalue()}"
        )
        time.sleep(0.05)
    shown = herolog_process("logs", "--json", "-n", "100")
    assert shown.returncode == 0, shown.stderr
    return [json.loads(record) for record in shown.stdout.splitlines()]


def check_lines(
    records: list[dict[str, Any]], sent: list[Sent], moment: datetime, rfc5424: bool
) -> None:
    """Every message is one line, with the fields and time it was logged with (RFC 3164
    has no MSGID or structured data)."""
    assert sorted(r["message"] for r in records) == sorted(s.message for s in sent), records
    at = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    for record in records:
        wanted = next(s for s in sent if s.message == record["message"])
        if not rfc5424:
            wanted = wanted._replace(msgid=None, structured_data=None)
        assert Sent(**{field: record[field] for field in Sent._fields}) == wanted, record
        assert (record["app"], record["timestamp"], record["time"]) == (
            "default",
            moment.isoformat(),
            at,
        ), record


def forward_and_check(
    running: Running,
    root: Path,
    work: Path,
    destination: str,
    *,
    rfc5424: bool,
) -> None:
    moment = datetime.now().astimezone().replace(microsecond=0)
    with relaying(root, work, destination) as relay:
        sent = log_locally(relay, moment)
        if not rfc5424:  # newline-framed: each line of a message stored with its header
            sent = [s._replace(message=line) for s in sent for line in s.message.split("\n")]
        sent.append(relay_rfc5424(relay, moment))
        records = stored_as_json(running, relay, len(sent))
        check_lines(records, sent, moment, rfc5424)
    assert "closed" not in running.log.getvalue(), running.log.getvalue()


@pytest.fixture
def in_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve in syslog-ng's zone, as on the same machine: RFC 3164 times have none."""
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()


@pytest.mark.usefixtures("in_zone")
def test_syslog_ng_forwards_rfc5424_over_tcp(
    make_server: ServerFactory, syslog_ng_root: Path, tmp_path: Path
) -> None:
    """A local program's message of the 64 KiB syslog-ng reads by default went out as a
    frame of 65,574 bytes, over the limit serve had, which closed the connection: that
    message and the ones syslog-ng had sent after it were lost."""
    running = make_server(syslog_port=0)
    destination = f'syslog("127.0.0.1" port({running.syslog_port}) transport("tcp"));'
    forward_and_check(running, syslog_ng_root, tmp_path, destination, rfc5424=True)


@pytest.mark.usefixtures("in_zone")
def test_syslog_ng_forwards_rfc5424_over_tls(
    make_server: ServerFactory, syslog_ng_root: Path, tmp_path: Path
) -> None:
    certfile, keyfile, cafile = own_certificate(tmp_path)
    running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
    destination = (
        f'syslog("127.0.0.1" port({running.syslog_port}) transport("tls")'
        f' tls(ca-file("{cafile}") peer-verify(required-trusted)));'
    )
    forward_and_check(running, syslog_ng_root, tmp_path, destination, rfc5424=True)


@pytest.mark.usefixtures("in_zone")
def test_syslog_ng_forwards_rfc3164_over_tcp(
    make_server: ServerFactory, syslog_ng_root: Path, tmp_path: Path
) -> None:
    """network() frames by newline, and sends a message's newlines as they are: each line
    of a traceback is stored as a line of its own with the message's header, as Heroku
    stores a dyno's lines (serve closed the connection at the second line, and the
    messages syslog-ng had sent after it were lost)."""
    running = make_server(syslog_port=0)
    destination = f'network("127.0.0.1" port({running.syslog_port}) transport("tcp"));'
    forward_and_check(running, syslog_ng_root, tmp_path, destination, rfc5424=False)
