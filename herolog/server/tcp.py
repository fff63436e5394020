"""What Linux tells of a TCP connection's sending side: whether it can still send, how many
bytes its peer has not acknowledged, and how long since the peer acknowledged anything. A
peer whose host died or whose network went silent sends no reset, and only these tell."""

from __future__ import annotations

import socket
import sys
from typing import NamedTuple

TELLS = sys.platform.startswith("linux")
"""Whether this system tells (elsewhere :func:`sending` is None)."""
if TELLS:
    import fcntl
    import termios

_LAST_ACK = 56
"""Where Linux's struct tcp_info has tcpi_last_ack_recv (ms since the peer's last ACK)."""
_SENDING_STATES = {1, 8}
"""TCP_ESTABLISHED, and TCP_CLOSE_WAIT (the peer closed its side after reading)."""


class Sending(NamedTuple):
    open: bool
    """The connection can still send (not reset: a reset empties the queue of what it lost)."""
    unacknowledged: int
    """Bytes in the kernel's send queue the peer has not acknowledged."""
    unheard_s: float
    """Seconds since the peer last acknowledged anything."""


def sending(sock: socket.socket) -> Sending | None:
    """What the system tells of ``sock``'s sending side; None where it cannot say (not Linux,
    not TCP, or gone already)."""
    if not TELLS:
        return None
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _LAST_ACK + 4)
    except OSError:
        return None
    if len(info) < _LAST_ACK + 4:
        return None
    return Sending(
        info[0] in _SENDING_STATES,
        int.from_bytes(queued, sys.byteorder, signed=True),
        int.from_bytes(info[_LAST_ACK : _LAST_ACK + 4], sys.byteorder) / 1000,
    )
