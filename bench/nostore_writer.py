"""A writer process that answers every job at once, storing nothing (see bench.pipeline_serve).

python -m bench.nostore_writer FD STORE [HISTORY]
"""

from __future__ import annotations

import signal
import socket
import sys

from herolog.store import DEFAULT_HISTORY
from herolog.store_writer import _Connection


def main(argv: list[str]) -> int:
    connection = _Connection(socket.socket(fileno=int(argv[0])))
    connection.send(("ready", int(argv[2]) if len(argv) > 2 else DEFAULT_HISTORY))
    try:
        while (jobs := connection.jobs()) is not None:
            # Received as the real writer receives them (unpickled), answered as it answers.
            results = [(job[0], "ok", (0, 0)) for job in jobs if job[1] != "stop"]
            if results:
                connection.send(results)
            if len(results) < len(jobs):
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(main(sys.argv[1:]))
