from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from random import Random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from herolog.filters import LineFilter
from herolog.parser import parse_heroku_line, parse_json_line, parse_structured_data
from herolog.render import (
    CODE,
    DIM,
    FAILURE,
    HEADER_COLORS,
    INFO,
    SUCCESS,
    WARNING,
    body_parts,
    color_wanted,
    colored_parts,
    counted,
    decode_record,
    duration_style,
    encode_record,
    format_json,
    format_text,
    header_color,
    identifier,
    renderer_for,
    status_style,
)
from herolog.store import Batch, SQLiteStore, StoredLine
from tests.helpers import RFC3339_PARTS, rfc3339


def stored(message: str, source: str = "app", dyno: str = "web.1") -> StoredLine:
    return StoredLine(
        1,
        "demo",
        "2024-03-05T09:14:07Z",
        "2024-03-05T09:14:07.000000Z",
        source,
        dyno,
        message,
        190,
        "host",
        None,
        None,
        "2024-03-05T09:14:08.000000Z",
    )


def styles(line: StoredLine) -> dict[str, str]:
    """Each styled run of the rendered line: its text and its style."""
    return {text: style for text, style in colored_parts(line) if style}


def plain(line: StoredLine) -> str:
    return "".join(text for text, _ in colored_parts(line))


@pytest.mark.parametrize(
    ("dyno", "name"),
    [
        ("web.1", "web"),
        ("run.1234", "run"),
        ("router", "router"),
        ("web1", "web1"),
        ("heroku-postgres", "heroku-postgres"),
        ("web-7d9f8c6b5-x2kqz", "web-7d9f8c6b5-x2kqz"),
        ("a.b", None),
    ],
)
def test_identifier_like_the_heroku_cli(dyno: str, name: str | None) -> None:
    assert identifier(dyno) == name


def test_header_colours_preset_and_stable_across_processes() -> None:
    assert [
        header_color(n) for n in ("run", "router", "web", "postgres", "heroku-postgres")
    ] == list(HEADER_COLORS[:5])
    # Any other name gets one of the five bold colours, never a preset's.
    for name in ("worker", "clock", "scheduler", "release", "beat"):
        assert header_color(name) in HEADER_COLORS[5:], name
    script = "from herolog.render import header_color; print(header_color('worker'), header_color('clock'))"
    runs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(runs) == 1


@pytest.mark.parametrize(
    ("value", "style"),
    [
        ("200", SUCCESS),
        ("304", INFO),
        ("404", WARNING),
        ("503", FAILURE),
        ("299", SUCCESS),
        ("300", INFO),
        ("400", WARNING),
        ("500", FAILURE),
        ("600", None),
        ("101", None),
        ("", None),
    ],
)
def test_status_colours(value: str, style: str | None) -> None:
    assert status_style(value) == style


@pytest.mark.parametrize(
    ("value", "style"),
    [
        ("18ms", SUCCESS),
        ("241ms", INFO),
        ("1840ms", WARNING),
        ("9000ms", FAILURE),
        ("30000ms", "bold " + FAILURE),
        ("99ms", SUCCESS),
        ("100ms", INFO),
        ("500ms", WARNING),
        ("5000ms", FAILURE),
        ("10000ms", "bold " + FAILURE),
        ("", None),
        ("0ms", SUCCESS),
    ],
)
def test_duration_colours(value: str, style: str | None) -> None:
    assert duration_style(value) == style


def test_router_line_key_value_colours_keep_the_text_exactly() -> None:
    message = 'at=error code=H12 desc="Request timeout" method=GET path="/x" dyno=web.1 connect= service=30000ms status=503  bytes=0'
    line = stored(message, source="heroku", dyno="router")
    assert plain(line) == format_text(line)
    got = styles(line)
    assert got["2024-03-05T09:14:07Z heroku[router]:"] == "green"
    assert got["error"] == FAILURE
    assert got["H12"] == "bold " + FAILURE
    assert got["GET"] == "magenta"
    assert got['"/x"'] == "green"
    assert got["web.1"] == "cyan"  # the web dyno's own header colour
    assert got["30000ms"] == "bold " + FAILURE
    assert got["503"] == FAILURE
    assert got["at="] == DIM
    assert got['timeout"'] == DIM


def test_router_connect_and_service_times_are_coloured_alike() -> None:
    line = stored("connect=1ms service=650ms status=200", source="heroku", dyno="router")
    got = styles(line)
    assert (got["1ms"], got["650ms"]) == (SUCCESS, WARNING)


@pytest.mark.parametrize(
    ("dyno", "source", "message", "expected"),
    [
        ("web.1", "heroku", "State changed from starting to up", {"starting": INFO, "up": SUCCESS}),
        ("worker.2", "heroku", "State changed from up to down", {"up": SUCCESS, "down": FAILURE}),
        ("run.42", "heroku", "Process exited with status 1", {"1": FAILURE}),
        ("web.1", "heroku", "Process exited with status 0", {"0": SUCCESS}),
        (
            "web.1",
            "heroku",
            "Stopping all processes with SIGTERM",
            {"Stopping all processes with SIGTERM": FAILURE},
        ),
        ("web.1", "heroku", "Restarting", {"Restarting": "yellow"}),
        (
            "web.1",
            "heroku",
            "Starting process with command `bundle exec puma`",
            {"`bundle exec puma`": CODE},
        ),
        (
            "api",
            "app",
            "Release v42 created by user jane@example.com",
            {"v42": "magenta", "jane@example.com": "green"},
        ),
        (
            "api",
            "app",
            "Deploy 3a1b2c4 by user jane@example.com",
            {"3a1b2c4": "cyan", "jane@example.com": "green"},
        ),
        ("api", "app", "Build succeeded", {"Build succeeded": SUCCESS}),
        ("api", "app", "Build failed: exit 1", {"Build failed: exit 1": FAILURE}),
        (
            "heroku-postgres",
            "app",
            "source=DATABASE sample#db_size=1bytes",
            {"source=DATABASE sample#db_size=1bytes": DIM},
        ),
        (
            "heroku-redis",
            "app",
            "source=REDIS sample#active-connections=3 sample#load-avg-1m=0.07",
            {"source=REDIS sample#active-connections=3 sample#load-avg-1m=0.07": DIM},
        ),
        (
            "postgres.1234",
            "app",
            "[DATABASE] [9-1] LOG: statement: CREATE TABLE users (id int)",
            {
                "[DATABASE] [9-1] LOG: statement: ": DIM,
                "CREATE TABLE": "magenta",
                " users (id int)": "cyan",
            },
        ),
        (
            "web.1",
            "app",
            '10.1.2.3 - - [05/Mar/2024:09:14:07 +0000] "GET /a HTTP/1.1" 404 12 "-"',
            {"GET": "magenta", "/a": "green", "404": WARNING},
        ),
    ],
)
def test_body_colours(dyno: str, source: str, message: str, expected: dict[str, str]) -> None:
    line = stored(message, source=source, dyno=dyno)
    got = styles(line)
    for part, style in expected.items():
        assert got.get(part) == style, (part, got)
    assert plain(line) == format_text(line)


def test_app_output_that_looks_like_lifecycle_is_not_coloured_for_other_dynos() -> None:
    assert body_parts("worker", "app", "State changed from up to down") == [
        ("State changed from up to down", None)
    ]


def test_multiline_messages_colour_the_first_line_only() -> None:
    line = stored("Process exited with status 1\nmore detail", source="heroku", dyno="web.1")
    assert plain(line) == format_text(line)
    assert "more detail" not in styles(line)


def test_lines_the_cli_cannot_split_are_left_alone() -> None:
    line = stored("x", dyno="a.b")
    assert styles(line) == {}
    assert plain(line) == format_text(line)


@pytest.mark.parametrize(
    ("choice", "force", "tty", "env", "expected"),
    [
        ("auto", False, True, {}, True),
        ("auto", False, False, {}, False),
        ("auto", False, True, {"NO_COLOR": "1"}, False),
        ("auto", False, True, {"NO_COLOR": ""}, True),
        ("auto", False, False, {"FORCE_COLOR": ""}, True),
        ("auto", False, False, {"FORCE_COLOR": "true"}, True),
        ("auto", False, False, {"FORCE_COLOR": "3"}, True),
        ("auto", False, True, {"FORCE_COLOR": "false"}, False),
        ("auto", False, True, {"FORCE_COLOR": "banana"}, True),
        ("auto", False, False, {"FORCE_COLOR": "yes"}, True),
        ("auto", False, False, {"FORCE_COLOR": "0"}, False),
        # The heroku CLI (ansis) turns colour off for exactly "0" and "false", on otherwise.
        ("auto", False, False, {"FORCE_COLOR": "000"}, True),
        ("auto", False, False, {"FORCE_COLOR": "-1"}, True),
        ("auto", False, False, {"FORCE_COLOR": "FALSE"}, True),
        ("auto", False, False, {"FORCE_COLOR": "²"}, True),
        ("auto", False, False, {"FORCE_COLOR": "9" * 5000}, True),
        ("auto", False, False, {"FORCE_COLOR": "1", "NO_COLOR": "1"}, True),
        ("auto", False, True, {"FORCE_COLOR": "0", "NO_COLOR": ""}, False),
        ("auto", False, True, {"FORCE_COLOR": "1", "HEROKU_LOGS_COLOR": "0"}, False),
        ("auto", False, True, {"HEROKU_LOGS_COLOR": "0"}, False),
        ("auto", False, True, {"TERM": "dumb"}, False),
        ("auto", False, True, {"TERM": "dumb", "FORCE_COLOR": "1"}, True),
        ("always", False, True, {"TERM": "dumb"}, True),
        ("never", False, True, {}, False),
        ("always", False, False, {"NO_COLOR": "1"}, True),
        ("auto", True, False, {"NO_COLOR": "1"}, True),
    ],
)
def test_color_wanted(
    choice: str, force: bool, tty: bool, env: dict[str, str], expected: bool
) -> None:
    assert color_wanted(choice, force, tty, env) is expected


HEROKU_ROUTE = re.compile(r'(.* ")(\w+)(.+)(HTTP/\d+\.\d+" .*)')
"""The heroku CLI's pattern for a web dyno's access lines (method, path), as it is there."""


def test_access_lines_are_split_where_the_heroku_cli_splits_them() -> None:
    messages = [
        '2001:db8::1 - - [05/Mar/2024:09:14:07 +0000] "GET /a?b=c HTTP/1.1" 200 5 "-" "curl/8"',
        'at "POST /x HTTP/2.0" 201 "ref" "ua" "GET /y HTTP/1.1" 404',
        'x "GETHTTP/1.1" ',  # the method's word runs into the version
        'x "G HTTP/1.1" ',
        'x "GE HTTP/1.1" HTTP/1.0" ',
        'a "b" "c HTTP/1.1" "d"',
        'no version "GET /"',
    ]
    random = Random(5)
    messages += [
        "".join(random.choice([" ", '"', "G", "H", "T", "P", "/", "1", ".", "x"]) for _ in range(n))
        + random.choice(['HTTP/1.1" ', ""])
        + "".join(random.choice(['"', " ", "z"]) for _ in range(4))
        for n in range(2, 30)
        for _ in range(300)
    ]
    for message in messages:
        m = HEROKU_ROUTE.fullmatch(message)
        got = body_parts("web", "app", message)
        if m is None:
            assert got == [(message, None)], message
        else:
            assert [text for text, _ in got] == list(m.groups()), message
            assert [style for _, style in got] == [None, "magenta", "green", None], message
    assert sum(HEROKU_ROUTE.fullmatch(m) is not None for m in messages) > 200


def test_a_long_web_line_is_coloured_in_time_linear_in_its_length() -> None:
    """Heroku's pattern backtracks: 100 kB of JSON (whose ", " it tries at every quote)
    took 30 s, on a terminal and in every tail showing it."""
    payload = json.dumps({f"key{i}": f"value {i}" for i in range(4000)})
    for message in (f"payload {payload}", f'{payload} "GET / HTTP/1.1" 200 {payload}'):
        started = time.monotonic()
        parts = colored_parts(stored(message))
        assert time.monotonic() - started < 2
        assert "".join(text for text, _ in parts) == format_text(stored(message))


@given(*RFC3339_PARTS)
@example(datetime(2016, 12, 31, 23, 59, 59, 999999), "T", 9, "Z", True)
@example(datetime(2024, 3, 5, 9, 14, 7, 1), "t", 6, "-0800", False)
@settings(max_examples=60, deadline=None)
def test_times_survive_the_store_rendering_and_import_to_the_microsecond(
    moment: datetime, separator: str, digits: int, offset: str, leap: bool
) -> None:
    """A timestamp is shown as sent, text and --json alike, and reads back (herolog import)
    as the same line; --json's time is its instant in UTC, to the microsecond (digits past
    six cut off, a leap second the last microsecond of its minute)."""
    stamp = rfc3339(moment, separator, digits, offset, leap)
    leap = leap and moment.second == 59
    nanos = f"{moment.microsecond:06d}{moment.microsecond % 1000:03d}"
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = (int(offset[1:3]), int(offset[-2:])) if len(offset) > 1 else (0, 0)
    zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    micros = 999999 if leap else int(nanos[: min(digits, 6)].ljust(6, "0"))
    expected = moment.replace(microsecond=micros, tzinfo=zone).astimezone(UTC)

    parsed = parse_heroku_line(f"{stamp} app[web.1]: hi")
    assert parsed is not None
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore.open(Path(directory) / "logs.db")
        try:
            store.append([Batch("demo", [parsed])])
            (line,), _ = store.last(LineFilter(), 9)
        finally:
            store.close()
    assert line.timestamp == stamp
    assert datetime.fromisoformat(line.time) == expected
    text, record = format_text(line), format_json(line)
    assert text == f"{stamp} app[web.1]: hi"
    assert json.loads(record)["timestamp"] == stamp
    assert datetime.fromisoformat(json.loads(record)["time"]) == expected
    assert parse_heroku_line(text) == parsed
    again = parse_json_line(record.encode())
    assert again is not None
    assert again[:3] == parsed[:3]


# What --json writes, as the README's schema states it: the record as a dict, then json.dumps.
# format_json writes the same text by a faster road; this is the road it must agree with.

_REFERENCE_LOGFMT_PAIR = re.compile(
    r'[ \t]*([^ \t="]+)=(?:"((?:[^"\\]|\\.)*)"|([^ \t"]*))(?=[ \t]|$)'
)


def _not_strict_json(constant: str) -> object:
    raise ValueError(constant)


def reference_fields(message: str) -> dict[str, object] | None:
    """The README's ``fields``: logfmt pairs, or a JSON object that strict JSON can carry."""
    stripped = message.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped, parse_constant=_not_strict_json)
            json.dumps(value, ensure_ascii=False, allow_nan=False).encode()  # 1e999, \ud800
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None
    fields: dict[str, object] = {}
    pos = 0
    while pos < len(stripped):
        m = _REFERENCE_LOGFMT_PAIR.match(stripped, pos)
        if m is None:
            return None
        key, quoted, bare = m.groups()
        fields[key] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        pos = m.end()
    return fields or None


def reference_json(line: StoredLine, *, ascii_only: bool) -> str:
    record: dict[str, object] = {
        "id": line.id,
        "app": line.app,
        "timestamp": line.timestamp,
        "time": line.time,
        "source": line.source,
        "dyno": line.dyno,
        "message": line.message,
        "pri": line.pri,
        "hostname": line.hostname,
        "msgid": line.msgid,
        "structured_data": (
            parse_structured_data(line.structured_data) if line.structured_data else None
        ),
        "received_at": line.received_at,
        "attributes": json.loads(line.attributes) if line.attributes else {},
    }
    fields = reference_fields(line.message)
    if fields is not None:
        record["fields"] = fields
    text = json.dumps(record, ensure_ascii=ascii_only, separators=(",", ":"))
    # U+0085, U+2028, U+2029, the other C1 controls and the bidirectional overrides and
    # isolates as \u escapes, as the README says.
    return re.sub(
        "[\x80-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]",
        lambda m: f"\\u{ord(m[0]):04x}",
        text,
    )


_TRICKY = 'a=b "\\{}[]\t\n\r\x00\x1b\x7f\x85\x9b\x9d\u2028\u2029\u00e9\u65e5\U0001f600'
texts = st.text(st.sampled_from(_TRICKY) | st.characters(), max_size=12)
# A stored message has no lone surrogate (the intake decodes UTF-8 with replacement).
message_texts = st.text(
    st.sampled_from(_TRICKY) | st.characters(exclude_categories=["Cs"]), max_size=12
)


def quoted(value: str, specials: str = '\\"') -> str:
    for special in specials:
        value = value.replace(special, "\\" + special)
    return f'"{value}"'


logfmt = st.lists(
    st.tuples(
        st.text(st.sampled_from('ab_.-"=\\{\u00e9\u2028\x85'), min_size=1, max_size=6),
        message_texts.map(quoted) | message_texts.map(lambda v: f'"{v}"') | message_texts,
        st.sampled_from([" ", "  ", "\t", " \t"]),
    ),
    min_size=1,
    max_size=6,
).map(lambda pairs: "".join(f"{key}={value}{gap}" for key, value, gap in pairs))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
json_objects = st.builds(
    lambda fields, ascii, gap: gap + json.dumps(fields, ensure_ascii=ascii) + gap,
    st.dictionaries(texts, json_values, max_size=4),
    st.booleans(),
    st.sampled_from(["", " ", "\t", "\n"]),
)
messages = (
    message_texts | logfmt | json_objects | st.builds(lambda a, b: a + b, message_texts, logfmt)
)

SD_ESCAPED = '\\"]'


def structured_data_text(elements: list[tuple[str, list[tuple[str, str]]]]) -> str:
    """RFC 5424 STRUCTURED-DATA, its values escaped as serve keeps them."""
    return "".join(
        f"[{sd_id}"
        + "".join(f" {name}={quoted(value, SD_ESCAPED)}" for name, value in params)
        + "]"
        for sd_id, params in elements
    )


sd_names = st.text(st.sampled_from("abc@1=x"), min_size=1, max_size=5)
structured_data = st.lists(
    st.tuples(sd_names, st.lists(st.tuples(sd_names, message_texts), max_size=3)), max_size=3
).map(structured_data_text)
stored_lines = st.builds(
    StoredLine,
    id=st.integers(0, 2**63 - 1),
    app=texts,
    timestamp=texts,
    time=texts,
    source=texts,
    dyno=texts,
    message=messages,
    pri=st.none() | st.integers(0, 191),
    hostname=st.none() | texts,
    structured_data=st.none() | st.just("") | structured_data | message_texts,
    attributes=st.none()
    | st.just("")
    | st.builds(json.dumps, st.dictionaries(texts, texts, max_size=3), ensure_ascii=st.booleans()),
    received_at=texts,
    msgid=st.none() | texts,
    own=st.none(),  # the store's own mark, which no output carries
)


@given(stored_lines, st.booleans())
@example(
    stored(
        'at=info method=GET path="/a \\"b\\"" host=x.example.com fwd="198.51.100.7"'
        " dyno=web.1 connect=0ms service=12ms status=200 bytes=99 protocol=https"
    ),
    False,
)
@example(stored("nel\x85 csi\x9b2J ls\u2028ps\u2029 caf\u00e9 \u65e5 k=v"), True)
@example(stored('{"n": 1.5, "nan": NaN}'), False)
@example(stored('a="no escape: \\\n" b=1'), False)  # not logfmt: \ before a newline
@example(stored('  {"deep": [[[1e999]]]}'), False)
@example(stored('{"lone": "\\ud800"} '), True)
@example(stored('{"nested": ' + "[" * 100_000 + "]" * 100_000 + "}"), False)
@example(
    stored("x=1")._replace(
        structured_data='[origin ip="10.0.0.1"][origin ip="10.0.0.2" q="a\\]b"]',
        attributes='{"ddsource":"heroku","env":"pr\u00f6d"}',
        msgid="ID47",
        pri=None,
        hostname=None,
    ),
    True,
)
@settings(max_examples=400)
def test_json_records_are_the_readme_schema_dumped_by_json(
    line: StoredLine, ascii_only: bool
) -> None:
    """format_json writes its records without building them as dicts for json.dumps: every
    byte must be what json.dumps of the README's schema writes, for any line."""
    assert format_json(line, ascii_only=ascii_only) == reference_json(line, ascii_only=ascii_only)


@given(stored_lines, st.booleans())
@example(stored('nel\x85 ls\u2028ps\u2029 csi\x9b caf\u00e9 \u65e5 "q" \\ \t\n\x00'), True)
@example(
    stored("x=1")._replace(
        structured_data='[origin ip="10.0.0.1"]', attributes='{"a":"b"}', msgid="ID47", pri=None
    ),
    False,
)
@settings(max_examples=400)
def test_records_sent_to_herolog_clients_are_the_fields_dumped_by_json(
    line: StoredLine, msgid: bool
) -> None:
    """encode_record writes a --server record without json.dumps of its fields: every byte
    must be what json.dumps of them writes, the line breaks str.splitlines would split at
    escaped, and the MSGID there only when asked for and the line has one."""
    line_sent = line._replace(attributes=line.attributes or None)  # "" is no JSON object
    fields: list[object] = list(line_sent[:12])
    if msgid and line.msgid is not None:
        fields.append(line.msgid)
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    expected = re.sub("[\x85\u2028\u2029]", lambda m: f"\\u{ord(m[0]):04x}", text)
    record = encode_record(line, msgid=msgid)
    assert record == expected
    assert len(record.splitlines()) == 1
    # What herolog's client reads back: a store's texts have no lone surrogate (UTF-8
    # decoded with replacement).
    if not any(0xD800 <= ord(c) < 0xE000 for c in "".join(map(str, line))):
        assert decode_record(record) == line_sent._replace(msgid=line.msgid if msgid else None)


@pytest.mark.parametrize("index", [0, 7])
def test_a_record_with_true_or_false_for_a_number_is_no_herolog_record(index: int) -> None:
    """JSON's true and false are no id or pri (Python's bools are ints): a server that
    sends them is not herolog."""
    fields = json.loads(encode_record(stored("hi")))
    for value in (True, False):
        fields[index] = value
        with pytest.raises(ValueError, match="not a herolog log record"):
            decode_record(json.dumps(fields))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-8-sig"])
def test_json_output_in_any_utf_encoding_keeps_characters_as_they_are(encoding: str) -> None:
    """Only an output encoding that cannot carry every character (ascii, latin-1) gets
    JSON's \\u escapes: PYTHONIOENCODING=utf-16 can carry them all."""
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, encoding=encoding)
    renderer_for(out, json_output=True, color=False).write([stored("caf\u00e9 \U0001f44d")])
    record = buffer.getvalue().decode(encoding)
    assert '"message":"caf\u00e9 \U0001f44d"' in record
    assert json.loads(record)["message"] == "caf\u00e9 \U0001f44d"


@pytest.mark.parametrize(
    ("count", "noun", "plural", "said"),
    [
        (0, "line", None, "0 lines"),
        (1, "line", None, "1 line"),
        (2, "line", None, "2 lines"),
        (1500, "line", None, "1,500 lines"),
        (1, "match", "matches", "1 match"),
        (3, "match", "matches", "3 matches"),
    ],
)
def test_counted_says_one_in_the_singular_and_thousands_with_commas(
    count: int, noun: str, plural: str | None, said: str
) -> None:
    assert counted(count, noun, plural) == said
