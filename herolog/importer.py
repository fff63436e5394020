"""``herolog import``: saved ``heroku logs`` output, Logplex bodies or syslog into the store."""

from __future__ import annotations

import codecs
import functools
import itertools
import json
import os
import re
import select
import sqlite3
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from herolog.interrupt import ctrl_c_held_back
from herolog.parser import (
    FrameDecoder,
    FramingError,
    LogLine,
    Received,
    continued,
    continues_message,
    kept_whole,
    parse_heroku_line,
    parse_json_line,
    parse_syslog,
)
from herolog.store import Batch, Store

Format = Literal["logplex", "syslog", "heroku", "json"]
CHUNK_SIZE = 1 << 20
MAX_LINE = 32 << 20
"""The longest line of text input (heroku, syslog, json) an import takes, and the longest
message of heroku text with the lines that continue it, in bytes (line ends between them
counted, not the last): past it the import stops, as for a broken frame. The intake stores
messages of up to 5 MiB (serve's --max-body), which ``logs --json`` escaping can make six
times longer (a control character is written ``\u0001``). A file without newlines, or a
gzip that decompresses to one, is read no further than this."""
_HEAD = 4096
"""How much of a line over MAX_LINE is kept: enough to tell whether it has a header."""
GATHER_S = 0.005
"""How long a read of a pipe waits for more before the chunk it has is stored: a writer such
as ``cat`` refills the pipe within microseconds, so a fast input is still stored a MiB at a
time, and a live one (``heroku logs --tail |``) line by line as it comes."""
GATHER_MAX_S = 0.1
"""The longest a read of a pipe gathers for: a writer that never pauses for GATHER_S (the
tail of a busy app, a line every millisecond) has its lines stored ten times a second, not
once a MiB has come, which a Ctrl-C before it would lose."""
QUIET_S = 1.0
"""How long a pipe's input has been quiet before the ``heroku logs`` message it ends with is
stored: until then the next line may continue it. Vector's multiline ``timeout_ms`` (1,000 ms
by default) decides in the same way."""

_LOGPLEX_START = re.compile(rb"[ \t\r\n]*[0-9]+ <[0-9]{1,3}>")
_SYSLOG_START = re.compile(rb"[ \t\r\n]*<[0-9]{1,3}>")
_JSON_START = re.compile(rb"[ \t\r\n]*\{")
_CUT_HEADER = re.compile(r"[0-9]{4}-[!-~]*(?: [!-Z\\^-~]*(?:\[[!-Z\\^-~]*\]?)?)?")
"""The start of a heroku header, up to before its ``:``."""
_COLOUR = re.compile("\x1b\\[[0-9;:]*m")
"""A colour (SGR) sequence, as `heroku logs` with FORCE_COLOR and `herolog logs --color
always` write them."""
_HALF_COLOUR = re.compile("\x1b(?:\\[[0-9;:]*)?\\Z")
"""The start of a colour sequence, which a capture cut off in the middle of one ends in."""


@dataclass
class ImportResult:
    format: Format
    lines: int = 0
    bytes_read: int = 0
    bytes_stored: int = 0
    """The lines of the input before this offset are all stored, none after it: where a
    second import of the rest starts after a failure."""
    unknown: int = 0
    """Lines stored as ``unknown[unknown]``: kept whole, as the format did not describe them
    (a file that is not a log at all, say)."""
    first_unknown: int = 0
    """The line of the input (of a Logplex body, the frame) the first of them is."""
    compressed: bool = False
    """The input is gzip: the offsets above are in what it decompresses to."""
    not_utf8: int = 0
    """Lines of text input (heroku, syslog) with bytes that are not UTF-8, stored as U+FFFD:
    an input in another encoding, as no output of Heroku's or herolog's has them."""
    first_not_utf8: int = 0
    """The first of those lines."""
    cut_off: str | None = None
    """The piece of a line the input ended in, left out: a heroku header or a JSON object
    without its end, as a capture cut off leaves it."""


class ImportFailed(Exception):
    """The input broke off (framing that cannot be parsed, a line over MAX_LINE, gzip that
    is cut off or damaged, a read or a commit that failed); what came before it is stored:
    ``result`` says how much."""

    def __init__(
        self,
        error: FramingError | LineTooLong | GzipBroken | OSError | sqlite3.DatabaseError,
        result: ImportResult,
    ) -> None:
        why = f"cannot read it: {error.strerror or error}" if isinstance(error, OSError) else error
        super().__init__(f"{why}; {imported_before(result)}")
        self.error = error
        self.result = result


class LineTooLong(ValueError):
    """A line of text input over MAX_LINE, or a heroku message that grows past it with the
    lines that continue it, which no log line is: the import stops at it."""

    def __init__(self, line: int, offset: int, head: bytes = b"", *, message: bool = False):
        what = (
            f"a message over the {MAX_LINE:,}-byte limit, with the lines that continue it,"
            if message
            else f"a line over the {MAX_LINE:,}-byte limit"
        )
        super().__init__(f"line {line} at byte {offset}: {what} is not a log line")
        self.line = line
        self.offset = offset
        self.head = head
        """The line's first bytes (up to _HEAD), for the heroku format to tell whether it
        has a header of its own or continues the message before it."""
        self.message = message


class GzipBroken(ValueError):
    """A gzip input that ends, or stops being gzip, before its end: what decompressed
    before it is the input, as ``gzip -dc`` gives it."""


class NotRead(ValueError):
    """An input in a form import does not read (another compression, UTF-16): read as text
    it would be stored as lines of binary bytes. ``convert`` is the command that makes it
    one import reads."""

    def __init__(self, what: str, convert: str) -> None:
        super().__init__(what)
        self.what = what
        self.convert = convert


_NOT_READ = [
    (re.compile(rb"BZh[1-9]1AY&SY"), "bzip2-compressed", "bzip2 -dc"),
    (re.compile(rb"\xfd7zXZ\x00"), "xz-compressed", "xz -dc"),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd-compressed", "zstd -dc"),
    (re.compile(rb"PK\x03\x04"), "a zip archive", "unzip -p"),
    (
        re.compile(rb"\xff\xfe|\xfe\xff"),
        "UTF-16 text (as Windows PowerShell's > writes)",
        "iconv -f UTF-16 -t UTF-8",
    ),
]


class ImportInterrupted(Exception):
    """Ctrl-C stopped the import; ``result`` says what it stored, as for ImportFailed."""

    def __init__(self, result: ImportResult) -> None:
        super().__init__(f"interrupted; {imported_before(result)}")
        self.result = result


def imported_before(result: ImportResult) -> str:
    """What a failed import stored, and up to where in the input: what to import again is
    what follows (``tail -c +N``), since a second import of the same lines stores them twice."""
    if result.lines == 0:
        return "the 0 lines before it were imported, nothing after it"
    where = f"(the input's first {result.bytes_stored} bytes)"
    if result.compressed:
        where = f"(the first {result.bytes_stored} bytes of the input decompressed)"
    if result.lines == 1:
        return f"the line before it was imported {where}, nothing after it"
    return f"the {result.lines:,} lines before it were imported {where}, nothing after it"


def detect_format(head: bytes) -> Format:
    """Logplex (``83 <40>1 ...``), newline-framed syslog (``<40>1 ...``, or RFC 3164's
    ``<13>Mar  5 ...``), ``herolog logs --json`` output (``{"id": ...``), else heroku text."""
    if _LOGPLEX_START.match(head):
        return "logplex"
    if _SYSLOG_START.match(head):
        return "syslog"
    if _JSON_START.match(head):
        return "json"
    return "heroku"


def import_stream(
    stream: BinaryIO,
    store: Store,
    app: str,
    fmt: Format | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Store every line of ``stream`` under ``app``, committing chunk by chunk.

    A Logplex stream that breaks its framing, a line of text over MAX_LINE, a read or a
    commit that fails, raise ImportFailed: the lines before the break are stored (each
    chunk commits on its own so a big import does not hold the store's write lock), nothing
    after it, and its result's ``bytes_stored`` says where in the input that is. An input
    in a form it does not read (bzip2, UTF-16, ...) raises NotRead before storing anything.
    """
    live = _arriving(stream)
    read: Callable[[int], bytes] = _not_shrinking(stream) if live is None else live.read
    try:
        first = read(CHUNK_SIZE) if live is None else live.first()
    except OSError as error:
        raise ImportFailed(error, ImportResult("heroku")) from None
    except KeyboardInterrupt:  # a pipe's first line not all come: said as a later Ctrl-C is
        raise ImportInterrupted(ImportResult("heroku")) from None
    compressed = first[:2] == _GZIP_MAGIC
    position: Callable[[], int] | None = None  # for progress, in the input as it is on disk
    gunzip: _Gunzip | None = None
    if compressed:  # rotated logs are gzipped: read what they hold
        raw = _Rejoined(first, read)
        gunzip = _Gunzip(raw)
        read, position = gunzip.read, raw.position
        try:
            first = read(CHUNK_SIZE)
        except OSError as error:
            raise ImportFailed(error, ImportResult("heroku", compressed=True)) from None
        except KeyboardInterrupt:
            raise ImportInterrupted(ImportResult("heroku", compressed=True)) from None
    for magic, what, convert in _NOT_READ:
        if magic.match(first):
            raise NotRead(what, convert)
    skipped = 3 if first.startswith(_BOM) else 0  # a BOM, from some Windows editors
    result = ImportResult(
        fmt or detect_format(first[skipped:4096]),
        bytes_read=skipped,
        bytes_stored=skipped,
        compressed=compressed,
    )
    chunks = _chunks(first[skipped:], read, None if live is None or compressed else live.quiet)
    cut_off: list[str] = []
    not_utf8 = [0, 0]  # lines with bytes that are not UTF-8, and the first of them
    attributes: list[dict[str, str] | None] = []  # of each line a json chunk gives, if any has
    parsers: dict[Format, Callable[[Iterator[bytes]], _Parsed]] = {
        "logplex": _logplex,
        "syslog": functools.partial(_syslog, not_utf8=not_utf8),
        "heroku": functools.partial(_heroku, cut_off=cut_off, not_utf8=not_utf8),
        "json": functools.partial(_json, cut_off=cut_off, attributes=attributes, not_utf8=not_utf8),
    }
    parse = parsers[result.format]
    try:
        for size, lines, done, unknown, first_unknown in parse(chunks):
            with ctrl_c_held_back():
                if lines:
                    result.lines += sum(store.append(_batches(app, lines, attributes)))
                    result.unknown += unknown
                    result.first_unknown = result.first_unknown or first_unknown
                result.bytes_read += size
                result.bytes_stored = skipped + done
            if progress is not None:
                progress(result.bytes_read if position is None else position())
    except KeyboardInterrupt:
        raise ImportInterrupted(result) from None
    except FramingError as error:
        if skipped:  # the offset in the input, as tail -c counts it, not after the BOM
            error = FramingError(error.reason, error.frame, error.offset + skipped)
        raise ImportFailed(error, result) from None
    except LineTooLong as error:
        if skipped:
            error = LineTooLong(error.line, error.offset + skipped, message=error.message)
        raise ImportFailed(error, result) from None
    except (OSError, sqlite3.DatabaseError) as error:
        raise ImportFailed(error, result) from None
    result.cut_off = cut_off[0] if cut_off else None
    result.not_utf8, result.first_not_utf8 = not_utf8
    if gunzip is not None and gunzip.broken is not None:  # all before it is stored now
        raise ImportFailed(gunzip.broken, result)
    return result


_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
"""UTF-8's byte order mark. Files that start with one and are joined (``cat a.log b.log``)
have one at the start of a line: a header follows it, not content."""
_BOM_PRI = _BOM + b"<"
"""A syslog line's start after one."""


class _Rejoined:
    """A stream whose first bytes were read already, whole again (for _Gunzip), counting
    what has been read of it."""

    def __init__(self, first: bytes, rest: Callable[[int], bytes]) -> None:
        self._first = first
        self._rest = rest
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        if self._first:
            data = self._first if size < 0 else self._first[:size]
            self._first = self._first[len(data) :]
        else:
            data = self._rest(size)
        self._read += len(data)
        return data

    def position(self) -> int:
        return self._read


_GZIP_PIECE = 1 << 14
"""How much of a gzip input is decompressed at a time: zlib copies what follows a member
for the next one, and a piece found damaged is decompressed again a byte at a time."""


class _Gunzip:
    """A gzip input decompressed, its members one after another (``cat a.gz b.gz``), as
    ``gzip -dc`` reads it: NUL bytes after a member are padding, and an input that is cut off,
    damaged, or followed by bytes that are not gzip ends where it does, every byte
    decompressed before it given (GzipFile.read lost what it had decompressed in the call that
    met it), and ``broken`` saying why. A read of the input that fails raises once what came
    before it is given."""

    def __init__(self, raw: _Rejoined) -> None:
        self._raw = raw
        self._decoder: zlib._Decompress | None = None  # None between members
        self._input = b""  # read, not decompressed yet
        self._at = 0  # where _input starts in the input
        self._failed: OSError | None = None
        self.broken: GzipBroken | None = None

    def read(self, size: int) -> bytes:
        out: list[bytes] = []
        got = 0
        while got < size and self.broken is None and self._failed is None:
            if self._decoder is None:  # a member ended, or none began yet
                padded = len(self._input)
                self._input = self._input.lstrip(b"\0")
                self._at += padded - len(self._input)
                if len(self._input) < len(_GZIP_MAGIC) and self._read():
                    continue
                if not self._input:
                    break  # the end of the input
                if not self._input.startswith(_GZIP_MAGIC):
                    self.broken = GzipBroken(
                        f"not gzip from byte {self._at} on, which was not read"
                        " (gzip -dc ignores such trailing garbage)"
                    )
                    break
                self._decoder = zlib.decompressobj(wbits=31)
            if not self._input and not self._read():
                # zlib may still hold output of input it took (a read that got what it asked
                # for stopped it there): gzip -dc gives those bytes too.
                pending = self._decoder.flush()
                if pending:
                    out.append(pending)
                    got += len(pending)
                if self._failed is None:
                    self.broken = GzipBroken(
                        f"the gzip data is cut off at byte {self._at}, before its end"
                        " (gzip -dc: unexpected end of file)"
                    )
                break
            data = self._inflate(self._decoder, size - got)
            out.append(data)
            got += len(data)
        if self._failed is not None and not out:
            raise self._failed
        return b"".join(out)

    def _read(self) -> bool:
        """Whether more input came."""
        try:
            more = self._raw.read(_GZIP_PIECE)
        except OSError as error:
            self._failed = error
            return False
        self._input += more
        return bool(more)

    def _inflate(self, decoder: zlib._Decompress, size: int) -> bytes:
        """Up to about ``size`` bytes more of the member, and all of them before damage."""
        before = decoder.copy()
        try:
            data = decoder.decompress(self._input, size)
        except zlib.error as error:
            data, at = _before_damage(before, self._input)
            reason = str(error).removeprefix("Error -3 while decompressing data: ")
            at += self._at
            self.broken = GzipBroken(f"damaged gzip data at byte {at}: {reason}")
            return data
        rest = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
        self._at += len(self._input) - len(rest)
        self._input = rest
        if decoder.eof:
            self._decoder = None
        return data


def _before_damage(decoder: zlib._Decompress, damaged: bytes) -> tuple[bytes, int]:
    """What ``damaged`` decompresses to before zlib finds it damaged, and where it does."""
    out = []
    for at in range(len(damaged)):
        try:
            out.append(decoder.decompress(damaged[at : at + 1]))
        except zlib.error:
            return b"".join(out), at
    return b"".join(out), len(damaged)  # not met again: never so


def _batches(
    app: str, lines: list[LogLine], attributes: list[dict[str, str] | None]
) -> list[Batch]:
    """The lines in one batch, or, given the attributes of each, in one for each run of
    lines with the same."""
    if not attributes:
        return [Batch(app, lines)]
    batches = []
    start = 0
    for i in range(1, len(lines) + 1):
        if i == len(lines) or attributes[i] != attributes[start]:
            batches.append(Batch(app, lines[start:i], attributes[start]))
            start = i
    return batches


def _chunks(
    first: bytes, read: Callable[[int], bytes], quiet: Callable[[], bool] | None = None
) -> Iterator[bytes]:
    """The input a chunk at a time; with ``quiet``, an empty chunk when it says the input has
    gone quiet (see _heroku)."""
    chunk = first
    while chunk:
        yield chunk
        if quiet is not None and quiet():
            yield b""
        chunk = read(CHUNK_SIZE)


def _not_shrinking(stream: BinaryIO) -> Callable[[int], bytes]:
    """``stream.read``, which for a file raises OSError once the file has shrunk: emptied by
    logrotate's copytruncate while it was imported, its next read found the end, the lines
    after not read and not said to be, or, once the application had written past where the
    import was, read its new lines from the middle of one, stored joined to an old one's
    start. (Written past the size it had, between two reads, it cannot be told.)"""
    try:
        fd = stream.fileno()
        status = os.fstat(fd)
    except (OSError, ValueError, AttributeError):  # io.BytesIO: io.UnsupportedOperation
        return stream.read
    if not stat.S_ISREG(status.st_mode):
        return stream.read
    largest = status.st_size

    def read(size: int) -> bytes:
        nonlocal largest
        now = os.fstat(fd).st_size
        if now < largest:
            raise OSError(
                f"the file shrank from {largest} to {now} bytes while it was read, as"
                " logrotate's copytruncate empties a log it rotates"
            )
        largest = now
        return stream.read(size)

    return read


class _Arriving:
    """An input read as its writer writes it (a pipe, a terminal, a socket): each chunk is
    what has arrived, up to CHUNK_SIZE, so that its lines are stored as they come rather than
    a MiB at a time (``heroku logs --tail | herolog import -``)."""

    def __init__(self, stream: BinaryIO, fd: int) -> None:
        # read1: what the buffer holds, else one read of the descriptor, which returns what
        # the pipe has; read() would wait for all of the size asked.
        self._read1: Callable[[int], bytes] = stream.read1  # type: ignore[attr-defined]
        # The descriptor itself, for one left non-blocking: read1 gives b"" both at the end
        # and while nothing has come yet. (read1 keeps nothing in the buffer: the raw reads
        # miss no byte of it.)
        self._raw: Callable[[int], bytes | None] | None = getattr(
            getattr(stream, "raw", None), "read", None
        )
        self._fd = fd
        self._ended = False
        """A read found the end: a terminal's (Ctrl-D) is read once, and not found again."""

    def _ready(self, timeout: float | None) -> bool:
        try:
            return bool(select.select([self._fd], [], [], timeout)[0])
        except ValueError:  # a descriptor over select's limit (1023), which poll does not have
            waiting = select.poll()
            waiting.register(self._fd, select.POLLIN)
            return bool(waiting.poll(None if timeout is None else timeout * 1000))

    def read(self, size: int) -> bytes:
        """Waits for the first bytes, then takes what else comes within GATHER_S of the last,
        up to ``size`` and for up to GATHER_MAX_S; empty at the end of the input."""
        parts = [self._read_some(size)]
        got = len(parts[0])
        until = time.monotonic() + GATHER_MAX_S
        while parts[-1] and got < size and time.monotonic() < until and self._ready(GATHER_S):
            parts.append(self._read_some(size - got))
            got += len(parts[-1])
        return b"".join(parts)

    def _read_some(self, size: int) -> bytes:
        """One read: what has come, waiting for the first of it; empty at the end."""
        if self._ended:
            return b""
        if self._raw is None or os.get_blocking(self._fd):
            data = self._read1(size)
            self._ended = not data
            return data
        # Left non-blocking (O_NONBLOCK, by a parent, or on a terminal as node leaves it), a
        # descriptor reads nothing also while its writer has nothing yet: read1's b"" ended
        # the import at the writer's first pause, and waiting for the descriptor after one
        # missed a terminal's end of input (Ctrl-D), which is read once: a second was needed.
        while (got := self._raw(size)) is None:
            self._ready(None)
        self._ended = not got
        return got

    def first(self) -> bytes:
        """The first chunk: at least a line that is not blank, or _HEAD bytes, to tell the
        format from; of syslog, up to the first message's end, which tells whether messages
        end with a newline or a NUL, unless the input goes quiet (QUIET_S) before it."""
        chunk = self.read(CHUNK_SIZE)
        while chunk and len(chunk) < _HEAD and b"\0" not in chunk:
            text = chunk.lstrip(b" \t\r\n")
            # A syslog line may be the first of a message that ends with a NUL (a traceback
            # sent over TCP, in pieces): a newline ends it once the next message follows.
            if b"\n" in text and (
                not text.startswith(b"<") or _NEWLINE_ENDED.search(text) or self.quiet()
            ):
                break
            more = self.read(CHUNK_SIZE - len(chunk))
            if not more:
                break
            chunk += more
        return chunk

    def quiet(self) -> bool:
        """Whether nothing more arrives within QUIET_S."""
        return not self._ready(QUIET_S)


def _arriving(stream: BinaryIO) -> _Arriving | None:
    """The input as an _Arriving if it is a pipe, a terminal or a socket; None for a file."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):  # io.BytesIO: io.UnsupportedOperation
        return None
    if not hasattr(stream, "read1") or not (
        stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)
    ):
        return None
    return _Arriving(stream, fd)


_Parsed = Iterator[tuple[int, list[LogLine], int, int, int]]
"""For each chunk read: its size, the lines it completed, the offset in the input before
which every line has now been given, and after which none, how many of those lines the
format did not describe (kept whole as ``unknown[unknown]``; not those whose own header says
``unknown``, as ``herolog logs`` prints such lines), and the line of the input (of a Logplex
body, the frame) the first of those is, else 0."""


def _undescribed(lines: list[LogLine], first: int) -> tuple[int, int]:
    """Syslog messages whose header could not be read (those have no PRI, as no read one
    lacks), and the number of the first, ``lines[0]`` being number ``first``."""
    undescribed = [i for i, line in enumerate(lines) if line.pri is None]
    return len(undescribed), first + undescribed[0] if undescribed else 0


def _logplex(chunks: Iterator[bytes]) -> _Parsed:
    decoder = FrameDecoder()
    for chunk in chunks:
        before = decoder.frames
        # On a framing error feed returns the frames before it; the next call raises.
        lines = decoder.feed(chunk, Received.at())
        yield len(chunk), lines, decoder.consumed, *_undescribed(lines, before + 1)
    decoder.close()  # Logplex frames only: nothing may be left over


def _split_lines(
    chunks: Iterator[bytes], end_of_line: bytes = b"\n"
) -> Iterator[tuple[int, list[bytes], int]]:
    """Complete lines of each chunk, the last at the end of input, without their ``\n`` (a
    ``\r`` before it is left to the caller: it counts in where the next line starts), and
    the offset past them. (With ``end_of_line`` NUL, messages that end so.)

    A line over MAX_LINE raises LineTooLong once read that far, before it is put together,
    after the lines before it are given.
    """
    rest: list[bytes] = []  # a line still without its end, in pieces: joined once (not n^2)
    rest_size = end = number = 0  # number: the lines given so far
    for chunk in chunks:
        start, end = end - rest_size, end + len(chunk)  # start: where rest begins
        if end_of_line not in chunk:
            rest.append(chunk)
            rest_size += len(chunk)
            if rest_size > MAX_LINE:
                raise LineTooLong(number + 1, start, _head(rest))
            yield len(chunk), [], start
            continue
        lines = chunk.split(end_of_line)
        if rest_size + len(lines[0]) > MAX_LINE:
            raise LineTooLong(number + 1, start, _head([*rest, lines[0]]))
        if rest:
            lines[0] = b"".join([*rest, lines[0]])
        last = lines.pop()
        if len(chunk) > MAX_LINE:  # else no other line of it can be over the limit
            for i, line in enumerate([*lines, last]):
                if len(line) > MAX_LINE:
                    at = start + sum(len(x) + 1 for x in lines[:i])
                    yield len(chunk), lines[:i], at
                    raise LineTooLong(number + i + 1, at, line[:_HEAD])
        number += len(lines)
        rest, rest_size = [last], len(last)
        yield len(chunk), lines, end - rest_size
    if rest_size:
        yield 0, [b"".join(rest)], end


def _head(pieces: list[bytes]) -> bytes:
    """The first _HEAD bytes of a line in pieces, without joining all of it."""
    head = b""
    for piece in pieces:
        head += piece[: _HEAD - len(head)]
        if len(head) == _HEAD:
            break
    return head


_NUL_ENDED = re.compile(rb"\0[ \t\r\n]*(?:(?=<)|\Z)")
_NEWLINE_ENDED = re.compile(rb"[^\0\r\n]\r?\n(?=<)")


def _syslog(chunks: Iterator[bytes], not_utf8: list[int]) -> _Parsed:
    """Syslog messages, a line each, or each ending with a NUL, as Python's SysLogHandler
    sends them (and serve's syslog port reads them): then a newline is the message's (a
    traceback's lines). ``not_utf8`` counts those with bytes that are not UTF-8, and has
    the line of the first.

    A line that starts no message continues the one before it, and is stored as serve stores
    it, with its header: a message waits for the line after it, as one in ``heroku logs``
    text does, so that an import resumed where a failed one stopped starts with a message.
    """
    head = next(chunks, b"")
    # More messages ending with a NUL than with a newline: not a NUL inside a line.
    nul_ended = b"\0" in head and len(_NUL_ENDED.findall(head)) > len(_NEWLINE_ENDED.findall(head))
    number = 1  # the line of the input the next message starts at
    previous: LogLine | None = None  # the message the next line may continue
    lines: list[LogLine] = []  # read, not given yet: those from ``held`` on wait (see above)
    whole: list[tuple[int, int]] = []  # of those kept whole: where in lines, the input's line
    held = held_at = held_size = 0  # lines[held:] wait; where they start in the input; bytes
    pos = end = 0  # where the next line starts in the input; where the lines read end

    def given(upto: int) -> tuple[list[LogLine], int, int]:
        """The lines up to ``upto``, taken out; how many are kept whole, and the first's line."""
        nonlocal lines, whole
        out, lines = lines[:upto], lines[upto:]
        kept = [at for i, at in whole if i < upto]
        whole = [(i - upto, at) for i, at in whole if i >= upto]
        return out, len(kept), kept[0] if kept else 0

    try:
        for size, raw_lines, end in _split_lines(
            itertools.chain([head] if head else [], chunks), b"\0" if nul_ended else b"\n"
        ):
            received = Received.at()
            if not size and not raw_lines:  # the input went quiet: nothing continues it now
                held = len(lines)
            for raw in raw_lines:
                line_number, start, pos = number, pos, pos + len(raw) + 1
                if nul_ended:
                    message = raw.lstrip(b" \t\r\n")
                    line_number += raw.count(b"\n", 0, len(raw) - len(message))
                    number += raw.count(b"\n")
                else:
                    message = raw.removesuffix(b"\r")
                    number += 1
                if message.startswith(_BOM_PRI):
                    message = message[len(_BOM) :]
                if not message.strip():
                    continue
                if not message.isascii() and not _is_utf8(message):
                    not_utf8[0] += 1
                    not_utf8[1] = not_utf8[1] or line_number
                # Most lines start with a PRI and a header that reads: messages, quickly told.
                line = parse_syslog(message, received, saved=True) if message[:1] == b"<" else None
                if nul_ended:
                    line = line or parse_syslog(message, received, saved=True)
                    held = len(lines) + 1
                elif (
                    previous is not None
                    and (line is None or line.pri is None)
                    and continues_message(text := message.decode("latin-1"))
                ):
                    line = continued(previous, text)
                    held_size += len(raw)
                    if held == len(lines) or held_size > CHUNK_SIZE:  # not held without end
                        held = len(lines) + 1
                else:
                    if line is None:
                        if message.lstrip(b" \t")[:1] == b"<":
                            message = message.lstrip(b" \t")  # as serve's syslog port reads it
                        line = parse_syslog(message, received, saved=True)
                    previous = line
                    held, held_at, held_size = len(lines), start, len(raw)
                if line.pri is None:
                    whole.append((len(lines), line_number))
                lines.append(line)
            offset = end if held == len(lines) else held_at
            out, count, first = given(held)
            held = 0
            yield size, out, offset, count, first
    except LineTooLong as error:
        if lines:  # the lines before the one too long are stored
            out, count, first = given(len(lines))
            yield 0, out, error.offset, count, first
        raise
    if lines:
        out, count, first = given(len(lines))
        yield 0, out, end, count, first


def _json(
    chunks: Iterator[bytes],
    cut_off: list[str],
    attributes: list[dict[str, str] | None],
    not_utf8: list[int],
) -> _Parsed:
    """``herolog logs --json`` output: a line that is not one is kept whole, but for half a
    JSON object the input ends in, which goes to ``cut_off``. Before each yield,
    ``attributes`` has those of each line given, or nothing if none has any. ``not_utf8``
    counts the lines with bytes that are not UTF-8, and has the first."""
    number = 0  # the lines read, blank ones too
    for size, raw_lines, end in _split_lines(chunks):
        received = Received.at()
        lines: list[LogLine] = []
        attributes.clear()
        unknown = first = 0
        for raw in raw_lines:
            number += 1
            if not raw.strip():
                continue
            if not raw.isascii() and not _is_json_text(raw):
                # json.loads refuses the whole line for them: each becomes U+FFFD instead,
                # as in the other formats.
                raw = raw.decode("utf-8", _AS_JSON_READS).encode("utf-8", "surrogatepass")
                not_utf8[0] += 1
                not_utf8[1] = not_utf8[1] or number
            line = parse_json_line(raw)
            if line is None and size == 0 and raw.lstrip().startswith(b"{") and _cut(raw):
                cut_off.append(raw.decode("utf-8", "replace"))
                continue
            attrs = None
            if line is None:
                line = kept_whole(raw.removesuffix(b"\r").decode("utf-8", "replace"), received)
                unknown += 1
                first = first or number
            elif _ATTRIBUTES.search(raw):
                attrs = _attributes(raw)
            if attrs is not None or attributes:
                if not attributes:  # the first with some: those before have none
                    attributes.extend([None] * len(lines))
                attributes.append(attrs)
            lines.append(line)
        yield size, lines, end, unknown, first


_ATTRIBUTES = re.compile(rb'"attributes"\s*:\s*\{\s*"')
"""A line with attributes: herolog writes ``{}`` for none, a line not to read twice."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def _attributes(raw: bytes) -> dict[str, str] | None:
    """The attributes of a line of ``logs --json`` output (the drain URL's query parameters),
    which parse_json_line leaves out; a value other than a string is none."""
    value = json.loads(raw).get("attributes")
    if not isinstance(value, dict):
        return None
    kept = {
        _SURROGATE.sub("\ufffd", k): _SURROGATE.sub("\ufffd", v)
        for k, v in value.items()
        if isinstance(v, str)
    }
    return kept or None


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _is_json_text(raw: bytes) -> bool:
    """Whether json.loads reads ``raw``: UTF-8, halves of UTF-16 pairs (ED A0 80) too."""
    try:
        raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True


def _replace_all_but_surrogates(error: UnicodeError) -> tuple[str, int]:
    """As "replace", but half a UTF-16 pair passes, as json.loads reads it (parse_json_line
    makes it one U+FFFD, where "replace" would make three)."""
    assert isinstance(error, UnicodeDecodeError)
    half = error.object[error.start : error.start + 3]
    if len(half) == 3 and half[0] == 0xED and 0xA0 <= half[1] <= 0xBF and half[2] >> 6 == 2:
        return half.decode("utf-8", "surrogatepass"), error.start + 3
    return "\ufffd", error.end


_AS_JSON_READS = "herolog-json-replace"
codecs.register_error(_AS_JSON_READS, _replace_all_but_surrogates)


def _cut(raw: bytes) -> bool:
    """Whether a line is not JSON at all (half an object), rather than other JSON."""
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return True
    return False


def _heroku(chunks: Iterator[bytes], cut_off: list[str], not_utf8: list[int]) -> _Parsed:
    """``heroku logs`` text: a line without a header continues the message before it.

    The heroku CLI prints a message's embedded newlines as they are, so a traceback spans
    several lines of which only the first has a header. Lines before any header are kept
    as ``unknown`` lines. A message that grows past MAX_LINE with the lines that continue
    it raises LineTooLong, naming its first line. A header the input ends in the middle of
    goes to ``cut_off``: it holds no message, and continues none. ``not_utf8`` counts the
    lines with bytes that are not UTF-8, and has the first.
    """
    pending: LogLine | None = None
    undescribed = False  # pending has no header: kept whole, as unknown[unknown]
    # Its continuation lines, joined once it is complete (not n^2); those of the chunks
    # before, a piece a chunk, so that a message of many short lines is not as many objects.
    more: list[str] = []
    fresh: list[str] = []  # those of the chunk being read

    def complete(line: LogLine) -> LogLine:
        if not more and not fresh:
            return line
        whole = line._replace(message="\n".join([line.message, *more, *fresh]))
        more.clear()
        fresh.clear()
        return whole

    pending_at = pos = end = 0  # where pending starts in the input; where the next line does
    pending_line = number = 0  # the line pending starts at; the lines read
    first = 0  # the first line kept whole
    try:
        for size, raw_lines, end in _split_lines(chunks):
            received = Received.at()
            done: list[LogLine] = []
            unknown = 0
            if not size and not raw_lines and pending is not None:
                # The input went quiet (see QUIET_S): no line is coming to continue pending.
                done.append(complete(pending))
                unknown += undescribed
                pending = None
            for raw in raw_lines:
                start, pos = pos, pos + len(raw) + 1
                number += 1
                try:
                    text = raw.removesuffix(b"\r").decode()
                except UnicodeDecodeError:
                    text = raw.removesuffix(b"\r").decode("utf-8", "replace")
                    not_utf8[0] += 1
                    not_utf8[1] = not_utf8[1] or number
                parsed = parse_heroku_line(text)
                bom = text[:1] == "\ufeff"  # see _BOM
                bare = text[1:] if bom else text
                if parsed is None and bom:
                    parsed = parse_heroku_line(bare)
                if parsed is None and bare.startswith("\x1b"):
                    # Saved in colour: the header's and the message's colours are the
                    # output's, which a message's own cannot be told from. The input's last
                    # line, without its line end, may stop in the middle of one.
                    uncoloured = _COLOUR.sub("", bare)
                    if size == 0:
                        uncoloured = _HALF_COLOUR.sub("", uncoloured)
                    parsed = parse_heroku_line(uncoloured)
                if parsed is None and size == 0:  # the input's last line, without its line end
                    piece = _HALF_COLOUR.sub("", _COLOUR.sub("", bare))
                    if not piece or _CUT_HEADER.fullmatch(piece):
                        if bare:  # else a "\r" whose "\n" never came (or a BOM): no line
                            cut_off.append(bare)
                        continue
                if parsed is not None:
                    if pending is not None:
                        done.append(complete(pending))
                        unknown += undescribed
                    pending, pending_at, pending_line, undescribed = parsed, start, number, False
                elif pending is not None and not undescribed:
                    fresh.append(text)
                    if pos - 1 - pending_at > MAX_LINE:
                        yield size, done, pending_at, unknown, first
                        raise LineTooLong(pending_line, pending_at, message=True)
                elif text.strip():
                    if pending is not None:
                        done.append(complete(pending))
                        unknown += undescribed
                    pending, undescribed = kept_whole(text, received), True
                    pending_at, pending_line, first = start, number, first or number
            if fresh:
                more.append("\n".join(fresh))
                fresh.clear()
            yield size, done, end if pending is None else pending_at, unknown, first
    except LineTooLong as error:
        if error.message or pending is None:
            raise
        if not undescribed and not _has_header(error.head):  # it continues pending
            raise LineTooLong(pending_line, pending_at, message=True) from None
        yield 0, [complete(pending)], error.offset, int(undescribed), first
        raise
    if pending is not None:
        yield 0, [complete(pending)], end, int(undescribed), first


def _has_header(head: bytes) -> bool:
    """Whether a line longer than ``head``, its start, has a header of its own."""
    parsed = parse_heroku_line(head.decode("utf-8", "replace"))
    return parsed is not None and parsed.message != ""
