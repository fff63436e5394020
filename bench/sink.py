"""Drain sinks for bench.forward: an HTTP endpoint and a syslog TCP listener that count lines.

python -m bench.sink HTTP_PORT SYSLOG_PORT     (GET http://127.0.0.1:HTTP_PORT/count)
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvicorn

counts = {"http": 0, "syslog": 0, "requests": 0, "http L10": 0, "syslog L10": 0}
"""Lines received, and of them herolog's own L10 lines (told drops, not stored lines)."""

L10 = b"Error L10 (output buffer overflow)"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        body = json.dumps(counts).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    headers = dict(scope["headers"])
    counts["http"] += int(headers.get(b"logplex-msg-count", b"0"))
    counts["requests"] += 1
    counts["http L10"] += body.count(L10)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def syslog(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Counts octet-counted frames."""
    pending = b""
    while chunk := await reader.read(1 << 20):
        data = pending + chunk
        at = 0
        size = len(data)
        while True:
            space = data.find(b" ", at, at + 12)
            if space < 0:
                break
            end = space + 1 + int(data[at:space])
            if end > size:
                break
            counts["syslog"] += 1
            at = end
        counts["syslog L10"] += data.count(L10, 0, at)
        pending = data[at:]
    writer.close()


async def main(http_port: int, syslog_port: int) -> None:
    listener = await asyncio.start_server(syslog, "127.0.0.1", syslog_port)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=http_port, log_level="warning", access_log=False, lifespan="off"
    )
    async with listener:
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
