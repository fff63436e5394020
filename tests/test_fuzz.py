"""The parser under fuzzed input: the fuzz package's properties, 150 examples each.

``python -m fuzz`` runs the same properties as a long campaign.
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings

from fuzz import properties, strategies
from herolog.parser import (
    FIELDS_DEPTH,
    FrameDecoder,
    FramingError,
    format_syslog,
    frame,
    parse_fields,
    parse_logplex,
)
from tests.helpers import invoke, line, store_lines

FUZZ = settings(
    max_examples=150,
    deadline=None,  # a shared, busy machine: time says nothing here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MESSAGE = b"<190>1 2024-03-05T09:14:07.418233+00:00 host app web.1 - "


@FUZZ
@given(strategies.logplex_bodies())
@example(b"1000000000000 " + MESSAGE)  # 13 digits
@example(b"999999999999 " + MESSAGE)  # 12 digits: a terabyte, far past the end
@example(b"9" * 5000)
@example(b"-5 " + MESSAGE)
@example(b"00000000000007 " + MESSAGE)
@example(b"5 \x00\x00\x00\x00\x00")
@example(b"4 \xff\xfe\xc3\n")
@example(b"\r\n\r\n")
@example(b"0 ")
def test_mutated_corpus_bodies_give_lines_or_a_framing_error(body: bytes) -> None:
    properties.check_parse_logplex(body)


@FUZZ
@given(strategies.well_framed())
@example([MESSAGE + b"x" * (65536 - len(MESSAGE))])  # Logplex's largest frames
@example([MESSAGE + b"x" * 65536 + b"\n"] * 3)
@example([MESSAGE + b"[" * 1000 + b" x\n", MESSAGE + b'[a@1 k="' * 300 + b"\n"])
@example([b'<190>1 2024-03-05T09:14:07Z h app web.1 - [a@1 k="v\\"]\\\\"]\r\n'])
@example([b"\0", b"\n", b"\r\n", b"\xef\xbb\xbf", b"12 ", b"<"])
def test_true_counts_frame_any_message_content(messages: list[bytes]) -> None:
    properties.check_well_framed(messages)


@FUZZ
@given(strategies.decoder_streams())
@example(([b"<190>1 - host a b - x\r", b"\n12 <190>1 - h a b - y", b"\n"], True, 1 << 20, False))
@example(([b"99999999", b"99999 x"], False, 1 << 20, False))
@example(
    ([b"<14>a: x\x00<11>a: y\n", b"Trace\n  back\x00<1", b"2>a: z\n", b"\n"], True, 200, False)
)
@example(([b"<14>a: x\x00<11>a: y\nTrace\n", b"12 <14>1 - h a b - c"], True, 40, False))
@example(([b"5 <1>a\n", b"\x00<14>1 - h a b - c\n"], True, 1 << 20, False))  # a NUL after a count
@example(([b"<14>a: x\n1", b"7 <14>1 - h a b - y"], True, 1 << 20, False))  # a count, cut
@example(([b"<14>a: x\n0 ", b"8 y\n"], True, 1 << 20, False))  # a continued line, cut
@example(([b"<14>a: x\n", b"\x00two\r\nthree\n"], True, 1 << 20, False))  # a NUL, then lines
@example(([b"<14>a: x\n4 <190", b">1 y\n"], True, 1 << 20, False))  # a count short of its PRI
# Cutting long messages: a read ends at the limit, in a count, in what is skipped
@example(([b"<14>a: " + b"x" * 33, b"y" + b"z" * 9, b"z\n<14>a: next\n"], True, 40, True))
@example(([b"1", b"00 <14>a: " + b"x" * 30, b"x" * 63 + b"<14>a: n\n"], True, 40, True))
@example(([b"100 <14>a: " + b"x" * 33, b"x" * 60, b"5 <1>a\n"], False, 40, True))
@example(([b"<14>a: " + b"x" * 32 + "\u00e9".encode() + b"tail\n<14>a: n\n"], True, 40, True))
@example(([b"<14>a: x\0<14>a: " + b"y" * 50 + b"\n  \n<1", b"4>a: z\0"], True, 40, True))
@example(([b"<14>a: x\0<14>a: " + b"y" * 50 + b"\n  <14>a: y\n\0<14>a: z\0"], True, 40, True))
@example(([b"<14>a: x\n" + b"  " + b"t" * 60 + b"\n<14>a: y\n"], True, 40, True))
@example(([b"67108865 <14>a: x", b"y" * 100], True, 40, True))  # over 64 MiB: an error
@example(([b"100 x" + b"y" * 99, b"5 <1>a\n"], True, 40, True))  # no PRI: an error
@example(([b"1000 <14>a: " + b"x" * 100], True, 40, True))  # the stream ends in what is skipped
def test_any_split_of_a_stream_decodes_like_the_whole(
    stream: tuple[list[bytes], bool, int, bool],
) -> None:
    properties.check_decoder(*stream)


@FUZZ
@given(strategies.import_syslog_inputs())
@example([b'<14>a: x\n  File "a.py"\n<1', b"3>a: y\nz\n"])  # a PRI cut between reads
@example([b"<14>a: x\r", b"\nmore\r\n"])  # a CRLF cut between reads
@example([b"junk\n<14>a: x\n  more\n"])  # lines before any message
@example([b"<14>a: x\n  F", b""])  # a pipe gone quiet before a message's line ends
def test_an_import_of_syslog_lines_reads_alike_however_cut_and_resumes_at_its_offsets(
    chunks: list[bytes],
) -> None:
    properties.check_import_syslog(chunks)


@FUZZ
@given(strategies.syslog_messages())
@example(b"")
@example(b"\r\n")
@example(b"<190>1 2024-03-05T09:14:07Z h app web.1 - [")
@example(b"<999>1 2024-03-05T09:14:07Z h app web.1 - x")
@example(b"<190>1 0001-01-01T00:00:00+00:01 h app web.1 - before the year 1 in UTC")
@example(b"<13>Feb 29 09:14:07 h app[1]: not a leap year")
@example(b"<13>Mar  5 09:14:07 myhost billing[42]: invoice paid")
@example(b"<22>Dec 31 23:59:59.123 postfix/smtpd[7]: connect\n")
@example(b"<13>Dec 31 99:99:99 h app[1]: no such time")
def test_parse_syslog_never_raises(message: bytes) -> None:
    properties.check_parse_syslog(message)


@FUZZ
@given(strategies.heroku_lines())
@example("2024-03-05T09:14:07Z app[web.1]:")
@example("2024-03-05T09:14:07Z a[b][c]: x")
@example("0001-01-01T00:00:00-00:01 app[web.1]: x")
@example("2024-03-05T09:14:07Z app[w\u00e9b.1]: x")
@example("2024-03-05T09:14:07Z \u00e4pp[web.1]: x")
@example("2024-03-05T09:14:07Z app[web\t1]: x")
def test_heroku_lines_parse_back_into_their_parts(text: str) -> None:
    properties.check_heroku_line(text)


# Regressions found by the properties above ------------------------------------------------


def test_a_newline_framed_line_over_the_limit_is_refused_even_when_it_arrives_whole() -> None:
    line = MESSAGE + b"x" * 100 + b"\n"
    whole = FrameDecoder(64, newline_framing=True)
    with pytest.raises(FramingError, match="a line of more than 64 bytes"):
        whole.feed(line, properties.RECEIVED)
    split = FrameDecoder(64, newline_framing=True)
    with pytest.raises(FramingError, match="a line of more than 64 bytes"):
        split.feed(line[:70], properties.RECEIVED)


def test_an_octet_counted_frame_over_the_limit_is_refused_on_the_bulk_path_too() -> None:
    small = MESSAGE + b"a\n"
    big = MESSAGE + b"x" * 200 + b"\n"
    decoder = FrameDecoder(100)
    # Five whole Logplex frames in one chunk take the bulk path, which skipped the limit.
    assert len(decoder.feed(frame([small] * 4 + [big]), properties.RECEIVED)) == 4
    with pytest.raises(FramingError, match="over the 100-byte limit") as info:
        decoder.close(properties.RECEIVED)
    assert (info.value.frame, info.value.offset) == (5, 4 * len(b"%d %s" % (len(small), small)))


@pytest.mark.parametrize(
    "message",
    [
        '{"a":' + "[" * 5000,  # deeper than Python's stack: json raised RecursionError
        '{"a":' + "[" * 3000 + "]" * 3000 + "}",
        '{"a": "\\ud800"}',  # a lone surrogate: printing it raised UnicodeEncodeError
        '{"a": NaN}',  # json.dumps would print NaN and Infinity, which are not JSON
        '{"a": 1e999}',
        '{"a": -Infinity}',
    ],
)
def test_messages_that_cannot_be_printed_as_json_have_no_fields(message: str) -> None:
    assert parse_fields(message) is None


def nested(levels: int) -> str:
    """A JSON object whose arrays take it ``levels`` deep, next to a flat field."""
    return '{"ok": 1, "a": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_json_nested_past_the_fields_depth_has_no_fields() -> None:
    """Whether a deep message had fields hung on Python's version (3.14 reads what 3.11 could
    not), and a record nested past 255 levels stops jq 1.6 reading any line after it."""
    assert parse_fields(nested(FIELDS_DEPTH)) == json.loads(nested(FIELDS_DEPTH))
    assert parse_fields(nested(FIELDS_DEPTH + 1)) is None
    assert parse_fields(nested(3000)) is None
    # Many brackets, little depth: fields.
    wide = '{"a": [' + ", ".join(["[1]"] * (FIELDS_DEPTH + 10)) + "]}"
    assert parse_fields(wide) == json.loads(wide)
    deep_in_b = '{"a": [[1]], "b": ' + nested(FIELDS_DEPTH) + "}"
    assert parse_fields(deep_in_b) is None


def test_json_fields_keep_what_json_can_print() -> None:
    assert parse_fields('{"a": "\\ud83d\\ude00", "b": [1.5, 2e3]}') == {
        "a": "😀",
        "b": [1.5, 2000.0],
    }


def test_logs_json_prints_strict_json_for_hostile_messages(herolog_home: Path) -> None:
    hostile = [
        '{"a":' + "[" * 5000,
        '{"a": "\\ud800"}',
        '{"a": NaN, "b": 1e999}',
        '{"ok": true}',
    ]
    store_lines(
        herolog_home / "logs.db", "demo", *(line(m, second=i) for i, m in enumerate(hostile))
    )
    status, out, err = invoke("logs", "-a", "demo", "--json")
    assert (status, err) == (0, "")

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} in --json output")

    records = [json.loads(text, parse_constant=strict) for text in out.splitlines()]
    assert [r["message"] for r in records] == hostile
    assert [r.get("fields") for r in records] == [None, None, None, {"ok": True}]


@pytest.mark.parametrize("hostname", ["host", "d.fc6b856b-3332-4546-93de-7d0ee272c3bd"])
def test_a_message_starting_with_u_feff_is_forwarded_whole(hostname: str) -> None:
    # The first U+FEFF is the byte order mark, not content; the second one is content.
    (stored,) = parse_logplex(frame([MESSAGE + "\ufeff\ufeffzero-width".encode()]))
    assert stored.message == "\ufeffzero-width"
    (forwarded,) = parse_logplex(frame([format_syslog(stored, hostname)]))
    assert forwarded.message == "\ufeffzero-width"


# The campaign runner ----------------------------------------------------------------------


def test_the_campaign_says_how_many_inputs_each_target_tried(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fuzz.__main__ import main

    assert main(["--examples", "40", "--target", "logplex", "--target", "heroku-line"]) == 0
    out = capsys.readouterr().out
    tried = dict(re.findall(r"^(\S+) +([\d,]+) inputs", out, re.MULTILINE))
    assert tried == {"logplex": "40", "heroku-line": "40", "total": "80"}, out
    assert "no failures" in out


def test_the_campaign_exits_1_with_the_failing_input_it_can_replay(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import fuzz.__main__ as campaign

    def no_brackets(line: str) -> None:
        assert "[" not in line, "a bracket"

    targets = [replace(t, check=campaign._plain(no_brackets)) for t in campaign.TARGETS]
    monkeypatch.setattr(campaign, "TARGETS", targets)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert campaign.main(["--target", "heroku-line", "--examples", "2000"]) == 1
    out = capsys.readouterr().out
    assert "FAILED heroku-line after " in out
    assert "AssertionError: a bracket" in out
    shown = re.search(r"^failing input: (.*)$", out, re.MULTILINE)
    assert shown is not None, out
    assert "[" in ast.literal_eval(shown.group(1))
    (saved,) = tmp_path.glob("herolog-fuzz-heroku-line-*.repr")
    assert ast.literal_eval(saved.read_text()) == ast.literal_eval(shown.group(1))
    with pytest.raises(AssertionError, match="a bracket"):
        campaign.main(["--target", "heroku-line", "--replay", str(saved)])
