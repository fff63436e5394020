"""Applications logging straight to herolog serve's syslog port from their own logging
library, as their users configure them: Node's winston with winston-syslog and pino with pino-syslog, Java's log4j2
(its Syslog and Socket appenders with the RFC 5424 layout) and Python's
rfc5424-logging-handler, over TCP and TLS.

Each sender is the real library, installed once into a cache folder: the Node ones with
npm, log4j2 from Debian's package (apt-get download, as rsyslog is), rfc5424-logging-handler
with pip into a folder of its own (no project dependency). Each test runs a real serve with
--syslog-port, has the library log what an application logs (levels, structured data, an
exception's stack trace, non-ASCII text, a message of 60,000 bytes, a burst) and checks
what `herolog logs --json` shows, field by field."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pytest

from bench.tools import cache
from herolog.server.syslog import MAX_FRAME
from tests.helpers import herolog_process
from tests.interop.conftest import debian_package, free_port
from tests.server.conftest import Running, ServerFactory, own_certificate, running_server

SENDERS = Path(__file__).parent / "senders"
NODE_PACKAGES = [
    *("winston@3.19.0", "winston-syslog@2.7.1"),
    *("pino@10.4.0", "pino-syslog@4.0.0", "pino-socket@8.0.0"),
]
RFC5424_HANDLER = "rfc5424-logging-handler==1.4.3"
LOG4J2 = "usr/share/java/log4j-core.jar"
NON_ASCII = "naïve café ☕ 日本語 — ünïcödé"
LONG = 60_000
"""A long message's length: under the 65 KiB serve stores whole, with room for its header."""
OVER = 100_000
"""A message over that limit (a stack trace of nested causes): cut, and the rest of it
skipped, as serve goes on with what follows it."""
BURST = 500
LOCAL0 = 16 * 8
"""The PRI of a message of facility local0, the one these senders are set to, less its
severity."""
INFO, NOTICE, WARNING, ERROR = 6, 5, 4, 3


def install_failed(what: str, why: str) -> NoReturn:
    pytest.fail(f"the application sender tests run {what}, and {why}", pytrace=False)


@pytest.fixture(scope="session")
def node_packages() -> Path:
    """A folder whose node_modules holds winston, winston-syslog, pino, pino-syslog and
    pino-socket, installed with npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        install_failed(
            "winston-syslog and pino-syslog",
            "they need Node.js and npm: install them (apt-get install nodejs npm)",
        )
    # A folder of its own for each set of versions.
    where = cache(
        "node-senders-" + hashlib.sha256(" ".join(NODE_PACKAGES).encode()).hexdigest()[:12]
    )
    installed = where / "node_modules" / ".installed"
    if installed.exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *NODE_PACKAGES],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        install_failed(
            "winston-syslog and pino-syslog",
            f"npm install {' '.join(NODE_PACKAGES)} failed (exit {done.returncode}); it needs"
            f" the npm registry once, then uses the copy in {where}:\n{done.stderr[-2000:]}",
        )
    installed.touch()
    return where


@pytest.fixture(scope="session")
def rfc5424_handler() -> Path:
    """A folder holding rfc5424-logging-handler and what it needs, installed with pip."""
    where = cache(RFC5424_HANDLER.replace("==", "-"))
    if (where / "rfc5424logging").is_dir():
        return where
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(where), RFC5424_HANDLER],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not (where / "rfc5424logging").is_dir():
        install_failed(
            "rfc5424-logging-handler",
            f"pip install --target {where} {RFC5424_HANDLER} failed (exit {done.returncode});"
            f" it needs PyPI once:\n{done.stderr[-2000:]}",
        )
    return where


@pytest.fixture(scope="session")
def log4j2_classpath(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The class path of Debian's log4j2 and the compiled Log4j2Send."""
    javac, java = shutil.which("javac"), shutil.which("java")
    if javac is None or java is None:
        install_failed(
            "log4j2", "they need a JDK (java and javac): apt-get install default-jdk-headless"
        )
    root = debian_package("log4j2", ["liblog4j2-java"], LOG4J2, "Debian's log4j2")
    jars = os.pathsep.join(
        str(root / "usr/share/java" / jar) for jar in ("log4j-api.jar", "log4j-core.jar")
    )
    classes = tmp_path_factory.mktemp("log4j2")
    done = subprocess.run(
        [str(javac), "-d", str(classes), "-cp", jars, str(SENDERS / "Log4j2Send.java")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        install_failed("log4j2", f"javac could not compile Log4j2Send.java:\n{done.stderr[-2000:]}")
    return os.pathsep.join([jars, str(classes)])


def header(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["source"], record["dyno"], record["pri"], record["hostname"])


class Sender:
    """A sender process taking what to log a line at a time on its stdin, and saying "ok"
    on its stdout once it has logged it."""

    def __init__(self, command: list[str], **options: Any) -> None:
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            **options,
        )

    def ask(self, line: str) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer == "ok\n", answer + self.said()

    def said(self) -> str:
        """What the sender wrote to stderr, once it has ended (killed if need be)."""
        if self.proc.poll() is None:
            self.proc.kill()
        said: str = self.proc.communicate()[1]
        return said

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            status = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            status = None
        assert status == 0, f"the sender ended with {status}:\n{self.said()}"
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


@contextlib.contextmanager
def sending_as(sender: Sender) -> Iterator[None]:
    """The block's sender, told to end after it (ended at once if it fails)."""
    try:
        yield
    except BaseException:
        sender.said()
        raise
    sender.close()


def wait_for(running: Running, done: Callable[[list[str]], bool], sender: Sender) -> None:
    """Wait until the messages stored satisfy ``done``, failing with what the sender and
    serve said if the sender ends or 30 s pass first."""
    deadline = time.monotonic() + 30
    while not done([line.message for line in running.lines()]):
        if sender.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"not stored; the sender said:\n{sender.said()}\nserve said:\n{running.log.getvalue()}"
            )
        time.sleep(0.05)


def records() -> list[dict[str, Any]]:
    shown = herolog_process("logs", "--json", "-n", "1500")
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines()]


def check_times(got: list[dict[str, Any]]) -> None:
    """Each line's time is when it was logged, give or take what a timestamp in whole
    seconds (RFC 3164's) loses."""
    for record in got:
        sent = datetime.fromisoformat(record["time"])
        arrived = datetime.fromisoformat(record["received_at"])
        assert timedelta(seconds=-1) < arrived - sent < timedelta(seconds=30), record


def winston(packages: Path, options: dict[str, Any], zone: str | None = None) -> Sender:
    env = {**os.environ, "NODE_PATH": str(packages / "node_modules")}
    if zone:
        env["TZ"] = zone
    command = ["node", str(SENDERS / "winston_send.js"), json.dumps(options)]
    return Sender(command, env=env)


def winston_options(port: int, kind: str, protocol: str = "tcp4") -> dict[str, Any]:
    """winston-syslog's options as a user sets them to log to serve over TCP: ``eol``
    newline-frames its messages, which it otherwise sends with nothing between them."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "protocol": protocol,
        "type": kind,
        "app_name": "billing",
        "localhost": "myhost",
        "facility": "local0",
        "eol": "\n",
    }


@pytest.mark.parametrize(
    ("kind", "protocol"),
    [("RFC5424", "tcp4"), ("BSD", "tcp4"), ("RFC5424", "tls4"), ("BSD", "tls4")],
)
def test_winston_syslog(
    make_server: ServerFactory, node_packages: Path, tmp_path: Path, kind: str, protocol: str
) -> None:
    """What winston logs through winston-syslog, RFC 5424 or BSD, over TCP or TLS, is
    stored with its app name, pid, host name and severity; an error's stack, newline-framed,
    as lines each with that header, as Heroku stores a dyno's."""
    if protocol == "tls4":
        certfile, keyfile, cafile = own_certificate(tmp_path)
        running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
    else:
        running = make_server(syslog_port=0)
    assert running.syslog_port is not None
    options = winston_options(running.syslog_port, kind, protocol)
    if protocol == "tls4":
        options["protocolOptions"] = {"ca": cafile.read_text()}
    # glossy, which writes winston-syslog's RFC 5424 timestamps, writes the time of day in
    # UTC and the offset of the local zone: right only in UTC.
    sender = winston(node_packages, options, zone="UTC" if kind == "RFC5424" else None)
    with sending_as(sender):
        sender.ask(json.dumps({"level": "info", "message": "invoice 88 paid"}))
        sender.ask(json.dumps({"level": "warning", "message": "disk 91% full"}))
        sender.ask(json.dumps({"error": "card declined"}))
        sender.ask(json.dumps({"level": "info", "message": NON_ASCII}))
        sender.ask(json.dumps({"level": "info", "message": "y" * LONG}))
        sender.ask(json.dumps({"level": "notice", "message": "burst", "repeat": BURST}))
        wait_for(running, lambda messages: f"burst {BURST - 1}" in messages, sender)
    assert "closed" not in running.log.getvalue(), running.log.getvalue()
    got = records()
    stack = [r["message"] for r in got if r["pri"] == LOCAL0 + ERROR]
    assert stack[0] == "Error: card declined", stack
    assert len(stack) > 1, stack
    assert all(line.startswith("    at ") for line in stack[1:]), stack
    assert [(r["pri"] - LOCAL0, r["message"]) for r in got] == [
        (INFO, "invoice 88 paid"),
        (WARNING, "disk 91% full"),
        *[(ERROR, line) for line in stack],
        (INFO, NON_ASCII),
        (INFO, "y" * LONG),
        *[(NOTICE, f"burst {i}") for i in range(BURST)],
    ]
    fields = {
        (r["source"], r["dyno"], r["hostname"], r["msgid"], r["structured_data"]) for r in got
    }
    assert fields == {("billing", str(sender.proc.pid), "myhost", None, None)}
    check_times(got)


@pytest.mark.slow
def test_winston_syslog_reconnects_to_a_restarted_serve(
    herolog_home: Path, node_packages: Path
) -> None:
    """A serve restarted on the same port gets what winston-syslog queued while it was
    down, and what it logs after, on the connection it makes again."""
    port = free_port()
    sender = winston(node_packages, winston_options(port, "RFC5424"), zone="UTC")
    store = herolog_home / "logs.db"
    with sending_as(sender):
        with running_server(store, syslog_port=port) as first:
            sender.ask(json.dumps({"level": "info", "message": "before the restart"}))
            wait_for(first, lambda messages: "before the restart" in messages, sender)
        # winston-syslog queues what it logs once it has seen its connection close
        sender.ask(json.dumps({"await": "disconnected"}))
        sender.ask(json.dumps({"level": "info", "message": "while serve was down"}))
        with running_server(store, syslog_port=port) as second:
            sender.ask(json.dumps({"level": "info", "message": "after the restart"}))
            wait_for(second, lambda messages: "after the restart" in messages, sender)
    got = records()
    assert [r["message"] for r in got] == [
        "before the restart",
        "while serve was down",
        "after the restart",
    ]
    assert {header(r) for r in got} == {("billing", str(sender.proc.pid), LOCAL0 + INFO, "myhost")}


LOG4J2_APPENDERS = {
    # The Syslog appender over TCP sends nothing between messages unless told newLine.
    "newline": """<Syslog name="newline" host="127.0.0.1" port="{port}" protocol="TCP"
        format="RFC5424" appName="billing-newline" newLine="true" {layout}/>""",
    # The RFC 5424 layout octet-counts with useTlsMessageFormat, over plain TCP too.
    "octets": """<Socket name="octets" host="127.0.0.1" port="{port}" protocol="TCP">
        <Rfc5424Layout appName="billing-octets" useTlsMessageFormat="true" {layout}/>
      </Socket>""",
    # Over SSL the Syslog appender octet-counts.
    "tls": """<Syslog name="tls" host="127.0.0.1" port="{port}" protocol="SSL" format="RFC5424"
        appName="billing-tls" {layout}>
        <SSL><TrustStore location="{truststore}" password="changeit" type="PKCS12"/></SSL>
      </Syslog>""",
}
LOG4J2_LAYOUT = (
    'facility="LOCAL0" id="app" enterpriseNumber="32473" messageId="Audit" includeMDC="true"'
    ' mdcId="mdc" exceptionPattern="%ex{full}"'
)


def log4j2_configuration(
    directory: Path, port: int, appenders: list[str], truststore: Path | None = None
) -> Path:
    written = "\n".join(
        LOG4J2_APPENDERS[name].format(port=port, layout=LOG4J2_LAYOUT, truststore=truststore)
        for name in appenders
    )
    refs = "".join(f'<AppenderRef ref="{name}"/>' for name in appenders)
    path = directory / "log4j2.xml"
    path.write_text(
        f'<Configuration status="warn" dest="err"><Appenders>{written}</Appenders>'
        f'<Loggers><Root level="debug">{refs}</Root></Loggers></Configuration>'
    )
    return path


@pytest.mark.parametrize("appenders", [["newline", "octets"], ["tls"]], ids=["tcp", "tls"])
def test_log4j2(
    make_server: ServerFactory, log4j2_classpath: str, tmp_path: Path, appenders: list[str]
) -> None:
    """What log4j2 logs through its Syslog appender (newline-framed over TCP, octet-counted
    over SSL) and its Socket appender with the RFC 5424 layout (octet-counted) is stored
    with its app name, pid, host name, severity, MSGID and structured data (of a
    StructuredDataMessage and of the thread context); an exception's stack trace as one
    message where octet-counted, and as lines each with the message's header where not."""
    truststore = None
    if appenders == ["tls"]:
        certfile, keyfile, cafile = own_certificate(tmp_path)
        running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
        truststore = tmp_path / "trust.p12"
        subprocess.run(
            [
                *("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", str(cafile)),
                *("-keystore", str(truststore), "-storetype", "PKCS12", "-storepass", "changeit"),
            ],
            check=True,
            capture_output=True,
        )
    else:
        running = make_server(syslog_port=0)
    assert running.syslog_port is not None
    configuration = log4j2_configuration(tmp_path, running.syslog_port, appenders, truststore)
    sender = Sender(
        [
            "java",
            "-cp",
            log4j2_classpath,
            f"-Dlog4j.configurationFile={configuration}",
            "Log4j2Send",
        ]
    )
    assert sender.proc.stdout is not None
    hostname = sender.proc.stdout.readline().strip()
    with sending_as(sender):
        for asked in [
            "info invoice 88 paid",
            "warn disk 91% full",
            "error could not pay",
            f"info {NON_ASCII}",
            "structured order paid",
            "mdc with the request's id",
            f"long {LONG}",
            f"long {OVER}",
            f"burst {BURST}",
        ]:
            sender.ask(asked)
        wait_for(
            running,
            lambda messages: messages.count(f"burst {BURST - 1}") == len(appenders),
            sender,
        )
    # The message over serve's limit is cut, and the connection goes on: it closed, and
    # log4j2 lost what it logged while it connected again (3 messages, 1.5 s).
    assert "closed" not in running.log.getvalue(), running.log.getvalue()
    assert "cut" in running.log.getvalue(), running.log.getvalue()
    source = (SENDERS / "Log4j2Send.java").read_text().splitlines()
    thrown = next(n for n, line in enumerate(source, 1) if 'case "error"' in line)
    stack = [
        "could not pay",
        "java.lang.IllegalStateException: payment refused",
        f"\tat Log4j2Send.main(Log4j2Send.java:{thrown})",
        "Caused by: java.io.IOException: card declined",
        "\t... 1 more",
    ]
    got = records()
    for name in appenders:
        mine = [r for r in got if r["source"] == f"billing-{name}"]
        cut = mine[len(mine) - BURST - 1]["message"]
        assert MAX_FRAME - 300 < len(cut) < MAX_FRAME, len(cut)  # less its header
        errors = [(ERROR, line, "Audit", None) for line in stack]
        if name != "newline":  # octet-counted: the stack trace is one message
            errors = [(ERROR, "\n".join(stack), "Audit", None)]
        assert [
            (r["pri"] - LOCAL0, r["message"], r["msgid"], r["structured_data"]) for r in mine
        ] == [
            (INFO, "invoice 88 paid", "Audit", None),
            (WARNING, "disk 91% full", "Audit", None),
            *errors,
            (INFO, NON_ASCII, "Audit", None),
            (INFO, "order paid", "Paid", {"order@32473": {"id": "88", "note": 'said "yes" [ok]'}}),
            (INFO, "with the request's id", "Audit", {"mdc@32473": {"request_id": "r-42"}}),
            (INFO, "x" * LONG, "Audit", None),
            (INFO, "x" * len(cut), "Audit", None),
            *[(INFO, f"burst {i}", "Audit", None) for i in range(BURST)],
        ], name
        assert {(r["dyno"], r["hostname"]) for r in mine} == {(str(sender.proc.pid), hostname)}
    assert {r["source"] for r in got} == {f"billing-{name}" for name in appenders}
    check_times(got)


RFC5424_SENDER = """
import logging, socket, sys
from rfc5424logging import LOG_LOCAL0, Rfc5424SysLogHandler, transport

port, framing, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3]
handler = Rfc5424SysLogHandler(
    address=("127.0.0.1", port),
    socktype=socket.SOCK_STREAM,
    framing=getattr(transport, framing),
    facility=LOG_LOCAL0,
    hostname="myhost",
    appname="billing",
    procid="web.1",
    enterprise_id=32473,
    structured_data={"meta": {"region": "eu-west"}},
    tls_enable=bool(tls),
    tls_ca_bundle=tls or None,
)
log = logging.getLogger("billing")
log.addHandler(handler)
log.setLevel(logging.DEBUG)
log.info("invoice 88 paid", extra={"msgid": "PAY", "structured_data": {"order@32473": {"id": "88", "note": 'said "yes" [ok]'}}})
log.warning("disk 91% full")
try:
    raise ValueError("card declined")
except ValueError:
    log.exception("could not pay")
log.info(sys.argv[4])
for size in sys.argv[5].split(","):
    log.info("x" * int(size))
for i in range(int(sys.argv[6])):
    log.info("burst %d", i)
handler.close()
"""


@pytest.mark.parametrize(
    ("framing", "tls"),
    [
        ("FRAMING_OCTET_COUNTING", False),
        ("FRAMING_NON_TRANSPARENT", False),
        ("FRAMING_OCTET_COUNTING", True),
    ],
    ids=["octet-counted", "non-transparent", "tls"],
)
def test_rfc5424_logging_handler(
    make_server: ServerFactory, rfc5424_handler: Path, tmp_path: Path, framing: str, tls: bool
) -> None:
    """What Python's rfc5424-logging-handler sends over TCP or TLS is stored with its app
    name, PROCID, host name, severity, MSGID and structured data, the UTF-8 BOM it puts
    before each message left out; a traceback is one message where octet-counted, and its
    line breaks are the two characters `\\n` the handler writes where not. A message over
    serve's limit is cut, and nothing logged after it is lost (the connection closed at it, and
    the handler's next message was lost while it reconnected)."""
    cafile = ""
    if tls:
        certfile, keyfile, ca = own_certificate(tmp_path)
        running = make_server(syslog_port=0, certfile=certfile, keyfile=keyfile)
        cafile = str(ca)
    else:
        running = make_server(syslog_port=0)
    script = tmp_path / "send.py"
    script.write_text(RFC5424_SENDER)
    sent = subprocess.run(
        [
            sys.executable,
            str(script),
            str(running.syslog_port),
            framing,
            cafile,
            NON_ASCII,
            f"{LONG},{OVER}",
            str(BURST),
        ],
        env={**os.environ, "PYTHONPATH": str(rfc5424_handler)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr == ""  # the handler reports what it could not send there
    deadline = time.monotonic() + 30
    while f"burst {BURST - 1}" not in [line.message for line in running.lines()]:
        assert time.monotonic() < deadline, running.log.getvalue()
        time.sleep(0.05)
    assert "closed" not in running.log.getvalue(), running.log.getvalue()
    said = running.log.getvalue()
    # Its size is the message's, header and all.
    assert re.search(r"cut a syslog message of 100,[0-9]{3} bytes to ", said), said
    got = records()
    (traceback,) = (r["message"] for r in got if r["pri"] == LOCAL0 + ERROR)
    lines = traceback.split("\n" if framing == "FRAMING_OCTET_COUNTING" else "\\n")
    assert lines[:2] == ["could not pay", "Traceback (most recent call last):"], traceback
    assert lines[-1] == "ValueError: card declined", traceback
    region = {"meta": {"region": "eu-west"}}
    assert [(r["pri"] - LOCAL0, r["message"], r["msgid"], r["structured_data"]) for r in got] == [
        (
            INFO,
            "invoice 88 paid",
            "PAY",
            {**region, "order@32473": {"id": "88", "note": 'said "yes" [ok]'}},
        ),
        (WARNING, "disk 91% full", None, region),
        (ERROR, traceback, None, region),
        (INFO, NON_ASCII, None, region),
        (INFO, "x" * LONG, None, region),
        (INFO, "x" * len(got[5]["message"]), None, region),
        *[(INFO, f"burst {i}", None, region) for i in range(BURST)],
    ]
    assert MAX_FRAME - 200 < len(got[5]["message"]) < MAX_FRAME  # less its header
    assert {(r["source"], r["dyno"], r["hostname"]) for r in got} == {
        ("billing", "web.1", "myhost")
    }
    check_times(got)


def test_pino_syslog(make_server: ServerFactory, node_packages: Path) -> None:
    """pino's way to syslog: the application's JSON lines piped through pino-syslog (RFC
    5424, newline-framed with --newline) and pino-socket over TCP. Each line is stored with
    the app name, the process's pid and host name and the severity of its level, and its
    JSON read into `fields`, an error's stack in it (one line of JSON)."""
    running = make_server(syslog_port=0)
    tools = node_packages / "node_modules" / ".bin"
    app = [str(SENDERS / "pino_app.js"), str(BURST), str(LONG), NON_ASCII]
    pipeline = (
        f"node {shlex.join(app)}"
        f" | {tools / 'pino-syslog'} --appname billing --newline"
        f" | {tools / 'pino-socket'} --mode tcp --address 127.0.0.1 --port {running.syslog_port}"
    )
    sent = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {pipeline}"],
        env={**os.environ, "NODE_PATH": str(node_packages / "node_modules")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 30
    while len(running.lines()) < 5 + BURST:
        assert time.monotonic() < deadline, running.log.getvalue()
        time.sleep(0.05)
    assert "closed" not in running.log.getvalue(), running.log.getvalue()
    got = records()
    assert [(r["pri"] - LOCAL0, r["fields"]["msg"]) for r in got] == [
        (INFO, "invoice 88 paid"),
        (WARNING, "disk 91% full"),
        (ERROR, "could not pay"),
        (INFO, NON_ASCII),
        (INFO, "x" * LONG),
        *[(INFO, f"burst {i}") for i in range(BURST)],
    ]
    assert [json.loads(r["message"]) for r in got] == [r["fields"] for r in got]
    assert got[1]["fields"]["order"] == 88
    assert got[2]["fields"]["err"]["stack"].startswith("Error: card declined\n    at ")
    pid, hostname = got[0]["fields"]["pid"], got[0]["fields"]["hostname"]
    fields = {
        (r["source"], r["dyno"], r["hostname"], r["msgid"], r["structured_data"]) for r in got
    }
    assert fields == {("billing", str(pid), hostname, None, None)}
    check_times(got)
