"""Hypothesis strategies: Logplex bodies, syslog messages and ``heroku logs`` lines, made
from the fixture corpus and mutated the ways broken or hostile senders break them."""

from __future__ import annotations

import base64
import itertools
import json
import re
from functools import cache
from pathlib import Path

from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "logplex-cases.json"

# Messages of senders other than Logplex's HTTPS drains, as they arrive over syslog.
EXTRA_MESSAGES = [
    b"<134>1 2024-03-05T09:14:07.418Z web-1 billing 4242 ID47"
    b' [exampleSDID@32473 iut="3" eventSource="App"][meta sequenceId="1"]'
    b" \xef\xbb\xbfinvoice 88 paid\n",
    b"<190>1 2024-03-05T09:14:07.418233+00:00 d.fc6b856b-3332-4546-93de-7d0ee272c3bd app web.1"
    b" - - hello\n",
    b"<190>1 - host app web.1 - nil timestamp\n",
    b"<190>1 2016-12-31T23:59:60.5+00:00 host app web.1 - leap second\n",
    b"<190>1 0001-01-01T00:00:00+01:00 host app web.1 - before year one in UTC\n",
    b'<190>1 2024-03-05T09:14:07Z h app web.1 - [a@1 k="v\\"]\\\\"] escaped\n',
    b"<190>1 2024-03-05T09:14:07Z h app web.1 - [INFO] not structured data\n",
    b"<13>1 2024-03-05T09:14:07Z h app - - -\n",
    b"<190>1 2024-03-05T09:14:07Z host app web.1 - line one\nline two\r\nline three\n",
    b"<190>1 2024-03-05T09:14:07Z host app web.1 - \n",
    b"<0>1 2024-03-05T09:14:07.123456789-07:30 host a b - x",
    b'<190>1 2024-03-05T09:14:07.418233+00:00 host app web.1 - {"level":"info","took":[1,2]}\n',
    b'<190>1 2024-03-05T09:14:07.418233+00:00 host app web.1 - at=info x="a \\"b\\"" y= z\n',
    b"<190>1 2024-03-05T09:14:07.418233+00:00 host app web.1 - \xef\xbb\xbf\xef\xbb\xbfzwnbsp\n",
    b"hello world\n",
    b"<190>1\n",
    # RFC 3164, from rsyslog's RSYSLOG_ForwardFormat and Python's SysLogHandler. Not those
    # with a time of the BSD form, whose year is the one they arrive in: the properties
    # compare what serve stored with what was parsed here, at another time (test_parser.py
    # and test_fuzz.py's examples have them).
    b"<156>2024-03-05T09:14:07.262031+00:00 vm billing[24561] via rsyslog\n",
    b"<12>myapp: with ident\x00",
    # Lines of a message sent as they are (syslog-ng's network(), rsyslog, a script), and a
    # NUL-ending sender's (Python's SysLogHandler) chained exception, blank lines and all.
    b"<11>job[42]: failed:\n<html>\n  <body>x</body>\n0 <Task pending>\n12 <1\n42",
    b"<11>job: Traceback:\nKeyError: 'k'\n\nThe above exception:\r\n \nValueError: x\x00",
]

_COUNT = re.compile(rb"[ \t\r\n]*([0-9]{1,12}) ")


def split_frames(body: bytes) -> list[bytes] | None:
    """The messages of a well-framed octet-counted body, or None if its framing is broken."""
    messages: list[bytes] = []
    pos = 0
    while pos < len(body):
        m = _COUNT.match(body, pos)
        if m is None:
            return None if body[pos:].strip() else messages
        end = m.end() + int(m.group(1))
        if end > len(body) or int(m.group(1)) == 0:
            return None
        messages.append(body[m.end() : end])
        pos = end
    return messages


@cache
def corpus() -> tuple[list[bytes], list[bytes]]:
    """(the fixture corpus's bodies, the messages of its well-framed ones plus extras)."""
    cases = json.loads(CORPUS.read_text())
    bodies = [base64.b64decode(case["body_b64"]) for case in cases]
    messages = [m for body in bodies for m in split_frames(body) or []]
    return bodies, messages + EXTRA_MESSAGES


INVALID_UTF8 = [
    b"\xff",
    b"\xc3",  # a lead byte with no continuation
    b"\x80\x80",
    b"\xc0\xaf",  # overlong "/"
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xef\xbb\xbf",  # a byte order mark (valid, but special at a message's start)
    b"\xe2\x82",  # a sequence cut short
]
# Message text that the JSON and logfmt readers of ``herolog logs --json`` must survive.
FIELDS = [
    b'{"a":' + b"[" * 5000,
    b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"a":' + b'{"a":' * 2000,
    b'{"a": 1e999999, "b": NaN}',
    b'{"a": "\\ud800"}',
    b'{"a": 1}x',
    b'k="v\\',
    b'k="' * 500,
    b"=" * 100,
]
STRUCTURED_DATA = [
    b"[" * 1000,
    b"[a@1 " * 500,
    b'[a@1 k="' * 300,
    b'[a@1 k="v' + b"\\" * 301,
    b'[a@1 k="v"' * 200,
    b'[a@1 k="v"]' * 300,
    b'[a@1 k="\\"]\\]"]',
    b"]" * 500,
    b'[timeQuality tzKnown="1"][origin][meta]',
    b"[x y]",
    b'[a@1 k="v"',
    b'[a@1 k="\xff\xfe"]',
    b"[" + b"n" * 33 + b"@1]",
    b"-",
    b"- -",
]
PRI_AND_VERSION = [
    b"<999>1",
    b"<192>1",
    b"<>1",
    b"<-1>1",
    b"<0191>1",
    b"<190>2",
    b"<190>",
    b"<1",
    b"<190>10",
]
TIMESTAMPS = [
    b"-",
    b"2024-13-45T09:14:07Z",
    b"2024-02-30T00:00:00Z",
    b"2016-12-31T23:59:60Z",
    b"2024-03-05T24:00:00Z",
    b"0000-01-01T00:00:00Z",
    b"0001-01-01T00:00:00+00:01",
    b"9999-12-31T23:59:59-00:01",
    b"2024-03-05T09:14:07." + b"9" * 40 + b"Z",
    b"2024-03-05T09:14:07+2400",
    b"2024-03-05t09:14:07z",
    b"2024-03-05 09:14:07Z",
    b"\xd9\xa2024-03-05T09:14:07Z",
    b"2024-03-05T09:14:07.\xd9\xa1Z",
]
LINE_ENDS = [b"\n", b"\r\n", b"\r", b"\n\n", b"\r\r\n", b"\n\r", b""]
# Sizes around the 64 KiB frames Logplex may send.
BIG_SIZES = [65535, 65536, 65537, 70_000]  # 70,000: over serve's syslog limit
HUGE_COUNTS = [
    10**12 - 1,
    10**12,  # 13 digits: more than a count may have
    10**13,
    2**63,
    2**64 + 1,
    10**30,
    int("9" * 100),
    (1 << 20) + 1,
]


def _position(data: st.DataObject, size: int) -> int:
    return data.draw(st.integers(0, size), label="position")


@st.composite
def mutated_message(draw: st.DrawFn, *, big: bool = True) -> bytes:
    """A syslog message from the corpus, changed in a few places."""
    _, messages = corpus()
    message = bytearray(draw(st.sampled_from(messages)))
    data = draw(st.data())
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "nul",
                    "utf8",
                    "sd",
                    "line end",
                    "newline inside",
                    "pri",
                    "timestamp",
                    "flip",
                    "byte",
                    "cut",
                    "fields",
                    "message fields",
                ]
                + (["big"] if big else [])
            )
        )
        at = _position(data, len(message))
        if kind == "nul":
            message[at:at] = b"\0" * draw(st.integers(1, 3))
        elif kind == "utf8":
            message[at:at] = draw(st.sampled_from(INVALID_UTF8))
        elif kind == "sd":
            header = _header_end(message)
            message[header:header] = draw(st.sampled_from(STRUCTURED_DATA)) + b" "
        elif kind == "line end":
            message = bytearray(message.rstrip(b"\r\n") + draw(st.sampled_from(LINE_ENDS)))
        elif kind == "newline inside":
            message[at:at] = draw(st.sampled_from([b"\n", b"\r\n", b"\n<190>1 ", b"\n12 "]))
        elif kind == "pri":
            head = draw(st.sampled_from(PRI_AND_VERSION))
            message = bytearray(re.sub(rb"^<[0-9]*>[0-9]*", head, message, count=1))
        elif kind == "timestamp":
            fields = bytes(message).split(b" ", 2)
            if len(fields) == 3:
                fields[1] = draw(st.sampled_from(TIMESTAMPS))
                message = bytearray(b" ".join(fields))
        elif kind == "flip" and message:
            message[min(at, len(message) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and message:
            message[min(at, len(message) - 1)] = draw(st.integers(0, 255))
        elif kind == "cut":
            del message[at:]
        elif kind == "fields":  # a header field emptied, doubled or spaced out
            message[at:at] = draw(st.sampled_from([b" ", b"  ", b"\t", b"-", b"- ", b"[]"]))
        elif kind == "message fields":
            header = _header_end(message)
            message[header:] = draw(st.sampled_from(FIELDS)) + b"\n"
        elif kind == "big":
            size = draw(st.sampled_from(BIG_SIZES))
            message[at:at] = b"x" * max(0, size - len(message))
    return bytes(message)


def _header_end(message: bytearray) -> int:
    """Where STRUCTURED-DATA goes: after the sixth space, or the end."""
    pos = 0
    for _ in range(6):
        pos = message.find(b" ", pos) + 1
        if pos == 0:
            return len(message)
    return pos


@st.composite
def framed(draw: st.DrawFn, message: bytes, *, newline: bool) -> bytes:
    """One message with its framing: usually a true octet count, sometimes a broken one."""
    kinds = ["exact"] * 12 + ["off", "huge", "zeros", "negative", "no space", "tab", "empty"]
    if newline:
        kinds += ["newline"] * 4
    kind = draw(st.sampled_from(kinds))
    size = len(message)
    if kind == "exact":
        return b"%d %s" % (size, message)
    if kind == "off":
        return b"%d %s" % (max(0, size + draw(st.integers(-3, 3))), message)
    if kind == "huge":
        return b"%d %s" % (draw(st.sampled_from(HUGE_COUNTS)), message)
    if kind == "zeros":
        return b"%s%d %s" % (b"0" * draw(st.integers(1, 12)), size, message)
    if kind == "negative":
        return b"-%d %s" % (size, message)
    if kind == "no space":
        return b"%d%s" % (size, message)
    if kind == "tab":
        return b"%d\t%s" % (size, message)
    if kind == "empty":
        return b"0 "
    return message if message.endswith(b"\n") else message + b"\n"


@st.composite
def mutated_body(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` with byte-level damage: what a broken proxy or a hostile sender makes."""
    out = bytearray(body)
    data = draw(st.data())
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        kind = draw(
            st.sampled_from(
                [
                    "flip",
                    "byte",
                    "nul",
                    "utf8",
                    "delete",
                    "duplicate",
                    "truncate",
                    "digits",
                    "crlf",
                    "space",
                ]
            )
        )
        at = _position(data, len(out))
        if kind == "flip" and out:
            out[min(at, len(out) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and out:
            out[min(at, len(out) - 1)] = draw(st.integers(0, 255))
        elif kind == "nul":
            out[at:at] = b"\0"
        elif kind == "utf8":
            out[at:at] = draw(st.sampled_from(INVALID_UTF8))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            out[at:at] = out[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del out[at:]
        elif kind == "digits":
            out[at:at] = b"9" * draw(st.sampled_from([1, 11, 12, 13, 20, 5000]))
        elif kind == "crlf":
            out[at:at] = draw(st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b" \t\r\n"]))
        elif kind == "space":
            out[at:at] = b" "
    return bytes(out)


@st.composite
def logplex_bodies(draw: st.DrawFn, *, newline: bool = False, big: bool = True) -> bytes:
    """A POST body: a corpus body, or frames of mutated messages; then maybe damaged."""
    bodies, _ = corpus()
    choice = draw(st.integers(0, 5))
    if choice == 0:
        body = draw(st.sampled_from(bodies))
    elif choice <= 2:  # a batch as Logplex sends it, which the parser's bulk path takes
        body = b"".join(b"%d %s" % (len(m), m) for m in draw(logplex_batch()))
    else:
        messages = draw(st.lists(mutated_message(big=big), max_size=8))
        body = b"".join(draw(framed(m, newline=newline)) for m in messages)
    return draw(mutated_body(body))


@st.composite
def logplex_batch(draw: st.DrawFn) -> list[bytes]:
    """Messages in one of Heroku's exact forms, some with odd text after the header."""
    _, messages = corpus()
    plain = [m for m in messages if _PLAIN.fullmatch(m)]
    form = draw(st.sampled_from(["host", "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"]))
    batch = []
    for message in draw(st.lists(st.sampled_from(plain), min_size=4, max_size=40)):
        if form != "host":
            message = message.replace(b" host ", b" %s " % form.encode(), 1)
            message = message.replace(b" - ", b" - - ", 1)
        if draw(st.integers(0, 3)) == 0:
            at = draw(st.integers(_header_end(bytearray(message)), len(message) - 1))
            odd = draw(
                st.sampled_from([b"\0", b"\r", b"\t", b" - ", b'[a@1 k="v"]', *INVALID_UTF8])
            )
            message = message[:at] + odd + message[at:]
        batch.append(message)
    return batch


_PLAIN = re.compile(rb"<[0-9]+>1 [0-9T:.+-]+ host [!-~]+ [!-~]+ - [^\n]*\n")


@st.composite
def well_framed(draw: st.DrawFn) -> list[bytes]:
    """Mutated messages, none empty: framed with true counts, a body must parse whole."""
    messages = draw(st.lists(mutated_message(), max_size=8))
    return [m for m in messages if m]


@st.composite
def stream_chunks(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """``body`` cut into chunks as a TCP stream may deliver it."""
    if len(body) <= 4000 and draw(st.integers(0, 9)) == 0:
        return [body[i : i + 1] for i in range(len(body))]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=12))))
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def syslog_messages(draw: st.DrawFn) -> bytes:
    """One syslog message without framing: mutated, arbitrary, or a whole damaged body."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return draw(logplex_bodies(big=False))
    return draw(mutated_body(draw(mutated_message())))


HEROKU_LINES = [
    "2024-03-05T09:14:07.418233+00:00 heroku[router]: at=info method=GET path=/ status=200",
    "2024-03-05T09:14:07Z app[web.1]:",
    "2024-03-05T09:14:07Z app[web.1]: ",
    "2012-11-30T06:45:29+00:00 app[worker.12]: [INFO] ready",
    "2024-03-05T09:14:07.5+02:00 heroku[api]: Release v7 created by user@example.com",
    "2016-12-31T23:59:60Z app[web.1]: leap",
    "2024-03-05T09:14:07Z app[web-7d9f8b6c5-x2k4q]: fir dyno",
    '  File "app.py", line 9',
]


@st.composite
def heroku_lines(draw: st.DrawFn) -> str:
    """A line of ``heroku logs`` output, as a file decoded with errors replaced gives it."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.text(max_size=200))
    line = draw(st.sampled_from(HEROKU_LINES))
    data = draw(st.data())
    for _ in range(draw(st.integers(0, 3))):
        at = _position(data, len(line))
        piece = draw(
            st.one_of(
                st.sampled_from(
                    ["[", "]", " ", "  ", ":", ": ", "\t", "\0", "\ufffd", "é", "\u2028", "\r", "x"]
                ),
                st.text(max_size=5),
            )
        )
        if draw(st.booleans()):
            line = line[:at] + piece + line[at:]
        else:
            line = line[:at] + piece + line[at + len(piece) :]
    return line


DECODER_LIMITS = [1 << 20, 65536, 200, 40]


@st.composite
def decoder_streams(draw: st.DrawFn) -> tuple[list[bytes], bool, int, bool]:
    """(chunks, newline_framing, max_frame, cut_long) for a FrameDecoder: syslog streams mix
    framings; one that cuts long messages is also read in chunks that end about where a
    message reaches the limit."""
    newline_framing = draw(st.booleans())
    body = draw(logplex_bodies(newline=newline_framing))
    max_frame = draw(st.sampled_from(DECODER_LIMITS))
    cut_long = draw(st.booleans())
    chunks = draw(stream_chunks(body))
    if cut_long and draw(st.booleans()):
        starts = [m.start() for m in re.finditer(rb"<", body)][:50]
        near = [s + max_frame + d for s in starts for d in (-1, 0, 1, 2)]
        near = [at for at in near if 0 < at < len(body)]
        if near:
            cuts = set(draw(st.lists(st.sampled_from(near), max_size=6)))
            edges = sorted({0, len(body), *cuts, *itertools.accumulate(map(len, chunks))})
            chunks = [body[a:b] for a, b in itertools.pairwise(edges)]
    return chunks, newline_framing, max_frame, cut_long


@st.composite
def intake_posts(draw: st.DrawFn) -> tuple[bytes, bool, int]:
    """(body, gzipped, pieces) for a POST to the intake: ``pieces`` > 1 sends it chunked."""
    if draw(st.booleans()):
        body = draw(logplex_bodies())
    else:  # frames that must all be stored, whatever they hold
        body = b"".join(b"%d %s" % (len(m), m) for m in draw(well_framed()))
    return body, draw(st.booleans()), draw(st.integers(1, 4))


@st.composite
def import_syslog_inputs(draw: st.DrawFn) -> list[bytes]:
    """Newline-separated syslog as a file or pipe holds it, in the chunks it is read in:
    mutated messages, lines of their own between them (a traceback's, an HTML body's), blank
    lines, no NUL (which would have the import read messages as NUL-ended)."""
    parts = []
    for _ in range(draw(st.integers(0, 10))):
        if draw(st.integers(0, 2)):
            parts.append(draw(mutated_message(big=False)).rstrip(b"\n"))
        else:
            parts.append(draw(st.sampled_from(CONTINUED_LINES)))
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = b"".join(part + ending for part in parts).replace(b"\0", b"")
    if body and draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]  # a capture cut off
    return draw(stream_chunks(body))


CONTINUED_LINES = [
    b'  File "app.py", line 7, in <module>',
    b"ValueError: bad",
    b"<html>",
    b"0 <Task pending>",
    b"12 <1",
    b"42",
    b"",
    b"  \t",
    b"\t</body>",
    b"<13>not a header",
    b"83 <40>1 2024-03-05T09:14:07Z host app web.1 - counted",
]


@st.composite
def syslog_streams(draw: st.DrawFn) -> list[bytes]:
    """A syslog connection's bytes, both framings mixed, in the chunks they are sent in."""
    return draw(stream_chunks(draw(logplex_bodies(newline=True))))
