from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from herolog import parser, timestamps
from herolog.parser import (
    FrameDecoder,
    FramingError,
    LogLine,
    Received,
    TooManyLines,
    format_syslog,
    frame,
    parse_fields,
    parse_heroku_line,
    parse_json_line,
    parse_logplex,
    parse_structured_data,
    parse_syslog,
)
from tests.helpers import fixture_view
from tests.helpers import line as stored_line

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "logplex-cases.json").read_text()
)
RECEIVED = Received("2026-01-02T03:04:05.000006+00:00", "2026-01-02T03:04:05.000006Z")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture_corpus(case: dict[str, Any]) -> None:
    body = base64.b64decode(case["body_b64"])
    if case.get("error"):
        with pytest.raises(FramingError):
            parse_logplex(body, RECEIVED)
        return
    lines = parse_logplex(body, RECEIVED)
    got = fixture_view(lines)
    assert got == case["lines"]


def test_fixture_corpus_is_all_there() -> None:
    assert len(CASES) >= 17
    assert sum(1 for c in CASES if c.get("error")) >= 2


def body_of(*messages: str) -> bytes:
    return frame(m.encode() for m in messages)


def test_message_without_trailing_newline_then_count_directly() -> None:
    first, second = b"<190>1 - host a b - x", b"<190>1 - host a b - xy\n"
    body = b"%d %s%d %s" % (len(first), first, len(second), second)
    assert [line.message for line in parse_logplex(body, RECEIVED)] == ["x", "xy"]


def test_whitespace_between_and_after_frames_is_skipped() -> None:
    one = b"<190>1 2024-03-05T09:14:07Z host app web.1 - one\n"
    body = b"\n\r\n  %d %s \n\t%d %s\n\n" % (len(one), one, len(one), one)
    assert [line.message for line in parse_logplex(body, RECEIVED)] == ["one", "one"]


def test_only_the_newline_is_framing_in_a_counted_frame() -> None:
    """Logplex adds one LF to each message, whatever the message ends in: a dyno line
    ending in CR arrives as ``...\\r\\n``, and the CR is the message's, as rsyslog keeps it
    (it drops one trailing LF). Newline framing is another matter: there CRLF is a line end."""
    body = body_of(
        "<190>1 2024-03-05T09:14:07Z host app web.1 - hi\r\n",
        "<13>1 2024-03-05T09:14:07Z myhost user - - - rfc\r\n",
        "<190>1 2024-03-05T09:14:07Z host app web.1 - \r\n",
        "not syslog\r\n",
    )
    expected = ["hi\r", "rfc\r", "\r", "not syslog\r"]
    assert [x.message for x in parse_logplex(body, RECEIVED)] == expected
    decoder = FrameDecoder(newline_framing=True)
    assert [x.message for x in decoder.feed(body, RECEIVED)] == expected
    line = b"<190>1 2024-03-05T09:14:07Z host app web.1 - hi\r\n"
    assert [x.message for x in decoder.feed(line, RECEIVED)] == ["hi"]
    assert parse_syslog(line).message == "hi"


def test_a_message_ending_in_carriage_return_survives_framing() -> None:
    """Its frame goes without the framing newline: a receiver that reads \\r\\n as a line
    end even in a counted frame (herolog did, once) would lose the \\r."""
    original = LogLine(
        "2024-03-05T09:14:07Z", "", "app", "web.1", "progress 50%\r", 190, "host", None
    )
    sent = format_syslog(original)
    assert sent == b"<190>1 2024-03-05T09:14:07Z host app web.1 - progress 50%\r"
    (parsed,) = parse_logplex(frame([sent]), RECEIVED)
    assert parsed.message == "progress 50%\r"


@pytest.mark.parametrize(
    ("timestamp", "sent"),
    [
        ("2024-03-05T09:14:07.418233+00:00", "2024-03-05T09:14:07.418233+00:00"),
        ("2024-03-05T11:14:07.5+02:00", "2024-03-05T11:14:07.5+02:00"),
        ("2024-03-05T09:14:07Z", "2024-03-05T09:14:07Z"),
        ("2024-03-05T09:14:07", "2024-03-05T09:14:07.000000+00:00"),
        ("2024-03-05t09:14:07z", "2024-03-05T09:14:07.000000+00:00"),
        ("2024-03-05T10:14:07+0100", "2024-03-05T09:14:07.000000+00:00"),
        ("2024-03-05T09:14:07.123456789Z", "2024-03-05T09:14:07.123456+00:00"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999+00:00"),
    ],
)
def test_formatting_writes_timestamps_rfc5424_allows(timestamp: str, sent: str) -> None:
    (parsed,) = parse_logplex(body_of(f"<190>1 {timestamp} host app web.1 - x\n"), RECEIVED)
    assert format_syslog(parsed) == f"<190>1 {sent} host app web.1 - x\n".encode()
    (again,) = parse_logplex(frame([format_syslog(parsed)]), RECEIVED)
    assert again.time == parsed.time


def test_only_one_trailing_newline_is_framing() -> None:
    line = parse_logplex(body_of("<190>1 2024-03-05T09:14:07Z host app web.1 - hi\n\n"))[0]
    assert line.message == "hi\n"


def test_empty_body_has_no_lines() -> None:
    assert parse_logplex(b"") == []
    assert parse_logplex(b" \n\n") == []


OK = b"<190>1 2024-03-05T09:14:07Z host app web.1 - ok\n"
OK_FRAME = b"%d %s" % (len(OK), OK)


@pytest.mark.parametrize(
    ("body", "frame_no", "offset", "reason"),
    [
        (b"hello", 1, 0, "expected an octet count"),
        (b"-5 <190>1 x", 1, 0, "negative octet count -5"),
        (b"12x <190>1", 1, 0, "not a number followed by a space"),
        (b"0 ", 1, 0, "zero octet count"),
        (b"9" * 5000 + b" <190>1 x", 1, 0, "more than 12 digits"),
        (OK_FRAME + b"1234567890123 x", 2, len(OK_FRAME), "more than 12 digits"),
        (OK_FRAME + b"%d %s" % (len(OK) + 1, OK), 2, len(OK_FRAME), "runs past the end"),
        # The count as sent, what is left with a thousands separator as sizes are written
        (
            b"20000 <190>1 " + b"x" * 1993,
            1,
            0,
            "count 20000 runs past the end of the body (2,000 bytes left)",
        ),
        # A count that lands mid-message: the next frame does not start with a count.
        (OK_FRAME + b"10 " + OK, 3, len(OK_FRAME) + 3 + 10, "not a number followed by a space"),
    ],
)
def test_framing_errors_name_frame_and_offset(
    body: bytes, frame_no: int, offset: int, reason: str
) -> None:
    with pytest.raises(FramingError) as info:
        parse_logplex(body, RECEIVED)
    assert info.value.frame == frame_no
    assert info.value.offset == offset
    assert reason in str(info.value)
    assert str(info.value).startswith(f"frame {frame_no} at byte {offset}: ")


def test_unparseable_header_keeps_the_whole_frame() -> None:
    lines = parse_logplex(
        body_of("just some text\n", "<999>1 2024-03-05T09:14:07Z host a b - x\n"), RECEIVED
    )
    assert [(x.source, x.dyno, x.message, x.timestamp, x.time, x.pri) for x in lines] == [
        ("unknown", "unknown", "just some text", RECEIVED.timestamp, RECEIVED.time, None),
        (
            "unknown",
            "unknown",
            "<999>1 2024-03-05T09:14:07Z host a b - x",
            RECEIVED.timestamp,
            RECEIVED.time,
            None,
        ),
    ]


def test_bad_timestamp_makes_the_header_unparseable() -> None:
    (line,) = parse_logplex(body_of("<190>1 2024-13-45T09:14:07Z host app web.1 - x\n"), RECEIVED)
    assert (line.source, line.message) == (
        "unknown",
        "<190>1 2024-13-45T09:14:07Z host app web.1 - x",
    )


def test_nil_timestamp_takes_the_time_received() -> None:
    (line,) = parse_logplex(body_of("<190>1 - host app web.1 - hello\n"), RECEIVED)
    assert (line.timestamp, line.time, line.message) == (RECEIVED.timestamp, RECEIVED.time, "hello")


@pytest.mark.parametrize(
    ("timestamp", "instant"),
    [
        ("2024-03-05T09:14:07.418233+00:00", "2024-03-05T09:14:07.418233Z"),
        ("2024-03-05T09:14:07+00:00", "2024-03-05T09:14:07.000000Z"),
        ("2024-03-05T09:14:07Z", "2024-03-05T09:14:07.000000Z"),
        ("2024-03-05T09:14:07.4Z", "2024-03-05T09:14:07.400000Z"),
        ("2024-03-05T09:14:07.123456789Z", "2024-03-05T09:14:07.123456Z"),
        ("2024-03-05T11:14:07.5+02:00", "2024-03-05T09:14:07.500000Z"),
        ("2024-03-05T01:14:07-08:00", "2024-03-05T09:14:07.000000Z"),
        ("2024-03-05t09:14:07z", "2024-03-05T09:14:07.000000Z"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.999999Z"),
    ],
)
def test_timestamps_are_kept_verbatim_and_parsed(timestamp: str, instant: str) -> None:
    (line,) = parse_logplex(body_of(f"<190>1 {timestamp} host app web.1 - x\n"), RECEIVED)
    assert (line.timestamp, line.time) == (timestamp, instant)


def test_rfc5424_senders_nil_and_real_structured_data() -> None:
    lines = parse_logplex(
        body_of(
            "<13>1 2024-03-05T09:14:07Z myhost user - - - hello\n",
            '<13>1 2024-03-05T09:14:07Z myhost user - - [timeQuality tzKnown="1" isSynced="0"] hi there\n',
            "<13>1 2024-03-05T09:14:07Z myhost user - - [INFO] not sd\n",
            "<13>1 2024-03-05T09:14:07Z myhost user - - [exampleSDID@32473] private id\n",
            "<13>1 2024-03-05T09:14:07Z myhost user - - [origin] registered id\n",
            "<13>1 2024-03-05T09:14:07Z myhost user - - [meta] registered too\n",
            '<13>1 2024-03-05T09:14:07Z myhost user - - [a x="1"]glued\n',
            '<13>1 2024-03-05T09:14:07Z myhost user - - [bad id="unterminated] msg\n',
            '<13>1 2024-03-05T09:14:07Z myhost user - - [a x="1"]\n',
            "<13>1 2024-03-05T09:14:07Z myhost user - - -\n",
        ),
        RECEIVED,
    )
    assert [(x.structured_data, x.message) for x in lines] == [
        (None, "hello"),
        ('[timeQuality tzKnown="1" isSynced="0"]', "hi there"),
        (None, "[INFO] not sd"),
        ("[exampleSDID@32473]", "private id"),
        ("[origin]", "registered id"),
        ("[meta]", "registered too"),
        (None, '[a x="1"]glued'),
        (None, '[bad id="unterminated] msg'),
        ('[a x="1"]', ""),
        (None, ""),
    ]
    assert lines[0].hostname == "myhost"


def test_host_form_never_has_structured_data() -> None:
    (line,) = parse_logplex(body_of('<190>1 2024-03-05T09:14:07Z host app web.1 - [a x="1"] m\n'))
    assert (line.structured_data, line.message) == (None, '[a x="1"] m')


def test_structured_data_names_over_32_characters_are_message_and_forwarded_as_it() -> None:
    """RFC 5424 lets an SD-ID or a PARAM-NAME have 32 characters at most, and a strict
    receiver (syslog-ng) refuses a frame whose STRUCTURED-DATA has a longer one: such an
    element is message text, which a syslog drain gets after a nil STRUCTURED-DATA, a frame
    every receiver takes whole (rsyslog 8.2302 reads it so)."""
    head = "<13>1 2024-03-05T09:14:07Z"
    longest = "x" * 29 + "@12"
    assert len(longest) == 32
    (line,) = parse_logplex(body_of(f'{head} myhost user 1 - [{longest} a="b"] hi\n'), RECEIVED)
    assert (line.structured_data, line.message) == (f'[{longest} a="b"]', "hi")
    for sd in (
        f'[{longest}4 a="b"]',
        f'[ok@1 {"p" * 33}="b"]',
        f'[ok@1 a="b"][{longest}4 c="d"]',
    ):
        (line,) = parse_logplex(body_of(f"{head} myhost user 1 - {sd} hi\n"), RECEIVED)
        assert (line.structured_data, line.message) == (None, f"{sd} hi")
        sent = format_syslog(line, "d.token")
        assert sent == f"{head} d.token user 1 - - {sd} hi\n".encode()


def test_a_line_sent_on_keeps_to_rfc_5424_s_field_limits_and_app_output_s_pri() -> None:
    """What a drain receives: a line with no PRI goes as local7.info (190), as app output
    does on Heroku; APP-NAME, PROCID and MSGID over RFC 5424's 48, 128 and 32 characters go
    cut to them for a syslog drain, whose strict receivers refuse longer ones, and whole in
    Logplex's form, which takes them. (A fuzz test drew such lines only now and then.)"""
    base = stored_line("hi")
    long = base._replace(pri=None, source="s" * 60, dyno="d" * 200, msgid="m" * 40)
    head = f"1 {base.timestamp}"
    assert format_syslog(long, "d.token") == (
        f"<190>{head} d.token {'s' * 48} {'d' * 128} {'m' * 32} - hi\n".encode()
    )
    assert format_syslog(long) == f"<190>{head} host {'s' * 60} {'d' * 200} - hi\n".encode()
    exact = base._replace(source="s" * 48, dyno="d" * 128, msgid="m" * 32)
    assert format_syslog(exact, "d.token") == (
        f"<190>{head} d.token {'s' * 48} {'d' * 128} {'m' * 32} - hi\n".encode()
    )


def test_structured_data_values_unescape() -> None:
    sd = r'[meta seq="518"][origin ip="10.0.0.8" note="a \"quoted\" \] value"]'
    assert parse_structured_data(sd) == {
        "meta": {"seq": "518"},
        "origin": {"ip": "10.0.0.8", "note": 'a "quoted" ] value'},
    }


def test_structured_data_keeps_backslashes_that_escape_nothing() -> None:
    """RFC 5424 6.3.3: only \\", \\\\ and \\] are escapes; any other backslash is a backslash."""
    sd = r'[x@1 path="C:\temp\new" nl="a\nb" both="\\n \\\" \]" end="tail\\"]'
    assert parse_structured_data(sd) == {
        "x@1": {"path": "C:\\temp\\new", "nl": "a\\nb", "both": '\\n \\" ]', "end": "tail\\"}
    }


def test_structured_data_repeated_ids_and_params_lose_nothing() -> None:
    """A repeated PARAM-NAME (allowed) lists its values in order; a repeated SD-ID (not
    allowed, but sent) has its elements' parameters together, as one element."""
    sd = '[a x="1"][b z="9"][a y="2"][a x="3" x="1"][c k="v" k="v"]'
    assert parse_structured_data(sd) == {
        "a": {"x": ["1", "3", "1"], "y": "2"},
        "b": {"z": "9"},
        "c": {"k": ["v", "v"]},
    }


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    body = frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - caf\xe9 \xff\n"])
    assert parse_logplex(body)[0].message == "caf\ufffd \ufffd"


def test_byte_order_mark_is_not_message() -> None:
    body = frame(["<13>1 2024-03-05T09:14:07Z h a - - - \ufeffbonjour\n".encode()])
    assert parse_logplex(body)[0].message == "bonjour"


def test_parse_syslog_single_message() -> None:
    line = parse_syslog(
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed\n"
    )
    assert (line.pri, line.hostname, line.source, line.dyno, line.message) == (
        34,
        "mymachine.example.com",
        "su",
        "-",
        "'su root' failed",
    )


@pytest.mark.parametrize("pri", [0, 191])
def test_a_syslog_message_keeps_every_pri_syslog_has(pri: int) -> None:
    """0 (kern.emerg) to 191 (local7.debug), newline-framed or octet-counted alike."""
    message = f"<{pri}>1 2024-03-05T09:14:07Z myhost app web.1 - - debug detail\n".encode()
    for line in (parse_syslog(message), parse_logplex(frame([message]))[0]):
        assert (line.pri, line.source, line.dyno, line.message) == (
            pri,
            "app",
            "web.1",
            "debug detail",
        )


def test_heroku_text_lines() -> None:
    line = parse_heroku_line("2024-03-05T09:14:07.418233+00:00 heroku[router]: at=info status=200")
    assert line == LogLine(
        "2024-03-05T09:14:07.418233+00:00",
        "2024-03-05T09:14:07.418233Z",
        "heroku",
        "router",
        "at=info status=200",
        None,
        None,
        None,
    )
    empty = parse_heroku_line("2024-03-05T09:14:07Z app[web.1]:")
    assert empty is not None
    assert empty.message == ""
    padded = parse_heroku_line("2024-03-05T09:14:07Z app[web.1]:  indented, trailing \t")
    assert padded is not None
    assert padded.message == " indented, trailing \t"  # all but the separating space
    assert parse_heroku_line('  File "app.py", line 9') is None


def test_a_heroku_line_whose_source_holds_brackets_is_read_back() -> None:
    """An RFC 5424 APP-NAME may hold brackets (logger --rfc5424 -t 'billing[77]' sends the
    tag as it is): herolog logs shows it as billing[77][-]:, which import kept whole as an
    unknown[unknown] line. The first [DYNO]: ends the header."""
    line = parse_heroku_line("2024-03-05T09:14:07Z billing[77][-]: charged [x]: 3")
    assert line is not None
    assert (line.source, line.dyno, line.message) == ("billing[77]", "-", "charged [x]: 3")
    line = parse_heroku_line("2024-03-05T09:14:07Z app[web.1]: a[b]: c")
    assert line is not None
    assert (line.source, line.dyno, line.message) == ("app", "web.1", "a[b]: c")
    # An app's own line after a timestamp, as a Java logger writes one, is no header.
    assert parse_heroku_line("2024-03-05T09:14:07Z [INFO][main]: started") is None
    assert parse_heroku_line("yesterday app[web.1]: x") is None


def test_fields_from_logfmt_and_json() -> None:
    router = (
        'at=error code=H12 desc="Request timeout" method=POST connect= service=30000ms status=503'
    )
    assert parse_fields(router) == {
        "at": "error",
        "code": "H12",
        "desc": "Request timeout",
        "method": "POST",
        "connect": "",
        "service": "30000ms",
        "status": "503",
    }
    metrics = "source=web.1 sample#load_avg_1m=0.31 sample#memory_rss=180.02MB"
    assert parse_fields(metrics) == {
        "source": "web.1",
        "sample#load_avg_1m": "0.31",
        "sample#memory_rss": "180.02MB",
    }
    assert parse_fields('{"level": "info", "n": 3}') == {"level": "info", "n": 3}
    assert parse_fields(r'msg="say \"hi\""') == {"msg": 'say "hi"'}
    for plain in [
        "State changed from starting to up",
        "",
        "a=1 loose words",
        "[1, 2]",
        "{not json",
        'x="unterminated',
    ]:
        assert parse_fields(plain) is None, plain


def test_frame_decoder_streams_across_chunk_boundaries() -> None:
    messages = [
        f"<190>1 2024-03-05T09:14:0{i}Z host app web.1 - line {i} ✓\n".encode() for i in range(5)
    ]
    stream = frame(messages)
    for chunk_size in (1, 2, 7, 64, len(stream)):
        decoder = FrameDecoder()
        got: list[LogLine] = []
        for i in range(0, len(stream), chunk_size):
            got += decoder.feed(stream[i : i + chunk_size], RECEIVED)
        decoder.close()
        assert [x.message for x in got] == [f"line {i} ✓" for i in range(5)]
        assert decoder.frames == 5


def test_frame_decoder_errors_count_from_stream_start() -> None:
    decoder = FrameDecoder()
    good = frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - ok\n"])
    assert len(decoder.feed(good + good, RECEIVED)) == 2
    with pytest.raises(FramingError) as info:
        decoder.feed(b"garbage here", RECEIVED)
    assert (info.value.frame, info.value.offset) == (3, 2 * len(good))


def test_frame_decoder_keeps_the_frames_before_a_break_in_the_same_chunk() -> None:
    decoder = FrameDecoder()
    good = frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - ok\n"])
    assert [x.message for x in decoder.feed(good + good + b"garbage", RECEIVED)] == ["ok", "ok"]
    assert decoder.error is not None
    assert decoder.error.frame == 3
    with pytest.raises(FramingError, match="frame 3 at byte"):
        decoder.feed(good, RECEIVED)
    with pytest.raises(FramingError, match="frame 3 at byte"):
        decoder.close()


def test_a_stream_of_endless_digits_is_an_error_not_a_wait() -> None:
    with pytest.raises(FramingError, match="more than 12 digits"):
        FrameDecoder().feed(b"1" * 40, RECEIVED)


def test_syslog_stream_mixes_both_framings_message_by_message() -> None:
    octet = frame([b"<190>1 2024-03-05T09:14:07Z d.tok app web.1 - - counted\n"])
    stream = (
        octet
        + b"<13>1 2024-03-05T09:14:08Z myhost user - - - by newline\r\n"
        + octet * 5
        + b"<13>1 2024-03-05T09:14:09Z h u - - - last, no newline"
    )
    for chunk_size in (1, 5, 64, len(stream)):
        decoder = FrameDecoder(newline_framing=True)
        got: list[LogLine] = []
        for i in range(0, len(stream), chunk_size):
            got += decoder.feed(stream[i : i + chunk_size], RECEIVED)
        got += decoder.close(RECEIVED)
        assert [x.message for x in got] == ["counted", "by newline"] + ["counted"] * 5 + [
            "last, no newline"
        ], chunk_size
        assert decoder.frames == 8


def test_syslog_stream_garbage_keeps_what_came_before() -> None:
    """Garbage where a message or an octet-counted frame must start breaks the framing;
    what came before it is kept."""
    good = b"<13>1 2024-03-05T09:14:08Z h u - - - fine"
    framed = b"%d %s" % (len(good), good)
    decoder = FrameDecoder(newline_framing=True)
    assert [x.message for x in decoder.feed(framed * 2 + b"GET / HTTP/1.1\r\n", RECEIVED)] == [
        "fine",
        "fine",
    ]
    with pytest.raises(FramingError, match="frame 3 at byte"):
        decoder.close()
    decoder = FrameDecoder(newline_framing=True)
    with pytest.raises(FramingError, match="frame 1 at byte 0"):
        decoder.feed(b"GET / HTTP/1.1\r\n" + good + b"\n", RECEIVED)


def test_syslog_stream_refuses_endless_lines() -> None:
    decoder = FrameDecoder(max_frame=100, newline_framing=True)
    with pytest.raises(FramingError, match="a line of more than 100 bytes"):
        decoder.feed(b"<13>1 " + b"x" * 200, RECEIVED)


def test_frame_decoder_refuses_oversized_frames_without_buffering_them() -> None:
    decoder = FrameDecoder(max_frame=1000)
    with pytest.raises(FramingError, match="over the 1,000-byte limit"):
        decoder.feed(b"1000000000 <190>1", RECEIVED)


def test_a_frame_of_the_limit_is_taken_and_one_byte_more_refused() -> None:
    header = b"<190>1 2024-03-05T09:14:07Z host app web.1 - "
    at_limit = header + b"x" * (1000 - len(header))
    (got,) = FrameDecoder(max_frame=1000).feed(frame([at_limit]), RECEIVED)
    assert got.message == "x" * (1000 - len(header))
    with pytest.raises(FramingError, match="a frame of 1,001 bytes is over the 1,000-byte limit"):
        FrameDecoder(max_frame=1000).feed(frame([at_limit + b"x"]), RECEIVED)


def cut_decoder(max_frame: int = 100) -> FrameDecoder:
    return FrameDecoder(max_frame, newline_framing=True, cut_long=True)


def test_a_decoder_that_cuts_long_messages_keeps_their_start_and_goes_on() -> None:
    header = b"<190>1 2024-03-05T09:14:07Z host app web.1 - "
    big = header + b"x" * 500
    after = header + b"after"
    decoder = cut_decoder()
    lines = decoder.feed(frame([big, after]) + big + b"\r\n" + after + b"\n", RECEIVED)
    kept = "x" * (100 - len(header))
    assert [(x.source, x.message) for x in lines] == [("app", kept), ("app", "after")] * 2
    assert decoder.take_cuts() == [len(big), len(big)]  # a CRLF's CR is framing
    assert decoder.take_cuts() == []
    assert decoder.close(RECEIVED) == []


def test_a_message_is_cut_between_utf8_characters() -> None:
    header = b"<190>1 2024-03-05T09:14:07Z host app web.1 - "
    for before in range(4):  # the limit falls on each byte of a four-byte character
        message = header + b"x" * (100 - len(header) - before) + "\U0001f600".encode() * 10
        for framed in (frame([message]), message + b"\n"):
            (line,) = cut_decoder().feed(framed, RECEIVED)
            assert line.message == "x" * (100 - len(header) - before)


def test_what_is_skipped_is_never_buffered() -> None:
    """A count of 64 MiB fed a read at a time: the decoder holds about a read, not the
    frame (a limit of a MiB, so that what it does hold shows)."""
    import tracemalloc

    header = b"<190>1 2024-03-05T09:14:07Z host app web.1 - "
    decoder = cut_decoder(1 << 20)
    tracemalloc.start()
    try:
        chunk = b"x" * (1 << 16)
        lines = decoder.feed(b"%d " % (64 << 20) + header + chunk[len(header) :], RECEIVED)
        for _ in range((64 << 20) // len(chunk) - 1):
            lines += decoder.feed(chunk, RECEIVED)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [len(x.message) for x in lines] == [(1 << 20) - len(header)]
    assert peak < 4 << 20
    assert decoder.feed(frame([header + b"after"]), RECEIVED)[0].message == "after"
    assert decoder.take_cuts() == [64 << 20]


@pytest.mark.parametrize(
    "data",
    [
        b"%d <190>1 x" % ((64 << 20) + 1),  # past any message
        b"500 " + b"y" * 600,  # no PRI
        b"500 <1x" + b"y" * 600,
    ],
)
def test_a_decoder_that_cuts_long_messages_still_refuses_counts_it_cannot_skip(
    data: bytes,
) -> None:
    with pytest.raises(FramingError, match=r"frame 1 at byte 0: a frame of [0-9,]+ bytes is over"):
        cut_decoder().feed(data, RECEIVED)
    assert cut_decoder().feed(b"500 <1", RECEIVED) == []  # the rest of a PRI may yet come


def test_a_continued_line_over_the_limit_is_cut_with_its_messages_header() -> None:
    decoder = cut_decoder()
    lines = decoder.feed(b"<14>app: one\n" + b"  " + b"t" * 200 + b"\n<14>app: two\n", RECEIVED)
    assert [(x.source, x.message) for x in lines] == [
        ("app", "one"),
        ("app", "  " + "t" * 98),
        ("app", "two"),
    ]
    assert decoder.take_cuts() == [202]


def test_a_nul_ending_senders_message_is_skipped_to_where_it_ends() -> None:
    """Its newlines are its own unless blank lines and a PRI (or a NUL) follow: an indented
    PRI is a line of its traceback, so the skipping goes on past it."""
    decoder = cut_decoder(40)
    stream = b"<14>a: x\0<14>a: " + b"y" * 50 + b"\n  <13>more\n\n<1", b"4>a: next\0"
    lines = decoder.feed(stream[0], RECEIVED) + decoder.feed(stream[1], RECEIVED)
    assert [x.message for x in lines] == ["x", "y" * 33, "next"]
    assert decoder.take_cuts() == [len(b"<14>a: " + b"y" * 50 + b"\n  <13>more")]


def test_the_end_of_the_stream_ends_what_is_being_skipped() -> None:
    for data, size in ((b"1000 <14>a: " + b"x" * 200, 1000), (b"<14>a: " + b"x" * 200, 207)):
        decoder = cut_decoder()
        assert len(decoder.feed(data, RECEIVED)) == 1
        assert decoder.close(RECEIVED) == []
        assert decoder.take_cuts() == [size]


def test_frame_decoder_close_reports_a_cut_off_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"30 <190>1 2024", RECEIVED)
    with pytest.raises(FramingError, match="ends inside a frame"):
        decoder.close()


# Property tests ---------------------------------------------------------------------------

tokens = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
messages = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\ufeff"), max_size=200
).filter(lambda m: not m.endswith("\n"))
timestamps_ = st.sampled_from(
    [
        "2024-03-05T09:14:07.418233+00:00",
        "2024-03-05T09:14:07Z",
        "2012-11-30T06:45:29+00:00",
        "2024-03-05T11:14:07.5+02:00",
    ]
)
log_lines = st.builds(
    lambda ts, source, dyno, message, pri: LogLine(
        ts, "", source, dyno, message, pri, "host", None
    ),
    timestamps_,
    tokens,
    tokens,
    messages,
    st.integers(0, 191),
)


@given(st.lists(log_lines, max_size=30))
@example([])
def test_framing_then_parsing_round_trips(lines: list[LogLine]) -> None:
    parsed = parse_logplex(frame(format_syslog(line) for line in lines), RECEIVED)
    assert [p._replace(time="") for p in parsed] == lines


@given(st.binary(max_size=400))
@settings(max_examples=500)
def test_arbitrary_bytes_raise_nothing_but_framing_errors(body: bytes) -> None:
    try:
        lines = parse_logplex(body, RECEIVED)
    except FramingError as error:
        assert 0 <= error.offset <= len(body)  # noqa: PT017
        assert error.frame >= 1  # noqa: PT017
    else:
        assert all(isinstance(line, LogLine) for line in lines)


@given(st.lists(log_lines, min_size=1, max_size=10), st.data())
def test_mutated_bodies_raise_nothing_but_framing_errors(
    lines: list[LogLine], data: st.DataObject
) -> None:
    body = bytearray(frame(format_syslog(line) for line in lines))
    for _ in range(data.draw(st.integers(1, 5))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(FramingError):
        parse_logplex(bytes(body), RECEIVED)


@given(
    st.lists(
        st.sampled_from([b"9" * 4400, b"1" * 13, b"12", b" ", b"<190>1 x\n", b"\n"]), max_size=6
    )
)
def test_long_digit_runs_are_framing_errors_not_crashes(parts: list[bytes]) -> None:
    body = b"".join(parts)
    with contextlib.suppress(FramingError):
        parse_logplex(body, RECEIVED)
    decoder = FrameDecoder()
    with contextlib.suppress(FramingError):
        decoder.feed(body, RECEIVED)
        decoder.close()


@given(st.binary(max_size=300), st.integers(1, 50))
def test_stream_decoder_agrees_with_whole_body_parse(body: bytes, chunk: int) -> None:
    try:
        expected: list[LogLine] | None = parse_logplex(body, RECEIVED)
    except FramingError:
        expected = None
    decoder = FrameDecoder()
    got: list[LogLine] = []
    try:
        for i in range(0, len(body), chunk):
            got += decoder.feed(body[i : i + chunk], RECEIVED)
        decoder.close()
    except FramingError as error:
        assert expected is None
        # What the stream kept is exactly the whole-body parse of the frames before the break.
        assert got == parse_logplex(body[: error.offset], RECEIVED)  # noqa: PT017
    else:
        assert got == expected


def damaged(body: bytes, data: st.DataObject) -> str:
    """``body`` with up to three bytes replaced by ones that matter to the fast paths' checks,
    as the parser sees it (latin-1 text)."""
    changed = bytearray(body)
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(changed) - 1))
        changed[pos] = data.draw(st.sampled_from(b" \n\r-<>0123456789Zzt+\t\xc3\xa9.:\x7f"))
    return bytes(changed).decode("latin-1")


@given(
    st.lists(log_lines, min_size=4, max_size=20),
    st.sampled_from(["host", "d.8c1d2e3f", "myhost"]),
    st.data(),
)
@settings(max_examples=500)
def test_bulk_path_agrees_with_frame_loop(
    lines: list[LogLine], hostname: str, data: st.DataObject
) -> None:
    """Whatever the bulk fast path accepts, the frame-by-frame loop parses the same way."""
    from herolog.parser import _parse_frames, _parse_plain_body

    text = damaged(frame(format_syslog(line, hostname) for line in lines), data)
    bulk = _parse_plain_body(text)
    if bulk is None:
        return
    loop, _, _ = _parse_frames(text, 0, True, RECEIVED, 1, 0)
    assert bulk == loop


@given(log_lines, st.sampled_from(["host", "d.8c1d2e3f"]), st.data())
@settings(max_examples=500)
def test_one_frame_path_agrees_with_frame_loop(
    line: LogLine, hostname: str, data: st.DataObject
) -> None:
    """Whatever the one-frame fast path accepts, the frame-by-frame loop parses the same way."""
    from herolog.parser import _parse_frames, _parse_one_frame

    text = damaged(frame([format_syslog(line, hostname)]), data)
    fast = _parse_one_frame(text)
    if fast is None:
        return
    loop, _, _ = _parse_frames(text, 0, True, RECEIVED, 1, 0)
    assert fast == loop


@pytest.mark.parametrize(
    "body",
    [
        frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - m\r\n"]),
        frame([b"<190>1 2024-03-05T09:14:07Z host app web\t1 - m\n"]),
        frame([b"<190>1 2024-03-05T09:14:07Z host a\x7fp web.1 - m\n"]),
        frame([b"<190>1 2024-03-05T09:14:07Z host app w\xe9b.1 - m\n"]),
        frame([b"<0190>1 2024-03-05T09:14:07Z host app web.1 - m\n"]),
        frame([b"<192>1 2024-03-05T09:14:07Z host app web.1 - m\n"]),
        frame([b"<190>1 2024-03-05T09:14:07Z myhost app web.1 - m\n"]),
        frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 x m\n"]),
        frame([b"<190>1 - host app web.1 - m\n"]),
        frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - \xef\xbb\xbfm\n"]),
        b"0" + frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - m\n"]),
        b"0" * 12 + frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - m\n"]),
        b" " + frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - m\n"]),
        b"45 <190>1 2024-03-05T09:14:07Z host app web.1 - m\n",
        b"47 <190>1 2024-03-05T09:14:07Z host app web.1 - m\n",
    ],
)
def test_one_frame_path_declines_what_the_loop_reads_otherwise(body: bytes) -> None:
    from herolog.parser import _parse_frames, _parse_one_frame

    text = body.decode("latin-1")
    try:
        loop: list[LogLine] | None = _parse_frames(text, 0, True, RECEIVED, 1, 0)[0]
    except FramingError:
        loop = None
    fast = _parse_one_frame(text)
    assert fast is None or fast == loop


@pytest.mark.parametrize(
    "message", ["at=info method=GET status=200", "", "[GIN] é ünïcode", "multi\nline"]
)
def test_one_frame_bodies_take_the_fast_path(message: str) -> None:
    from herolog.parser import _parse_one_frame

    line = LogLine(
        "2024-03-05T09:14:07.418233+00:00", "", "heroku", "router", message, 158, "host", None
    )
    text = frame([format_syslog(line)]).decode("latin-1")
    parsed = _parse_one_frame(text)
    assert parsed == [line._replace(time="2024-03-05T09:14:07.418233Z")]
    assert parse_logplex(text.encode("latin-1"), RECEIVED) == parsed


@pytest.mark.parametrize(
    "timestamp",
    [
        "2021-02-25t13:04:29.326809+00:00",
        "2016-12-31T23:59:60.500000+00:00",
        "2021-02-25T13:04:29.326809+01:00",
    ],
)
def test_bulk_and_frame_loop_agree_on_unusual_timestamps(timestamp: str) -> None:
    one = frame([f"<190>1 {timestamp} host app web.1 - x\n".encode()])
    assert parse_logplex(one * 6, RECEIVED) == parse_logplex(one, RECEIVED) * 6


@pytest.mark.parametrize("hostname", ["host", "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"])
def test_bulk_path_takes_both_heroku_forms(hostname: str) -> None:
    from herolog.parser import _parse_plain_body

    lines = [
        LogLine(
            "2024-03-05T09:14:07.418233+00:00",
            "",
            "app",
            f"web.{i}",
            f"m {i} - x",
            190,
            hostname,
            None,
        )
        for i in range(5)
    ]
    text = frame(format_syslog(line, hostname) for line in lines).decode("latin-1")
    parsed = _parse_plain_body(text)
    assert parsed is not None
    assert [(p.hostname, p.message, p.structured_data) for p in parsed] == [
        (hostname, f"m {i} - x", None) for i in range(5)
    ]


def test_bulk_path_takes_plain_logplex_bodies() -> None:
    from herolog.parser import _parse_plain_body

    lines = [
        LogLine(
            "2024-03-05T09:14:07.418233+00:00", "", "app", f"web.{i}", f"m {i} é", 190, "host", None
        )
        for i in range(5)
    ]
    text = frame(format_syslog(line) for line in lines).decode("latin-1")
    parsed = _parse_plain_body(text)
    assert parsed is not None
    assert [p.message for p in parsed] == [f"m {i} é" for i in range(5)]
    assert {p.time for p in parsed} == {"2024-03-05T09:14:07.418233Z"}


@pytest.mark.parametrize(
    "body",
    [
        frame(
            format_syslog(
                LogLine("2024-03-05T09:14:07Z", "", "app", "web.1", f"m {i}", 190, "host", None)
            )
            for i in range(20)
        ),
        b"1 x" * 20,
    ],
    ids=["Heroku's form", "tiny frames"],
)
def test_a_body_of_more_lines_than_asked_for_is_refused(body: bytes) -> None:
    """A drain body of more frames than the writer takes (it passes its limit) is refused
    where the frame past the limit begins, on the bulk path as in the frame loop."""
    assert len(parse_logplex(body, max_lines=20)) == 20
    assert len(parse_logplex(body)) == 20
    with pytest.raises(TooManyLines, match="over 19 lines"):
        parse_logplex(body, max_lines=19)


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """serve's machine in a zone other than UTC, for timestamps that carry none."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york")
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # logger --rfc3164 -i, and rsyslog's default RSYSLOG_TraditionalForwardFormat
        (
            "<13>Mar  5 09:14:07 myhost billing[42]: invoice paid",
            ("2026-03-05T09:14:07-05:00", "billing", "42", "myhost", 13, "invoice paid"),
        ),
        # logger --rfc3164 without -i; a day of two digits
        (
            "<14>Dec 24 23:59:59 myhost billing: it: has colons",
            ("2025-12-24T23:59:59-05:00", "billing", "-", "myhost", 14, "it: has colons"),
        ),
        # A leap second (it was kept whole as unknown[unknown]): as in an RFC 3339 timestamp,
        # the last microsecond of its minute.
        (
            "<13>Dec 31 18:59:60 myhost billing[42]: leap",
            ("2025-12-31T18:59:60-05:00", "billing", "42", "myhost", 13, "leap"),
        ),
        (
            "<13>Dec 31 18:59:60.25 myhost billing[42]: leap",
            ("2025-12-31T18:59:60.250000-05:00", "billing", "42", "myhost", 13, "leap"),
        ),
        # Go's time.StampNano and .NET's seven digits (it was kept whole as unknown[unknown],
        # as more than six were): truncated to microseconds, as an RFC 3339 one's are
        (
            "<13>Mar  5 09:14:07.123456789 myhost billing[42]: nanoseconds",
            ("2026-03-05T09:14:07.123456-05:00", "billing", "42", "myhost", 13, "nanoseconds"),
        ),
        (
            "<13>Mar  5 09:14:07.9999999 myhost billing[42]: ticks",
            ("2026-03-05T09:14:07.999999-05:00", "billing", "42", "myhost", 13, "ticks"),
        ),
        # rsyslog's RSYSLOG_ForwardFormat: RFC 3339 time, and an RFC 5424 sender's tag
        # without its colon
        (
            "<156>2026-01-02T03:04:01.262031+00:00 vm billing[24561] via rsyslog",
            ("2026-01-02T03:04:01.262031+00:00", "billing", "24561", "vm", 156, "via rsyslog"),
        ),
        # rsyslog's RFC 3164 templates for an RFC 5424 sender with no PROCID (util-linux's
        # logger --rfc5424 without --id): the APP-NAME alone, no colon, as its %syslogtag%
        (
            "<13>Mar  5 09:14:07 myhost billing invoice paid",
            ("2026-03-05T09:14:07-05:00", "billing", "-", "myhost", 13, "invoice paid"),
        ),
        (
            "<156>2026-01-02T03:04:01.262031+00:00 vm billing via: rsyslog",
            ("2026-01-02T03:04:01.262031+00:00", "billing", "-", "vm", 156, "via: rsyslog"),
        ),
        (
            "<13>Mar  5 09:14:07 myhost billing",
            ("2026-03-05T09:14:07-05:00", "billing", "-", "myhost", 13, ""),
        ),
        # no HOSTNAME (a local sender's form); a tag with a slash
        (
            "<22>Jan  1 00:00:01 postfix/smtpd[7]: connect from x",
            ("2026-01-01T00:00:01-05:00", "postfix/smtpd", "7", None, 22, "connect from x"),
        ),
        # No HOSTNAME, and a colon in the message: a word ending in ":" is a TAG, never a
        # HOSTNAME (rsyslog's hostnames end in a letter or digit)
        (
            "<20>Jan  1 00:00:01 postfix/smtpd[7]: warning: hostname x does not resolve",
            (
                "2026-01-01T00:00:01-05:00",
                "postfix/smtpd",
                "7",
                None,
                20,
                "warning: hostname x does not resolve",
            ),
        ),
        # Docker's syslog log driver by default (its tag the container's id), TCP too
        (
            "<27>Mar  5 09:14:07 3f2c1d4e5b6a[4711]: Error: connection refused",
            (
                "2026-03-05T09:14:07-05:00",
                "3f2c1d4e5b6a",
                "4711",
                None,
                27,
                "Error: connection refused",
            ),
        ),
        (
            "<11>Mar  5 09:14:07 billing: error: card declined",
            ("2026-03-05T09:14:07-05:00", "billing", "-", None, 11, "error: card declined"),
        ),
        # an address in brackets, as some devices send their HOSTNAME
        (
            "<13>Mar  5 09:14:07 [10.0.0.7] sshd[9]: x",
            ("2026-03-05T09:14:07-05:00", "sshd", "9", "[10.0.0.7]", 13, "x"),
        ),
        # Python's SysLogHandler, with an ident or a formatter: no time, no HOSTNAME
        (
            "<12>myapp: with ident",
            (RECEIVED.timestamp, "myapp", "-", None, 12, "with ident"),
        ),
        (
            "<11>worker[26557]: ",
            (RECEIVED.timestamp, "worker", "26557", None, 11, ""),
        ),
    ],
)
def test_bsd_syslog_is_read_as_rsyslog_reads_it(
    message: str, expected: tuple[str, str, str, str | None, int, str]
) -> None:
    """RFC 3164 messages, which rsyslog forwards by default and logger --rfc3164 and
    Python's SysLogHandler send, were kept whole as unknown[unknown] lines, `<13>` and all.
    A timestamp without year or zone is read in the machine's zone, in the year that
    rsyslog gives it (received on 2 January: December is last year's)."""
    line = parse_syslog(message.encode(), RECEIVED)
    got = (line.timestamp, line.source, line.dyno, line.hostname, line.pri, line.message)
    assert got == expected
    assert line.time == timestamps.normalize(expected[0])
    (counted,) = parse_logplex(frame([message.encode()]), RECEIVED)
    assert counted == line


@pytest.mark.usefixtures("new_york")
@pytest.mark.parametrize(
    ("imported", "logged", "expected"),
    [
        ("2026-03-05T12:00:00-05:00", "Nov 20 10:00:00", "2025-11-20T10:00:00-05:00"),
        ("2026-12-05T12:00:00-05:00", "Jan  9 10:00:00", "2026-01-09T10:00:00-05:00"),
        ("2026-01-02T12:00:00-05:00", "Dec 31 23:00:00", "2025-12-31T23:00:00-05:00"),
        ("2026-03-05T12:00:00-05:00", "Mar  5 09:00:00", "2026-03-05T09:00:00-05:00"),
        # A sender's zone ahead of this machine's: hours ahead is this year's.
        ("2026-03-05T12:00:00-05:00", "Mar  5 23:00:00", "2026-03-05T23:00:00-05:00"),
        ("2026-03-05T12:00:00-05:00", "Mar  6 12:00:00", "2026-03-06T12:00:00-05:00"),  # a day
        ("2026-07-05T12:00:00-04:00", "Jan 20 10:00:00", "2026-01-20T10:00:00-05:00"),
        ("2026-02-05T12:00:00-05:00", "Jul 20 10:00:00", "2025-07-20T10:00:00-04:00"),
        # 29 February: the last year that has one (it was kept whole as unknown[unknown]).
        ("2026-03-05T12:00:00-05:00", "Feb 29 10:00:00", "2024-02-29T10:00:00-05:00"),
        ("2028-02-20T12:00:00-05:00", "Feb 29 10:00:00", "2024-02-29T10:00:00-05:00"),
        ("2028-03-01T12:00:00-05:00", "Feb 29 10:00:00", "2028-02-29T10:00:00-05:00"),
        ("2101-03-01T12:00:00-05:00", "Feb 29 10:00:00", "2096-02-29T10:00:00-05:00"),
        # Eight years back: 2100 has no 29 February.
        ("2104-02-20T12:00:00-05:00", "Feb 29 10:00:00", "2096-02-29T10:00:00-05:00"),
        # In the hour the clocks skip, as zoneinfo reads it: the sender's digits, the offset
        # before (it was 01:30 an hour earlier, with the offset after).
        ("2026-03-10T12:00:00-04:00", "Mar  8 02:30:00", "2026-03-08T02:30:00-05:00"),
        ("2026-11-10T12:00:00-05:00", "Nov  1 01:30:00", "2026-11-01T01:30:00-04:00"),
    ],
)
def test_a_saved_bsd_syslog_line_is_read_in_the_last_year_that_is_not_after_it(
    imported: str, logged: str, expected: str
) -> None:
    from datetime import datetime

    received = Received.at(datetime.fromisoformat(imported))
    message = f"<13>{logged} myhost billing[42]: paid".encode()
    assert parse_syslog(message, received, saved=True).timestamp == expected


@pytest.mark.usefixtures("new_york")
@pytest.mark.parametrize(
    ("arrived", "logged", "expected"),
    [
        # A sender's clock a little ahead across New Year: next year's January.
        ("2026-12-31T23:59:58-05:00", "Jan  1 00:00:01", "2027-01-01T00:00:01-05:00"),
        ("2027-01-01T00:00:02-05:00", "Dec 31 23:59:59", "2026-12-31T23:59:59-05:00"),
        ("2026-12-15T12:00:00-05:00", "Dec 15 11:59:00", "2026-12-15T11:59:00-05:00"),
    ],
)
def test_a_bsd_syslog_line_sent_across_new_year_is_read_in_its_year(
    arrived: str, logged: str, expected: str
) -> None:
    """As rsyslog reads one: received in December, a January time is next year's; in
    January, a December time last year's."""
    from datetime import datetime

    received = Received.at(datetime.fromisoformat(arrived))
    message = f"<13>{logged} myhost billing[42]: paid".encode()
    assert parse_syslog(message, received).timestamp == expected


bsd_tags = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":[]"),
    min_size=1,
    max_size=12,
)


bsd_messages = messages | st.builds("{}: {}".format, bsd_tags, messages)  # "warning: ..."


@given(bsd_tags, st.none() | bsd_tags, st.sampled_from([None, "myhost", "10.0.0.7"]), bsd_messages)
def test_what_a_bsd_message_says_never_changes_its_tag_or_hostname(
    tag: str, pid: str | None, hostname: str | None, message: str
) -> None:
    head = f"{hostname} " if hostname else ""
    head += f"{tag}[{pid}]:" if pid else f"{tag}:"
    line = parse_syslog(f"<13>Mar  5 09:14:07 {head} {message}".encode(), RECEIVED)
    got = (line.hostname, line.source, line.dyno, line.message)
    assert got == (hostname, tag, pid or "-", message)


@pytest.mark.parametrize(
    "message",
    [
        "<14>plain handler message",  # Python's SysLogHandler, no ident: no tag
        "<13>Mar  5 09:14:07 no-tag-or-hostname",  # a TAG without ":" follows a HOSTNAME
        "<13>Mar  5 09:14:07 myhost billing[1 unclosed",
        "<13>Feb 29 09:14:07 myhost leap[1]: not in 2026",
        "<13>2024-13-45T09:14:07Z myhost app[1]: a bad date",
        "<192>Mar  5 09:14:07 myhost app[1]: PRI over 191",
        "just some text: with a colon",
    ],
)
def test_what_is_not_bsd_syslog_either_is_still_kept_whole(message: str) -> None:
    line = parse_syslog(message.encode(), RECEIVED)
    assert (line.source, line.dyno, line.pri, line.message) == ("unknown", "unknown", None, message)


NUL_STREAM = (
    b"<14>app: starting\x00"
    b"<11>app[7]: failed\nTraceback (most recent call last):\n"
    b'  File "x.py", line 1, in <module>\nValueError: x\x00'
    b"<12>app: after\n\x00<12>app: newline ended\n<12>app: next\n2 retries left\x00"
)


def cut_in_two(stream: bytes, cut: int) -> tuple[list[LogLine], FrameDecoder]:
    """What a syslog connection's decoder gives for ``stream`` read in two parts, cut at
    ``cut``, and the decoder, not closed."""
    decoder = FrameDecoder(65536, newline_framing=True)
    lines = decoder.feed(stream[:cut], RECEIVED) + decoder.feed(stream[cut:], RECEIVED)
    return lines, decoder


def in_chunks(stream: bytes, size: int) -> tuple[list[LogLine], FrameDecoder]:
    """What a syslog connection's decoder gives for ``stream`` read ``size`` bytes at a
    time, then closed, and the decoder."""
    decoder = FrameDecoder(65536, newline_framing=True)
    lines = []
    for start in range(0, len(stream), size):
        lines += decoder.feed(stream[start : start + size], RECEIVED)
    return lines + decoder.close(), decoder


@pytest.mark.parametrize(
    ("stream", "messages"),
    [
        (b"<13>m\x00\r\x00\t\n\n<13>n\n", ["<13>m", "<13>n"]),
        (b"<13>a\n\t\x00\n<13>b\n", ["<13>a", "<13>b"]),
        (b"<13>a\n \x00\t\x00\n3\n", ["<13>a", "3"]),
    ],
)
def test_a_line_of_spaces_and_nuls_is_blank_however_the_stream_is_cut(
    stream: bytes, messages: list[str]
) -> None:
    """Read whole, a line of nothing but spaces, tabs, CRs and NULs is a blank one; read a
    byte at a time, its NUL arrived before its newline and ended it as a line of its own:
    an empty line more, or a sender taken for one that ends messages with NULs and the rest
    of the connection a framing error."""
    for size in (len(stream), 1, 2, 3):
        lines, _ = in_chunks(stream, size)
        assert [x.message for x in lines] == messages, size


def test_a_nul_ending_sender_keeps_the_newlines_of_its_messages_however_the_stream_is_cut() -> None:
    """Python's SysLogHandler ends messages with a NUL; a traceback it logs has newlines:
    once a message has ended with a NUL, a line that starts no message continues the one
    before it, and a message ended by a newline waits for what follows it."""
    expected = [
        "starting",
        'failed\nTraceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "ValueError: x",
        "after",
        "newline ended",
        "next\n2 retries left",
    ]
    for cut in range(len(NUL_STREAM) + 1):
        lines, decoder = cut_in_two(NUL_STREAM, cut)
        assert [x.message for x in lines] == expected, cut
        assert decoder.close(RECEIVED) == []
    decoder = FrameDecoder(65536, newline_framing=True)
    assert len(decoder.feed(b"<14>app: one\x00<14>app: two\n", RECEIVED)) == 1  # waits
    assert [x.message for x in decoder.close(RECEIVED)] == ["two"]


def test_a_nul_ending_senders_message_keeps_its_blank_lines_however_the_stream_is_cut() -> None:
    """A chained exception Python's SysLogHandler logs has blank lines between its
    tracebacks: they are the message's, up to its NUL (they cut it, and the line after them
    broke the stream); blank lines before the next message's ``<``, or at the end, are not."""
    stream = (
        b"<14>app: starting\x00"
        b"<11>app[7]: failed\nTraceback (most recent call last):\nKeyError: 'k'\n\n"
        b"The above exception was the direct cause of the following exception:\r\n  \n"
        b"Traceback (most recent call last):\nValueError: x\x00"
        b"<12>app: newline ended\n\r\n \n<12>app: last\n\n"
    )
    expected = [
        "starting",
        "failed\nTraceback (most recent call last):\nKeyError: 'k'\n\n"
        "The above exception was the direct cause of the following exception:\r\n  \n"
        "Traceback (most recent call last):\nValueError: x",
        "newline ended",
        "last",
    ]
    for cut in range(len(stream) + 1):
        lines, decoder = cut_in_two(stream, cut)
        lines += decoder.close(RECEIVED)
        assert [x.message for x in lines] == expected, cut
        assert decoder.frames == len(expected)


def test_nuls_may_follow_a_newline_framed_message_and_no_octet_counted_frame() -> None:
    """As a NUL-ending sender's trailer they are nothing; after an octet-counted frame,
    garbage: either way however the reads cut the stream."""
    framed = b"12 <14>app: two"
    for cuts in ([framed + b"\0" * 10], [framed, b"\0" * 10]):
        decoder = FrameDecoder(65536, newline_framing=True)
        with pytest.raises(FramingError, match="expected an octet count"):
            [decoder.feed(cut, RECEIVED) for cut in [*cuts, b"\0"]]
    for cuts in (
        [b"<14>app: one\n" + b"\0" * 10 + framed],
        [b"<14>app: one\n", b"\0" * 10, framed],
    ):
        decoder = FrameDecoder(65536, newline_framing=True)
        lines = [x for cut in cuts for x in decoder.feed(cut, RECEIVED)]
        assert [x.message for x in lines] == ["one", "two"]


def test_newline_senders_still_end_messages_at_newlines() -> None:
    """Without a NUL-ended message first, a message ends at its newline, not held for what
    follows: a line after it that starts no message is a line of its own (see below)."""
    decoder = FrameDecoder(65536, newline_framing=True)
    lines = decoder.feed(b"<14>app: first\n", RECEIVED)  # not held for what follows
    assert [x.message for x in lines] == ["first"]
    lines = decoder.feed(b"second line\n", RECEIVED)
    assert [(x.source, x.message) for x in lines] == [("app", "second line")]
    decoder = FrameDecoder(100, newline_framing=True)
    decoder.feed(b"<14>app: one\x00<14>app: two\n", RECEIVED)
    with pytest.raises(FramingError, match="a line of more than 100 bytes"):
        decoder.feed(b"x\n" * 60, RECEIVED)  # a continuation is bounded as a line is


def test_a_line_after_a_newline_framed_message_that_starts_none_takes_its_header() -> None:
    """A sender that does not octet-count a message with line breaks in it (syslog-ng's
    network(), a script writing to a socket) sends its other lines as they are: each is a
    line of its own with that message's header, as Heroku stores each line of a dyno's
    output, its indentation kept; blank lines are dropped, and a line that starts a message
    or an octet-counted frame is one, however the stream is cut."""
    stream = (
        b"<11>Mar  5 09:14:07 vm job[42]: Traceback (most recent call last):\n"
        b'  File "job.py", line 3, in <module>\r\n'
        b"\n"
        b"404 Not Found: 2 retries left, caf\xc3\xa9\n"
        b'<13>1 2024-03-05T09:14:08Z vm web 7 - [x@1 a="b"] second\n'
        b"  its own line\n"
        b"45 <13>1 2024-03-05T09:14:09Z vm api 8 - framed\n"
        b"<13>1 2024-03-05T09:14:10Z vm web 7 - last\n"
        b"  cut off"
    )
    expected = [
        ("job", "42", 11, "vm", None, "Traceback (most recent call last):"),
        ("job", "42", 11, "vm", None, '  File "job.py", line 3, in <module>'),
        ("job", "42", 11, "vm", None, "404 Not Found: 2 retries left, caf\u00e9"),
        ("web", "7", 13, "vm", '[x@1 a="b"]', "second"),
        ("web", "7", 13, "vm", None, "  its own line"),
        ("api", "8", 13, "vm", None, "framed"),
        ("web", "7", 13, "vm", None, "last"),
        ("web", "7", 13, "vm", None, "  cut off"),
    ]
    for size in (len(stream), 1, 7, 40):
        lines, decoder = in_chunks(stream, size)
        got = [(x.source, x.dyno, x.pri, x.hostname, x.structured_data, x.message) for x in lines]
        assert got == expected, size
        assert lines[1].timestamp == lines[0].timestamp
        assert decoder.frames == len(expected)


def test_a_line_that_starts_with_lt_or_digits_and_lt_but_no_pri_is_continued() -> None:
    """Only a PRI starts a message (`<13>`), and an octet count only before one: a line of
    a message's own that starts with `<` (an HTML body) was taken for a message with no
    header, and the lines after it took that; one that starts with digits and `<` (an
    asyncio task listed) for an octet count, which ate what followed and broke the stream.
    Newline-framed as rsyslog forwards it, and from a NUL-ending sender, however the stream
    is cut."""
    body = [
        "GET /orders failed, body:",
        "<html>",
        "  <body>Not Found</body>",
        "</html>",
        "0 <Task pending name='Task-1' coro=<main() running>>",
        "12 <Task pending>",
        "<1",
    ]
    head = b"<11>Mar  5 09:14:07 myhost worker[12]: "
    text = "\n".join(body).encode()
    after = b"<14>Mar  5 09:14:08 myhost worker[12]: after it"
    newline_framed = head + text + b"\n" + after + b"\n"
    nul_ended = head + b"first\x00" + head + text + b"\x00" + after + b"\x00"
    for stream, expected in (
        (newline_framed, [*body, "after it"]),
        (nul_ended, ["first", "\n".join(body), "after it"]),
    ):
        for cut in range(len(stream) + 1):
            lines, decoder = cut_in_two(stream, cut)
            lines += decoder.close(RECEIVED)
            got = [(x.source, x.dyno, x.message) for x in lines]
            assert got == [("worker", "12", message) for message in expected], cut


@pytest.mark.parametrize(
    ("last", "stored"),
    [
        (b"42", "42"),
        (b" 7 ", " 7 "),
        (b"0 ", "0 "),
        (b"404 <html", "404 <html"),
        (b"12 <1", "12 <1"),
        (b"<1", "<1"),
        (b"  \r", None),
    ],
)
def test_a_last_line_without_its_newline_that_could_have_become_a_count_is_continued(
    last: bytes, stored: str | None
) -> None:
    """At the end of a stream a line that could still have become an octet count or a PRI
    (digits, `12 <1`), had more come, is what it is, a line of the message before it: it
    was taken for a frame cut off, lost, and the stream said to be broken."""
    stream = b"<13>Mar  5 09:14:07 vm job[42]: result:\n" + last
    for cut in range(len(stream) + 1):
        lines, decoder = cut_in_two(stream, cut)
        lines += decoder.close(RECEIVED)
        got = [(x.source, x.message) for x in lines]
        assert got == [("job", "result:"), *([("job", stored)] if stored else [])], cut
    decoder = FrameDecoder(65536, newline_framing=True)
    decoder.feed(b"<13>Mar  5 09:14:07 vm job[42]: result:\n17 <13>cut off", RECEIVED)
    with pytest.raises(FramingError, match="ends inside a frame"):
        decoder.close(RECEIVED)  # a count before a PRI is a frame, and this one is cut off


def test_a_nul_ending_senders_first_message_of_several_lines_ends_at_its_nul() -> None:
    """Python's SysLogHandler ends each message with a NUL, which is known only once its
    first message has ended: a traceback in that one is stored a line at a time up to the
    NUL, and the messages after it whole, as always."""
    stream = (
        b"<11>job: Traceback (most recent call last):\n"
        b'  File "job.py", line 3\n'
        b"ValueError: bad\x00"
        b"<11>job: again\n  indented\x00"
        b"<14>job: next\x00"
    )
    for size in (len(stream), 1, 5):
        lines, _ = in_chunks(stream, size)
        assert [(x.source, x.message) for x in lines] == [
            ("job", "Traceback (most recent call last):"),
            ("job", '  File "job.py", line 3'),
            ("job", "ValueError: bad"),
            ("job", "again\n  indented"),
            ("job", "next"),
        ], size


def test_a_line_after_an_octet_counted_frame_must_start_a_message() -> None:
    """Octet counting (Heroku's framing) carries line breaks in its frames: a line after a
    frame that starts no message is not syslog, and ends the stream there."""
    message = b"<13>1 2024-03-05T09:14:07Z vm web 7 - one\ntwo"
    decoder = FrameDecoder(65536, newline_framing=True)
    lines = decoder.feed(b"%d %s  three\n" % (len(message), message), RECEIVED)
    assert [x.message for x in lines] == ["one\ntwo"]
    with pytest.raises(FramingError, match="expected an octet count"):
        decoder.close()


def test_a_continued_line_is_bounded_as_a_message_is() -> None:
    decoder = FrameDecoder(100, newline_framing=True)
    decoder.feed(b"<14>app: one\n", RECEIVED)
    with pytest.raises(FramingError, match="a line of more than 100 bytes"):
        decoder.feed(b"x" * 101 + b"\n", RECEIVED)


def test_a_message_keeps_its_leading_spaces_after_structured_data() -> None:
    """Only the one SP that ends STRUCTURED-DATA is framing: an indented line (a traceback's
    ``  File ...``) keeps its indentation, with or without structured data before it."""
    head = "<13>1 2024-03-05T09:14:07Z myhost user 1 -"
    lines = parse_logplex(
        body_of(
            f'{head} [meta sequenceId="7"]   File "app.py", line 3\n',
            f'{head} -   File "app.py", line 3\n',
        ),
        RECEIVED,
    )
    assert [(x.structured_data, x.message) for x in lines] == [
        ('[meta sequenceId="7"]', '  File "app.py", line 3'),
        (None, '  File "app.py", line 3'),
    ]


def test_fields_of_a_message_with_whitespace_around_it() -> None:
    """A CRLF sender's message keeps its \\r, and a logger may pad or indent one: the
    fields are those of the logfmt or JSON inside."""
    assert parse_fields("at=info status=200 path=/\r") == {
        "at": "info",
        "status": "200",
        "path": "/",
    }
    assert parse_fields('  {"level": "warn"}\r') == {"level": "warn"}


def test_json_lines_keep_every_pri_syslog_has() -> None:
    """0 (kern.emerg) to 191 (local7.debug), or none: a --json line with any other is not
    herolog's output."""
    record = {"timestamp": "2024-03-05T09:14:07Z", "source": "app", "dyno": "web.1"}
    for pri in (0, 191, None):
        line = parse_json_line(json.dumps({**record, "message": "x", "pri": pri}).encode())
        assert line is not None
        assert line.pri == pri
    for bad in (-1, 192, True, 1.0):
        assert parse_json_line(json.dumps({**record, "message": "x", "pri": bad}).encode()) is None


def test_json_lines_structured_data_is_escaped_as_rfc_5424_asks() -> None:
    """--json gives structured data's values unescaped; read back (an import), they are
    escaped again, so that a backslash, quote or bracket in a value stays that value."""
    value = 'C:\\new\\ "quoted" [x]\\'
    record = {"timestamp": "2024-03-05T09:14:07Z", "source": "app", "dyno": "web.1"}
    sd = {"x@1": {"path": value}}
    line = parse_json_line(json.dumps({**record, "message": "m", "structured_data": sd}).encode())
    assert line is not None
    assert line.structured_data == r'[x@1 path="C:\\new\\ \"quoted\" [x\]\\"]'
    assert parse_structured_data(line.structured_data) == sd


def test_a_stream_s_last_message_ends_at_a_carriage_return_too() -> None:
    """A CRLF sender's last message, cut off before its \\n by the end of the stream, loses
    the \\r as the messages before it did."""
    decoder = FrameDecoder(newline_framing=True)
    line = b"<190>1 2024-03-05T09:14:07Z host app web.1 - "
    assert [x.message for x in decoder.feed(line + b"one\r\n" + line + b"two\r", RECEIVED)] == [
        "one"
    ]
    assert [x.message for x in decoder.close(RECEIVED)] == ["two"]


def test_a_nul_inside_a_newline_framed_message_costs_neither_its_text_nor_the_stream() -> None:
    """A NUL ends a newline-framed message (RFC 6587's other trailer), but one with text
    right after it on its line was the message's own (a script writing a C string's
    buffer, a binary field): that text was taken for a frame with no octet count, which
    ended the stream there, losing the rest of the line and every message after it. It is
    stored as a line continuing the message, as a line of it after a newline is, and the
    sender is not taken for one that ends its messages with NULs: its next message, ended
    by a newline, is not held for what follows, and its lines are lines of their own."""
    head = b"<13>1 2024-03-05T09:14:07Z h app web.1 - - "
    stream = (
        head
        + b"a\x00b\x00c\n"
        + head
        + b"next\n  indented\n"
        + head
        + b"x\x00<html> ok\n"
        + head
        + b"y\x002 retries\n"
        + head
        + b"w\x00\x00\x00padded\n"  # a buffer's NULs are dropped
        + head
        + b"z\x00\x00"  # NULs before a message are trailers
        + head
        + b"last"
    )
    expected = [
        "a",
        "b",
        "c",
        "next",
        "  indented",
        "x",
        "<html> ok",
        "y",
        "2 retries",
        "w",
        "padded",
        "z",
        "last",
    ]
    for cut in range(len(stream) + 1):
        lines, decoder = cut_in_two(stream, cut)
        assert [x.message for x in lines] == expected[:-1], cut
        lines += decoder.close(RECEIVED)
        assert [(x.source, x.dyno, x.hostname, x.message) for x in lines] == [
            ("app", "web.1", "h", m) for m in expected
        ], cut
        assert decoder.frames == len(expected)
    for tail, message in ((b"b", "b"), (b"12", "12"), (b"<1", "<1"), (b"\x00\x00b", "b")):
        decoder = FrameDecoder(65536, newline_framing=True)
        lines = decoder.feed(head + b"a\x00" + tail, RECEIVED) + decoder.close(RECEIVED)
        assert [x.message for x in lines] == ["a", message], tail
    # A NUL with a newline or a PRI after it (and any NULs) shows a sender that ends its
    # messages so: a line of its next message is that message's.
    decoder = FrameDecoder(65536, newline_framing=True)
    lines = decoder.feed(head + b"a\x00\n" + head + b"b\n  more\x00" + head + b"c\x00", RECEIVED)
    assert [x.message for x in lines] == ["a", "b\n  more", "c"]
    # Past the limit: the message is cut there, the rest of it up to the NUL skipped.
    long = head + b"x" * 200 + b"\x00after\n" + head + b"next\n"
    for cut in range(len(long) + 1):
        decoder = FrameDecoder(100, newline_framing=True, cut_long=True)
        lines = decoder.feed(long[:cut], RECEIVED) + decoder.feed(long[cut:], RECEIVED)
        assert [x.message for x in lines] == ["x" * 57, "after", "next"], cut
        assert decoder.take_cuts() == [len(head) + 200]


class _Counted:
    """A compiled pattern that counts the matches asked of it."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.calls = pattern, 0

    def match(self, text: str, pos: int = 0) -> re.Match[str] | None:
        self.calls += 1
        return self.pattern.match(text, pos)


def test_a_nul_ending_senders_message_arriving_a_line_at_a_time_is_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message of a sender that ends them with NULs waits for its NUL, and each read that
    brought more of it looked again at every line of it from its start: a message of 30,000
    short lines, sent a line at a time (a sender keeping each read small, some 50 bytes a
    second), cost serve 40 ms a read by its end, each of its connections a core's worth.
    Each line is now looked at once, whatever the reads."""
    lines = 2_000
    seen = _Counted(parser._STARTS_NEXT)
    monkeypatch.setattr(parser, "_STARTS_NEXT", seen)
    decoder = FrameDecoder(65536, newline_framing=True)
    assert [x.message for x in decoder.feed(b"<14>app: first\x00<14>app: traceback", RECEIVED)] == [
        "first"
    ]
    for number in range(lines):
        assert decoder.feed(b"\n  line %d" % number, RECEIVED) == []
    (line,) = decoder.feed(b"\x00", RECEIVED)
    assert line.message == "traceback" + "".join(f"\n  line {n}" for n in range(lines))
    assert seen.calls <= 2 * lines, seen.calls
