"""What must hold for every input: each check takes one input and fails (AssertionError, or
whatever the code under test raised) when it does not hold."""

from __future__ import annotations

import gzip
import json
import re
import socket
from collections.abc import Callable, Iterator
from functools import partial

import httpx

from herolog import importer
from herolog.filters import LineFilter
from herolog.parser import (  # _parse_frames: the reference the bulk path must agree with
    MAX_PRI,
    UNKNOWN,
    FrameDecoder,
    FramingError,
    LogLine,
    Received,
    _parse_frames,
    format_syslog,
    frame,
    parse_fields,
    parse_heroku_line,
    parse_logplex,
    parse_structured_data,
    parse_syslog,
)
from herolog.store import SQLiteStore, StoredLine

RECEIVED = Received("2026-01-02T03:04:05.000006+00:00", "2026-01-02T03:04:05.000006Z")
DEFAULT_MAX_FRAME = FrameDecoder().max_frame
INTAKE_APP = "fuzz"

_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_TOKEN = re.compile(r"[!-~]+")
# RFC 5424's TIMESTAMP; a drain gets any other timestamp as the same instant in Logplex's form.
_RFC5424_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)

Outcome = tuple[list[LogLine], tuple[int, int] | None]
"""What a decoder made of a stream: its lines, and the frame and offset of its error. (The
reason quotes what had arrived when the error was seen, so it depends on the chunks.)"""


def check_line(line: LogLine) -> None:
    """A line the store can take: text that encodes, a sortable instant, a syslog PRI."""
    assert isinstance(line, LogLine)
    for text in (line.timestamp, line.time, line.source, line.dyno, line.message):
        assert isinstance(text, str)
        text.encode("utf-8")  # a lone surrogate here would fail in SQLite, not in the parser
    for optional in (line.hostname, line.structured_data):
        assert optional is None or isinstance(optional, str)
        if optional is not None:
            optional.encode("utf-8")
    assert _INSTANT.fullmatch(line.time), line.time
    assert line.source
    assert line.dyno
    assert line.pri is None or 0 <= line.pri <= MAX_PRI
    # What ``herolog logs --json`` reads out of every line it prints.
    fields = parse_fields(line.message)
    assert fields is None or isinstance(fields, dict)
    json.dumps(fields, ensure_ascii=False, allow_nan=False).encode()  # strict JSON, printable
    if line.structured_data is not None:
        assert isinstance(parse_structured_data(line.structured_data), dict)


def check_syslog_line(line: LogLine, raw: bytes, *, counted: bool) -> None:
    """``line`` parsed from the syslog message ``raw`` (framing newline included or not),
    the whole of an octet-counted frame if ``counted``, else one line of text."""
    check_line(line)
    text = _text_of(raw, counted)
    if line.pri is None:  # unparseable: kept whole, as received
        assert (line.source, line.dyno, line.hostname) == (UNKNOWN, UNKNOWN, None)
        assert (line.timestamp, line.time) == RECEIVED
        assert line.message == text
        assert line.structured_data is None
    else:
        for token in (line.timestamp, line.source, line.dyno, line.hostname):
            assert token is None or _TOKEN.fullmatch(token), token  # BSD may have no HOSTNAME
        assert line.hostname is not None or line.structured_data is None
        assert text.endswith(line.message)
        assert line.structured_data is None or line.structured_data.startswith("[")


def check_forwarded(line: LogLine) -> None:
    """A stored line, as a drain gets it (either form), parses back to the same line (its
    timestamp in RFC 5424's form where it was not; in a syslog drain's form, APP-NAME,
    PROCID and MSGID cut to RFC 5424's lengths)."""
    for hostname in ("host", "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"):
        (back,) = parse_logplex(frame([format_syslog(line, hostname)]), RECEIVED)
        sent = line._replace(pri=190 if line.pri is None else line.pri, hostname=hostname)
        if not _RFC5424_TIMESTAMP.fullmatch(line.timestamp):
            sent = sent._replace(timestamp=line.time[:26] + "+00:00")
        if hostname == "host":  # Logplex's form: no structured data, MSGID nil
            sent = sent._replace(structured_data=None, msgid=None)
        else:
            msgid = None if line.msgid is None else line.msgid[:32]
            sent = sent._replace(source=line.source[:48], dyno=line.dyno[:128], msgid=msgid)
        assert back == sent


def _text_of(raw: bytes, counted: bool) -> str:
    """A message's text as the parser must keep it: one framing line end off (in a counted
    frame only the LF: a CR before it is the message's), UTF-8 with errors replaced, no
    leading byte order mark."""
    if raw.endswith(b"\r\n") and not counted:
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    text = raw.decode("utf-8", "replace")
    return text[1:] if text.startswith("\ufeff") else text


def check_parse_logplex(body: bytes) -> None:
    """Any body gives lines or a FramingError naming the frame and offset, and what comes
    before that offset parses to the frames before the broken one."""
    error: FramingError | None = None
    try:
        lines = parse_logplex(body, RECEIVED)
    except FramingError as caught:
        error, lines = caught, []
    for line in lines:
        check_line(line)
        check_forwarded(line)
    # The bulk fast path and the frame loop, the reference, agree on every body.
    text = body.decode("latin-1")
    if error is None:
        assert _parse_frames(text, 0, True, RECEIVED, 1, 0)[0] == lines
        return
    loop_error = _raised(partial(_parse_frames, text, 0, True, RECEIVED, 1, 0))
    assert isinstance(loop_error, FramingError), "the frame loop took a body parse_logplex refused"
    message = str(error)
    assert str(loop_error) == message
    assert error.frame >= 1
    assert 0 <= error.offset <= len(body)
    assert message == f"frame {error.frame} at byte {error.offset}: {error.reason}"
    assert message.isprintable(), message  # it goes on one line of an HTTP answer
    before = parse_logplex(body[: error.offset], RECEIVED)
    assert error.parsed == before
    assert len(before) == error.frame - 1


def check_well_framed(messages: list[bytes]) -> None:
    """Frames with true counts parse whole, one line each, whatever the messages hold; the
    stream decoder agrees in both of its modes."""
    body = frame(messages)
    lines = parse_logplex(body, RECEIVED)
    assert len(lines) == len(messages)
    for line, raw in zip(lines, messages, strict=True):
        check_syslog_line(line, raw, counted=True)
        check_forwarded(line)
    for newline_framing in (False, True):
        assert decode([body], newline_framing, DEFAULT_MAX_FRAME) == (lines, None)


def decode(
    chunks: list[bytes], newline_framing: bool, max_frame: int, cut_long: bool = False
) -> Outcome:
    """Feed ``chunks`` to a FrameDecoder, then close it; stop at the first FramingError."""
    return _decode_and_cuts(chunks, newline_framing, max_frame, cut_long)[0]


def _decode_and_cuts(
    chunks: list[bytes], newline_framing: bool, max_frame: int, cut_long: bool
) -> tuple[Outcome, list[int]]:
    """decode(), and the sizes of the messages the decoder said it cut."""
    decoder = FrameDecoder(max_frame, newline_framing=newline_framing, cut_long=cut_long)
    lines: list[LogLine] = []
    cuts: list[int] = []
    try:
        for chunk in chunks:
            lines += decoder.feed(chunk, RECEIVED)
            cuts += decoder.take_cuts()
        lines += decoder.close(RECEIVED)
    except FramingError as caught:
        error = caught
    else:
        assert decoder.frames == len(lines)
        return (lines, None), cuts + decoder.take_cuts()
    if decoder.error is not None:  # met by feed: nothing after the break is decoded
        assert decoder.error is error
        for again in (partial(decoder.feed, b"1 x", RECEIVED), partial(decoder.close, RECEIVED)):
            assert _raised(again) is error
    return (lines, (error.frame, error.offset)), cuts + decoder.take_cuts()


def _raised(call: Callable[[], object]) -> BaseException | None:
    try:
        call()
    except Exception as error:
        return error
    return None


def check_decoder(
    chunks: list[bytes], newline_framing: bool, max_frame: int, cut_long: bool = False
) -> None:
    """However a stream is cut into chunks, it decodes as if it came whole; only
    FramingError is raised; the lines before a break are those of the stream up to it.
    Cutting long messages (``cut_long``) changes nothing before the first one over the
    limit, and cuts the same messages, to no more than the limit, however the stream is cut
    (inside a count, at the limit, in what is skipped)."""
    body = b"".join(chunks)
    whole, whole_cuts = _decode_and_cuts([body], newline_framing, max_frame, cut_long)
    assert _decode_and_cuts(chunks, newline_framing, max_frame, cut_long) == (whole, whole_cuts)
    lines, error = whole
    for line in lines:
        check_line(line)
    if error is not None:
        frame_no, offset = error
        assert 0 <= offset <= len(body)
        assert len(lines) == frame_no - 1
        assert decode([body[:offset]], newline_framing, max_frame, cut_long) == (lines, None)
    if cut_long:
        assert all(size > max_frame for size in whole_cuts), whole_cuts
        refused, refused_error = decode([body], newline_framing, max_frame)
        if refused_error is None:  # nothing over the limit: nothing cut
            assert (whole, whole_cuts) == ((refused, None), [])
        else:  # the same lines up to the first message over the limit
            assert lines[: refused_error[0] - 1] == refused
    if not newline_framing and max_frame == DEFAULT_MAX_FRAME and not cut_long:
        try:
            expected: Outcome = parse_logplex(body, RECEIVED), None
        except FramingError as body_error:
            expected = body_error.parsed, (body_error.frame, body_error.offset)
        assert whole == expected


def _imported(chunks: list[bytes]) -> tuple[list[LogLine], int, list[tuple[int, int]]]:
    """What an import of newline-separated syslog read from ``chunks``: its lines (their times
    left out, which may be those of the import), how many it kept whole, and each offset it
    said its lines so far end at, with how many lines those were."""
    lines: list[LogLine] = []
    whole = 0
    offsets = []
    for _, given, offset, unknown, _ in importer._syslog(iter(chunks), [0, 0]):
        lines += [line._replace(timestamp="", time="") for line in given]
        whole += unknown
        offsets.append((offset, len(lines)))
    return lines, whole, offsets


def check_import_syslog(chunks: list[bytes]) -> None:
    """``herolog import`` of newline-separated syslog stores the same lines however its
    input is cut into chunks (a pipe's reads), and from each offset it says its lines end at
    (where a failed import is to be resumed from), an import of the rest stores the lines
    after them, none twice: each continued line keeps the header of its message."""
    body = b"".join(chunks)
    lines, whole, offsets = _imported([body])
    assert sum(line.pri is None for line in lines) == whole
    cut, cut_whole, _ = _imported(chunks)  # an empty chunk: a pipe gone quiet, lines given
    assert (cut, cut_whole) == (lines, whole)
    # A file, which an import is resumed on, does not go quiet: a line of a message given as
    # a pipe went quiet keeps its header, which a resumed import could not know.
    _, _, cut_offsets = _imported([chunk for chunk in chunks if chunk])
    assert [count for _, count in cut_offsets] == sorted(count for _, count in cut_offsets)
    for offset, count in {*offsets, *cut_offsets}:
        assert 0 <= offset <= len(body)
        assert _imported([body[offset:]])[0] == lines[count:], offset


def check_parse_syslog(message: bytes) -> None:
    """Any bytes are one line; a one-line message reads the same from a syslog stream."""
    line = parse_syslog(message, RECEIVED)
    check_syslog_line(line, message, counted=False)
    check_forwarded(line)
    if message[:1] == b"<" and b"\n" not in message and b"\0" not in message:
        framed = message + b"\n"
        assert decode([framed], True, DEFAULT_MAX_FRAME) == ([parse_syslog(framed, RECEIVED)], None)


def check_heroku_line(text: str) -> None:
    """A ``heroku logs`` line parses back into exactly the parts it was made of, or None."""
    line = parse_heroku_line(text)
    if line is None:
        return
    check_line(line)
    assert (line.pri, line.hostname, line.structured_data) == (None, None, None)
    head = f"{line.timestamp} {line.source}[{line.dyno}]:"
    assert text.startswith(head)
    assert text[len(head) :] in (line.message, " " + line.message)
    check_forwarded(line)  # a SOURCE or DYNO a drain could not take would not come back


def check_intake(
    client: httpx.Client, store: SQLiteStore, body: bytes, *, gzipped: bool, pieces: int
) -> int:
    """POST ``body`` to a running serve (``client`` has its base URL): never a 5xx; a 400
    naming frame and offset that stores nothing, or a 204 that stored every line. Returns
    the status."""
    error: FramingError | None = None
    try:
        expected = parse_logplex(body, RECEIVED)
    except FramingError as caught:
        expected, error = [], caught
    content = gzip.compress(body) if gzipped else body
    headers = {"Content-Type": "application/logplex-1"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    sent: bytes | Iterator[bytes] = content
    if pieces > 1:  # sent chunked: no Content-Length, the body in several reads
        size = -(-len(content) // pieces) or 1
        sent = iter([content[i : i + size] for i in range(0, len(content), size)])
    before = store.newest_id()
    response = client.post(f"/apps/{INTAKE_APP}/logs", content=sent, headers=headers)
    assert response.status_code < 500, f"{response.status_code} {response.text}"
    new, _ = store.after(before, LineFilter(app=INTAKE_APP), len(expected) + 1)
    if error is not None:
        assert response.status_code == 400, f"{response.status_code} {response.text}"
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == f"bad logplex framing: {error}\n"
        assert new == []
        return response.status_code
    assert response.status_code == 204, f"{response.status_code} {response.text}"
    assert_stored(new, expected)
    return response.status_code


def assert_stored(stored: list[StoredLine], expected: list[LogLine]) -> None:
    """The store holds ``expected`` as parsed here, field by field."""
    assert len(stored) == len(expected)
    for got, line in zip(stored, expected, strict=True):
        # A line without a readable timestamp takes the time received: the server's, not ours.
        timestamp = line.timestamp if line.timestamp != RECEIVED.timestamp else got.timestamp
        fields = (got.source, got.dyno, got.message, got.pri, got.hostname, got.structured_data)
        assert (got.timestamp, *fields, got.msgid) == (timestamp, *line[2:])


def check_syslog_intake(port: int, store: SQLiteStore, app: str, chunks: list[bytes]) -> int:
    """Send a stream to serve's syslog port in ``chunks``, then end it: what is stored is
    exactly what a FrameDecoder makes of the whole stream, up to any framing error.
    Returns the number of lines stored."""
    from herolog.server.syslog import MAX_FRAME  # serve's limit, lower than the decoder's

    expected, _ = decode([b"".join(chunks)], True, MAX_FRAME, cut_long=True)
    before = store.newest_id()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            # serve closes the connection once what it read is stored.
            while sock.recv(1 << 16):
                pass
        except TimeoutError:
            raise AssertionError("serve neither stored the stream nor hung up in 60 s") from None
        except OSError:  # reset, broken pipe, not connected: it hung up on garbage
            pass
    new, _ = store.after(before, LineFilter(app=app), len(expected) + 1)
    assert_stored(new, expected)
    return len(new)
