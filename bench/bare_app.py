"""The ceiling: a bare ASGI app under the same uvicorn settings, reading the body, answering 204.

python -m bench.bare_app PORT
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn


async def read_all(receive: Any) -> None:
    """Take the request body off the wire, keeping none of it."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await read_all(receive)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="off",
    )
