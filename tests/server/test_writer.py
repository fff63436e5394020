"""Serve's end of the store writer: how a burst of jobs is handed to the writer process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from herolog.server.writer import HANDOFF_JOBS, Stored, Writer, _Channel
from herolog.store import PROBE_BYTES, StoreError
from herolog.store_writer import pack
from tests.server.test_process import batch, stored


def record_messages(writer: Writer, sent: list[list[tuple[Any, ...]]]) -> None:
    """Keep every message serve sends the writer process in ``sent``, and send it."""
    channel = writer._channel
    assert channel is not None
    send = channel.send

    def recorded(value: Any) -> None:
        sent.append(value)
        send(value)

    channel.send = recorded  # type: ignore[method-assign]


def test_a_burst_goes_to_the_writer_a_few_jobs_at_a_time_and_all_of_it_is_stored(
    herolog_home: Path,
) -> None:
    jobs = 2 * HANDOFF_JOBS + 3
    sent: list[list[tuple[Any, ...]]] = []

    async def main() -> list[Stored]:
        writer = Writer(herolog_home / "logs.db")
        await writer.start()
        try:
            record_messages(writer, sent)
            # Submitted in one turn of the event loop, as a wave of requests is read.
            return await asyncio.gather(
                *(writer.write_body("demo", batch(f"job{n}", 2), None, None) for n in range(jobs))
            )
        finally:
            await writer.stop()

    results = asyncio.run(main())
    # The writer starts on the first jobs while the rest are still being submitted.
    assert [len(message) for message in sent if message != [(0, "stop")]] == [
        HANDOFF_JOBS,
        HANDOFF_JOBS,
        3,
    ]
    assert [(result.lines, result.parsed) for result in results] == [(2, 2)] * jobs
    assert stored(herolog_home) == [f"job{n} {i}" for n in range(jobs) for i in range(2)]


def test_health_probes_asked_for_together_are_one_probe_of_a_mebibyte(herolog_home: Path) -> None:
    """A failing server's /healthz writes a probe; checks that come together share it, and it
    writes enough that space a full disk left behind for small writes does not pass it."""
    sent: list[list[tuple[Any, ...]]] = []
    wal = Path(f"{herolog_home / 'logs.db'}-wal")
    written: list[int] = []

    async def main() -> list[Stored]:
        writer = Writer(herolog_home / "logs.db")
        await writer.start()
        try:
            record_messages(writer, sent)
            before = wal.stat().st_size
            results = await asyncio.gather(*(writer.probe() for _ in range(5)))
            written.append(wal.stat().st_size - before)
            results.append(await writer.probe())  # after the first: a probe of its own
            return results
        finally:
            await writer.stop()

    results = asyncio.run(main())
    assert len([job for message in sent for job in message if job[1] == "probe"]) == 2
    assert results == [Stored(0, 0)] * 6
    assert written[0] >= PROBE_BYTES


def test_a_writer_that_cannot_start_stops_serve_with_one_line_naming_the_store(
    herolog_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store checked at bind() is replaced before the writer process opens it: serve
    ends with a StoreError that names the store (the command's one line, exit 1), not
    uvicorn's "Application startup failed" and its exit status 3."""
    import io

    from herolog.server import ServeConfig, Server

    path = herolog_home / "logs.db"
    server = Server(ServeConfig(store_path=path, port=0), log=io.StringIO())
    server.bind()
    path.write_bytes(b"not a database at all, " * 200)
    with pytest.raises(StoreError) as raised:
        server.run()
    assert str(raised.value).startswith(f"{path} is not a usable herolog store")
    assert "startup failed" not in capsys.readouterr().err


@pytest.mark.parametrize("given", [None, 50])
def test_a_restarted_writer_keeps_the_history_set_while_serve_ran(
    herolog_home: Path, given: int | None
) -> None:
    """serve's --history (or the store's own) is set once, as serve starts: a writer that
    died and was restarted put it back over a `herolog store history` run meanwhile, and
    trimmed every app to it (an operator's 100,000 lines back to 1,500)."""
    import subprocess
    import sys

    from herolog.store import open_store
    from tests.helpers import herolog_env

    async def main() -> None:
        writer = Writer(herolog_home / "logs.db", given)
        await writer.start()
        try:
            for n in range(3):
                await writer.write_body("demo", batch(f"job{n}", 10), None, None)
            raised = subprocess.run(
                [sys.executable, "-m", "herolog", "store", "history", "5000"],
                env=herolog_env(HEROLOG_HOME=str(herolog_home)),
                capture_output=True,
                text=True,
            )
            assert raised.returncode == 0, raised.stderr
            first = writer._proc
            assert first is not None
            first.kill()
            for _ in range(200):
                if writer.running and writer._proc is not first:
                    break
                await asyncio.sleep(0.05)
            assert writer.running
            assert writer._proc is not first
            await writer.write_body("demo", batch("after", 10), None, None)
        finally:
            await writer.stop()

    asyncio.run(main())
    with open_store() as store:
        assert store.history == 5000
        assert store.apps()[0].lines == 40
        assert len(stored(herolog_home)) == 40


@pytest.mark.parametrize("piece", [1, 3, 7, 1000], ids=lambda n: f"{n}-byte reads")
def test_serve_s_end_puts_together_the_writer_s_messages_however_they_are_read(
    piece: int,
) -> None:
    """The socket may hand serve a message in parts, or the end of one with the start of
    the next (a group's results are one message of any size): each is read whole, once."""
    hello = ("ready", 1500)
    results = [
        [(1, "ok", (3, 3))],
        [(2, "framing", "bad frame"), (3, "ok", (0, 3))],
        [(n, "ok", (1, 1)) for n in range(4, 2004)],  # a full group's answer
    ]
    data = pack(hello) + b"".join(pack(r) for r in results)

    async def read() -> tuple[Any, list[Any]]:
        got: list[Any] = []
        channel = _Channel(asyncio.get_running_loop(), got.append, lambda: None)
        for start in range(0, len(data), piece):
            channel.data_received(data[start : start + piece])
        return await channel.hello, got

    assert asyncio.run(read()) == (hello, results)
