"""The one parser for Heroku log traffic: Logplex bodies, syslog messages, ``heroku logs`` text.

Every input path (HTTPS drains, syslog, ``herolog import``) turns its bytes into
:class:`LogLine` values here, so they all agree on what a line is; the lines herolog makes
itself (``herolog run``'s, Logplex's notices) are made here too, by :func:`own_line`.

Octet counts are byte counts, so bodies are decoded as latin-1 first: that maps each byte
to one character, which lets a count index the text directly. Only the messages that are
not ASCII are then re-encoded and decoded as UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from itertools import repeat
from operator import add, itemgetter, sub
from typing import Any, NamedTuple, Protocol

from herolog import timestamps

UNKNOWN = "unknown"
MAX_PRI = 191
LOGPLEX_PRI = 172
"""local5.warning: the PRI of Logplex's own error lines (L10, L11, ...)."""

# Characters allowed in header fields: RFC 5424 PRINTUSASCII.
_TOKEN = r"[!-~]+"
_HEADER_FIELDS = rf"<([0-9]{{1,3}})>1 ({_TOKEN}) ({_TOKEN}) ({_TOKEN}) ({_TOKEN}) ({_TOKEN})(?: |$)"
# Count and header in one match: the common case costs one regex call per frame.
# Counts have at most 12 digits (a terabyte): longer ones are errors, not huge integers.
MAX_COUNT_DIGITS = 12
_COUNT_AND_HEADER = re.compile(rf"[ \t\r\n]*([0-9]{{1,{MAX_COUNT_DIGITS}}}) (?:{_HEADER_FIELDS})?")
_HEADER = re.compile(_HEADER_FIELDS)
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_WHITESPACE_OR_NUL = re.compile(r"[ \t\r\n\0]*")
"""Between newline-framed messages: a sender ending them with a newline and a NUL has sent
no message between the two."""
_STARTS_NEXT = re.compile(r"\0|<[0-9]{1,3}>|(<[0-9]{0,3}\Z)")
"""What, after the newline (and blank lines) that end a NUL-ending sender's message, shows
that it has ended: the next message's PRI, or more of its trailer; or, matching the group,
what may still become a PRI. A line starting with a digit is no octet count from such a
sender (a traceback's "2 retries left"), nor one with a ``<`` of no PRI (an HTML body)."""
_EMPTY_LINES = re.compile(r"(?:[ \t\r]*+\n)*+")
_PRI = re.compile(r"<[0-9]{1,3}>")
_UNDECIDED = re.compile(
    r"(?:[ \t\r]*+(?:[0-9]{0,12} ?|(?:[0-9]{1,12} )?<[0-9]{0,3})|[ \t\r\0]*+)\Z"
)
"""The start of a line that may yet be a continued line's (its indentation), an octet
count's or a message's PRI, or a blank line (NULs too: see _BLANK_LINES) whose newline is
still to come: what follows it decides."""
_BLANK_LINES = re.compile(r"(?:[ \t\r\0]*+\n)*+\0*+")
"""Blank lines, and NULs (a message's trailer, from a sender that ends them with both)."""
_STARTS_MESSAGE = re.compile(r"[ \t\r]*+<[0-9]{1,3}>")
"""A message's PRI, after what may come between messages."""
_NULS = re.compile(r"\0*+")
_LINE_END = re.compile(r"[ \t\r]*+\n")
_CONTINUES = re.compile(
    r"(?![ \t\r\0]*+(?:\n|\Z))"
    r"[ \t\r]*+(?!<[0-9]{1,3}>|(?:[0-9]{1,12} )?<[0-9]{0,3}\Z|[0-9]{0,12} ?\Z)"
)
"""A line after a newline-framed message that may start none (see FrameDecoder): not
blank (NULs among its spaces too, or not yet known not to be), nor a message's PRI
(``<13>``; a line of HTML is no message), nor what may still become one or an octet count;
unless it starts a frame (_starts_frame)."""
_FRAME_START = re.compile(r"[ \t\r]*+([0-9]{1,12}) (<[0-9]{1,3}>)")
_OVER_LIMIT = re.compile(r"([0-9]{1,12}) ")
_CUT_OFF_PRI = re.compile(r"<[0-9]{0,3}\Z")
MAX_CUT_FRAME = 64 << 20
"""The largest octet count a decoder that cuts long messages takes (the first ``max_frame``
bytes kept, the rest skipped): a count past it is no syslog message, and skipping it would
swallow the rest of the stream."""
_TERMINATORS = re.compile(r"[\n\0]")

# RFC 5424 STRUCTURED-DATA: SD-NAME is PRINTUSASCII except '=', ']', '"' and space.
_SD_NAME = r"[!#-<>-\\^-~]{1,32}"
_SD_PARAM = rf'{_SD_NAME}="(?:[^"\\\]]|\\.)*"'
_SD_ELEMENT = re.compile(rf"\[({_SD_NAME})((?: {_SD_PARAM})*)\]")
_SD_RUN = re.compile(rf"(?:\[{_SD_NAME}(?: {_SD_PARAM})*\])+")
_SD_PARAMS = re.compile(rf'({_SD_NAME})="((?:[^"\\\]]|\\.)*)"')
# RFC 5424 6.3.3: in a PARAM-VALUE only \", \\ and \] are escapes; any other backslash is itself.
_SD_ESCAPE = re.compile(r'\\(["\\\]])')
# IANA-registered SD-IDs; any other parameterless element must carry "@" to count as SD.
_REGISTERED_SD_IDS = frozenset({"timeQuality", "origin", "meta"})

# SOURCE and DYNO are APP-NAME and PROCID, printable ASCII as in RFC 5424: a name with any
# other character could not go to a drain, so such a line has no header. The first [DYNO]:
# ends the header, and SOURCE is all before it, brackets too, but for a first one: an
# APP-NAME may hold them (logger --rfc5424 -t 'billing[77]' sends the tag whole), shown as
# billing[77][-]:, where an app's own `[INFO][main]: started` is no header.
_HEROKU_LINE = re.compile(r"([!-~]+) ([!-Z\\^-~][!-~]*?)\[([!-Z\\^-~]+)\]:(?: |$)")

# RFC 3164 (BSD) syslog, which rsyslog forwards by default and logger --rfc3164 and Python's
# SysLogHandler send: <PRI>, a TIMESTAMP (Mmm dd hh:mm:ss; RFC 3339 from rsyslog's
# RSYSLOG_ForwardFormat) and a HOSTNAME, each of which some senders leave out, then
# TAG[PID]: or TAG: (rsyslog leaves the colon out after an RFC 5424 sender's [PID], and
# sends the APP-NAME alone, "TAG ", for its nil PROCID: a TAG ends at a space too, as RFC
# 3164 and rsyslog read one, where a TIMESTAMP and HOSTNAME came first). The TAG and PID
# become SOURCE and DYNO, printable ASCII as those are. A HOSTNAME ends in a letter or
# digit, as rsyslog's do (or is an address in brackets), so without one a "TAG:" or
# "TAG[PID]:" is not read as it.
_MONTHS = {
    name: number
    for number, name in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_BSD_MESSAGE = re.compile(
    r"<([0-9]{1,3})>"
    rf"(?:(?:({'|'.join(_MONTHS)}) ([ 0-9]?[0-9]) ([0-9]{{2}}):([0-9]{{2}}):([0-9]{{2}})"
    r"(?:\.([0-9]+))?|([0-9]{4}-[0-9]{2}-[0-9]{2}T[!-~]+))"
    r" (?:([!-~]*[0-9A-Za-z]|\[[!-~]+\]) )?)?"
    r"([!-9;-Z\\^-~]+)(?:\[([!-Z\\^-~]+)\]:?|:|(?(9)(?= |$)|(?!)))(?: |$)"
)

# The quoted value as [^"\\]*(?:\\.[^"\\]*)*, not (?:[^"\\]|\\.)*: the same matches, without
# a trip round a group for each character (--json parses every router line with it).
_LOGFMT_PAIR = re.compile(r'[ \t]*([^ \t="]+)=(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^ \t"]*))(?=[ \t]|$)')
_BACKSLASH_ESCAPE = re.compile(r"\\(.)")


class LogLine(NamedTuple):
    """One log line as parsed, before the store gives it an id, an app and a receive time."""

    timestamp: str
    """As the sender wrote it (an RFC 3164 one, with no year or zone, as the date-time it is
    read as); shown verbatim."""
    time: str
    """The same instant as a UTC instant string (see :mod:`herolog.timestamps`)."""
    source: str
    dyno: str
    message: str
    pri: int | None
    hostname: str | None
    structured_data: str | None
    msgid: str | None = None
    """RFC 5424's MSGID; None for its nil value, and from senders that have none (Logplex's
    HTTPS form, BSD syslog, ``heroku logs`` text)."""


class TooManyLines(ValueError):
    """A body of more frames than the caller takes at once: none of it is parsed past them."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit:,} lines")
        self.limit = limit


class FramingError(ValueError):
    """An octet-counted body that cannot be split into frames: none of a drain POST's
    body is stored; a stream (syslog, import) keeps the frames before the error."""

    def __init__(self, reason: str, frame: int, offset: int) -> None:
        super().__init__(f"frame {frame} at byte {offset}: {reason}")
        self.reason = reason
        self.frame = frame
        self.offset = offset
        self.parsed: list[LogLine] = []
        """The complete frames before the error, for streams that keep what came first."""


class Received(NamedTuple):
    """When a batch arrived, in the two forms a line may need it."""

    timestamp: str
    """Logplex style, shown for lines whose own timestamp is nil or unreadable."""
    time: str
    """Instant string."""

    @classmethod
    def at(cls, moment: datetime | None = None) -> Received:
        timestamp = timestamps.to_heroku(moment or timestamps.now())
        return cls(timestamp, timestamps.heroku_to_instant(timestamp))


def own_line(source: str, dyno: str, message: str, pri: int | None) -> LogLine:
    """A line herolog writes itself, stamped now in Heroku's form: ``herolog run``'s output
    and lifecycle lines, Logplex's L10 and L11 notices."""
    now = Received.at()
    return LogLine(now.timestamp, now.time, source, dyno, message, pri, "host", None, None)


def parse_logplex(
    body: bytes, received: Received | None = None, max_lines: int | None = None
) -> list[LogLine]:
    """Every frame of an ``application/logplex-1`` body, or FramingError for the whole body;
    TooManyLines, as soon as it is seen, for a body of more than ``max_lines`` frames."""
    text = body.decode("latin-1")
    newlines = text.count("\n", 0, 4096)
    if newlines >= _BULK_MIN_FRAMES:
        lines = _parse_plain_body(text, max_lines)
        if lines is not None:
            return lines
    elif newlines == 1:
        lines = _parse_one_frame(text)
        if lines is not None:
            return lines
    lines, _, _ = _parse_frames(text, 0, True, received or Received.at(), 1, 0, max_lines=max_lines)
    return lines


# The bulk path below does per-body work that only pays off past a few frames.
_BULK_MIN_FRAMES = 4
_PRI_TOKENS = {f"<{pri}>1": pri for pri in range(MAX_PRI + 1)}
_make_line = partial(tuple.__new__, LogLine)
_seconds_of = itemgetter(slice(0, 19))
_micros_of = itemgetter(slice(20, 26))
_offset_of = itemgetter(slice(26, None))
_dot_of = itemgetter(19)
_up_to_micros = itemgetter(slice(0, 26))


def _parse_plain_body(text: str, max_lines: int | None = None) -> list[LogLine] | None:
    """The lines of a body in one of Heroku's exact forms, or None to leave it to the loop.

    Heroku sends ``COUNT <PRI>1 TS host SOURCE DYNO - MSG\n`` to HTTPS drains and
    ``COUNT <PRI>1 TS d.TOKEN SOURCE DYNO - - MSG\n`` to syslog drains, with no newline
    inside a message. Such a body is split on newlines and spaces and then checked as a
    whole with C-level operations (every count equals its frame's length, every field has
    the form the frame loop requires), so the frame loop's Python-level work per frame is
    skipped. Any body that fails a check is parsed by the frame loop instead, which gives
    the same lines for every body this accepts.
    """
    if "\r" in text or text[-1:] != "\n":
        return None
    frames = text[:-1].split("\n")
    if max_lines is not None and len(frames) > max_lines:
        return None  # the frame loop says so where it finds them, as for any body
    first = frames[0].split(" ", 4)
    logplex_form = len(first) > 3 and first[3] == "host"
    width = 8 if logplex_form else 9  # the syslog form has a nil STRUCTURED-DATA field too
    fields = list(map(str.split, frames, repeat(" "), repeat(width - 1)))
    if min(map(len, fields)) != width:
        return None
    columns = list(zip(*fields, strict=True))
    counts, pris, stamps, hosts, sources, dynos, msgids = columns[:7]
    messages = columns[-1]
    n = len(frames)
    if "" in counts or not "".join(counts).isdecimal():
        return None
    if max(map(len, counts)) > MAX_COUNT_DIGITS:
        return None
    if list(map(int, counts)) != list(map(sub, map(len, frames), map(len, counts))):
        return None
    pri_values = list(map(_PRI_TOKENS.get, pris))
    if None in pri_values or msgids.count("-") != n:
        return None
    if logplex_form:
        if hosts.count("host") != n:
            return None
    elif columns[7].count("-") != n or "host" in hosts or "" in hosts or "-" in hosts:
        return None
    if "" in sources or "" in dynos:
        return None
    names = "".join(sources) + "".join(dynos) + ("" if logplex_form else "".join(hosts))
    if not (names.isascii() and names.isprintable()):
        return None
    instants: Iterable[str | None]
    if _all_utc_micros(stamps):
        instants = map(add, map(_up_to_micros, stamps), repeat("Z"))
    else:
        instants = list(map(timestamps.normalize, stamps))
        if None in instants:
            return None
    if not text.isascii():
        messages = tuple(m if m.isascii() else _utf8_message(m) for m in messages)
    rows = zip(
        stamps, instants, sources, dynos, messages, pri_values, hosts, repeat(None), repeat(None)
    )
    return list(map(_make_line, rows))


def _parse_one_frame(text: str) -> list[LogLine] | None:
    """The line of a body that is one frame in Heroku's HTTPS form, or None to leave it to
    the loop.

    Under light load most Logplex POSTs carry one ``COUNT <PRI>1 TS host SOURCE DYNO - MSG\n``
    frame. Split on its first seven spaces and checked field by field, it costs a third of
    what the frame loop's regular expressions do; the loop gives the same line for every
    body this accepts.
    """
    fields = text.split(" ", 7)
    if len(fields) != 8 or "\r" in text:
        return None
    count, pri_token, stamp, host, source, dyno, msgid, message = fields
    if host != "host" or msgid != "-" or message[-1:] != "\n":
        return None
    if not count.isdecimal() or len(count) > MAX_COUNT_DIGITS:
        return None
    if int(count) != len(text) - len(count) - 1:
        return None
    pri = _PRI_TOKENS.get(pri_token)
    if pri is None:
        return None
    names = source + dyno
    if not (source and dyno and names.isascii() and names.isprintable()):
        return None
    instant = timestamps.normalize(stamp)
    if instant is None:
        return None
    message = message[:-1]
    if not message.isascii():
        message = _utf8_message(message)
    return [LogLine(stamp, instant, source, dyno, message, pri, host, None, None)]


def _all_utc_micros(stamps: tuple[str, ...]) -> bool:
    """Whether every timestamp is ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, Logplex's usual."""
    if set(map(len, stamps)) != {32} or set(map(_offset_of, stamps)) != {"+00:00"}:
        return False
    if set(map(_dot_of, stamps)) != {"."}:
        return False
    micros = "".join(map(_micros_of, stamps))
    if not (micros.isascii() and micros.isdecimal()):
        return False
    # Only canonical seconds can be copied into instant strings as they are.
    return all(map(timestamps.is_canonical_seconds, set(map(_seconds_of, stamps))))


def parse_syslog(
    message: bytes, received: Received | None = None, *, saved: bool = False
) -> LogLine:
    """One syslog message without framing (one line of newline-framed syslog, say).

    A message whose header cannot be read is kept whole as an ``unknown[unknown]`` line.
    ``saved``: it was logged before ``received`` (an import), which a time without a year
    is then not read as after.
    """
    text = message.decode("latin-1")
    end = len(text)
    if text.endswith("\n"):
        end -= 2 if text.endswith("\r\n") else 1
    return _parse_message(text, 0, end, received or Received.at(), saved=saved)


_JSON_NAME = re.compile(r"[!-~]+")
# JSON writes UTF-16 (\ud800), and Python's json reads raw ones too (ED A0 80): one half of
# a pair is no character, which UTF-8 (and so the store) cannot hold. As invalid UTF-8 does
# elsewhere, it becomes U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json_line(line: bytes) -> LogLine | None:
    """A line of ``herolog logs --json`` output, else None; its ``id``, ``app``, ``time``
    and ``received_at`` are the store's, not the line's, and are left out."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    timestamp, source, dyno, message, pri, hostname, sd, msgid = map(
        record.get,
        ("timestamp", "source", "dyno", "message", "pri", "hostname", "structured_data", "msgid"),
    )
    if not (
        isinstance(timestamp, str)
        and isinstance(source, str)
        and isinstance(dyno, str)
        and isinstance(message, str)
        and _JSON_NAME.fullmatch(source)
        and _JSON_NAME.fullmatch(dyno)
        and (pri is None or (type(pri) is int and 0 <= pri <= MAX_PRI))
        and (hostname is None or (isinstance(hostname, str) and _JSON_NAME.fullmatch(hostname)))
        and (msgid is None or (isinstance(msgid, str) and _JSON_NAME.fullmatch(msgid)))
    ):
        return None
    instant = timestamps.normalize(timestamp)
    if hostname == "-":  # written by a herolog that kept a nil HOSTNAME as "-"
        hostname = None
    structured_data = None if sd is None else format_structured_data(sd)
    if instant is None or structured_data == "":
        return None
    if timestamp[10:11] == " ":  # RFC 3339 allows it; a header or a syslog frame does not
        timestamp = f"{timestamp[:10]}T{timestamp[11:]}"
    if b"\\u" in line or not line.isascii():  # a lone surrogate: half a pair is no character
        message = _SURROGATE.sub("\ufffd", message)
        if structured_data is not None:
            structured_data = _SURROGATE.sub("\ufffd", structured_data)
    return LogLine(timestamp, instant, source, dyno, message, pri, hostname, structured_data, msgid)


def parse_heroku_line(line: str) -> LogLine | None:
    """A line of ``heroku logs`` output (``TIMESTAMP SOURCE[DYNO]: MESSAGE``), else None."""
    m = _HEROKU_LINE.match(line)
    if m is None:
        return None
    timestamp, source, dyno = m.groups()
    instant = timestamps.normalize(timestamp)
    if instant is None:
        return None
    return LogLine(timestamp, instant, source, dyno, line[m.end() :], None, None, None, None)


_NOT_SKIPPING, _SKIPPING_TEXT, _SKIPPING_LINE_START, _SKIPPING_INDENT = range(4)


class FrameDecoder:
    """Incremental RFC 6587 decoder for streams: syslog over TCP, files on import.

    Octet-counted frames always; with ``newline_framing`` also messages that start with
    ``<`` and end at a newline (or a NUL), message by message, as syslog senders may mix them,
    and after such a message, lines that start none (its own line breaks, from a sender that
    does not octet-count it), each a line with its header.
    ``feed`` returns the lines of every message completed so far; ``close`` checks that the
    stream did not end inside one. When a chunk breaks the framing, ``feed`` still returns
    the messages before the break, and the next ``feed`` or ``close`` raises the
    FramingError, so a stream keeps what was good before it. Frame numbers and byte offsets
    in errors count from the start of the stream.

    A message over ``max_frame`` is a FramingError, unless ``cut_long``: then its first
    ``max_frame`` bytes (back to the start of a UTF-8 character) are its line, the rest of it
    is skipped as it arrives, never buffered, and the stream goes on (``take_cuts`` says the
    sizes of the messages cut). An octet count over MAX_CUT_FRAME, or one that no PRI
    follows, is still a FramingError: skipping it would swallow the stream.
    """

    def __init__(
        self, max_frame: int = 1 << 20, *, newline_framing: bool = False, cut_long: bool = False
    ) -> None:
        self.max_frame = max_frame
        self.newline_framing = newline_framing
        self.cut_long = cut_long
        self._skip_count = 0
        """Bytes of an octet-counted frame cut at the limit still to skip."""
        self._skip_line = _NOT_SKIPPING
        """Where the rest of a newline-framed message cut at the limit is being skipped."""
        self._cut_start = 0
        """Where in the stream the newline-framed message being skipped starts."""
        self._cut_size = 0
        """Its size if it ends at the newline last skipped (a sender that ends messages with
        a NUL: what follows the newline says)."""
        self._cut_cr = False
        """Whether the last byte of it skipped in an earlier read is a CR (framing, before a
        newline)."""
        self._cut_sizes: list[int] = []
        self._buffer = bytearray()
        self._offset = 0
        self._frames = 0
        self._need = 0
        self._awaiting_newline = False
        self._nul_ended = False
        self._nul_may_follow = False  # only a newline-framed message may be followed by NULs
        self._previous: LogLine | None = None
        """The newline-framed message just decoded, whose header a line after it that
        starts no message takes."""
        self._nul_end: int | None = None
        """Where in the stream the NUL that ended the last message is followed, while what
        follows it is still to be read (see _after_nul)..."""
        self._nul_line: LogLine | None = None
        """...that message (its line, or a cut message's first part)..."""
        self._nul_ended_before = False
        """...and whether a NUL had ended a message before it."""
        self._scanned: int | None = None
        """Where in the stream the last newline is that a NUL-ending sender's message still
        to end was read up to, all before it the message's: the next read goes on from
        there, not from the message's start, which for a message arriving a line at a time
        looked at each of its lines again at each read."""
        self._cut_message: LogLine | None = None
        """The line kept of the newline-framed message being skipped past the limit."""
        self._error: FramingError | None = None

    @property
    def frames(self) -> int:
        """Messages decoded so far."""
        return self._frames

    @property
    def consumed(self) -> int:
        """Where in the stream the messages returned so far end (at a framing error, where
        it is): a stream resumed from there decodes the rest."""
        return self._offset if self._error is None else self._error.offset

    @property
    def error(self) -> FramingError | None:
        """The framing error met so far, if any: nothing after it will be decoded."""
        return self._error

    def take_cuts(self) -> list[int]:
        """The sizes of the messages cut at the limit since the last call (``cut_long``); a
        newline-framed one is told once its end has come."""
        cuts, self._cut_sizes = self._cut_sizes, []
        return cuts

    def feed(self, data: bytes, received: Received | None = None) -> list[LogLine]:
        if self._error is not None:
            raise self._error
        if self._skip_count and not self._buffer:  # the rest of a frame cut: never buffered
            taken = min(self._skip_count, len(data))
            self._skip_count -= taken
            self._offset += taken
            data = data[taken:]
            if not data:
                return []
        elif (
            self._skip_line == _SKIPPING_TEXT
            and not self._buffer
            and b"\n" not in data
            and b"\0" not in data
        ):
            self._offset += len(data)
            self._cut_cr = data.endswith(b"\r") if data else self._cut_cr
            return []
        self._buffer += data
        if len(self._buffer) < self._need:
            return []
        if (
            self._awaiting_newline
            and b"\n" not in data
            and b"\0" not in data
            and len(self._buffer) <= self.max_frame
        ):
            return []  # a newline-framed message still cut off: no need to look again
        self._awaiting_newline = False
        text = self._buffer.decode("latin-1")
        out: list[LogLine] = []
        try:
            pos = self._decode(text, received or Received.at(), out)
        except FramingError as error:
            error.parsed = out + error.parsed
            self._error = error
            self._frames = error.frame - 1
            if error.parsed:
                return error.parsed
            raise
        del self._buffer[:pos]
        self._offset += pos
        self._need = _pending_frame_size(self._buffer, self.max_frame if self.cut_long else None)
        return out

    def _decode(self, text: str, received: Received, out: list[LogLine]) -> int:
        """Append the complete messages of ``text`` to ``out``; the position consumed."""
        size = len(text)
        pos = 0
        # RFC 6587 3.4.2: some senders end messages with NUL instead (syslog-ng reads both).
        # Looked for once a chunk: a message is searched for a NUL only if there is one.
        nul_ends = self.newline_framing and "\0" in text
        while True:
            if self._skip_count:
                taken = min(self._skip_count, size - pos)
                self._skip_count -= taken
                pos += taken
                if self._skip_count:
                    return pos
            if self._skip_line != _NOT_SKIPPING:
                pos = self._skip_rest(text, pos)
                if self._skip_line != _NOT_SKIPPING:
                    return pos
            if self._nul_end == self._offset + pos:
                after = self._after_nul(text, pos)
                if after is None:
                    return pos
                pos = after
            # Most often the next message starts at once: nothing to look at.
            if self._previous is not None and pos < size and text[pos] != "<":
                pos = _BLANK_LINES.match(text, pos).end()  # type: ignore[union-attr]
                if _CONTINUES.match(text, pos) and not _starts_frame(text, pos):
                    pos = self._continuation(text, pos, out)
                    if pos < 0:
                        return -pos - 1
                    continue
                if _UNDECIDED.match(text, pos):
                    return pos
            # Whether a NUL may come here depends on the message before, not on where the
            # reads cut the stream: a NUL after an octet-counted frame is garbage.
            between = _WHITESPACE_OR_NUL if nul_ends and self._nul_may_follow else _WHITESPACE
            pos = between.match(text, pos).end()  # type: ignore[union-attr]
            if pos == size:
                return pos
            if self.newline_framing and text[pos] == "<":
                resume = -1 if self._scanned is None else self._scanned - self._offset
                self._scanned = None
                if resume > pos:  # as far as the last read found this message to go on
                    end = resume
                else:
                    end = text.find("\n", pos)
                    if nul_ends:
                        nul = text.find("\0", pos, end if end >= 0 else size)
                        if nul >= 0:
                            end = nul
                # A sender that has ended a message with a NUL (Python's SysLogHandler) ends
                # them all so, and a newline in one (a traceback) is its content: a line
                # after it that starts no message continues it, to its NUL.
                # Blank lines are a message's too (between a chained exception's tracebacks):
                # what follows them says whether it has ended.
                scanned = -1
                while self._nul_ended and end >= 0 and text[end] == "\n":
                    scanned = end
                    after = _EMPTY_LINES.match(text, end + 1).end()  # type: ignore[union-attr]
                    ended = _STARTS_NEXT.match(text, after)
                    if after == size or (ended and ended.group(1) is not None):
                        end = -2  # what follows is still to come
                    elif not ended:
                        newline = text.find("\n", after)
                        nul = text.find("\0", after, newline if newline >= 0 else size)
                        end = nul if nul >= 0 else newline
                        continue
                    break
                # The limit holds whether the newline came in the same chunk or not, and is
                # the message's: the \r of a \r\n (or one a \n may still follow) is framing.
                # (Not quite for a NUL-ending sender's message followed by more than the
                # limit of blank lines, undecided, in one chunk: counted as its own.)
                last = end if end >= 0 else size
                if last - pos - (text[last - 1] == "\r") > self.max_frame:
                    if not self.cut_long:
                        raise FramingError(
                            f"a line of more than {self.max_frame:,} bytes",
                            self._frames + 1,
                            self._offset + pos,
                        )
                    pos = self._cut_line(text, pos, received, out)
                    continue
                if end < 0:
                    self._awaiting_newline = end == -1
                    if scanned > pos:
                        self._scanned = self._offset + scanned
                    return pos
                stop = end - 1 if text[end - 1] == "\r" else end
                nul_ended = self._nul_ended
                if text[end] == "\0":
                    self._nul_ended = True
                self._message(text, pos, stop, received, out)
                if text[end] == "\0":
                    self._ended_at_nul(end, out[-1], nul_ended)
                pos = end + 1
                continue
            # A run of octet-counted frames: whole if it is plain Logplex, else frame by frame.
            cut = text.rfind("\n") + 1
            if cut > pos and text.count("\n", pos, cut) >= _BULK_MIN_FRAMES:
                run = text[pos:cut]
                # A frame over the limit is the frame loop's to refuse, however it arrived.
                fits = (
                    cut - pos <= self.max_frame or max(map(len, run.split("\n"))) <= self.max_frame
                )
                lines = _parse_plain_body(run) if fits else None
                if lines is not None:
                    out += lines
                    self._frames += len(lines)
                    self._nul_may_follow = False
                    self._previous = None
                    pos = cut
                    continue
            lines, consumed, next_frame = _parse_frames(
                text,
                pos,
                False,
                received,
                self._frames + 1,
                self._offset,
                self.max_frame,
                stop_at_message=self.newline_framing,
                stop_over_limit=self.cut_long,
            )
            out += lines
            self._frames = next_frame - 1
            if lines:
                self._nul_may_follow = False
                self._previous = None
            over = _OVER_LIMIT.match(text, consumed) if self.cut_long else None
            if over is not None and int(over[1]) > self.max_frame:
                kept = self._cut_frame(text, over, received, out)
                if kept is not None:
                    pos = kept
                    continue
            if consumed == pos:  # a frame cut off by the end of what arrived so far
                return pos
            pos = consumed

    def _continuation(self, text: str, pos: int, out: list[LogLine]) -> int:
        """Decode the line at ``pos`` that continues the newline-framed message before it
        (a sender that does not octet-count a message with line breaks in it: syslog-ng's
        network(), a script writing to a socket) as a line of its own with that message's
        header, as Heroku stores each line of a dyno's output; where it ends, or, when its
        newline has not come yet, -1 - ``pos``."""
        assert self._previous is not None
        end = text.find("\n", pos)
        # The first message of a sender that ends them with a NUL (Python's SysLogHandler)
        # ends at its first newline, since none has ended with a NUL yet: its last line does.
        nul = text.find("\0", pos, end if end >= 0 else len(text))
        if nul >= 0:
            end = nul
        last = end if end >= 0 else len(text)
        if last - pos - (text[last - 1] == "\r") > self.max_frame:
            if not self.cut_long:
                raise FramingError(
                    f"a line of more than {self.max_frame:,} bytes",
                    self._frames + 1,
                    self._offset + pos,
                )
            stop = _utf8_cut(text, pos, pos + self.max_frame)
            out.append(self._continued(text[pos:stop]))
            self._frames += 1
            self._cut_message = out[-1]
            self._cut_start, self._skip_line = self._offset + pos, _SKIPPING_TEXT
            return pos + self.max_frame
        if end < 0:
            self._awaiting_newline = True
            return -1 - pos
        out.append(self._continued(text[pos : end - 1 if text[end - 1] == "\r" else end]))
        self._frames += 1
        if nul >= 0:
            self._ended_at_nul(end, out[-1], self._nul_ended)
            self._nul_ended = True
            self._previous = None
        return end + 1

    def _ended_at_nul(self, nul: int, line: LogLine, nul_ended: bool) -> None:
        """The message ``line`` ended at the NUL at ``nul``; a NUL had ended one before it
        if ``nul_ended``. What follows the NUL is still to be read (_after_nul)."""
        self._nul_end = self._offset + nul + 1
        self._nul_line = line
        self._nul_ended_before = nul_ended

    def _after_nul(self, text: str, pos: int) -> int | None:
        """Read what follows, at ``pos``, the NUL that ended the last message: where to go
        on from, or None while it is still to come. After any more NULs, a newline, a PRI or
        an octet count shows a sender that ends its messages with NULs; other text was the
        message's own (a C string's buffer, from a sender that ends them with a newline),
        and is a line after it that starts no message, the sender not taken for one that
        ends them so."""
        text_at = _NULS.match(text, pos).end()  # type: ignore[union-attr]
        if _UNDECIDED.match(text, text_at):
            return None
        self._nul_end = None
        if (
            _LINE_END.match(text, text_at)
            or _STARTS_MESSAGE.match(text, text_at)
            or _starts_frame(text, text_at)
        ):
            return pos
        self._nul_ended = self._nul_ended_before
        self._previous = self._nul_line
        return text_at

    def _message(
        self, text: str, pos: int, stop: int, received: Received, out: list[LogLine]
    ) -> None:
        """Decode the newline-framed message ``text[pos:stop]`` into ``out``."""
        line = _parse_message(text, pos, stop, received)
        # A `<` of no PRI (`<html>`) starts no message: a line of the one before.
        if line.pri is None and self._previous is not None and not _PRI.match(text, pos):
            line = self._continued(text[pos:stop])
        else:
            self._previous = line
        if self._nul_ended:  # a NUL ends its messages: none continues on the next line
            self._previous = None
        out.append(line)
        self._frames += 1
        self._nul_may_follow = True

    def _cut_line(self, text: str, pos: int, received: Received, out: list[LogLine]) -> int:
        """Decode the first ``max_frame`` bytes of the newline-framed message at ``pos``,
        which is longer, as its line, and skip the rest of it: where the part kept ends."""
        self._message(text, pos, _utf8_cut(text, pos, pos + self.max_frame), received, out)
        self._cut_message = out[-1]
        self._cut_start, self._skip_line = self._offset + pos, _SKIPPING_TEXT
        return pos + self.max_frame

    def _skip_rest(self, text: str, pos: int) -> int:
        """Skip what arrived of a newline-framed message cut at the limit, from ``pos``, to
        where it ends as ``_decode`` ends one (for a sender that ends messages with a NUL,
        a newline ends it only when blank lines and the next message's PRI or a NUL follow):
        where that is, or how far it could skip."""
        size = len(text)
        while pos < size:
            if self._skip_line == _SKIPPING_TEXT:
                found = _TERMINATORS.search(text, pos)
                if found is None:
                    self._cut_cr = text[-1] == "\r"
                    return size
                end = found.start()
                nul = text[end] == "\0"
                cr = not nul and (text[end - 1] == "\r" if end else self._cut_cr)
                self._cut_size = self._offset + end - cr - self._cut_start
                if nul or not self._nul_ended:
                    self._end_skip(end if nul else None)
                    return end + 1
                self._skip_line = _SKIPPING_LINE_START
                pos = end + 1
                continue
            char = text[pos]
            if char == "\n":
                self._skip_line = _SKIPPING_LINE_START
            elif char in " \t\r":
                if self._skip_line == _SKIPPING_LINE_START:
                    self._skip_line = _SKIPPING_INDENT
            elif char == "\0":
                if self._skip_line == _SKIPPING_INDENT:  # it ends at this NUL, not the newline
                    self._cut_size = self._offset + pos - self._cut_start
                self._end_skip(pos)
                return pos + 1
            elif self._skip_line == _SKIPPING_LINE_START and char == "<":
                if _PRI.match(text, pos):
                    self._cut_sizes.append(self._cut_size)  # it ended at the newline
                    self._skip_line = _NOT_SKIPPING
                    return pos
                if _CUT_OFF_PRI.match(text, pos):
                    return pos  # what follows says
                self._skip_line, self._cut_cr = _SKIPPING_TEXT, False
            else:
                self._skip_line, self._cut_cr = _SKIPPING_TEXT, False
            pos += 1
        return pos

    def _end_skip(self, nul: int | None) -> None:
        """The message being skipped has ended (at the NUL at ``nul``, or else a newline)."""
        self._cut_sizes.append(self._cut_size)
        self._skip_line = _NOT_SKIPPING
        if nul is not None:
            assert self._cut_message is not None
            self._ended_at_nul(nul, self._cut_message, self._nul_ended)
            self._nul_ended = True
            self._previous = None

    def _cut_frame(
        self, text: str, over: re.Match[str], received: Received, out: list[LogLine]
    ) -> int | None:
        """Decode the first ``max_frame`` bytes of the octet-counted frame ``over`` starts,
        whose count is over the limit, as its line and skip the rest of it: where the part kept
        ends; None while its PRI or those bytes have not all arrived. FramingError for a
        count that no PRI follows or past MAX_CUT_FRAME."""
        count, start = int(over[1]), over.end()
        if count <= MAX_CUT_FRAME and not _PRI.match(text, start):
            if _CUT_OFF_PRI.match(text, start) or start == len(text):
                return None
        elif count <= MAX_CUT_FRAME:
            if len(text) - start < self.max_frame:
                return None
            stop = _utf8_cut(text, start, start + self.max_frame)
            out.append(_parse_message(text, start, stop, received))
            self._frames += 1
            self._nul_may_follow = False
            self._previous = None
            self._skip_count = count - self.max_frame
            self._cut_sizes.append(count)
            return start + self.max_frame
        raise FramingError(
            f"a frame of {count:,} bytes is over the {self.max_frame:,}-byte limit",
            self._frames + 1,
            self._offset + over.start(),
        )

    def _continued(self, message: str) -> LogLine:
        assert self._previous is not None
        return continued(self._previous, message)

    def close(self, received: Received | None = None) -> list[LogLine]:
        """The end of the stream: a last newline-framed message may lack its newline (it
        is returned, as is a line that continues one); an octet-counted frame may not be cut
        off (FramingError)."""
        if self._error is not None:
            raise self._error
        if self._skip_count:  # the rest of a frame cut at the limit never came
            return []
        if self._skip_line != _NOT_SKIPPING:  # the end of the stream ends the message cut
            if self._skip_line == _SKIPPING_TEXT:
                self._cut_size = self._offset + len(self._buffer) - self._cut_cr - self._cut_start
            self._cut_sizes.append(self._cut_size)
            self._skip_line = _NOT_SKIPPING
            return []
        rest = self._buffer.decode("latin-1")
        # Nothing more will come: what might have become a PRI or a count has not.
        if self._nul_end == self._offset and continues_message(rest.lstrip("\0")):
            rest = rest.lstrip("\0")
            self._previous = self._nul_line  # text on the line of the NUL that ended it
        if self._previous is not None and continues_message(rest):
            self._frames += 1
            return [self._continued(rest.removesuffix("\r"))]
        between = _WHITESPACE_OR_NUL if self._nul_may_follow else _WHITESPACE
        skipped = between.match(rest).end()  # type: ignore[union-attr]
        if skipped == len(rest):
            return []
        if self.newline_framing and rest[skipped] == "<":
            if self._nul_ended:  # a message waiting for what followed its newline
                blank = rest.find("\n", len(rest.rstrip(" \t\r\n")))
                rest = rest[:blank] if blank >= 0 else rest
            end = len(rest) - 1 if rest.endswith("\r") else len(rest)
            self._frames += 1
            return [_parse_message(rest, skipped, end, received or Received.at())]
        raise FramingError(
            "the input ends inside a frame", self._frames + 1, self._offset + skipped
        )


def continues_message(line: str) -> bool:
    """Whether a whole line of newline-framed syslog (without its newline) that follows a
    message is one of that message's own lines, as FrameDecoder reads them: not blank, and
    starting no message of its own (a PRI after any indentation, or an octet count before
    one)."""
    if line[:1] == "<":  # most often a message, which is quicker told
        return _PRI.match(line) is None
    return (
        bool(line.strip(" \t\r\0"))
        and not _STARTS_MESSAGE.match(line)
        and not _starts_frame(line, 0)
    )


def continued(previous: LogLine, message: str) -> LogLine:
    """``message`` (latin-1 text, as decoded from the stream), a line that continues
    ``previous``'s message, as a line of its own with that message's header."""
    if not message.isascii():
        message = _utf8_message(message)
    return previous._replace(message=message, structured_data=None)


def _starts_frame(text: str, pos: int) -> bool:
    """Whether an octet-counted frame that starts with a PRI starts at ``pos`` (after a
    newline-framed message, what a line must begin with to be one): a count too short to
    hold its PRI is none, so that this is known from the frame's own bytes, wherever the
    stream is cut."""
    m = _FRAME_START.match(text, pos)
    return m is not None and int(m[1]) >= len(m[2])


def _pending_frame_size(buffer: bytearray, cut_at: int | None = None) -> int:
    """How many buffered bytes the next frame needs before parsing it is worth trying (of a
    frame cut at ``cut_at`` bytes, those)."""
    m = re.match(rb"[ \t\r\n]*([0-9]{1,12}) (?=<[0-9]{1,3}>)", buffer)
    if m is None:
        return 0
    count = int(m.group(1))
    return m.end() + (count if cut_at is None else min(count, cut_at))


def _utf8_cut(text: str, start: int, end: int) -> int:
    """Where to cut ``text[start:end]`` (latin-1 text of UTF-8 bytes) so as not to split a
    character at ``end``: at the start of one the cut would leave incomplete."""
    for back in range(1, 4):
        at = end - back
        if at < start:
            break
        byte = ord(text[at])
        if byte < 0x80:
            break
        if byte >= 0xC0:  # a character's first byte: is all of it before the cut?
            if back < (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4):
                return at
            break
    return end


def _parse_frames(
    text: str,
    pos: int,
    final: bool,
    received: Received,
    frame_no: int,
    base: int,
    max_frame: int | None = None,
    stop_at_message: bool = False,
    max_lines: int | None = None,
    stop_over_limit: bool = False,
) -> tuple[list[LogLine], int, int]:
    """Frames of ``text`` from ``pos``: (lines, position consumed up to, next frame number).

    With ``final`` false a frame cut off by the end of ``text`` is left for later instead
    of being an error. With ``stop_at_message`` a newline-framed message (``<PRI>...``)
    where a count should be ends the run instead of being an error; with
    ``stop_over_limit`` so does a count over ``max_frame``, at its first digit.
    """
    out: list[LogLine] = []
    append = out.append
    match = _COUNT_AND_HEADER.match
    normalize = timestamps.normalize
    size = len(text)
    while True:
        m = match(text, pos)
        if m is None:
            rest = _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
            if rest == size:
                return out, size, frame_no
            if stop_at_message and text[rest] == "<":
                return out, rest, frame_no
            if not final and _may_be_partial_count(text, rest):
                return out, pos, frame_no
            raise _framing_error(_describe_bad_count(text, rest), frame_no, base + rest, out)
        if max_lines is not None and frame_no > max_lines:
            raise TooManyLines(max_lines)
        start = m.end(1) + 1
        count = int(m.group(1))
        end = start + count
        if count == 0 or (max_frame is not None and count > max_frame):
            if stop_over_limit and count:
                return out, m.start(1), frame_no
            reason = "a zero octet count" if count == 0 else f"a frame of {count:,} bytes"
            if count:
                reason += f" is over the {max_frame:,}-byte limit"
            raise _framing_error(reason, frame_no, base + m.start(1), out)
        if end > size:
            if not final:
                return out, pos, frame_no
            raise _framing_error(
                f"octet count {count} runs past the end of the body ({size - start:,} bytes left)",
                frame_no,
                base + m.start(1),
                out,
            )
        _, pri, timestamp, hostname, source, dyno, msgid = m.groups()
        instant = normalize(timestamp) if pri is not None and m.end() <= end else None
        if instant is not None and int(pri) <= MAX_PRI:
            if hostname == "-":  # RFC 5424's nil: the sender gave none
                hostname = None
            if msgid == "-":
                msgid = None
            # One trailing LF is framing (Logplex adds it); a CR before it is the message's.
            message = text[m.end() : end]
            if message[-1:] == "\n":
                message = message[:-1]
            structured_data = None
            if hostname != "host":
                structured_data, message = _split_structured_data(message)
                if structured_data is not None and not structured_data.isascii():
                    structured_data = _utf8(structured_data)
            if not message.isascii():
                message = _utf8_message(message)
            append(
                _make_line(
                    (
                        timestamp,
                        instant,
                        source,
                        dyno,
                        message,
                        int(pri),
                        hostname,
                        structured_data,
                        msgid,
                    )
                )
            )
        else:
            stop = end
            if text[stop - 1 : stop] == "\n" and stop > start:
                stop -= 1
            append(_parse_message(text, start, stop, received))
        pos = end
        frame_no += 1


def _framing_error(reason: str, frame_no: int, offset: int, parsed: list[LogLine]) -> FramingError:
    error = FramingError(reason, frame_no, offset)
    error.parsed = parsed
    return error


def _may_be_partial_count(text: str, pos: int) -> bool:
    """Whether the text from ``pos`` could still become ``COUNT SP`` with more input."""
    rest = text[pos : pos + 13]
    return len(rest) <= 12 and rest.isascii() and rest.isdecimal()


def _describe_bad_count(text: str, pos: int) -> str:
    token = text[pos : pos + 20].split(" ", 1)[0]
    if token.startswith("-") and token[1:].isdecimal():
        return f"negative octet count {token}"
    digits = len(text[pos : pos + 100]) - len(text[pos : pos + 100].lstrip("0123456789"))
    if digits > MAX_COUNT_DIGITS:
        return f"an octet count of more than {MAX_COUNT_DIGITS} digits"
    if token[:1].isdecimal():
        return f"octet count {_shorten(token)!r} is not a number followed by a space"
    return f"expected an octet count, found {_shorten(text[pos : pos + 20])!r}"


def _shorten(text: str) -> str:
    return _utf8(text[:16]) + ("..." if len(text) > 16 else "")


def _parse_message(
    text: str, start: int, end: int, received: Received, *, saved: bool = False
) -> LogLine:
    """One syslog message occupying ``text[start:end]`` (no framing, no trailing newline)."""
    m = _HEADER.match(text, start, end)
    if m is not None:
        pri, timestamp, hostname, source, dyno, msgid = m.groups()
        instant = normalize_or_nil(timestamp, received)
        if instant is not None and int(pri) <= MAX_PRI:
            if timestamp == "-":
                timestamp = received.timestamp
            if hostname == "-":
                hostname = None
            if msgid == "-":
                msgid = None
            message = text[m.end() : end]
            structured_data = None
            if hostname != "host":
                structured_data, message = _split_structured_data(message)
                if structured_data is not None and not structured_data.isascii():
                    structured_data = _utf8(structured_data)
            if not message.isascii():
                message = _utf8_message(message)
            return LogLine(
                timestamp,
                instant,
                source,
                dyno,
                message,
                int(pri),
                hostname,
                structured_data,
                msgid,
            )
    bsd = _parse_bsd_message(text, start, end, received, saved)
    if bsd is not None:
        return bsd
    message = text[start:end]
    if not message.isascii():
        message = _utf8_message(message)
    return kept_whole(message, received)


def _parse_bsd_message(
    text: str, start: int, end: int, received: Received, saved: bool = False
) -> LogLine | None:
    """An RFC 3164 message occupying ``text[start:end]``, or None if it is not one."""
    m = _BSD_MESSAGE.match(text, start, end)
    if m is None:
        return None
    pri, month, day, hour, minute, second, fraction, rfc3339, hostname, tag, pid = m.groups()
    if int(pri) > MAX_PRI:
        return None
    if month is not None:
        # No year and no zone: read as rsyslog reads it, in this machine's zone and this
        # year, but for December's lines in January (last year's) and January's in December.
        # A saved line was logged before its import: the last such day, not one to come.
        arrived = timestamps.from_instant(received.time).astimezone()
        year = arrived.year
        if not saved and arrived.month == 1 and month == "Dec":
            year -= 1
        elif not saved and arrived.month == 12 and month == "Jan":
            year += 1
        micros = int(fraction[:6].ljust(6, "0")) if fraction else 0  # as RFC 3339's
        leap = second == "60"
        seconds = 59 if leap else int(second)
        time = (_MONTHS[month], int(day), int(hour), int(minute), seconds, micros)
        moment = _bsd_moment(year, time, arrived + _A_DAY if saved else None)
        if moment is None:  # Feb 29 of another year, 25:00:00
            return None
        timestamp = moment.isoformat()
        if leap:  # as the sender wrote it; normalize reads it as an RFC 3339 one
            timestamp = f"{timestamp[:17]}60{timestamp[19:]}"
    elif rfc3339 is not None:
        timestamp = rfc3339
    else:  # Python's SysLogHandler sends no time: the time it came
        timestamp = received.timestamp
    instant = timestamps.normalize(timestamp)
    if instant is None:
        return None
    message = text[m.end() : end]
    if not message.isascii():
        message = _utf8_message(message)
    return LogLine(timestamp, instant, tag, pid or "-", message, int(pri), hostname, None, None)


_A_DAY = timedelta(days=1)


def _bsd_moment(
    year: int, time: tuple[int, int, int, int, int, int], latest: datetime | None
) -> datetime | None:
    """An RFC 3164 time in this machine's zone, in ``year``; with ``latest`` (a saved
    line's), in the last year from ``year`` back that has that day and puts it no later
    (29 February: up to eight years back). None if no year does."""
    for candidate in range(year, year - (9 if latest else 1), -1):
        try:
            moment = timestamps.local(datetime(candidate, *time))
        except (ValueError, OverflowError):
            continue
        if latest is None or moment <= latest:  # a day: its sender's zone may be ahead
            return moment
    return None


def kept_whole(message: str, received: Received) -> LogLine:
    """A line no format describes, kept whole as ``unknown[unknown]`` at the time it came."""
    return LogLine(
        received.timestamp, received.time, UNKNOWN, UNKNOWN, message, None, None, None, None
    )


def normalize_or_nil(timestamp: str, received: Received) -> str | None:
    if timestamp == "-":
        return received.time
    return timestamps.normalize(timestamp)


def _split_structured_data(message: str) -> tuple[str | None, str]:
    """(STRUCTURED-DATA or None, MSG) for what follows MSGID in an RFC 5424 message.

    ``-`` is the nil value. A run of well-formed elements is structured data when each
    element has parameters, a registered SD-ID or a private ``name@number`` SD-ID, since
    RFC 5424 allows no other; so ``[INFO] ready`` from a sender that left SD out stays
    message text.
    """
    first = message[:1]
    if first == "-":
        if len(message) == 1:
            return None, ""
        if message[1] == " ":
            return None, message[2:]
    elif first == "[":
        m = _SD_RUN.match(message)
        if m is not None:
            stop = m.end()
            if stop == len(message) or message[stop] == " ":
                sd = m.group()
                if all(
                    params or sd_id in _REGISTERED_SD_IDS or "@" in sd_id
                    for sd_id, params in _SD_ELEMENT.findall(sd)
                ):
                    return sd, message[stop + 1 :]
    return None, message


def _utf8(text: str) -> str:
    return text.encode("latin-1").decode("utf-8", "replace")


def _utf8_message(text: str) -> str:
    message = _utf8(text)
    # RFC 5424 lets a UTF-8 message start with a byte order mark; it is not content.
    return message[1:] if message[:1] == "\ufeff" else message


def parse_structured_data(structured_data: str) -> dict[str, dict[str, str | list[str]]]:
    """``[id k="v"][id2 k="v"]`` as ``{"id": {"k": "v"}, "id2": {"k": "v"}}``, losing nothing.

    A PARAM-NAME given more than once (RFC 5424 allows it within an element) has the list
    of its values, in order. An SD-ID given more than once (RFC 5424 forbids it; senders do
    it) has the parameters of all its elements in one object, as if they were one element.
    """
    elements: dict[str, dict[str, str | list[str]]] = {}
    for sd_id, params in _SD_ELEMENT.findall(structured_data):
        element = elements.setdefault(sd_id, {})
        for name, raw in _SD_PARAMS.findall(params):
            value = _SD_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
            before = element.get(name)
            if before is None:
                element[name] = value
            elif isinstance(before, list):
                before.append(value)
            else:
                element[name] = [before, value]
    return elements


def format_structured_data(elements: object) -> str:
    """What :func:`parse_structured_data` made of STRUCTURED-DATA, as STRUCTURED-DATA
    again (its values escaped as RFC 5424 asks); "" for anything it could not have made."""
    if not isinstance(elements, dict) or not elements:
        return ""
    text = []
    for sd_id, params in elements.items():
        if not (isinstance(params, dict) and re.fullmatch(_SD_NAME, sd_id)):
            return ""
        text.append(f"[{sd_id}")
        for name, values in params.items():
            if not re.fullmatch(_SD_NAME, name):
                return ""
            for value in values if isinstance(values, list) else [values]:
                if not isinstance(value, str):
                    return ""
                escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
                text.append(f' {name}="{escaped}"')
        text.append("]")
    return "".join(text)


def parse_fields(message: str) -> dict[str, Any] | None:
    """The message's fields when it is logfmt (``k=v k2="v 2"``) or a JSON object, else None.

    logfmt values stay strings, exactly as written (router ``status=503`` gives "503").
    """
    stripped = message.strip()
    if stripped[:1] == "{":
        try:
            value = json.loads(stripped, parse_float=_finite_float, parse_constant=_not_json)
            if "\\u" in stripped:  # a lone surrogate (\ud800) could not be printed
                json.dumps(value, ensure_ascii=False).encode()
        except (ValueError, RecursionError):  # RecursionError: nested past Python's stack
            return None
        if not isinstance(value, dict) or nested_too_deep(stripped, value):
            return None
        return value
    if "=" not in stripped:  # no pair: most app lines, turned away before any regex
        return None
    fields: dict[str, Any] = {}
    pos, size = 0, len(stripped)
    while pos < size:
        m = _LOGFMT_PAIR.match(stripped, pos)
        if m is None:
            return None
        key, quoted, bare = m.groups()
        if quoted is None:
            fields[key] = bare
        elif "\\" in quoted:
            fields[key] = _BACKSLASH_ESCAPE.sub(r"\1", quoted)
        else:
            fields[key] = quoted
        pos = m.end()
    return fields or None


FIELDS_DEPTH = 100
"""The deepest a JSON message may nest and still have fields. jq 1.6 (Debian 12's, Ubuntu
22.04's) refuses a record nested past 255 levels and stops reading the stream, losing every
line after it; Python 3.11 refused past about 1,000 levels and 3.14 reads far deeper. Log
formats nest a few levels."""


def nested_too_deep(text: str, value: dict[str, Any]) -> bool:
    """Whether ``value``, read from the JSON ``text``, nests past FIELDS_DEPTH. Only a text
    with more brackets than that is walked, level by level."""
    return text.count("{") + text.count("[") > FIELDS_DEPTH and _deeper_than(value, FIELDS_DEPTH)


def _deeper_than(value: dict[str, Any], depth: int) -> bool:
    """Whether objects and arrays nest in ``value`` (itself one level) past ``depth``."""
    level: list[Any] = [value]
    for _ in range(depth):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: JSON output has no infinity to print it as
        raise ValueError(f"{text} is out of range")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


class SyslogFields(Protocol):
    """What :func:`format_syslog` reads: a parsed LogLine, or a line from the store."""

    @property
    def timestamp(self) -> str: ...
    @property
    def time(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def dyno(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def pri(self) -> int | None: ...
    @property
    def structured_data(self) -> str | None: ...
    @property
    def msgid(self) -> str | None: ...


# RFC 5424's TIMESTAMP (6.2.3): upper-case T and Z, at most six digits of fraction, the
# offset with its colon, and no leap second.
_RFC5424_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


def format_syslog(line: SyslogFields, hostname: str = "host") -> bytes:
    """One line as a syslog message: Logplex's form for ``host`` (its MSGID always nil),
    RFC 5424 otherwise (the timestamp as sent, unless RFC 5424 does not allow it, and
    APP-NAME, PROCID and MSGID cut to its 48, 128 and 32 characters).

    The message ends in the usual framing newline, except a message ending in ``\r``: a
    receiver that reads ``\r\n`` as a line end even in a counted frame (herolog did, once)
    would lose the ``\r``, so that one goes without (octet counting allows it).
    """
    pri = 190 if line.pri is None else line.pri  # local7.info, what app output carries
    timestamp = line.timestamp
    if _RFC5424_TIMESTAMP.fullmatch(timestamp) is None:
        # The intake takes timestamps RFC 5424 does not (``2024-03-05T09:14:07``, ``+0100``,
        # ``t`` and ``z``, a leap second), which would stop a receiver's RFC 5424 parser at
        # the TIMESTAMP, reading the HOSTNAME, APP-NAME and PROCID as message text: such a
        # timestamp goes as the same instant in Logplex's form.
        timestamp = line.time[:26] + "+00:00"
    if hostname == "host":
        head = f"<{pri}>1 {timestamp} host {line.source} {line.dyno} -"
    else:
        # RFC 5424's limits, which a strict receiver's parser refuses a frame over, where the
        # intake keeps a sender's whole: the first characters, as syslog-ng's parser keeps.
        app, procid, msgid = line.source[:48], line.dyno[:128], (line.msgid or "-")[:32]
        sd = line.structured_data or "-"
        head = f"<{pri}>1 {timestamp} {hostname} {app} {procid} {msgid} {sd}"
    end = "" if line.message.endswith("\r") else "\n"
    # A leading U+FEFF would be read back as RFC 5424's byte order mark: mark it as one.
    bom = "\ufeff" if line.message[:1] == "\ufeff" else ""
    return f"{head} {bom}{line.message}{end}".encode()


def frame(messages: Iterable[bytes]) -> bytes:
    """Octet-count messages into one body (RFC 6587)."""
    return b"".join(b"%d %s" % (len(message), message) for message in messages)
