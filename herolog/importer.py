"""``herolog import``: saved ``heroku logs`` output, Logplex bodies or syslog into the store."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from herolog.parser import (
    UNKNOWN,
    FrameDecoder,
    FramingError,
    LogLine,
    Received,
    parse_heroku_line,
    parse_syslog,
)
from herolog.store import Batch, Store

Format = Literal["logplex", "syslog", "heroku"]
CHUNK_SIZE = 1 << 20

_LOGPLEX_START = re.compile(rb"[ \t\r\n]*[0-9]+ <[0-9]{1,3}>")
_SYSLOG_START = re.compile(rb"[ \t\r\n]*<[0-9]{1,3}>[0-9]")


@dataclass
class ImportResult:
    format: Format
    lines: int = 0
    bytes_read: int = 0


class ImportFailed(Exception):
    """The input broke off (framing that cannot be parsed, a read or a commit that
    failed); what came before it is stored: ``result`` says how much."""

    def __init__(
        self, error: FramingError | OSError | sqlite3.DatabaseError, result: ImportResult
    ) -> None:
        why = f"cannot read it: {error.strerror or error}" if isinstance(error, OSError) else error
        super().__init__(f"{why}; {imported_before(result)}")
        self.error = error
        self.result = result


def imported_before(result: ImportResult) -> str:
    if result.lines == 1:
        return "the line before it was imported, nothing after it"
    return f"the {result.lines:,} lines before it were imported, nothing after it"


def detect_format(head: bytes) -> Format:
    """Logplex (``83 <40>1 ...``), newline-framed syslog (``<40>1 ...``), else heroku text."""
    if _LOGPLEX_START.match(head):
        return "logplex"
    if _SYSLOG_START.match(head):
        return "syslog"
    return "heroku"


def import_stream(
    stream: BinaryIO,
    store: Store,
    app: str,
    fmt: Format | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Store every line of ``stream`` under ``app``, committing chunk by chunk.

    A Logplex stream that breaks its framing raises ImportFailed: the lines before the
    break are stored (each chunk commits on its own so a big import does not hold the
    store's write lock), nothing after it.
    """
    try:
        first = stream.read(CHUNK_SIZE)
    except OSError as error:
        raise ImportFailed(error, ImportResult("heroku")) from None
    bom = first.startswith(b"\xef\xbb\xbf")  # text saved by some Windows editors
    result = ImportResult(
        fmt or detect_format(first[3 if bom else 0 : 4096]), bytes_read=3 if bom else 0
    )
    if bom:
        first = first[3:]
    chunks = _chunks(first, stream)
    parse = {"logplex": _logplex, "syslog": _syslog, "heroku": _heroku}[result.format]
    try:
        for size, lines in parse(chunks):
            if lines:
                result.lines += sum(store.append([Batch(app, lines)]))
            result.bytes_read += size
            if progress is not None:
                progress(result.bytes_read)
    except (FramingError, OSError, sqlite3.DatabaseError) as error:
        raise ImportFailed(error, result) from None
    return result


def _chunks(first: bytes, stream: BinaryIO) -> Iterator[bytes]:
    chunk = first
    while chunk:
        yield chunk
        chunk = stream.read(CHUNK_SIZE)


_Parsed = Iterator[tuple[int, list[LogLine]]]


def _logplex(chunks: Iterator[bytes]) -> _Parsed:
    decoder = FrameDecoder()
    for chunk in chunks:
        # On a framing error feed returns the frames before it; the next call raises.
        yield len(chunk), decoder.feed(chunk, Received.at())
    decoder.close()  # Logplex frames only: nothing may be left over


def _split_lines(chunks: Iterator[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """Complete lines of each chunk (without ``\n`` or ``\r\n``), the last at the end of input."""
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield len(chunk), [line.removesuffix(b"\r") for line in lines]
    if rest:
        yield 0, [rest.removesuffix(b"\r")]


def _syslog(chunks: Iterator[bytes]) -> _Parsed:
    for size, raw_lines in _split_lines(chunks):
        received = Received.at()
        yield size, [parse_syslog(raw, received) for raw in raw_lines if raw.strip()]


def _heroku(chunks: Iterator[bytes]) -> _Parsed:
    """``heroku logs`` text: a line without a header continues the message before it.

    The heroku CLI prints a message's embedded newlines as they are, so a traceback spans
    several lines of which only the first has a header. Lines before any header are kept
    as ``unknown`` lines.
    """
    pending: LogLine | None = None
    more: list[str] = []  # its continuation lines, joined once it is complete (not n^2)

    def complete(line: LogLine) -> LogLine:
        if not more:
            return line
        whole = line._replace(message="\n".join([line.message, *more]))
        more.clear()
        return whole

    for size, raw_lines in _split_lines(chunks):
        received = Received.at()
        done: list[LogLine] = []
        for raw in raw_lines:
            text = raw.decode("utf-8", "replace")
            parsed = parse_heroku_line(text)
            if parsed is not None:
                if pending is not None:
                    done.append(complete(pending))
                pending = parsed
            elif pending is not None and pending.source != UNKNOWN:
                more.append(text)
            elif text.strip():
                if pending is not None:
                    done.append(complete(pending))
                pending = LogLine(
                    received.timestamp, received.time, UNKNOWN, UNKNOWN, text, None, None, None
                )
        yield size, done
    if pending is not None:
        yield 0, [complete(pending)]
