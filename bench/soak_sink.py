"""Drain sinks for bench.soak: a healthy one, and one that flaps, each counting what it takes.

    python -m bench.soak_sink CONTROL_PORT HEALTHY_PORT FLAPPING_PORT PERIOD_S

Both take Logplex POSTs. The healthy one answers every batch 204. The flapping one goes
through four phases of PERIOD_S seconds, over and over: up (204), failing (500 to every
batch), up, gone (the port closed, open connections reset). Batches are counted per drain
(Logplex-Drain-Token) only when answered 204, once per Logplex-Frame-Id (a batch whose 204
was cut off is retried with the same id), with the L10 lines in them and the drops those
report. The control port answers ``GET /`` with the counts as JSON; ``POST /steady`` keeps
the flapping sink up from then on, so that everything it is owed can arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

_L10 = re.compile(rb"Error L10 \(output buffer overflow\): (\d+) messages dropped")
_REASONS = {200: "OK", 204: "No Content", 404: "Not Found", 500: "Internal Server Error"}
UP, FAILING, GONE = "up", "failing", "gone"
_CYCLE = [UP, FAILING, UP, GONE]


@dataclass
class DrainCount:
    """What one drain delivered to a sink."""

    lines: int = 0
    """The app's lines: Logplex-Msg-Count without the L10 lines."""
    l10_lines: int = 0
    l10_reported: int = 0
    """The drops the L10 lines reported, summed."""
    batches: int = 0
    retried: int = 0
    """Batches that came again after their 204 (the same Frame-Id), not counted twice."""
    waited_s: float = 0.0
    """Time from each 204 to the next batch on the same connection, summed: what the drain
    spends between batches (encoding the next one, and waiting for its event loop)."""
    waits: int = 0
    fresh: int = 0
    """Batches that came on a new connection."""
    body_s: float = 0.0
    """Time from each batch's headers to the end of its body, summed."""
    frame_ids: set[str] = field(default_factory=set, repr=False)


@dataclass
class Sink:
    name: str
    flapping_period: float | None = None
    started: float = field(default_factory=time.monotonic)
    steady: bool = False
    refused: int = 0
    """Batches answered 500."""
    resets: int = 0
    """Connections cut when the sink went away."""
    connections: int = 0
    """Connections accepted."""
    drains: dict[str, DrainCount] = field(default_factory=dict)

    def phase(self) -> str:
        if self.flapping_period is None or self.steady:
            return UP
        elapsed = time.monotonic() - self.started
        return _CYCLE[int(elapsed / self.flapping_period) % len(_CYCLE)]

    def take(
        self, headers: dict[str, str], body: bytes, waited: float | None, body_s: float
    ) -> int:
        if self.phase() != UP:
            self.refused += 1
            return 500
        count = self.drains.setdefault(headers.get("logplex-drain-token", "?"), DrainCount())
        frame_id = headers.get("logplex-frame-id")
        if frame_id is not None:
            if frame_id in count.frame_ids:
                count.retried += 1
                return 204
            count.frame_ids.add(frame_id)
        reported = [int(m) for m in _L10.findall(body)]
        if waited is None:
            count.fresh += 1
        else:
            count.waited_s += waited
            count.waits += 1
        count.body_s += body_s
        count.batches += 1
        count.l10_lines += len(reported)
        count.l10_reported += sum(reported)
        count.lines += int(headers.get("logplex-msg-count", "0")) - len(reported)
        return 204

    def counts(self) -> dict[str, object]:
        drains = {}
        for token, count in self.drains.items():
            shown = asdict(count)
            del shown["frame_ids"]
            drains[token] = shown
        return {
            "phase": self.phase(),
            "refused": self.refused,
            "resets": self.resets,
            "connections": self.connections,
            "drains": drains,
        }


Handler = Callable[[str, str, dict[str, str], bytes, float | None, float], tuple[int, bytes]]
"""(method, path, headers, body, seconds since the previous answer on the connection, seconds
the body took to arrive)."""


async def serve_http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    """HTTP/1.1 with keep-alive, bodies with Content-Length: what herolog's drains send."""
    answered: float | None = None
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            waited = None if answered is None else time.monotonic() - answered
            request, *lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request.split(" ", 2)
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            began = time.monotonic()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status, payload = handler(method, path, headers, body, waited, time.monotonic() - began)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Other')}\r\n"
                f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            answered = time.monotonic()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


class Listener:
    """A sink on its port; the flapping one closes the port and resets its connections while
    it is gone."""

    def __init__(self, sink: Sink, port: int) -> None:
        self.sink = sink
        self.port = port
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()

    def handle(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        waited: float | None,
        body_s: float,
    ) -> tuple[int, bytes]:
        if method != "POST":
            return 404, b""
        status = self.sink.take(headers, body, waited, body_s)
        return status, b"" if status == 204 else b"flapping sink: failing on purpose\n"

    async def connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        self.sink.connections += 1
        try:
            await serve_http(reader, writer, self.handle)
        finally:
            self.connections.discard(writer)

    async def keep_phase(self) -> None:
        while True:
            gone = self.sink.phase() == GONE
            if gone and self.server is not None:
                self.server.close()
                self.server = None
                for writer in list(self.connections):
                    writer.transport.abort()
                    self.sink.resets += 1
            elif not gone and self.server is None:
                self.server = await asyncio.start_server(self.connected, "127.0.0.1", self.port)
            await asyncio.sleep(0.05)


async def main(control_port: int, healthy_port: int, flapping_port: int, period: float) -> None:
    healthy = Sink("healthy")
    flapping = Sink("flapping", flapping_period=period)

    def control(
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        waited: float | None,
        body_s: float,
    ) -> tuple[int, bytes]:
        if method == "POST" and path == "/steady":
            flapping.steady = True
        return 200, json.dumps({s.name: s.counts() for s in (healthy, flapping)}).encode()

    async def control_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await serve_http(reader, writer, control)

    tasks = [
        asyncio.create_task(Listener(s, p).keep_phase())
        for s, p in ((healthy, healthy_port), (flapping, flapping_port))
    ]
    server = await asyncio.start_server(control_connection, "127.0.0.1", control_port)
    async with server:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(server.serve_forever(), *tasks)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
