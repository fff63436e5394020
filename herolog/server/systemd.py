"""Telling systemd when serve is ready and when it is stopping (a unit with Type=notify)."""

from __future__ import annotations

import contextlib
import os
import socket


def notify(state: str) -> None:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``) to the service manager,
    if it asked for it: systemd's sd_notify protocol, one datagram to the AF_UNIX socket
    named in $NOTIFY_SOCKET (``@`` starting an abstract name). Without the variable this
    does nothing, and a manager that has gone away, or is too busy to take the message at
    once, is no reason to stop serving."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(state.encode(), address)
