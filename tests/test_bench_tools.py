"""What the tests and benchmarks fetch for themselves says what is missing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.corpus import bodies, syslog_messages
from bench.forward import paced_delay
from bench.ingest import close_stats_client, free_port, ingest_run, lua, wait_up
from bench.syslog_peers import PACKAGES, TOKEN, file_has, rsyslog, send, syslog_ng, wait_port
from bench.tools import Unavailable, heroku_cli, library_env, unpack, version
from herolog.parser import frame


def fake_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> Path:
    """A PATH holding only a ``node`` that says it is ``version`` (an old Node.js cannot be
    installed here to be met for real), and an empty folder for the heroku CLI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    node = bin_dir / "node"
    node.write_text(f"#!/bin/sh\necho {version}\n")
    node.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("HEROLOG_TEST_NPM_DIR", str(tmp_path / "npm"))
    return node


def test_an_old_node_is_named_before_npm_installs_a_cli_it_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = fake_node(tmp_path, monkeypatch, "v18.19.0")
    with pytest.raises(Unavailable) as raised:
        heroku_cli()
    assert str(raised.value).startswith(
        f"the official heroku CLI needs Node.js 20+, and {node} is v18.19.0: install a newer"
    )
    assert not (tmp_path / "npm").exists()


def test_an_installed_cli_needs_no_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_node(tmp_path, monkeypatch, "v20.20.2")
    executable = tmp_path / "npm" / "node_modules" / ".bin" / "heroku"
    executable.parent.mkdir(parents=True)
    executable.touch()
    assert heroku_cli() == executable


def test_no_npm_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_node(tmp_path, monkeypatch, "v22.1.0")
    with pytest.raises(Unavailable, match="installed with npm, and there is none"):
        heroku_cli()


def peers_root() -> Path:
    """rsyslog and syslog-ng as bench.syslog_peers runs them."""
    programs = ["usr/sbin/rsyslogd", "usr/sbin/syslog-ng"]
    try:
        try:
            return unpack("peers", PACKAGES, programs)
        except Unavailable:
            if os.geteuid() != 0 or shutil.which("apt-get") is None:
                raise
            # A new machine may not have Debian's package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            return unpack("peers", PACKAGES, programs)
    except Unavailable as error:
        pytest.fail(
            f"bench.syslog_peers runs Debian's rsyslog and syslog-ng, and {error}", pytrace=False
        )


def test_the_syslog_peers_parse_each_octet_counted_frame_as_herolog_does(tmp_path: Path) -> None:
    """bench.syslog_peers compares herolog with peers doing the same work: each frame taken
    by its octet count and parsed as RFC 5424, its message alone written to the file."""
    root = peers_root()
    messages = [
        m.replace(b" host ", f" {TOKEN} ".encode(), 1).replace(b" - ", b" - - ", 1)
        for m in syslog_messages(50)
    ]
    wanted = [m.split(b" ", 7)[7].decode() for m in messages]
    for name, start in (("rsyslog", rsyslog), ("syslog-ng", syslog_ng)):
        work = tmp_path / name
        work.mkdir()
        port, out = free_port(), work / "out.log"
        peer = start(root, work, port, out)
        try:
            wait_port(port)
            send(port, frame(messages), file_has(out, len(messages)), timeout=30)
        finally:
            peer.send_signal(signal.SIGTERM)
            peer.wait(30)
        assert out.read_text().splitlines() == [w.rstrip("\n") for w in wanted], name


def test_ingest_counts_the_answered_lines_the_store_does_not_hold(tmp_path: Path) -> None:
    """A server answering 2xx without storing (bench.pipeline_serve's writer stores nothing)
    is not credited with throughput: bench.ingest's run says how many lines are missing."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.pipeline_serve", "serve", "--port", str(port)],
        env={**os.environ, "HEROLOG_HOME": str(tmp_path / "home")},
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{url}/healthz")
        body = tmp_path / "one.body"
        body.write_bytes(bodies(1, 1)[0])
        run = ingest_run(url, lua(body, tmp_path), 1, connections=2, seconds=1)
    finally:
        close_stats_client()
        server.terminate()
        server.wait(30)
    assert run.answered > 0
    assert run.committed == 0
    assert run.missing == run.answered


def test_the_peers_are_named_with_the_versions_measured(tmp_path: Path) -> None:
    """A peer's row names the version that ran (``--heroku PATH`` may be any heroku CLI)."""
    root = peers_root()
    try:
        heroku = heroku_cli()
    except Unavailable as error:
        pytest.fail(f"the benchmarks' peers could not be had: {error}", pytrace=False)
    env = library_env(root)
    rsyslogd, syslog_ng_program = root / "usr/sbin/rsyslogd", root / "usr/sbin/syslog-ng"
    assert re.fullmatch(r"rsyslog 8\.\d+\.\d+\S*", version("rsyslog", [rsyslogd, "-v"], env))
    assert re.fullmatch(
        r"syslog-ng 3\.\d+\.\d+\S*", version("syslog-ng", [syslog_ng_program, "--version"], env)
    )
    assert version("heroku CLI", [heroku, "--version"]) == "heroku CLI 11.10.0"
    assert version("nothing", [tmp_path / "absent", "--version"]) == "nothing (version unknown)"


def test_a_syslog_peer_that_cannot_be_had_gets_a_row_saying_why(tmp_path: Path) -> None:
    """Without apt-get the peers cannot be fetched: herolog is measured all the same, and
    the table python -m bench writes has its figure, with a row per peer saying why not."""
    (tmp_path / "bin").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bench.syslog_peers", "--rounds", "1", "--lines", "300"],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PATH": str(tmp_path / "bin"), "XDG_CACHE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x[7:]) for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    why = "needs apt-get and dpkg (Debian or Ubuntu)"
    assert [(r["name"], r["unit"], r["peer"], r["ratio"], r["met"]) for r in rows] == [
        (
            "syslog, one TCP connection, 300 frames",
            "lines/s",
            f"{name}: not measured: {why}",
            None,
            None,
        )
        for name in ("rsyslog", "syslog-ng")
    ]
    assert all(r["value"] > 0 for r in rows)
    assert f"  rsyslog   : not measured: {why}\n" in done.stdout


def test_an_unpacked_program_loads_no_library_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty entry in LD_LIBRARY_PATH is the current directory: a peer run from the
    wrong folder would load whatever libraries lay there."""
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/libfoo.so.1").touch()
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    assert library_env(tmp_path)["LD_LIBRARY_PATH"] == str(tmp_path / "usr/lib")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/lib")
    assert library_env(tmp_path)["LD_LIBRARY_PATH"] == f"{tmp_path / 'usr/lib'}:/opt/lib"


@pytest.mark.slow
def test_a_benchmark_that_overruns_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    """``python -m bench`` keeps what a benchmark printed before it was stopped for taking
    too long, and the servers it started go with it."""
    from bench.__main__ import run

    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('RESULT {}', flush=True)\n"
        "time.sleep(60)\n"
    )
    out, failed = run([sys.executable, "-c", script], timeout_s=2)
    assert out == "RESULT {}\n"
    assert failed == "stopped after 2 s"
    child = int(pid_file.read_text())
    # Killed with its group (the kill is delivered as the child is next scheduled); reaped
    # by init, or a zombie until then: not sleeping on.
    state = Path(f"/proc/{child}/stat")

    def gone() -> bool:
        try:
            return state.read_text().split()[2] == "Z"
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(), "the benchmark's child outlived it"


def test_a_benchmark_that_fails_says_how(tmp_path: Path) -> None:
    from bench.__main__ import run

    out, failed = run([sys.executable, "-c", "print('half'); raise SystemExit('no wrk')"])
    assert (out, failed) == ("half\n", "exited 1: no wrk")


def test_the_paced_wait_leaves_room_for_the_answers_own_time() -> None:
    # 16 connections at 500 requests/s: each posts every 32 ms.
    assert paced_delay(16, 500) == pytest.approx(32)
    # Waiting 32 ms reached 400 requests/s (40 ms a request): the answers took 8 ms.
    assert paced_delay(16, 500, 32, 400) == pytest.approx(24)
    # Waiting 24 ms reached 500: the wait was right, and stays.
    assert paced_delay(16, 500, 24, 500) == pytest.approx(24)
    # Answers slower than the whole interval: no wait, however slow they were.
    assert paced_delay(16, 500, 10, 100) == 0
    # A run that answered nothing measured nothing.
    assert paced_delay(16, 500, 10, 0) == pytest.approx(32)
