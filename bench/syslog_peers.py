"""Syslog ingest against rsyslog and syslog-ng: one TCP connection, octet-counted frames.

    python -m bench.syslog_peers [--lines N] [--rounds R]

The peers are Debian's own packages (rsyslog with imptcp, syslog-ng-core), fetched with `apt-get
download` and unpacked with `dpkg -x` into ~/.cache/herolog-bench/peers by bench/tools.py (no
root-wide install), run in the foreground on 127.0.0.1 with configurations written here, and
stopped by their own pid. Each round sends the same N frames (Heroku's syslog-drain form) to
herolog serve, rsyslog and syslog-ng in turn, and times from the first byte sent to the last
line durable: committed in herolog's store (from /stats), or written to the peer's output file
(the file stops growing with every line in it). Figures are medians of the rounds; a peer that
cannot be installed gets a row saying why, and the rest still runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import measured_with, result, tools
from bench.corpus import syslog_messages
from bench.ingest import committed, free_port, wait_up
from herolog.parser import frame

PACKAGES = [
    "rsyslog",
    "libestr0",
    "libfastjson4",
    "syslog-ng-core",
    "libivykis0",
    "libnet1",
    "libwrap0",
]
TOKEN = "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"


def rsyslog(root: Path, work: Path, port: int, out: Path) -> subprocess.Popen[bytes]:
    modules = next(root.rglob("imptcp.so")).parent
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}")\n'
        f'module(load="{modules}/imptcp.so")\n'
        f'input(type="imptcp" address="127.0.0.1" port="{port}"'
        ' SupportOctetCountedFraming="on")\n'
        'template(name="line" type="string" string="%msg%\\n")\n'
        f'action(type="omfile" file="{out}" template="line")\n'
    )
    return subprocess.Popen(
        [
            str(root / "usr/sbin/rsyslogd"),
            "-n",
            "-M",
            str(modules),
            "-f",
            str(conf),
            "-i",
            str(work / "rsyslog.pid"),
        ],
        env=tools.library_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def syslog_ng(root: Path, work: Path, port: int, out: Path) -> subprocess.Popen[bytes]:
    modules = next(root.rglob("libafsocket.so")).parent
    conf = work / "syslog-ng.conf"
    conf.write_text(
        "@version: 3.38\n"
        "options { threaded(yes); };\n"
        # syslog(), not network(): network() frames by newline, so each octet count would
        # be taken as the start of an RFC 3164 line and the header left in the message.
        f'source s {{ syslog(ip("127.0.0.1") port({port}) transport("tcp")); }};\n'
        f'destination d {{ file("{out}" template("${{MESSAGE}}\\n")); }};\n'
        "log { source(s); destination(d); };\n"
    )
    # Its files named from where it runs: syslog-ng takes no argument that is not ASCII
    # ('Invalid byte sequence in conversion input'), and $TMPDIR's path may have some.
    return subprocess.Popen(
        [
            str(root / "usr/sbin/syslog-ng"),
            "-F",
            "-f",
            conf.name,
            "--module-path",
            str(modules),
            "-p",
            "syslog-ng.pid",
            "-R",
            "syslog-ng.persist",
            "-c",
            "syslog-ng.ctl",
        ],
        cwd=work,
        env=tools.library_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def send(port: int, data: bytes, done: Callable[[], bool], timeout: float = 600) -> float:
    """Seconds from the first byte sent until ``done()``."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sender = threading.Thread(target=sock.sendall, args=(data,))
        sender.start()
        while not done():
            if time.monotonic() - start > timeout:
                raise RuntimeError("not all lines arrived")
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        sender.join()
    return elapsed


def file_has(path: Path, lines: int) -> Callable[[], bool]:
    """True once ``path`` holds ``lines`` lines (counted incrementally)."""
    seen = [0, 0]  # bytes read, lines counted

    def check() -> bool:
        try:
            with path.open("rb") as f:
                f.seek(seen[0])
                chunk = f.read()
        except FileNotFoundError:
            return False
        seen[0] += len(chunk)
        seen[1] += chunk.count(b"\n")
        return seen[1] >= lines

    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    messages = syslog_messages(args.lines)
    data = frame(
        m.replace(b" host ", f" {TOKEN} ".encode(), 1).replace(b" - ", b" - - ", 1)
        for m in messages
    )
    try:
        root: Path | None = tools.unpack(
            "peers", PACKAGES, ["usr/sbin/rsyslogd", "usr/sbin/syslog-ng"]
        )
        why = ""
    except tools.Unavailable as error:
        root, why = None, str(error)
    times: dict[str, list[float]] = {"herolog": [], "rsyslog": [], "syslog-ng": []}
    problems: dict[str, str] = {}
    if root is None:
        problems = {"rsyslog": why, "syslog-ng": why}
        named = {"rsyslog": "rsyslog", "syslog-ng": "syslog-ng"}
        measured_with()
    else:
        env, sbin = tools.library_env(root), root / "usr/sbin"
        named = {
            "rsyslog": tools.version("rsyslog", [sbin / "rsyslogd", "-v"], env),
            "syslog-ng": tools.version("syslog-ng", [sbin / "syslog-ng", "--version"], env),
        }
        measured_with(*named.values())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        http, syslog_port = free_port(), free_port()
        serve = subprocess.Popen(
            [
                *(sys.executable, "-m", "herolog", "serve", "--port", str(http)),
                *("--syslog-port", str(syslog_port), "--history", "10000000"),
            ],
            env={**os.environ, "HEROLOG_HOME": str(work / "home")},
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{http}"
        try:
            wait_up(f"{url}/healthz")
            for round_ in range(args.rounds):
                before = committed(url)[1]

                def stored(before: int = before) -> bool:
                    return bool(committed(url)[1] - before >= args.lines)

                times["herolog"].append(send(syslog_port, data, stored))
                if root is None:
                    continue
                for name, start in (("rsyslog", rsyslog), ("syslog-ng", syslog_ng)):
                    if name in problems:
                        continue
                    port = free_port()
                    out = work / f"{name}-{round_}.log"
                    peer = start(root, work, port, out)
                    try:
                        wait_port(port)
                        times[name].append(send(port, data, file_has(out, args.lines)))
                    except RuntimeError as error:
                        problems[name] = str(error)
                    finally:
                        peer.send_signal(signal.SIGTERM)
                        peer.wait(30)
                        out.unlink(missing_ok=True)
        finally:
            serve.terminate()
            serve.wait(30)
    print(
        f"syslog over one TCP connection, {args.lines:,} octet-counted frames, first byte to"
        f" last line durable, median of {args.rounds} alternating rounds"
    )
    ours = statistics.median(times["herolog"])
    print(f"  herolog   : {args.lines / ours:10,.0f} lines/s ({ours:.2f} s)")
    for name in ("rsyslog", "syslog-ng"):
        wanted = 1.0 if name == "syslog-ng" else 0.5
        if name in problems or not times[name]:
            why = problems.get(name, "no runs")
            print(f"  {name:10}: not measured: {why}")
            # The table python -m bench writes keeps herolog's figure, and says why not.
            result(
                f"syslog, one TCP connection, {args.lines:,} frames",
                args.lines / ours,
                "lines/s",
                peer=f"{name}: not measured: {why}",
                target=f">= {wanted}x {name}",
                met=None,
            )
            continue
        theirs = statistics.median(times[name])
        result(
            f"syslog, one TCP connection, {args.lines:,} frames",
            args.lines / ours,
            "lines/s",
            peer=named[name],
            ratio=theirs / ours,
            target=f">= {wanted}x {name}",
            met=theirs / ours >= wanted,
        )
        print(
            f"  {name:10}: {args.lines / theirs:10,.0f} lines/s ({theirs:.2f} s);"
            f" herolog/{name} = {theirs / ours:.2f}"
        )


if __name__ == "__main__":
    main()
