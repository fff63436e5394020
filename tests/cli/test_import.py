from __future__ import annotations

import contextlib
import io
import itertools
import json
import operator
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herolog.cli import cli
from herolog.filters import LineFilter
from herolog.importer import Format, ImportResult
from herolog.parser import LogLine, Received, format_syslog, frame
from herolog.store import Batch, Store, StoredLine, open_store
from tests.helpers import (
    constants_env,
    ended,
    herolog_env,
    line_within,
    until_waiting_for_the_write_lock,
    write_lock_held,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "heroku-logs.txt"


def invoke(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def stored(app: str | None = None) -> list[str]:
    with open_store() as store:
        lines, _ = store.last(LineFilter(app=app), 100_000)
    return [f"{x.timestamp} {x.source}[{x.dyno}]: {x.message}" for x in lines]


def test_import_heroku_text_round_trips_through_logs(tmp_path: Path) -> None:
    code, _, err = invoke("import", str(EXAMPLE), "-a", "demo")
    assert code == 0, err
    assert "Imported 37 lines into demo (heroku format)." in err
    result = CliRunner().invoke(cli, ["logs", "-a", "demo", "-n", "1500"])
    assert result.stdout == EXAMPLE.read_text()


def test_a_source_holding_brackets_round_trips_through_logs() -> None:
    """A syslog APP-NAME with brackets (logger --rfc5424 -t 'billing[77]') is shown as
    billing[77][-]:, and that output imports back as the same line."""
    syslog = b"<14>1 2024-03-05T09:14:07Z h billing[77] - - charged\n"
    assert invoke("import", "-", "-a", "first", input=syslog)[0] == 0
    shown = invoke("logs", "-a", "first")[1]
    assert shown == "2024-03-05T09:14:07Z billing[77][-]: charged\n"
    code, _, err = invoke("import", "-", "-a", "again", input=shown.encode())
    assert (code, err) == (0, "Imported 1 line into again (heroku format).\n")
    assert stored("again") == stored("first")


def test_heroku_logs_output_saved_with_its_colours_imports_as_without_them() -> None:
    """`heroku logs` with FORCE_COLOR, `herolog logs --color always`, or a terminal's session
    log save each header coloured, and parts of messages too: the lines are those of the
    output without colours, not unknown[unknown] lines of escape sequences."""
    invoke("import", str(EXAMPLE), "-a", "demo")
    coloured = invoke("logs", "-a", "demo", "-n", "1500", "--color", "always")[1]
    assert coloured.count("\x1b[") > 37
    # As the heroku CLI colours a header and a router line's values (chalk's sequences).
    coloured += (
        "\x1b[32m2024-03-05T09:15:00.000001+00:00 heroku[router]:\x1b[39m"
        " \x1b[2mstatus=\x1b[22m\x1b[32m200\x1b[39m\n"
    )
    code, _, err = invoke("import", "-", "-a", "copy", input=coloured.encode())
    assert (code, err) == (0, "Imported 38 lines into copy (heroku format).\n")
    assert invoke("logs", "-a", "copy", "-n", "1500")[1] == EXAMPLE.read_text() + (
        "2024-03-05T09:15:00.000001+00:00 heroku[router]: status=200\n"
    )


def test_a_header_coloured_with_colon_separated_parameters_imports_as_without_them() -> None:
    """ITU T.416's form of a 256-colour or RGB sequence (`ESC[38:5:208m`, `ESC[38:2::0:128:0m`),
    as some terminals and tools write it, is a colour too."""
    text = (
        b"\x1b[38:5:208m2024-03-05T09:14:07Z app[web.1]:\x1b[39m one\n"
        b"\x1b[38:2::0:128:0m2024-03-05T09:14:08Z heroku[router]:\x1b[39m two\n"
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err) == (0, "Imported 2 lines into demo (heroku format).\n")
    assert stored("demo") == [
        "2024-03-05T09:14:07Z app[web.1]: one",
        "2024-03-05T09:14:08Z heroku[router]: two",
    ]


@pytest.mark.parametrize(
    ("text", "said", "as_syslog"),
    [
        (
            b"hello\nworld\n",
            "All of them are stored as unknown[unknown], kept whole",
            "All of them are",
        ),
        (b"hello\n", "It is stored as unknown[unknown], kept whole", "It is"),
        (
            b"not a log line\nnor this\n2024-03-05T09:14:07.418233+00:00 app[web.1]: one\n",
            "2 of them are stored as unknown[unknown], kept whole (the first at line 1 of the"
            " input)",
            "All of them are",
        ),
        (
            b"not a log line\n2024-03-05T09:14:07.418233+00:00 app[web.1]: one\n"
            b"also not\n  a continuation of it\n",
            "1 of them is stored as unknown[unknown], kept whole (line 1 of the input)",
            "All of them are",
        ),
    ],
)
def test_lines_kept_as_unknown_are_said_at_once(text: bytes, said: str, as_syslog: str) -> None:
    """A file that is not a log (or not in the format taken) says so, not only later as a
    page of unknown[unknown] lines."""
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert code == 0, err
    assert err.splitlines()[1] == (
        f"{said}: no `TIMESTAMP SOURCE[DYNO]:` header, as heroku logs output has."
    )
    code, _, err = invoke("import", "-", "-a", "demo", "--format", "syslog", input=text)
    assert code == 0, err
    assert err.splitlines()[1] == (
        f"{as_syslog} stored as unknown[unknown], kept whole: not syslog (RFC 5424 or 3164)."
    )


@pytest.mark.parametrize("fmt", ["syslog", "json", "logplex"])
def test_lines_kept_as_unknown_among_others_are_said_with_where_the_first_is(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two lines of 5,000 that a sender mangled were said to be 2 of them, to be looked
    for by reading all 5,000: the line (of a Logplex body, the frame) of the first is said."""
    from herolog import importer

    monkeypatch.setattr(importer, "CHUNK_SIZE", 4096)  # the first, and the second, chunks apart
    good = {
        "syslog": b"<13>1 2024-03-05T09:14:07Z host app web.1 - - fine\n",
        "json": b'{"timestamp":"2024-03-05T09:14:07Z","source":"app","dyno":"web.1","message":"x"}\n',
        "logplex": frame([b"<13>1 2024-03-05T09:14:07Z host app web.1 - - fine\n"]),
    }[fmt]
    # In syslog a line with no PRI continues the message before it: a mangled one has a PRI.
    bad = {"logplex": frame([b"not syslog\n"]), "syslog": b"<13>not a log line\n"}.get(
        fmt, b"not a log line\n"
    )
    blank = b"" if fmt == "logplex" else b"\n"  # counted as a line, though none is stored
    text = good * 2 + blank + bad + good * 4997 + bad + good
    code, _, err = invoke("import", "-", "-a", "demo", "--format", fmt, input=text)
    where = "frame 3" if fmt == "logplex" else "line 4"
    assert code == 0, err
    assert err.splitlines()[1].startswith(
        f"2 of them are stored as unknown[unknown], kept whole (the first at {where} of the"
        " input): "
    ), err
    assert err.splitlines()[1].endswith(
        {
            "syslog": "): not syslog (RFC 5424 or 3164).",
            "json": "): not herolog logs --json output.",
            "logplex": "): frames that are not syslog messages (RFC 5424 or 3164).",
        }[fmt]
    ), err
    code, _, err = invoke("import", "-", "-a", "one", "--format", fmt, input=good + bad)
    where = "frame 2" if fmt == "logplex" else "line 2"
    assert err.splitlines()[1].startswith(
        f"1 of them is stored as unknown[unknown], kept whole ({where} of the input): "
    ), err


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        # herolog logs output of lines once kept as unknown: a header the format has.
        (b"2024-03-05T09:14:07.418233+00:00 unknown[unknown]: <13>Mar  5 09:14:07 x y\n", "heroku"),
        # A syslog sender whose APP-NAME and PROCID read unknown.
        (b"<13>1 2024-03-05T09:14:07.418233+00:00 myhost unknown unknown - - hello\n", "syslog"),
        (frame([b"<13>1 2024-03-05T09:14:07+00:00 host unknown unknown - hi\n"]), "logplex"),
    ],
)
def test_a_line_whose_header_says_unknown_is_not_said_to_have_none(text: bytes, fmt: str) -> None:
    """Only lines the format did not describe are kept whole as unknown[unknown]; a line
    whose own header names the source and dyno unknown was read as the format has it."""
    code, _, err = invoke("import", "-", "-a", "demo", "--format", fmt, input=text)
    assert code == 0, err
    assert "stored as unknown[unknown]" not in err, err
    assert len(stored("demo")) == 1


def test_a_log_says_nothing_of_unknown_lines() -> None:
    code, _, err = invoke("import", str(EXAMPLE), "-a", "demo")
    assert code == 0
    assert "unknown" not in err


def test_one_line_is_one_line() -> None:
    one = b"2024-03-05T09:14:07.418233+00:00 app[web.1]: alone\n"
    code, _, err = invoke("import", "-", "-a", "demo", input=one)
    assert code == 0, err
    assert "Imported 1 line into demo (heroku format)." in err


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_input_without_lines_says_nothing_was_imported(content: bytes) -> None:
    code, _, err = invoke("import", "-", "-a", "demo", input=content)
    assert code == 0, err
    assert err == "Nothing imported: standard input holds no log lines.\n"
    with open_store() as store:
        assert "demo" not in [app.name for app in store.apps()]


def test_an_empty_file_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    code, _, err = invoke("import", str(empty), "-a", "demo")
    assert (code, err) == (0, f"Nothing imported: {empty} holds no log lines.\n")


def test_continuation_lines_join_the_message_before_them() -> None:
    invoke("import", str(EXAMPLE), "-a", "demo")
    with open_store() as store:
        (traceback,) = [
            x
            for x in store.last(LineFilter(dynos=(("web.2",),)), 100)[0]
            if "Traceback" in x.message
        ]
    assert traceback.message.splitlines() == [
        "Internal Server Error: /checkout",
        "Traceback (most recent call last):",
        '  File "/app/shop/views.py", line 88, in checkout',
        "    order = Order.objects.get(cart=cart)",
        "shop.models.Order.DoesNotExist: Order matching query does not exist.",
    ]


@pytest.mark.parametrize(
    "cut",
    [
        "2024-03-05T09:14:09.1",
        "2024-03-05T09:14:09.418233+00:00 ap",
        "2024-03-05T09:14:09.418233+00:00 app[web",
        "2024-03-05T09:14:09.418233+00:00 app[web.1]",
    ],
)
def test_a_capture_cut_off_in_a_header_leaves_the_message_before_it_whole(cut: str) -> None:
    """`heroku logs --tail > demo.log` stopped, or copied while it wrote, can end in the
    middle of a header: that piece, which holds no message, was taken as a line continuing
    the message before it, which it was not."""
    text = (
        "2024-03-05T09:14:07.418233+00:00 app[web.1]: Traceback:\n  a\n"
        f"2024-03-05T09:14:08.418233+00:00 app[web.1]: last whole\n{cut}"
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=text.encode())
    assert (code, err) == (
        0,
        "Imported 2 lines into demo (heroku format).\n"
        f"The input ends in the middle of a line, as a capture cut off does: {cut!r} is left"
        " out.\n",
    )
    assert stored("demo") == [
        "2024-03-05T09:14:07.418233+00:00 app[web.1]: Traceback:\n  a",
        "2024-03-05T09:14:08.418233+00:00 app[web.1]: last whole",
    ]
    # With nothing before it, and a last line that continues its message as it may.
    code, _, err = invoke("import", "-", "-a", "alone", input=cut.encode())
    assert (code, err) == (
        0,
        "Nothing imported: standard input holds no log lines.\n"
        f"The input ends in the middle of a line, as a capture cut off does: {cut!r} is left"
        " out.\n",
    )
    code, _, err = invoke("import", "-", "-a", "more", input=text[: -len(cut)].encode() + b"  b")
    assert (code, err) == (0, "Imported 2 lines into more (heroku format).\n")
    assert stored("more")[-1] == "2024-03-05T09:14:08.418233+00:00 app[web.1]: last whole\n  b"


@pytest.mark.parametrize(
    ("cut", "last"),
    [
        # In the header's colour, before any of it: the piece holds nothing.
        ("\x1b", None),
        ("\x1b[1;3", None),
        ("\x1b[1;32m", None),
        # In the reset after its ':', as the uncoloured header ending there is: a line.
        ("\x1b[1;32m2024-03-05T09:14:09Z app[web.1]:\x1b", ""),
        ("\x1b[1;32m2024-03-05T09:14:09Z app[web.1]:\x1b[0", ""),
        # In a colour of the message: what came of it, without half a sequence.
        ("\x1b[1;32m2024-03-05T09:14:09Z app[web.1]:\x1b[0m exited with \x1b[3", "exited with "),
    ],
)
def test_a_coloured_capture_cut_off_in_a_colour_sequence_imports_as_one_without(
    cut: str, last: str | None
) -> None:
    """`FORCE_COLOR=1 heroku logs --tail > demo.log` cut off in the middle of a colour
    sequence: the piece, escape bytes and the header before them, was added to the message
    before it as a line continuing it, where the input without colours cut at the same
    place leaves it out or stores the line it starts."""
    text = "\x1b[1;32m2024-03-05T09:14:08Z app[web.1]:\x1b[0m last whole\n  and its second line\n"
    code, _, err = invoke("import", "-", "-a", "demo", input=(text + cut).encode())
    said = (
        f"The input ends in the middle of a line, as a capture cut off does: {cut!r} is left out."
    )
    lines = "2 lines" if last is not None else "1 line"
    assert (code, err) == (
        0,
        f"Imported {lines} into demo (heroku format).\n" + (said + "\n" if last is None else ""),
    )
    expected = ["2024-03-05T09:14:08Z app[web.1]: last whole\n  and its second line"]
    if last is not None:
        expected.append(f"2024-03-05T09:14:09Z app[web.1]: {last}")
    assert stored("demo") == expected


def test_a_capture_with_crlf_cut_off_between_cr_and_lf_adds_no_line_to_its_message() -> None:
    """A capture with Windows line ends cut off after a line's `\\r`, before its `\\n`: that
    `\\r` was read as a line continuing the message before it, which gained a `\\n`."""
    text = b"2024-03-05T09:14:07Z app[web.1]: one\r\n2024-03-05T09:14:08Z app[web.1]: two\r\n"
    code, _, err = invoke("import", "-", "-a", "demo", input=text + b"\r")
    assert (code, err) == (0, "Imported 2 lines into demo (heroku format).\n")
    assert stored("demo") == [
        "2024-03-05T09:14:07Z app[web.1]: one",
        "2024-03-05T09:14:08Z app[web.1]: two",
    ]


def test_a_line_like_the_start_of_a_header_inside_the_input_continues_a_message() -> None:
    """Only the input's last line, without its line end, can be a header cut off: one
    before that (a date a message printed on a line of its own) is the message's."""
    text = (
        b"2024-03-05T09:14:07Z app[web.1]: report of\n2024-03-05\n2024-03-05T09:14:08Z app\n"
        b"2024-03-05T09:14:09Z app[web.1]: next\n"
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err) == (0, "Imported 2 lines into demo (heroku format).\n")
    assert stored("demo") == [
        "2024-03-05T09:14:07Z app[web.1]: report of\n2024-03-05\n2024-03-05T09:14:08Z app",
        "2024-03-05T09:14:09Z app[web.1]: next",
    ]


def test_a_last_line_no_header_can_start_continues_its_message() -> None:
    """A last line without its line end that starts as a header does but goes on as no
    header can (its one pair of brackets is the dyno's, and only the ':' comes after it) is
    the message's own, not a header cut off: it is kept, and nothing is said of it."""
    text = b"2024-03-05T09:14:07Z app[web.1]: report of\n2024-03-05 [a][b]"
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err) == (0, "Imported 1 line into demo (heroku format).\n")
    assert stored("demo") == ["2024-03-05T09:14:07Z app[web.1]: report of\n2024-03-05 [a][b]"]


def test_a_json_capture_cut_off_mid_line_leaves_the_piece_out() -> None:
    """`herolog logs --json --tail > demo.ndjson` stopped mid-line ends in half a JSON object,
    which was stored whole as an unknown[unknown] line."""
    one = b'{"timestamp":"2024-03-05T09:14:07Z","source":"app","dyno":"web.1","message":"a"}\n'
    code, _, err = invoke("import", "-", "-a", "demo", input=one + one[:40])
    assert (code, err) == (
        0,
        "Imported 1 line into demo (json format).\n"
        "The input ends in the middle of a line, as a capture cut off does:"
        f" {one[:40].decode()!r} is left out.\n",
    )
    assert stored("demo") == ["2024-03-05T09:14:07Z app[web.1]: a"]
    # A last line without its line end, but whole, is taken.
    code, _, err = invoke("import", "-", "-a", "whole", input=one + one.rstrip())
    assert (code, err) == (0, "Imported 2 lines into whole (json format).\n")


def test_a_message_of_several_lines_under_an_unknown_header_imports_back_whole() -> None:
    """herolog logs prints an unknown[unknown] line's message as any other: its lines after
    the first continue it on import, as for any header."""
    text = "2024-03-05T09:14:07.418233+00:00 unknown[unknown]: first\n  second\nthird\n"
    assert invoke("import", "-", "-a", "demo", input=text.encode())[0] == 0
    with open_store() as store:
        (line,) = store.last(LineFilter(app="demo"), 100)[0]
    assert (line.source, line.dyno, line.message) == (
        "unknown",
        "unknown",
        "first\n  second\nthird",
    )
    result = CliRunner().invoke(cli, ["logs", "-a", "demo"])
    assert result.stdout == text


def test_text_that_is_not_heroku_output_is_kept_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "plain.log"
    path.write_text(
        "first plain line\n\nsecond plain line\r\n2024-03-05T09:14:07Z app[web.1]: real\ncontinued\n"
    )
    assert invoke("import", str(path))[0] == 0
    with open_store() as store:
        lines = store.last(LineFilter(app="default"), 100)[0]
    assert [(x.source, x.message) for x in lines] == [
        ("unknown", "first plain line"),
        ("unknown", "second plain line"),
        ("app", "real\ncontinued"),
    ]


@pytest.mark.parametrize(
    "header", ["app[w\u00e9b.1]", "\u00e4pp[web.1]", "app[web\t1]", "app[w\x7fb]"]
)
def test_a_header_naming_what_no_dyno_can_be_named_is_not_one(header: str) -> None:
    """SOURCE and DYNO are syslog APP-NAME and PROCID: printable ASCII (RFC 5424), as every
    other input takes them (Heroku's process types are ASCII). A line naming anything else
    would go to drains as a message they cannot read: it continues the line before it, as
    a line without a header does, and herolog logs prints it back as it was."""
    text = (
        "2024-03-05T09:14:07.418233+00:00 app[web.1]: first\n"
        f"2024-03-05T09:14:08.418233+00:00 {header}: x\n"
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=text.encode())
    assert (code, err) == (0, "Imported 1 line into demo (heroku format).\n")
    with open_store() as store:
        (line,) = store.last(LineFilter(app="demo"), 9)[0]
    assert (line.source, line.dyno) == ("app", "web.1")
    assert invoke("logs", "-a", "demo")[1] == text


def test_import_logplex_body_from_stdin() -> None:
    body = frame(
        format_syslog(
            LogLine(
                "2024-03-05T09:14:07.418233+00:00", "", "app", "web.1", f"m{i}", 190, "host", None
            )
        )
        for i in range(3)
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=b"\n" + body)
    assert code == 0, err
    assert "(logplex format)" in err
    assert [x.split(": ")[1] for x in stored("demo")] == ["m0", "m1", "m2"]


def test_a_message_ending_in_cr_keeps_it_in_a_logplex_body_not_in_text(tmp_path: Path) -> None:
    """In a counted frame only Logplex's LF is framing (a dyno line ending in CR arrives as
    ``...\\r\\n``); in text files, syslog lines or heroku logs output, CRLF is a line end."""
    cr = b"<190>1 2024-03-05T09:14:07Z host app web.1 - 50%\r"
    (tmp_path / "body.bin").write_bytes(frame([cr + b"\n", cr, cr + b"\n"]))
    (tmp_path / "syslog.txt").write_bytes(cr + b"\n")
    (tmp_path / "heroku.txt").write_bytes(b"2024-03-05T09:14:07Z app[web.1]: 50%\r\n")
    for name in ("body.bin", "syslog.txt", "heroku.txt"):
        assert invoke("import", str(tmp_path / name), "-a", name.replace(".", "-"))[0] == 0
    code, out, _ = invoke("logs", "-n", "100", "--json")
    assert code == 0
    assert [(x["app"], x["message"]) for x in map(json.loads, out.splitlines())] == [
        ("body-bin", "50%\r"),
        ("body-bin", "50%\r"),
        ("body-bin", "50%\r"),
        ("syslog-txt", "50%"),
        ("heroku-txt", "50%"),
    ]


@pytest.mark.parametrize(
    "first",
    [
        b"<13>Dec  4 22:00:01 myhost billing[4711]: paid",  # rsyslog's default, logger --rfc3164
        b"<13>billing[4711]: paid",  # Python's SysLogHandler, no time
    ],
)
def test_import_detects_bsd_syslog(tmp_path: Path, first: bytes) -> None:
    """RFC 3164 lines, as rsyslog forwards and Python's SysLogHandler sends them, saved to a
    file: syslog, not heroku text kept whole."""
    path = tmp_path / "bsd.txt"
    path.write_bytes(first + b"\n<14>1 2024-03-05T09:14:08Z host app web.1 - hi\n")
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert code == 0, err
    assert "(syslog format)" in err
    with open_store() as store:
        lines = store.last(LineFilter(), 10)[0]
    assert [(x.source, x.dyno, x.message) for x in lines] == [
        ("billing", "4711", "paid"),
        ("app", "web.1", "hi"),
    ]


def test_a_capture_of_pythons_syslog_handler_over_tcp_imports_message_by_message(
    tmp_path: Path,
) -> None:
    """Python's SysLogHandler ends each message with a NUL, not a newline, as serve's syslog
    port reads it: a capture of what it sent (nc -l 5140 > capture.log) was one line, every
    message after the first glued to it with its NULs, and a traceback's lines were taken
    for messages of their own."""
    import logging.handlers
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    handler = logging.handlers.SysLogHandler(listener.getsockname(), socktype=socket.SOCK_STREAM)
    handler.ident = "worker: "
    logger = logging.getLogger("test_import.syslog_capture")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        connection, _ = listener.accept()
        logger.warning("first")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
        logger.warning("last")
    finally:
        logger.removeHandler(handler)
        handler.close()
    with connection, listener:
        connection.settimeout(10)
        capture = b""
        while chunk := connection.recv(65536):
            capture += chunk
    assert capture.count(b"\0") == 3
    path = tmp_path / "capture.log"
    path.write_bytes(capture)
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (0, "Imported 3 lines into demo (syslog format).\n")
    with open_store() as store:
        lines = store.last(LineFilter(app="demo"), 9)[0]
    assert [(x.source, x.pri) for x in lines] == [("worker", 12), ("worker", 11), ("worker", 12)]
    assert lines[0].message == "first"
    assert lines[1].message.startswith("failed\nTraceback (most recent call last):\n")
    assert lines[1].message.endswith("\nValueError: boom")
    assert lines[2].message == "last"


def test_a_message_ending_with_a_nul_is_said_at_the_line_it_starts_on() -> None:
    """Newlines between messages that end with a NUL count in the line a message is said
    to be at."""
    text = b"<13>1 2024-03-05T09:14:07Z h app web.1 - - one\0\n\nnot syslog\0"
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err.splitlines()[1:]) == (
        0,
        [
            "1 of them is stored as unknown[unknown], kept whole (line 3 of the input): not"
            " syslog (RFC 5424 or 3164)."
        ],
    )


@pytest.mark.parametrize("days_ago", [363, 200, 40])
def test_an_rfc_3164_line_without_a_year_is_read_as_one_from_the_past(days_ago: int) -> None:
    """A saved line comes from before its import: one of a later month and day than the
    import's (last November's, imported in March) was put in the year of the import, months
    in the future, as a line received live is (where that is the sender's clock)."""
    from datetime import datetime, timedelta

    logged = (datetime.now().astimezone() - timedelta(days=days_ago)).replace(microsecond=0)
    text = f"<13>{logged:%b} {logged.day:2d} {logged:%H:%M:%S} myhost billing[42]: paid\n"
    code, _, err = invoke("import", "-", "-a", "demo", input=text.encode())
    assert (code, err) == (0, "Imported 1 line into demo (syslog format).\n")
    with open_store() as store:
        (line,) = store.last(LineFilter(app="demo"), 9)[0]
    assert line.timestamp == logged.isoformat()


def test_an_rfc_3164_line_of_29_february_is_read_in_the_last_leap_year() -> None:
    """Imported in a year without a 29 February (a 2024 log imported in 2025), such a line
    was stored whole as unknown[unknown] and told of as 'not syslog'."""
    from datetime import datetime, timedelta

    latest = datetime.now().astimezone() + timedelta(days=1)
    year = next(
        y
        for y in range(latest.year, latest.year - 9, -1)
        if y % 4 == 0
        and (y % 100 != 0 or y % 400 == 0)
        and datetime(y, 2, 29, 10).astimezone() <= latest
    )
    text = b"<13>Feb 29 10:00:00 myhost billing[42]: leap\n<13>Mar  1 10:00:00 h billing: x\n"
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err) == (0, "Imported 2 lines into demo (syslog format).\n")
    with open_store() as store:
        leap, _ = store.last(LineFilter(app="demo"), 9)[0]
    assert (leap.source, leap.message) == ("billing", "leap")
    assert leap.timestamp == datetime(year, 2, 29, 10).astimezone().isoformat()


@pytest.mark.parametrize("count", [3, 1])
def test_a_nul_inside_a_line_of_newline_framed_syslog_ends_no_message(count: int) -> None:
    """Of one line alone too, where no message ends in either way before another starts."""
    text = (
        b"<13>1 2024-03-05T09:14:07Z h app web.1 - - a\0b\n"
        b"<13>1 2024-03-05T09:14:08Z h app web.1 - - c\n"
        b"<13>1 2024-03-05T09:14:09Z h app web.1 - - d\n"
    )
    text = b"".join(text.splitlines(keepends=True)[:count])
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    lines = f"{count} line{'s' * (count != 1)}"
    assert (code, err) == (0, f"Imported {lines} into demo (syslog format).\n")
    assert [x.split(": ", 1)[1] for x in stored("demo")] == ["a\0b", "c", "d"][:count]


def test_the_help_names_both_forms_of_syslog_it_reads() -> None:
    code, out, _ = invoke("import", "--help")
    assert code == 0
    assert "newline-separated syslog (RFC 5424 or RFC 3164)" in " ".join(out.split())


def test_import_newline_framed_syslog(tmp_path: Path) -> None:
    path = tmp_path / "syslog.txt"
    path.write_bytes(
        b'<13>1 2024-03-05T09:14:07Z myhost billing 4711 - [meta seq="1"] paid\n'
        b"<190>1 2024-03-05T09:14:08Z host app web.1 - hi\r\n"
        b"<13>not a header\n"
    )
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert code == 0, err
    assert "(syslog format)" in err
    with open_store() as store:
        lines = store.last(LineFilter(), 10)[0]
    assert [(x.source, x.dyno, x.message, x.structured_data) for x in lines] == [
        ("billing", "4711", "paid", '[meta seq="1"]'),
        ("app", "web.1", "hi", None),
        ("unknown", "unknown", "<13>not a header", None),
    ]


def test_a_line_that_starts_no_syslog_message_is_stored_with_the_header_of_the_one_before() -> None:
    """A traceback's lines, as syslog-ng's network() and a script writing to a socket send
    them and a capture of those keeps them (`nc -l 5140 > capture.log`), were stored as
    unknown[unknown] lines where serve stores them as the message's own, with its header."""
    text = (
        b"<11>1 2024-03-05T09:14:07Z vm worker 12 - - Traceback (most recent call last):\n"
        b'  File "job.py", line 3, in <module>\n'
        b"\n"
        b"ValueError: bad\r\n"
        b"<14>Mar  5 09:14:08 vm worker[12]: next\n"
        b"<html>\n"
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err) == (0, "Imported 5 lines into demo (syslog format).\n")
    with open_store() as store:
        lines = store.last(LineFilter(app="demo"), 9)[0]
    assert [(x.timestamp, x.source, x.dyno, x.pri, x.hostname, x.message) for x in lines] == [
        ("2024-03-05T09:14:07Z", "worker", "12", 11, "vm", "Traceback (most recent call last):"),
        ("2024-03-05T09:14:07Z", "worker", "12", 11, "vm", '  File "job.py", line 3, in <module>'),
        ("2024-03-05T09:14:07Z", "worker", "12", 11, "vm", "ValueError: bad"),
        (lines[3].timestamp, "worker", "12", 14, "vm", "next"),
        (lines[3].timestamp, "worker", "12", 14, "vm", "<html>"),
    ]


_syslog_messages = st.builds(
    "{}<{}>1 2024-03-05T09:14:0{}Z vm {} {} - {} {}".format,
    st.sampled_from(["", " ", "\t"]),
    st.integers(0, 191),
    st.integers(0, 9),
    st.sampled_from(["app", "worker"]),
    st.sampled_from(["web.1", "12"]),
    st.sampled_from(["-", '[meta seq="1"]']),
    st.text(st.characters(blacklist_characters="\n\r\0", blacklist_categories=["Cs"])),
)
_own_lines = ['  File "x.py", line 1', "ValueError: bad", "<html>", "\t</body>", "0 <Task x>"]
_other_lines = [
    "42",
    "<1",
    "12 <1",
    "",
    "  ",
    "<13>no header",
    "<999>1 2024-03-05T09:14:00Z v a b - -",
]
_syslog_lines = _syslog_messages | st.sampled_from(_own_lines + _other_lines)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=_syslog_messages, rest=st.lists(_syslog_lines, max_size=12), crlf=st.booleans())
def test_newline_framed_syslog_imports_as_serve_stores_it(
    first: str, rest: list[str], crlf: bool
) -> None:
    """One parser for every input: what serve's syslog port stores of a stream, an import of
    a capture of it stores alike, line for line, whether each line starts a message, goes on
    with one or is blank."""
    from herolog import importer
    from herolog.parser import FrameDecoder

    data = "".join(f"{line}\r\n" if crlf else f"{line}\n" for line in [first, *rest]).encode()
    decoder = FrameDecoder(newline_framing=True)
    received = Received.at()
    served = decoder.feed(data, received) + decoder.close(received)
    app = f"import{next(_examples)}"
    with open_store() as store:
        importer.import_stream(io.BytesIO(data), store, app, "syslog")
        imported = store.last(LineFilter(app=app), 99)[0]

    def fields(line: LogLine | StoredLine) -> tuple[object, ...]:
        fields = operator.attrgetter(*LogLine._fields)(line)
        return fields if line.pri is not None else fields[2:]  # kept whole: the time of arrival

    assert list(map(fields, imported)) == list(map(fields, served))


_examples = itertools.count()


def test_structured_data_in_json_output_undoes_only_rfc5424_escapes(tmp_path: Path) -> None:
    path = tmp_path / "sd.txt"
    path.write_bytes(
        b"<13>1 2024-03-05T09:14:07Z myhost billing 4711 -"
        b' [x@1 note="a \\"q\\" \\\\ \\]" path="C:\\temp\\new"] paid\n'
    )
    assert invoke("import", str(path), "-a", "demo")[0] == 0
    code, out, _ = invoke("logs", "-a", "demo", "--json")
    assert code == 0
    assert json.loads(out)["structured_data"] == {
        "x@1": {"note": 'a "q" \\ ]', "path": "C:\\temp\\new"}
    }


def test_json_output_keeps_every_value_of_a_repeated_sd_id_or_param(tmp_path: Path) -> None:
    path = tmp_path / "sd.txt"
    path.write_bytes(
        b'<13>1 2024-03-05T09:14:07Z myhost billing 4711 - [a x="1"][a y="2"][a x="3"] m\n'
    )
    assert invoke("import", str(path), "-a", "demo")[0] == 0
    code, out, _ = invoke("logs", "-a", "demo", "--json")
    assert code == 0
    assert json.loads(out)["structured_data"] == {"a": {"x": ["1", "3"], "y": "2"}}


def test_framing_error_mid_file_keeps_what_came_before_and_says_where(tmp_path: Path) -> None:
    good = b"<190>1 2024-03-05T09:14:07Z host app web.1 - ok\n"
    path = tmp_path / "broken.bin"
    path.write_bytes(b"%d %s" % (len(good), good) * 2 + b"oops")
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert code == 1
    assert f"frame 3 at byte {2 * (len(good) + 3)}" in err
    assert "the 2 lines before it were imported" in err
    assert "Traceback" not in err
    assert len(stored("demo")) == 2


def test_a_framing_error_after_a_bom_counts_the_bom_in_its_offset(tmp_path: Path) -> None:
    """Both offsets in the message are the input's, as tail -c counts it."""
    good = b"<190>1 2024-03-05T09:14:07Z host app web.1 - ok\n"
    frames = b"%d %s" % (len(good), good) * 2
    path = tmp_path / "bom.bin"
    path.write_bytes(b"\xef\xbb\xbf" + frames + b"oops")
    code, _, err = invoke("import", str(path), "-a", "demo", "--format", "logplex")
    assert code == 1
    assert f"frame 3 at byte {3 + len(frames)}:" in err
    assert f"(the input's first {3 + len(frames)} bytes)" in err


def test_a_frame_over_1_mib_stops_the_import_after_storing_what_came_before(
    tmp_path: Path,
) -> None:
    """Logplex sends frames of 10 KB at most: a count over 1 MiB is most likely damaged, and
    skipping that many bytes would throw away or misread the frames after it. The import
    stops there, with what came before it stored (here from more than one chunk)."""
    from herolog.importer import CHUNK_SIZE

    assert invoke("store", "history", "100000")[0] == 0
    good = frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - ok\n"])
    before = CHUNK_SIZE * 3 // 2 // len(good)
    huge = b"<190>1 2024-03-05T09:14:07Z host app web.1 - " + b"x" * (1 << 20) + b"\n"
    path = tmp_path / "huge.bin"
    path.write_bytes(good * before + frame([huge]) + good * 2)
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert code == 1
    assert err == (
        f"Error: {path}: frame {before + 1} at byte {before * len(good)}: a frame of"
        f" {len(huge):,} bytes is over the 1,048,576-byte limit; the {before:,} lines before"
        f" it were imported (the input's first {before * len(good)} bytes), nothing after it\n"
    )
    assert len(stored("demo")) == before


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (
            "heroku",
            b"2024-03-05T09:14:07Z app[web.1]: first\r\n2024-03-05T09:14:08Z app[web.1]: second\r\n",
        ),
        (
            "syslog",
            b"<190>1 2024-03-05T09:14:07Z host app web.1 - first\r\n"
            b"<190>1 2024-03-05T09:14:08Z host app web.1 - second\r\n",
        ),
        (
            "json",
            b'{"timestamp": "2024-03-05T09:14:07Z", "source": "app", "dyno": "web.1",'
            b' "message": "first"}\r\n'
            b'{"timestamp": "2024-03-05T09:14:08Z", "source": "app", "dyno": "web.1",'
            b' "message": "second"}\r\n',
        ),
        (
            "logplex",
            frame(
                [
                    b"<190>1 2024-03-05T09:14:07Z host app web.1 - first",
                    b"<190>1 2024-03-05T09:14:08Z host app web.1 - second",
                ]
            ),
        ),
    ],
)
def test_a_leading_byte_order_mark_is_not_content(tmp_path: Path, fmt: str, text: bytes) -> None:
    """Nor does it hide the format: what follows it is what tells the format."""
    path = tmp_path / "windows.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text)
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (0, f"Imported 2 lines into demo ({fmt} format).\n")
    assert stored("demo") == [
        "2024-03-05T09:14:07Z app[web.1]: first",
        "2024-03-05T09:14:08Z app[web.1]: second",
    ]


@pytest.mark.parametrize(
    ("fmt", "header"),
    [
        ("heroku", b"2024-03-05T09:14:0%dZ app[web.1]: "),
        ("syslog", b"<190>1 2024-03-05T09:14:0%dZ host app web.1 - "),
    ],
)
def test_files_that_start_with_a_byte_order_mark_import_joined(fmt: str, header: bytes) -> None:
    """`cat a.log b.log | herolog import -` of captures that each start with a BOM (Windows
    PowerShell 5.1's Out-File -Encoding utf8, Notepad): the second file's first line has one
    before its header, and was taken for a line continuing the message before it, its own
    header and all, under that message's time. (In `--json` output it already was not.)"""
    a = b"\xef\xbb\xbf" + header % 7 + b"first\r\n"
    b = b"\xef\xbb\xbf" + header % 8 + b"second\r\n"
    code, _, err = invoke("import", "-", "-a", "demo", input=a + b)
    assert (code, err) == (0, f"Imported 2 lines into demo ({fmt} format).\n")
    assert stored("demo") == [
        "2024-03-05T09:14:07Z app[web.1]: first",
        "2024-03-05T09:14:08Z app[web.1]: second",
    ]


@pytest.mark.parametrize(
    ("second", "imported", "said"),
    [
        # Cut off in its first header: left out and said, as at the input's start.
        (b"2024-03-05T09:1", "1 line", "'2024-03-05T09:1' is left out."),
        # A capture with nothing in it but its BOM: no line at all.
        (b"", "1 line", None),
        # Saved in colour: a line of its own.
        (b"\x1b[1;32m2024-03-05T09:14:08Z app[web.1]:\x1b[0m second\n", "2 lines", None),
    ],
    ids=["cut-in-its-header", "empty", "in-colour"],
)
def test_a_byte_order_mark_in_joined_captures_is_no_content_in_any_line(
    second: bytes, imported: str, said: str | None
) -> None:
    """`cat a.log b.log` of captures that each start with a BOM, b.log cut off in its first
    header, or empty, or saved in colour: the BOM and what followed it were added to the
    last message of a.log as a line continuing it ('first\\n\\ufeff2024-03-05T09:1'), where
    at the input's start the BOM is passed over and the cut header left out and said."""
    a = b"\xef\xbb\xbf2024-03-05T09:14:07Z app[web.1]: first\n"
    code, _, err = invoke("import", "-", "-a", "demo", input=a + b"\xef\xbb\xbf" + second)
    expected_err = f"Imported {imported} into demo (heroku format).\n"
    if said is not None:
        expected_err += (
            f"The input ends in the middle of a line, as a capture cut off does: {said}\n"
        )
    assert (code, err) == (0, expected_err)
    expected = ["2024-03-05T09:14:07Z app[web.1]: first"]
    if imported == "2 lines":
        expected.append("2024-03-05T09:14:08Z app[web.1]: second")
    assert stored("demo") == expected


@pytest.mark.parametrize(
    ("fmt", "header"),
    [
        ("heroku", "2024-03-05T09:14:07Z app[web.1]: "),
        ("syslog", "<13>1 2024-03-05T09:14:07Z h app web.1 - - "),
    ],
)
def test_bytes_that_are_not_utf_8_are_said_with_how_to_convert_the_input(
    tmp_path: Path, fmt: str, header: str
) -> None:
    """A file saved in Latin-1 (caf\xe9) had each such character stored as U+FFFD without a
    word; the import says so, where, and the command that reads it whole."""
    path = tmp_path / "latin-1.log"
    lines = [f"{header}{word}" for word in ("plain", "café", "ok ✓", "naïve", "end")]
    text = (
        b"\n".join(
            x.encode("latin-1", "replace") if i != 2 else x.encode() for i, x in enumerate(lines)
        )
        + b"\n"
    )
    path.write_bytes(text)
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (
        0,
        f"Imported 5 lines into demo ({fmt} format).\n"
        "2 lines of the input hold bytes that are not UTF-8, stored as U+FFFD (the first is"
        " line 2); an input in Latin-1 imports as it was with:"
        f" iconv -f latin1 -t utf-8 {shlex.quote(str(path))} | herolog import - -a demo\n",
    )
    assert [x.split(": ", 1)[1] for x in stored("demo")] == [
        "plain",
        "caf\ufffd",
        "ok \u2713",
        "na\ufffdve",
        "end",
    ]
    code, _, err = invoke("import", "-", "-a", "one", input=text.split(b"\n")[1] + b"\n")
    assert (code, err) == (
        0,
        f"Imported 1 line into one ({fmt} format).\n"
        "Line 1 of the input holds bytes that are not UTF-8, stored as U+FFFD; an input in"
        " Latin-1 imports as it was with: ... | iconv -f latin1 -t utf-8 | herolog import - -a"
        " one\n",
    )
    import gzip

    packed = tmp_path / "latin-1.log.gz"  # iconv of the file would convert gzip's bytes
    packed.write_bytes(gzip.compress(text))
    code, _, err = invoke("import", str(packed), "-a", "packed")
    assert (code, err.splitlines()[-1]) == (
        0,
        "2 lines of the input hold bytes that are not UTF-8, stored as U+FFFD (the first is"
        " line 2); an input in Latin-1 imports as it was with:"
        f" zcat {shlex.quote(str(packed))} | iconv -f latin1 -t utf-8 | herolog import - -a packed",
    )


def test_a_gzip_compressed_input_is_read_decompressed(tmp_path: Path) -> None:
    """Rotated logs are gzipped (logrotate's compress): each format reads as it does plain,
    from a file or stdin, also two gzip files one after the other (cat a.gz b.gz), instead
    of being stored as lines of compressed bytes."""
    import gzip

    text = EXAMPLE.read_bytes()
    path = tmp_path / "heroku-logs.txt.gz"
    path.write_bytes(gzip.compress(text))
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert code == 0, err
    assert err == "Imported 37 lines into demo (heroku format).\n"
    assert CliRunner().invoke(cli, ["logs", "-a", "demo", "-n", "1500"]).stdout == text.decode()
    body = frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - %d\n" % i for i in range(3)])
    halves = gzip.compress(body[:50]) + gzip.compress(body[50:])
    code, _, err = invoke("import", "-", "-a", "body", input=halves)
    assert code == 0, err
    assert "Imported 3 lines into body (logplex format)." in err
    assert [x.split(": ")[1] for x in stored("body")] == ["0", "1", "2"]


_UTF16 = "UTF-16 text (as Windows PowerShell's > writes)"


@pytest.mark.parametrize(
    ("form", "what", "convert"),
    [
        ("bzip2", "bzip2-compressed", "bzip2 -dc"),
        ("xz", "xz-compressed", "xz -dc"),
        ("zstd", "zstd-compressed", "zstd -dc"),
        ("zip", "a zip archive", "unzip -p"),
        ("utf-16-le", _UTF16, "iconv -f UTF-16 -t UTF-8"),
        ("utf-16-be", _UTF16, "iconv -f UTF-16 -t UTF-8"),
    ],
)
def test_an_input_in_a_form_import_does_not_read_is_refused_naming_how_to_read_it(
    tmp_path: Path, form: str, what: str, convert: str
) -> None:
    """logrotate compresses with bzip2, xz or zstd when told to, and Windows PowerShell
    saves `heroku logs > demo.log` as UTF-16: read as text, each was stored as lines of
    binary bytes, unknown[unknown], that pushed the app's real lines out of its history."""
    import bz2
    import lzma
    import zipfile

    text = EXAMPLE.read_bytes()
    path = tmp_path / f"saved demo.{form}"  # a name to quote in the command
    if form == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("demo.log", text)
    else:
        path.write_bytes(
            {
                "bzip2": lambda: bz2.compress(text),
                "xz": lambda: lzma.compress(text),
                # A zstd frame holding its 9 bytes as they are (a raw block).
                "zstd": lambda: bytes.fromhex("28b52ffd2009490000") + text[:9],
                "utf-16-le": lambda: b"\xff\xfe" + text.decode().encode(form),
                "utf-16-be": lambda: b"\xfe\xff" + text.decode().encode(form),
            }[form]()
        )
    assert invoke("import", str(EXAMPLE), "-a", "demo")[0] == 0
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (
        1,
        f"Error: {path}: {what}, which herolog import does not read:"
        f" {convert} {shlex.quote(str(path))} | herolog import - -a demo\n",
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=path.read_bytes())
    assert (code, err) == (
        1,
        f"Error: standard input: {what}, which herolog import does not read:"
        f" ... | {convert} | herolog import - -a demo\n",
    )
    assert invoke("logs", "-a", "demo", "-n", "1500")[1] == text.decode()


def _numbered(count: int) -> bytes:
    """``count`` heroku lines of 40 bytes each, numbered from 0."""
    return b"".join(b"2024-03-05T09:14:07Z app[web.1]: %06d\n" % i for i in range(count))


def _gunzipped(data: bytes) -> bytes:
    """What zlib decompresses of one gzip member before it ends or is found damaged, a byte
    fed at a time (as gzip -dc prints it, but for its last partial window)."""
    import zlib

    decoder = zlib.decompressobj(wbits=31)
    out = []
    for i in range(len(data)):
        try:
            out.append(decoder.decompress(data[i : i + 1]))
        except zlib.error:
            break
    return b"".join(out)


def _damage_found_at(data: bytes) -> int:
    """The byte of ``data``, one damaged gzip member, at which zlib fed a byte at a time
    finds the damage."""
    import zlib

    decoder = zlib.decompressobj(wbits=31)
    for i in range(len(data)):
        try:
            decoder.decompress(data[i : i + 1])
        except zlib.error:
            return i
    raise AssertionError("not damaged")


def _messages(text: bytes) -> list[str]:
    """The messages of _numbered lines, the last perhaps cut off, as import stores them."""
    return [x.partition(b": ")[2].decode() for x in text.split(b"\n") if b": " in x]


def _said_cut_off(text: bytes) -> str:
    """What the import says of the piece of a header ``text`` ends in, if it does."""
    piece = text.rpartition(b"\n")[2]
    if not piece or b": " in piece:
        return ""
    return (
        f"The input ends in the middle of a line, as a capture cut off does: {piece.decode()!r}"
        " is left out.\n"
    )


@pytest.mark.parametrize("garbage", [b"junk", b"\x1f", b"\0\0junk", b"\x1fx"])
def test_a_gzip_input_with_trailing_garbage_stores_every_line_and_says_where_it_stopped(
    tmp_path: Path, garbage: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gzip -dc` prints all of such a file and warns of the rest ('trailing garbage
    ignored'), which a disk that filled while logrotate compressed, or a download with
    something after it, leaves: GzipFile.read raised BadGzipFile on it and every line it had
    decompressed in that read was lost (nothing stored of a file of one chunk)."""
    import gzip

    from herolog import importer

    monkeypatch.setattr(importer, "CHUNK_SIZE", 1 << 16)  # a sixteenth of the lines to cross
    CHUNK_SIZE = importer.CHUNK_SIZE
    assert invoke("store", "history", "200000")[0] == 0
    for count in (1, 3 * CHUNK_SIZE // 40):  # past the first chunk too
        text = _numbered(count)
        packed = gzip.compress(text, compresslevel=1)
        path = tmp_path / "demo.log.gz"
        path.write_bytes(packed + garbage)
        at = len(packed) + len(garbage) - len(garbage.lstrip(b"\0"))  # NULs are padding
        lines = "the line" if count == 1 else f"the {count:,} lines"
        for app, source in ((f"file{count}", str(path)), (f"stdin{count}", "-")):
            code, _, err = invoke(
                "import", source, "-a", app, input=path.read_bytes() if source == "-" else None
            )
            name = path if source == str(path) else "standard input"
            assert (code, err) == (
                1,
                f"Error: {name}: not gzip from byte {at} on, which was not read (gzip -dc"
                f" ignores such trailing garbage); {lines} before it {'was' if count == 1 else 'were'}"
                f" imported (the first {len(text)} bytes of the input decompressed), nothing"
                " after it\n",
            )
            assert _messages(text) == [x.split(": ")[1] for x in stored(app)]


def test_a_gzip_input_padded_with_nul_bytes_imports_as_gzip_reads_it(tmp_path: Path) -> None:
    """gzip -dc reads past NUL bytes after a member, between members too, and says nothing;
    an empty member is one too, and a gzip of an empty file holds no lines."""
    import gzip

    text = _numbered(4)
    path = tmp_path / "padded.log.gz"
    path.write_bytes(
        gzip.compress(text[:40])
        + b"\0" * 3
        + gzip.compress(b"")
        + gzip.compress(text[40:])
        + b"\0" * 100
    )
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (0, "Imported 4 lines into demo (heroku format).\n")
    assert _messages(text) == [x.split(": ")[1] for x in stored("demo")]
    path.write_bytes(gzip.compress(b""))
    code, _, err = invoke("import", str(path), "-a", "empty")
    assert (code, err) == (0, f"Nothing imported: {path} holds no log lines.\n")
    path.write_bytes(b"")
    assert invoke("import", str(path), "-a", "empty")[:2] == (0, "")


def test_a_cut_off_or_damaged_gzip_input_stores_every_line_that_decompressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip file cut off (copied while logrotate wrote it, a full disk) or damaged: the
    lines before the break are stored, as `zcat FILE | herolog import -` stores them, the
    piece of a line it ends in too, and the import stops saying where in the file. Before,
    what the last read had decompressed was lost: up to a chunk of lines."""
    import gzip

    from herolog import importer

    monkeypatch.setattr(importer, "CHUNK_SIZE", 1 << 16)
    CHUNK_SIZE = importer.CHUNK_SIZE
    assert invoke("store", "history", "200000")[0] == 0
    text = _numbered(3 * CHUNK_SIZE // 40)
    packed = gzip.compress(text, compresslevel=1)
    path = tmp_path / "cut.log.gz"
    cut = packed[: len(packed) * 3 // 4]
    path.write_bytes(cut)
    got = _gunzipped(cut)
    assert CHUNK_SIZE < len(got) < len(text)
    code, _, err = invoke("import", str(path), "-a", "cut")
    lines = len(_messages(got))
    assert (code, err) == (
        1,
        f"{_said_cut_off(got)}Error: {path}: the gzip data is cut off at byte {len(cut)}, before its end (gzip -dc:"
        f" unexpected end of file); the {lines:,} lines before it were imported (the first"
        f" {len(got)} bytes of the input decompressed), nothing after it\n",
    )
    assert [x.split(": ")[1] for x in stored("cut")] == _messages(got)
    # As the same bytes from zcat: the lines of a pipe that ends there.
    assert invoke("import", "-", "-a", "zcat", input=got)[0] == 0
    assert stored("zcat") == stored("cut")

    damaged = bytearray(packed)
    damaged[len(packed) // 2 : len(packed) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(damaged))
    got = _gunzipped(bytes(damaged))
    assert CHUNK_SIZE < len(got) < len(text)
    # The last bytes zlib gives before it finds the damage may be of the damage: as zcat's.
    assert invoke("import", "-", "-a", "zcat-damaged", input=got)[0] == 0
    lines = len(stored("zcat-damaged"))
    assert lines > CHUNK_SIZE // 40
    code, _, err = invoke("import", str(path), "-a", "damaged")
    assert code == 1
    assert re.fullmatch(
        re.escape(_said_cut_off(got)) + f"Error: {re.escape(str(path))}: damaged gzip data at byte"
        f" {_damage_found_at(bytes(damaged))}: [^;]+; the"
        f" {lines:,} lines before it were imported \\(the first {len(got)} bytes of the input"
        " decompressed\\), nothing after it\n",
        err,
    ), err
    assert stored("damaged") == stored("zcat-damaged")

    # A cut in a header: that piece is left out, and said, as of a capture cut off.
    path.write_bytes(gzip.compress(_numbered(2) + b"2024-03-05T09:1")[:-8])
    code, _, err = invoke("import", str(path), "-a", "header")
    assert code == 1
    assert err.startswith(
        "The input ends in the middle of a line, as a capture cut off does: '2024-03-05T09:1'"
        f" is left out.\nError: {path}: the gzip data is cut off at byte "
    ), err
    assert len(stored("header")) == 2


def test_a_gzip_input_whose_read_fails_stores_every_line_that_decompressed_before() -> None:
    """A read of a gzip input that fails (EIO, a failing disk) ends the import once the lines
    decompressed before it are stored: not those of the last read too."""
    import errno
    import gzip

    from herolog import importer

    text = _numbered(5_000)
    packed = gzip.compress(text, compresslevel=1)
    readable = len(packed) // 2

    class Failing(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            left = readable - self.tell()
            if left <= 0:
                raise OSError(errno.EIO, "Input/output error")
            return super().read(left if size is None or size < 0 else min(size, left))

    got = _gunzipped(packed[:readable])
    with open_store() as store:
        store.set_history(100_000)
    # The last whole line waits for the next, which may continue it, as in a plain input.
    lines = got.count(b"\n") - 1
    assert 0 < lines < 5_000
    with open_store() as store, pytest.raises(importer.ImportFailed) as failed:
        importer.import_stream(Failing(packed), store, "failing")
    assert str(failed.value) == (
        f"cannot read it: Input/output error; the {lines:,} lines before it were imported (the"
        f" first {lines * 40} bytes of the input decompressed), nothing after it"
    )
    with open_store() as store:
        kept = store.last(LineFilter(app="failing"), 5_000)[0]
    assert [x.message for x in kept] == _messages(got)[:lines]


@pytest.mark.parametrize("seed", range(3))
def test_a_gzip_input_cut_off_in_its_trailer_gives_every_byte_gzip_gives(
    tmp_path: Path, seed: int
) -> None:
    """A gzip file that lacks only its last 8 bytes (the CRC and the size) holds all of its
    data, and `gzip -dc` prints every byte of it: the import lost the last few, which zlib
    still held when the input ended just after a read had been given all it asked for (the
    1 MiB of a chunk, here). Whether zlib holds any depends on the data: it did for two of
    these three inputs with the zlib of 2026-12, and the test holds whatever it does."""
    import gzip
    import random

    from herolog.importer import CHUNK_SIZE, _Gunzip, _Rejoined

    text = random.Random(seed).randbytes(CHUNK_SIZE // 2) + b"a" * (CHUNK_SIZE // 2 + 2)
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(text)[:-8])
    zcat = subprocess.run(["gzip", "-dc", str(path)], capture_output=True)
    assert zcat.returncode == 1, zcat.stderr  # "unexpected end of file"
    assert zcat.stdout == text  # all of it: only the trailer is missing
    with path.open("rb") as raw:
        gunzip = _Gunzip(_Rejoined(b"", raw.read))
        got = b"".join(iter(lambda: gunzip.read(CHUNK_SIZE), b""))
    assert got == zcat.stdout
    assert gunzip.broken is not None
    assert "cut off" in str(gunzip.broken)


def test_logs_json_output_imports_back_with_every_field(tmp_path: Path) -> None:
    """herolog logs --json is the output that loses nothing of a line (its PRI, HOSTNAME,
    structured data, a message's own newlines): it imports back as it was printed, but for
    the id, the app and the time it was received, which are the new store's."""
    sd = b'[origin ip="10.0.0.1" ip="10.0.0.2"][x@1 k="a\\]b\\"c\\\\d"][origin software="s"]'
    body = frame(
        [
            b"<13>1 2024-03-05T09:14:07.1+05:45 myhost billing 42 INVOICE " + sd + b" paid\n",
            b"<190>1 2024-03-05T09:14:08.418233+00:00 host app web.1 - two\nlines \xc3\xa9\n",
            b"<13>Mar  5 09:14:07 host tag: bsd",
        ]
    )
    assert invoke("import", "-", "-a", "first", input=body)[0] == 0
    code, out, _ = invoke("logs", "-a", "first", "--json")
    assert code == 0
    path = tmp_path / "first.ndjson"
    path.write_text(out)
    code, _, err = invoke("import", str(path), "-a", "second")
    assert code == 0, err
    assert err == "Imported 3 lines into second (json format).\n"
    code, again, _ = invoke("logs", "-a", "second", "--json")
    assert code == 0

    def kept(output: str) -> list[dict[str, object]]:
        drop = ("id", "app", "received_at")
        return [
            {k: v for k, v in json.loads(x).items() if k not in drop} for x in output.splitlines()
        ]

    assert kept(again) == kept(out)
    assert [x["msgid"] for x in kept(again)] == ["INVOICE", None, None]
    assert invoke("logs", "-a", "second")[1] == invoke("logs", "-a", "first")[1]


def test_an_older_herolog_s_nil_hostname_imports_as_none(tmp_path: Path) -> None:
    """An older herolog printed a syslog sender's nil HOSTNAME as "hostname": "-"."""
    record = {
        "timestamp": "2024-03-05T09:14:07Z",
        "source": "billing",
        "dyno": "42",
        "message": "no host",
        "pri": 13,
        "hostname": "-",
        "structured_data": None,
    }
    path = tmp_path / "old.ndjson"
    path.write_text(json.dumps(record) + "\n")
    code, _, err = invoke("import", str(path), "-a", "old")
    assert code == 0, err
    code, out, _ = invoke("logs", "-a", "old", "--json")
    assert code == 0
    assert json.loads(out)["hostname"] is None


def test_logs_json_output_imports_back_with_the_attributes_of_its_lines(tmp_path: Path) -> None:
    """The drain URL's query parameters (?ddsource=heroku&env=prod) that lines came with were
    left out: a store moved with logs --json | import lost them."""
    line = LogLine("2024-03-05T09:14:07Z", "", "app", "web.1", "m", 190, "host", None)
    with open_store() as store:
        store.append(
            [
                Batch(
                    "first",
                    [line._replace(message="a"), line._replace(message="b")],
                    {"env": "prod"},
                ),
                Batch("first", [line._replace(message="c")]),
                Batch(
                    "first",
                    [line._replace(message="d")],
                    {"ddsource": "heroku", "\u00e9": "\u2713"},
                ),
            ]
        )
    out = invoke("logs", "-a", "first", "--json")[1]
    assert '"attributes":{"env":"prod"}' in out
    # A value that is not a string, which herolog never writes, is not an attribute.
    out += (
        "not json\n"
        '{"timestamp":"2024-03-05T09:14:07Z","source":"app","dyno":"web.1","message":"e",'
        '"attributes":{"n":1,"ok":"yes","bad":"\\ud800"}}\n'
    )
    code, _, err = invoke("import", "-", "-a", "second", input=out.encode())
    assert code == 0, err
    assert err.startswith("Imported 6 lines into second (json format).\n")
    again = [json.loads(x) for x in invoke("logs", "-a", "second", "--json")[1].splitlines()]
    assert [(x["message"], x["attributes"]) for x in again] == [
        ("a", {"env": "prod"}),
        ("b", {"env": "prod"}),
        ("c", {}),
        ("d", {"ddsource": "heroku", "\u00e9": "\u2713"}),
        ("not json", {}),
        ("e", {"ok": "yes", "bad": "\ufffd"}),
    ]


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_json_lines_that_are_not_logs_json_output_are_kept_whole(end: bytes) -> None:
    """Without the \\r of a \\r\\n line end, as lines of text are."""
    text = end.join(
        [
            b'{"level": "info", "msg": "an app\'s own JSON"}',
            b"[1, 2]",
            b'{"id": 1, "message": ',
            b"",
        ]
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert code == 0, err
    assert err.splitlines() == [
        "Imported 3 lines into demo (json format).",
        "All of them are stored as unknown[unknown], kept whole: not herolog logs --json output.",
    ]
    assert [x.split(": ", 1)[1] for x in stored("demo")] == [x.decode() for x in text.splitlines()]


def test_a_json_timestamp_with_a_space_for_its_t_imports_in_the_t_form() -> None:
    """RFC 3339 lets a space stand for the T (as PostgreSQL and SQLite write times): kept so,
    the heroku text header had a space in it, which no import, nor a syslog frame, takes."""
    text = (
        b'{"timestamp": "2024-03-05 09:14:07.5+01:00", "source": "app", "dyno": "web.1",'
        b' "message": "hi"}\n'
    )
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err) == (0, "Imported 1 line into demo (json format).\n")
    out = invoke("logs", "-a", "demo")[1]
    assert out == "2024-03-05T09:14:07.5+01:00 app[web.1]: hi\n"
    code, _, err = invoke("import", "-", "-a", "again", input=out.encode())
    assert (code, err) == (0, "Imported 1 line into again (heroku format).\n")
    assert stored("again") == ["2024-03-05T09:14:07.5+01:00 app[web.1]: hi"]


@pytest.mark.parametrize(
    "escaped",
    [b"\\ud800", b"\\udfff", b"\\ud83d x", b"\xed\xa0\x80"],  # lone surrogates; raw too
)
def test_a_lone_surrogate_in_json_imports_as_a_replacement_character(escaped: bytes) -> None:
    """JSON can write half a UTF-16 pair (\\ud800), which is no character and which UTF-8
    cannot store: it imports as U+FFFD, as invalid UTF-8 does in text, with the lines
    around it, where the store's insert raised UnicodeEncodeError and lost the chunk."""
    head = b'{"timestamp": "2024-03-05T09:14:07Z", "source": "app", "dyno": "web.1", '
    text = (
        head + b'"message": "before"}\n'
        + head + b'"message": "bad ' + escaped + b' end", "structured_data": {"x@1": {"k": "'
        + escaped + b'"}}}\n'
        + head + b'"message": "after"}\n'
    )  # fmt: skip
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err) == (0, "Imported 3 lines into demo (json format).\n")
    with open_store() as store:
        lines = store.last(LineFilter(app="demo"), 9)[0]
    rest = " x" if b" x" in escaped else ""
    assert [x.message for x in lines] == ["before", f"bad \ufffd{rest} end", "after"]
    assert lines[1].structured_data == f'[x@1 k="\ufffd{rest}"]'


def test_bytes_that_are_not_utf_8_in_json_import_as_replacement_characters() -> None:
    """A --json line with bytes that are not UTF-8 (a Latin-1 é, half a character, an
    overlong /) was stored whole as an unknown[unknown] line said to be no --json output,
    where the same bytes in any other format cost the line only those characters. Each
    becomes U+FFFD as decoding with "replace" makes it, half a UTF-16 pair as above, and
    the import says so as for text."""
    head = b'{"timestamp": "2024-03-05T09:14:07Z", "source": "app", "dyno": "web.1", '
    text = (
        head + b'"message": "before"}\n'
        + head + b'"message": "caf\xe9 \xe6\x97 \xc0\xaf \\ud800 \xed\xa0\x80"}\n'
        + head + b'"message": "after \xff"}\n'
    )  # fmt: skip
    code, _, err = invoke("import", "-", "-a", "demo", input=text)
    assert (code, err) == (
        0,
        "Imported 3 lines into demo (json format).\n"
        "2 lines of the input hold bytes that are not UTF-8, stored as U+FFFD (the first is"
        " line 2); an input in Latin-1 imports as it was with: ... | iconv -f latin1 -t utf-8"
        " | herolog import - -a demo\n",
    )
    assert stored("demo") == [
        "2024-03-05T09:14:07Z app[web.1]: before",
        "2024-03-05T09:14:07Z app[web.1]: caf\ufffd \ufffd \ufffd\ufffd \ufffd \ufffd",
        "2024-03-05T09:14:07Z app[web.1]: after \ufffd",
    ]


def test_format_can_be_forced(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("<190>1 2024-03-05T09:14:07Z host app web.1 - hi\n")
    invoke("import", str(path), "--format", "heroku", "-a", "forced")
    assert [x.split(": ", 1)[0].split(" ")[1] for x in stored("forced")] == ["unknown[unknown]"]


def test_import_says_when_history_drops_lines(tmp_path: Path) -> None:
    path = tmp_path / "many.txt"
    path.write_text("".join(f"2024-03-05T09:14:07Z app[web.1]: {i}\n" for i in range(1600)))
    code, _, err = invoke("import", str(path))
    assert code == 0
    assert err.splitlines()[1] == (
        "The store keeps the newest 1,500 lines per app: the first 100 of these are not kept;"
        " keep more with: herolog store history N"
    )
    assert len(stored()) == 1500


def test_import_says_when_it_pushes_an_apps_own_lines_out_of_its_history(tmp_path: Path) -> None:
    """An import into an app that has lines takes the place of its oldest once the two are
    more than the history, which it said only when the import alone was."""
    assert invoke("store", "history", "100")[0] == 0
    path = tmp_path / "sixty.txt"
    path.write_text("".join(f"2024-03-05T09:14:07Z app[web.1]: {i}\n" for i in range(60)))
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (0, "Imported 60 lines into demo (heroku format).\n")
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (
        0,
        "Imported 60 lines into demo (heroku format).\n"
        "The store keeps the newest 100 lines per app: the oldest 20 demo had made room for"
        " these; keep more with: herolog store history N\n",
    )
    path.write_text("".join(f"2024-03-05T09:14:07Z app[web.1]: {i}\n" for i in range(150)))
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (
        0,
        "Imported 150 lines into demo (heroku format).\n"
        "The store keeps the newest 100 lines per app: the first 50 of these are not kept, nor"
        " the 100 demo had; keep more with: herolog store history N\n",
    )
    assert stored("demo")[0].endswith(": 50")
    path.write_text("".join(f"2024-03-05T09:14:07Z app[web.1]: {i}\n" for i in range(100)))
    code, _, err = invoke("import", str(path), "-a", "exact")  # fills the history: all kept
    assert (code, err) == (0, "Imported 100 lines into exact (heroku format).\n")
    code, _, err = invoke("import", str(path), "-a", "exact")  # all kept, none of its own
    assert (code, err) == (
        0,
        "Imported 100 lines into exact (heroku format).\n"
        "The store keeps the newest 100 lines per app: the oldest 100 exact had made room for"
        " these; keep more with: herolog store history N\n",
    )


def test_what_the_history_drops_is_said_in_the_singular_for_one_line(tmp_path: Path) -> None:
    """A history of 1 line (store history 1) and imports of 1 and 2 lines: '1 line', 'the
    first of these is not kept', 'the line demo had', where each said '1 lines' or 'the
    first 1 of these are not kept'."""
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("2024-03-05T09:14:07Z app[web.1]: 1\n")
    two.write_text("2024-03-05T09:14:07Z app[web.1]: 1\n2024-03-05T09:14:08Z app[web.1]: 2\n")
    keep = "; keep more with: herolog store history N\n"
    assert invoke("store", "history", "1")[0] == 0
    assert invoke("import", str(one), "-a", "demo") == (
        0,
        "",
        "Imported 1 line into demo (heroku format).\n",
    )
    assert invoke("import", str(one), "-a", "demo")[2] == (
        "Imported 1 line into demo (heroku format).\n"
        f"The store keeps the newest 1 line per app: the oldest line demo had made room for it{keep}"
    )
    assert invoke("import", str(two), "-a", "demo")[2] == (
        "Imported 2 lines into demo (heroku format).\n"
        "The store keeps the newest 1 line per app: the first of these is not kept, nor the"
        f" line demo had{keep}"
    )
    assert invoke("store", "history", "2")[0] == 0
    assert invoke("import", str(two), "-a", "two")[0] == 0
    assert invoke("import", str(one), "-a", "two")[2] == (
        "Imported 1 line into two (heroku format).\n"
        f"The store keeps the newest 2 lines per app: the oldest line two had made room for it{keep}"
    )
    assert invoke("import", str(two), "-a", "two")[2] == (
        "Imported 2 lines into two (heroku format).\n"
        f"The store keeps the newest 2 lines per app: the oldest 2 two had made room for these{keep}"
    )
    three = tmp_path / "three.txt"
    three.write_text(two.read_text() + "2024-03-05T09:14:09Z app[web.1]: 3\n")
    assert invoke("import", str(three), "-a", "two")[2] == (
        "Imported 3 lines into two (heroku format).\n"
        "The store keeps the newest 2 lines per app: the first of these is not kept, nor the 2"
        f" two had{keep}"
    )


def test_missing_file_is_a_usage_error() -> None:
    code, _, err = invoke("import", "/nonexistent/file.log")
    assert code == 2
    assert "No such file or directory" in err


def test_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = invoke("import", str(tmp_path), "-a", "demo")
    assert code == 2
    assert err.endswith(f"Error: Invalid value for 'FILE|-': '{tmp_path}': Is a directory\n")
    with open_store() as store:
        assert store.apps() == []


@pytest.mark.subprocess
def test_large_import_in_chunks_as_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text(
        "".join(
            f"2024-03-05T09:14:07.{i % 1000000:06d}+00:00 app[web.1]: line {i} {'x' * 100}\n"
            for i in range(30000)
        )
    )
    assert path.stat().st_size > 3 << 20  # several chunks
    subprocess.run(
        [sys.executable, "-m", "herolog", "store", "history", "100000"],
        check=True,
        env=herolog_env(),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "import", str(path), "-a", "big"],
        capture_output=True,
        text=True,
        env=herolog_env(),
        check=True,
    )
    assert "Imported 30,000 lines into big" in proc.stderr
    assert stored("big")[-1].endswith("line 29999 " + "x" * 100)


@pytest.mark.subprocess
def test_standard_input_is_named_as_such_when_an_import_from_it_fails() -> None:
    """Python names it <stdin>, which the import printed as if it were a file's name, where
    an empty standard input is said to be standard input."""
    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "import", "-", "-a", "demo"],
        input=frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - one\n"]) + b"BAD",
        capture_output=True,
        env=herolog_env(),
    )
    assert (proc.returncode, proc.stderr.decode()) == (
        1,
        "Error: standard input: frame 2 at byte 52: expected an octet count, found 'BAD'; the"
        " line before it was imported (the input's first 52 bytes), nothing after it\n",
    )


def test_a_file_whose_read_fails_is_one_line_in_the_system_s_words(herolog_home: Path) -> None:
    """A read that fails, as on a failing disk (here /proc/self/mem, whose first page no
    process maps: EIO), is said as the system says it, without Python's [Errno N]."""
    code, out, err = invoke("import", "/proc/self/mem", "-a", "demo")
    assert (code, out) == (1, "")
    assert err == (
        "Error: /proc/self/mem: cannot read it: Input/output error; the 0 lines before it were"
        " imported, nothing after it\n"
    )


def test_the_progress_bar_shows_a_file_name_as_text(tmp_path: Path, herolog_home: Path) -> None:
    """On a terminal, a big import shows a progress bar naming the file; brackets in the
    name are text, not rich markup (a closing tag that matches nothing would raise)."""
    import pty

    (tmp_path / "a[").mkdir()
    path = tmp_path / "a[/x][bold]b.log"  # a directory "a[", holding "x][bold]b.log"
    line = "2024-03-05T09:14:07Z app[web.1]: " + "x" * 200 + "\n"
    count = 5 * 2**20 // len(line)  # over the 4 MiB past which the bar is shown
    path.write_text(line * count)
    pid, fd = pty.fork()
    if pid == 0:  # the child: stderr is the terminal
        os.execve(
            sys.executable,
            [sys.executable, "-m", "herolog", "import", str(path), "-a", "big"],
            herolog_env(COLUMNS="200"),
        )
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child has closed its terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "Traceback" not in text
    assert f"Importing {path}" in text
    assert f"Imported {count:,} lines into big" in text


def test_import_stream_reports_the_bytes_read_to_its_progress_callback(tmp_path: Path) -> None:
    from herolog.importer import import_stream

    path = tmp_path / "p.txt"
    path.write_text("".join(f"2024-03-05T09:14:07Z app[web.1]: {i}\n" for i in range(100)))
    seen: list[int] = []
    with path.open("rb") as stream, open_store() as store:
        result = import_stream(stream, store, "demo", progress=seen.append)
    assert seen[-1] == path.stat().st_size == result.bytes_read


def test_an_app_name_the_store_refuses_is_a_usage_error(herolog_home: Path) -> None:
    code, _, err = invoke("import", str(EXAMPLE), "-a", "my app")
    assert code == 2
    assert err.splitlines()[-1] == (
        "Error: Invalid value for '-a' / '--app': 'my app' is not an app name:"
        " app names are letters, digits, '.', '_' and '-' (100 at most), starting with a"
        " letter or digit, without '..'"
    )
    assert not (herolog_home / "logs.db").exists()


@pytest.mark.parametrize("name", [".hidden", "_x", "a..b"])
def test_an_app_name_refused_for_its_first_character_or_two_dots_says_why(
    herolog_home: Path, name: str
) -> None:
    """Each was refused as not 'letters, digits, '.', '_' and '-'', which it is."""
    code, _, err = invoke("import", str(EXAMPLE), "-a", name)
    assert code == 2
    assert err.splitlines()[-1] == (
        f"Error: Invalid value for '-a' / '--app': {name!r} is not an app name: app names are letters,"
        " digits, '.', '_' and '-' (100 at most), starting with a letter or digit, without '..'"
    )


def test_a_store_that_fails_mid_import_says_how_many_lines_it_took(
    herolog_home: Path, tmp_path: Path
) -> None:
    """A disk that fills up mid-import (a file-size limit on the process here): the lines
    committed before are said, so that the user knows what a second import would repeat."""
    import re
    import resource

    assert invoke("store", "history", "1000000")[0] == 0
    path = tmp_path / "many.log"
    path.write_text(
        "".join(f"2024-03-05T09:14:07Z app[web.1]: line {i} {'x' * 100}\n" for i in range(40_000))
    )

    def small_files() -> None:
        limit = (herolog_home / "logs.db").stat().st_size + (4 << 20)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "herolog", "import", str(path), "-a", "big"],
        capture_output=True,
        text=True,
        env=herolog_env(),
        preexec_fn=small_files,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    m = re.fullmatch(
        rf"Error: cannot use the store {re.escape(str(herolog_home / 'logs.db'))}: (.+);"
        r" the ([\d,]+) lines before it"
        r" were imported \(the input's first (\d+) bytes\), nothing after it\n",
        proc.stderr,
    )
    assert m, proc.stderr
    took = int(m.group(2).replace(",", ""))
    assert 0 < took < 40_000
    assert len(stored("big")) == took
    # Importing what follows the offset the message names stores each line once.
    with path.open("rb") as rest:
        rest.seek(int(m.group(3)))
        subprocess.run(
            [sys.executable, "-m", "herolog", "import", "-", "-a", "big"],
            stdin=rest,
            capture_output=True,
            env=herolog_env(),
            timeout=120,
            check=True,
        )
    assert [x.rsplit(" ", 2)[1] for x in stored("big")] == [str(i) for i in range(40_000)]


RESUMABLE: dict[str, bytes] = {
    "heroku": b"\xef\xbb\xbf"
    + b"".join(
        b"2024-03-05T09:14:%02dZ app[web.1]: line %d\r\n" % (i % 60, i)
        + (b"Traceback:\n  File x\n\nboom\n" if i % 7 == 0 else b"")
        + (b"\nno header %d\n\n" % i if i % 11 == 0 else b"")
        for i in range(60)
    ),
    "syslog": b"".join(
        b"<190>1 2024-03-05T09:14:07Z host app web.1 - line %d\r\n" % i
        + (b"\nnot syslog %d\n" % i if i % 9 == 0 else b"")
        for i in range(60)
    )
    + b"<190>1 2024-03-05T09:14:07Z host app web.1 - no newline",
    "logplex": b"".join(
        frame([b"<190>1 2024-03-05T09:14:07Z host app web.1 - line %d\r\n" % i])
        + (b"\n \n" if i % 5 == 0 else b"")
        for i in range(60)
    ),
    "json": b"".join(
        b'{"timestamp": "2024-03-05T09:14:07Z", "source": "app", "dyno": "web.1",'
        b' "message": "line %d\\nof two", "pri": 190}\r\n'
        % i
        + (b"\nnot json %d\n" % i if i % 9 == 0 else b"")
        for i in range(60)
    ),
}


@pytest.mark.parametrize("fmt", RESUMABLE)
def test_a_failed_import_names_the_offset_to_import_the_rest_from(
    fmt: Format, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever commit fails, the input from the offset the failure gives holds exactly the
    lines that were not stored: multi-line messages, blank lines and a BOM included."""
    import sqlite3

    from herolog import importer

    monkeypatch.setattr(importer, "CHUNK_SIZE", 50)  # lines and frames across chunks
    data = RESUMABLE[fmt]
    with open_store() as store:
        whole = importer.import_stream(io.BytesIO(data), store, "whole", fmt)

        class FailingStore:
            commits = 0

            def append(self, batches: list[Batch], received: Received | None = None) -> list[int]:
                if self.commits == fail_at:
                    raise sqlite3.OperationalError("database or disk is full")
                self.commits += 1
                return store.append(batches, received)

        def kept(app: str) -> list[tuple[str, str, str]]:
            return [(x.source, x.dyno, x.message) for x in store.last(LineFilter(app=app), 999)[0]]

        for fail_at in itertools.count():
            app = f"resumed{fail_at}"
            try:
                importer.import_stream(io.BytesIO(data), cast(Store, FailingStore()), app, fmt)
                break  # fewer commits than fail_at
            except importer.ImportFailed as failed:
                done, message = failed.result, str(failed)
            if done.lines:
                assert f"(the input's first {done.bytes_stored} bytes)" in message
            rest = importer.import_stream(io.BytesIO(data[done.bytes_stored :]), store, app, fmt)
            assert done.lines + rest.lines == whole.lines
            assert kept(app) == kept("whole"), fail_at
        assert fail_at > 30


def test_an_import_with_herolog_url_set_says_where_the_lines_went(herolog_home: Path) -> None:
    """logs, drain and run follow $HEROLOG_URL to a server; import writes the local store,
    so the next `herolog logs` would not show what was just imported without this."""
    result = CliRunner().invoke(
        cli, ["import", str(EXAMPLE), "-a", "demo"], env={"HEROLOG_URL": "http://127.0.0.1:9"}
    )
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1] == (
        f"They are in the local store ({herolog_home / 'logs.db'}): herolog import does not"
        " send lines to $HEROLOG_URL; herolog logs reads them with HEROLOG_URL unset."
    )
    assert len(stored("demo")) > 0


def ctrl_c(proc: subprocess.Popen[bytes]) -> bytes:
    """Ctrl-C's SIGINT to ``proc``, which must die of it; what it said on stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGINT, err
    return err


def importing(
    *args: str, stdin: int | IO[bytes] = subprocess.PIPE, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``herolog import ARGS`` running in a process of its own, its stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "herolog", "import", *args],
        stdin=stdin,
        stderr=subprocess.PIPE,
        env=env or herolog_env(),
    )


def test_ctrl_c_says_what_was_imported_so_the_rest_can_follow(herolog_home: Path) -> None:
    """A Ctrl-C stops an import as a failure does: the message says how far it got, and
    importing the rest from there stores every line once."""
    with open_store() as store:
        store.set_history(100_000)
    lines = [
        f"2024-03-05T09:14:07.{i:06d}+00:00 app[web.1]: line {i} {'x' * 60}\n"
        for i in range(20_000)
    ]
    data = "".join(lines).encode()
    assert len(data) > 1 << 20  # more than one chunk: the second read waits on the pipe
    proc = importing("-", "-a", "demo", "--format", "heroku")
    assert proc.stdin is not None
    proc.stdin.write(data[: (1 << 20) + 5000])
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not stored("demo"):  # the first chunk is committed; the import waits for more
        assert time.monotonic() < deadline
        time.sleep(0.02)
    err = ctrl_c(proc)
    proc.stdin.close()
    found = re.search(
        rb"the ([\d,]+) lines before it were imported \(the input's first (\d+) bytes\)", err
    )
    assert found is not None, err
    count, offset = int(found[1].replace(b",", b"")), int(found[2])
    assert count == len(stored("demo")) > 0
    code, _, err_text = invoke(
        "import", "-", "-a", "demo", "--format", "heroku", input=data[offset:]
    )
    assert code == 0, err_text
    assert stored("demo") == [x.removesuffix("\n") for x in lines]


def test_ctrl_c_while_the_first_chunk_is_read_says_nothing_was_imported(
    herolog_home: Path,
) -> None:
    """`producer | herolog import - -a demo`, stopped with Ctrl-C before its first line was
    whole: herolog died without a word, where a Ctrl-C later says what went in. Nothing was
    stored: said so, the input is imported again whole."""
    import fcntl
    import termios

    proc = importing("-", "-a", "demo")
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"2024-03-05T09:14:07+00:00 app[web.1]: the first line, not ended")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        waiting = bytearray(4)
        # Read from the pipe: herolog is in its first read, waiting for the rest of the line.
        while fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, waiting) or any(waiting):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        err = ctrl_c(proc)
    finally:
        proc.kill()
        proc.communicate()
    assert err == (
        b"standard input: interrupted; the 0 lines before it were imported, nothing after it\n"
    )
    assert not (herolog_home / "logs.db").exists() or stored("demo") == []


@pytest.mark.subprocess
def test_ctrl_c_while_another_process_writes_to_the_store_ends_the_import_at_once(
    herolog_home: Path,
) -> None:
    """Another process holding the store's write lock (a second import, a store forget, the
    sqlite3 shell's BEGIN IMMEDIATE): SQLite waits for it in C, where Python runs no signal
    handler, so a Ctrl-C waited up to its 30 s busy timeout, and the import then failed with
    'database is locked', exit status 1. It ends at once as any Ctrl-C does, saying what
    was stored, and the rest imports from the offset it gives. (The busy timeout made an
    hour: the old wait would outlast the test's.)"""
    import sqlite3

    lines = [b"2024-03-05T09:14:07.%06d+00:00 app[web.1]: line %d\n" % (i, i) for i in range(4)]
    env = constants_env({"herolog.store.BUSY_TIMEOUT_S": 3600.0})
    proc = importing("-", "-a", "demo", "--format", "heroku", env=env)
    assert proc.stdin is not None
    other = None
    try:
        proc.stdin.write(b"".join(lines[:2]))
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while len(stored("demo")) < 2:  # the second once the input has gone quiet
            assert time.monotonic() < deadline
            time.sleep(0.02)
        other = sqlite3.connect(herolog_home / "logs.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        proc.stdin.write(b"".join(lines[2:]))
        proc.stdin.flush()
        until_waiting_for_the_write_lock(proc.pid)
        err = ctrl_c(proc)
    finally:
        if other is not None:
            other.close()
        proc.kill()
        proc.communicate()
    offset = len(b"".join(lines[:2]))
    assert err == (
        b"standard input: interrupted; the 2 lines before it were imported (the input's first"
        b" %d bytes), nothing after it\n" % offset
    )
    assert invoke("import", "-", "-a", "demo", input=b"".join(lines)[offset:])[0] == 0
    assert stored("demo") == [x.decode().removesuffix("\n") for x in lines]


@pytest.mark.subprocess
def test_an_import_waiting_for_another_process_s_write_lock_says_so_once(
    herolog_home: Path, tmp_path: Path
) -> None:
    """Another process holding the store's write lock had the import sit silent up to 30 s
    (then fail), looking stuck: it says what it waits for, once, and what a Ctrl-C does;
    the lock let go, every line is imported once."""

    lines = [b"2024-03-05T09:14:07.%06d+00:00 app[web.1]: line %d\n" % (i, i) for i in range(3)]
    saved = tmp_path / "demo.log"
    saved.write_bytes(b"".join(lines))
    open_store().close()
    path = herolog_home / "logs.db"
    env = constants_env({"herolog.store.BUSY_TIMEOUT_S": 3600.0})
    with write_lock_held(path) as other:
        proc = importing(str(saved), "-a", "demo", stdin=subprocess.DEVNULL, env=env)
        try:
            assert proc.stderr is not None
            assert (
                line_within(proc.stderr)
                == (
                    f"Another process holds the store's write lock ({path}): waiting up to"
                    " 3600 s for it; Ctrl-C stops the import.\n"
                ).encode()
            )
            other.execute("COMMIT")
            _, err = proc.communicate(timeout=30)
        finally:
            ended(proc)
    assert (proc.returncode, err) == (0, b"Imported 3 lines into demo (heroku format).\n")
    assert stored("demo") == [x.decode().removesuffix("\n") for x in lines]


class _Pipe:
    """A real pipe that a thread of the test writes while import_stream reads it."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()
        self.stream = os.fdopen(read_end, "rb")
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def feed(self, script: Callable[[int], None]) -> None:
        """Run ``script(write_end)`` in a thread, closing the pipe after it."""

        def run() -> None:
            try:
                script(self._write_end)
            except BaseException as error:  # said by the test's thread, after the import
                self.failure = error
            finally:
                os.close(self._write_end)

        self._thread = threading.Thread(target=run)
        self._thread.start()

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(timeout=60)
        self.stream.close()
        if self.failure is not None:
            raise self.failure


def _wait_for(app: str, count: int, seconds: float = 30.0) -> list[str]:
    """The app's messages once it has ``count``; AssertionError if that takes ``seconds``."""
    deadline = time.monotonic() + seconds
    while len(found := messages(app)) < count:
        assert time.monotonic() < deadline, f"{app} has {found} after {seconds} s"
        time.sleep(0.02)
    return found


def _import_written(*pieces: bytes | float, fmt: Format | None = None) -> ImportResult:
    """import_stream of a real pipe that a thread writes ``pieces`` to, pausing as long as a
    number among them says."""
    from herolog import importer

    pipe = _Pipe()

    def write(out: int) -> None:
        for piece in pieces:
            if isinstance(piece, float):
                time.sleep(piece)
            else:
                os.write(out, piece)

    pipe.feed(write)
    with open_store() as store:
        result = importer.import_stream(pipe.stream, store, "live", fmt)
    pipe.join()
    return result


@pytest.mark.parametrize("fmt", ["heroku", "syslog", "json"])
def test_lines_from_a_pipe_are_stored_as_they_arrive(
    fmt: Format, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`heroku logs --tail | herolog import -`: each line is in the store while the pipe is
    still open, not once a MiB has come or the writer has stopped. A heroku message is
    stored once the next line shows it whole, or once the input has been quiet a while."""
    from herolog import importer

    monkeypatch.setattr(importer, "QUIET_S", 0.2)
    pipe = _Pipe()
    seen: list[list[str]] = []

    def tail(out: int) -> None:
        os.write(out, _a_line(fmt, 1, b"one") + _a_line(fmt, 2, b"two"))
        seen.append(_wait_for("live", 2))
        os.write(out, _a_line(fmt, 3, b"three"))
        seen.append(_wait_for("live", 3))

    pipe.feed(tail)
    with open_store() as store:
        result = importer.import_stream(pipe.stream, store, "live", fmt)
    pipe.join()
    assert seen == [["one", "two"], ["one", "two", "three"]]
    assert (result.lines, result.format) == (3, fmt)


@pytest.mark.subprocess
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_pipe_left_non_blocking_is_read_to_its_end_not_to_its_first_pause(
    compressed: bool,
) -> None:
    """A standard input left non-blocking (O_NONBLOCK, by the program that started herolog,
    or on a terminal, as node leaves one) reads nothing while its writer has nothing yet,
    as at its end: the import ended at the writer's first pause, exit status 0, and the
    writer's next lines met a broken pipe; a gzip input was a traceback. (The waits for a
    pipe to go quiet made none, so that the pause is all the writer's.)"""
    import fcntl
    import gzip
    import termios

    lines = [b"2024-03-05T09:14:07Z app[web.1]: line %d\n" % i for i in range(6)]
    parts = [b"".join(lines[:3]), b"".join(lines[3:])]
    if compressed:
        parts = [gzip.compress(x) for x in parts]
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    env = constants_env({"herolog.importer.QUIET_S": 0.0, "herolog.importer.GATHER_S": 0.0})
    proc = importing("-", "-a", "demo", stdin=read_end, env=env)
    os.close(read_end)
    try:
        os.write(write_end, parts[0])
        deadline = time.monotonic() + 30
        waiting = bytearray(4)
        wchan = Path(f"/proc/{proc.pid}/wchan")
        # Until it has read all of it and waits for more, or has ended.
        while proc.poll() is None and (
            fcntl.ioctl(write_end, termios.FIONREAD, waiting)
            or any(waiting)
            or not re.search("select|poll", wchan.read_text())
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with contextlib.suppress(BrokenPipeError):
            os.write(write_end, parts[1])
    finally:
        os.close(write_end)
        _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (0, b"Imported 6 lines into demo (heroku format).\n")
    assert [x.split(": ")[1] for x in stored("demo")] == [f"line {i}" for i in range(6)]


@pytest.mark.subprocess
@pytest.mark.parametrize("blocking", [False, True], ids=["non-blocking", "blocking"])
@pytest.mark.parametrize("apart", [True, False], ids=["typed-apart", "pasted-together"])
def test_a_terminal_s_ctrl_d_ends_the_import_at_once(
    herolog_home: Path, blocking: bool, apart: bool
) -> None:
    """A terminal's end of input (Ctrl-D) is read once. Left non-blocking (as node leaves
    one), the terminal reads nothing also while nothing has been typed: the import took a
    Ctrl-D typed while it stored the line before for that, and waited for more until a second
    Ctrl-D; and one read in the wait for more of a chunk (pasted with the line before it)
    was missed on any terminal. (The import is held in its first commit by the store's write
    lock, taken here, while the Ctrl-D is typed.)"""
    import pty
    import sqlite3

    open_store().close()
    controller, terminal = pty.openpty()
    os.set_blocking(terminal, blocking)
    other = sqlite3.connect(herolog_home / "logs.db", isolation_level=None)
    proc = importing(
        "-", "-a", "demo", stdin=terminal, env=constants_env({"herolog.importer.QUIET_S": 0.0})
    )
    try:
        typed = b"2024-03-05T09:14:07Z app[web.1]: typed\n"
        if apart:
            other.execute("BEGIN IMMEDIATE")
            os.write(controller, typed)
            until_waiting_for_the_write_lock(proc.pid)  # with the line read
            os.write(controller, b"\x04")  # Ctrl-D
            other.rollback()
        else:
            os.write(controller, typed + b"\x04")
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.write(controller, b"\x04")  # the second Ctrl-D it waited for
            proc.communicate(timeout=30)
            pytest.fail("one Ctrl-D did not end the import: it took a second")
    finally:
        other.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(terminal)
        os.close(controller)
    assert (proc.returncode, err) == (0, b"Imported 1 line into demo (heroku format).\n")
    assert [x.split(": ")[1] for x in stored("demo")] == ["typed"]


@pytest.mark.subprocess
@pytest.mark.parametrize("written_again", [0, 30_000], ids=["emptied", "written-again"])
def test_a_file_that_shrinks_while_it_is_imported_stops_the_import(
    herolog_home: Path, tmp_path: Path, written_again: int
) -> None:
    """logrotate's copytruncate empties a log while it may be being imported: the import
    ended at the next read, exit status 0, as if the file had ended there (its last line
    said to be a capture cut off), or, the application having written past where it was,
    read on from the middle of a new line, stored joined to an old one's start. It stops
    as a read error does, saying so, with the lines read before it stored. (The import is
    held between its first chunk and its second by the store's write lock, taken here.)"""
    import sqlite3

    from herolog.importer import CHUNK_SIZE

    with open_store() as store:
        store.set_history(100_000)
    line = b"2024-03-05T09:14:07Z app[web.1]: line %06d\n"
    path = tmp_path / "app.log"
    path.write_bytes(b"".join(line % i for i in range(3 * CHUNK_SIZE // len(line % 0))))
    size = path.stat().st_size
    other = sqlite3.connect(herolog_home / "logs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    proc = importing(str(path), "-a", "demo", stdin=subprocess.DEVNULL)
    try:
        until_waiting_for_the_write_lock(proc.pid)  # with its first chunk read
        with path.open("r+b") as log:
            log.truncate(0)
        with path.open("ab") as log:
            log.write(
                b"".join(
                    b"2024-03-05T09:15:00Z app[web.1]: new %06d\n" % i for i in range(written_again)
                )
            )
        other.rollback()
        _, err = proc.communicate(timeout=30)
    finally:
        other.close()
        proc.kill()
        proc.communicate()
    kept = stored("demo")
    first = len(line % 0) * len(kept)
    assert (proc.returncode, err.decode()) == (
        1,
        f"Error: {path}: cannot read it: the file shrank from {size} to {path.stat().st_size}"
        " bytes while it was read, as logrotate's copytruncate empties a log it rotates; the"
        f" {len(kept):,} lines before it were imported (the input's first {first} bytes),"
        " nothing after it\n",
    )
    assert first <= CHUNK_SIZE
    assert kept == [(line % i).decode().removesuffix("\n") for i in range(len(kept))]


_BUSY_TAIL = """
import os, sys, time
written = 0
while not os.path.exists(sys.argv[1]) and written < int(sys.argv[2]):
    written += os.write(1, b"2024-03-05T09:14:07Z app[web.1]: %-60d\\n" % written)
    time.sleep(0.0002)
sys.exit(0 if os.path.exists(sys.argv[1]) else 1)
"""


@pytest.mark.subprocess
def test_lines_from_a_pipe_that_never_pauses_are_stored_before_a_mib_has_come(
    tmp_path: Path,
) -> None:
    """The tail of a busy app, thousands of lines a second: no pause as long as a read
    gathers for (GATHER_S) comes. Its lines were stored only once a MiB had come (ten
    thousand lines, seconds), and a Ctrl-C before that lost them all."""
    from herolog.importer import CHUNK_SIZE

    seen = tmp_path / "seen"
    tail = subprocess.Popen(
        [sys.executable, "-c", _BUSY_TAIL, str(seen), str(CHUNK_SIZE)], stdout=subprocess.PIPE
    )
    assert tail.stdout is not None
    proc = importing("-", "-a", "live", stdin=tail.stdout)
    tail.stdout.close()
    try:
        _wait_for("live", 1, seconds=120)
        seen.touch()
        assert tail.wait(timeout=30) == 0, "nothing was stored before a MiB had come"
        assert proc.wait(timeout=30) == 0
    finally:
        tail.kill()
        proc.kill()
        proc.communicate()


def test_a_message_from_a_pipe_takes_the_lines_that_continue_it_before_the_input_goes_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A traceback's lines come in writes of their own: the message waits for them while the
    input is not quiet (QUIET_S), as Vector's multiline timeout does, and is stored whole."""
    from herolog import importer

    monkeypatch.setattr(importer, "QUIET_S", 60.0)
    _import_written(
        b"2024-03-05T09:14:07Z app[web.1]: Traceback (most recent call last):\n",
        0.2,  # a pause longer than a read gathers for (GATHER_S)
        b'  File "app.py", line 1\n',
        0.2,
        b"2024-03-05T09:14:08Z app[web.1]: next\n",
        fmt="heroku",
    )
    assert messages("live") == [
        'Traceback (most recent call last):\n  File "app.py", line 1',
        "next",
    ]


def test_a_heroku_line_without_a_header_from_a_pipe_is_counted_as_unknown_once_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line without a header, kept whole as unknown[unknown], waits as a message does for
    a line that may continue it; stored because the input went quiet, it is counted among
    the lines kept whole, as it is when the next line stores it."""
    from herolog import importer

    monkeypatch.setattr(importer, "QUIET_S", 0.2)
    pipe = _Pipe()
    seen: list[list[str]] = []

    def tail(out: int) -> None:
        os.write(out, b"no header here\n")
        seen.append(_wait_for("live", 1))
        os.write(out, _a_line("heroku", 2, b"two"))
        seen.append(_wait_for("live", 2))

    pipe.feed(tail)
    with open_store() as store:
        result = importer.import_stream(pipe.stream, store, "live", "heroku")
    pipe.join()
    assert seen == [["no header here"], ["no header here", "two"]]
    assert (result.lines, result.unknown, result.first_unknown) == (2, 1, 1)


def test_a_syslog_message_from_a_pipe_is_stored_once_quiet_and_a_line_after_keeps_its_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A newline-framed message waits for the line after it, which may continue it, until
    the input goes quiet; a line that comes after that still takes its header, as serve's
    syslog port gives it one however late it comes."""
    from herolog import importer

    monkeypatch.setattr(importer, "QUIET_S", 0.2)
    pipe = _Pipe()
    seen: list[list[str]] = []

    def tail(out: int) -> None:
        os.write(out, b"<11>1 2024-03-05T09:14:07Z vm worker 12 - - Traceback:\n")
        seen.append(_wait_for("live", 1))
        os.write(out, b"ValueError: bad\n")
        seen.append(_wait_for("live", 2))

    pipe.feed(tail)
    with open_store() as store:
        result = importer.import_stream(pipe.stream, store, "live", "syslog")
    pipe.join()
    assert seen == [["Traceback:"], ["Traceback:", "ValueError: bad"]]
    assert (result.lines, result.unknown) == (2, 0)
    with open_store() as store:
        lines = store.last(LineFilter(app="live"), 9)[0]
    assert {(x.timestamp, x.source, x.dyno, x.pri) for x in lines} == {
        ("2024-03-05T09:14:07Z", "worker", "12", 11)
    }


def test_the_format_of_a_pipe_is_told_from_a_whole_first_line() -> None:
    """A writer that sends its first line in pieces: the format is not told from the first
    few bytes (``<4`` is no syslog priority yet)."""
    result = _import_written(b"<4", 0.2, b"0>1 2024-03-05T09:14:07Z host app web.1 - one\n")
    assert (result.format, messages("live")) == ("syslog", ["one"])


def test_gzip_members_from_a_pipe_join_when_the_next_comes_cut_in_its_magic() -> None:
    """`cat a.gz b.gz |`, the pipe giving the second member's first byte alone: the member
    is read once the rest of its magic comes, not taken for bytes after the gzip data."""
    import gzip

    one = gzip.compress(b"2024-03-05T09:14:07Z app[web.1]: one\n")
    two = gzip.compress(b"2024-03-05T09:14:08Z app[web.1]: two\n")
    result = _import_written(one + two[:1], 0.2, two[1:])
    assert (result.compressed, result.lines) == (True, 2)
    assert messages("live") == ["one", "two"]


def test_syslog_ending_with_nuls_from_a_pipe_keeps_a_message_sent_in_pieces() -> None:
    """`nc -l 5140 | herolog import -` of Python's SysLogHandler over TCP: a traceback longer
    than a TCP segment comes in pieces. Its first line came alone, the NUL that ends the
    message not yet: the messages were taken to end with newlines, the traceback's lines
    stored as unknown[unknown] lines, where the same input from a file imports whole."""
    result = _import_written(
        b"<11>1 2024-03-05T09:14:07Z host app web.1 - Traceback (most recent call",
        b" last):\n",
        0.2,
        b'  File "app.py", line 1\0<11>1 2024-03-05T09:14:08Z host app web.1 - two\0',
    )
    assert (result.format, result.unknown) == ("syslog", 0)
    assert messages("live") == [
        'Traceback (most recent call last):\n  File "app.py", line 1',
        "two",
    ]


@pytest.mark.subprocess
def test_a_first_message_ending_with_a_nul_from_a_pipe_is_stored_before_the_next_comes() -> None:
    """A NUL ends the first message of `nc -l 5140 | herolog import -`, and tells the
    format: the message is stored then, not once another one has come."""
    proc = importing("-", "-a", "live")
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"<11>1 2024-03-05T09:14:07Z host app web.1 - one\0")
        proc.stdin.flush()
        assert _wait_for("live", 1) == ["one"]
        _, err = proc.communicate(b"<11>1 2024-03-05T09:14:08Z host app web.1 - two\0", 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err) == (0, b"Imported 2 lines into live (syslog format).\n")
    assert messages("live") == ["one", "two"]


def test_the_format_of_a_pipe_is_not_told_from_blank_lines_before_its_first_line() -> None:
    """A writer that sends a blank line first: the format was told from it alone (heroku,
    as nothing else matches), and the syslog lines after it were stored as unknown[unknown]
    lines, where the same input from a file is syslog."""
    result = _import_written(b"\r\n", 0.2, b"<40>1 2024-03-05T09:14:07Z host app web.1 - one\n")
    assert (result.format, result.unknown, messages("live")) == ("syslog", 0, ["one"])


def test_a_pipe_on_a_descriptor_over_selects_limit_is_read() -> None:
    """select() takes no descriptor over 1023: an import in a process with that many open
    (a parent that leaks them) ended in a traceback (ValueError: filedescriptor out of range
    in select())."""
    import resource

    from herolog import importer

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = 1500
    if soft <= high:
        if hard != resource.RLIM_INFINITY and hard <= high:
            pytest.fail(
                f"needs a hard limit on open files over {high} (it is {hard}): ulimit -Hn 4096"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (high + 1, hard))
    pipe = _Pipe()

    def one(out: int) -> None:
        os.write(out, _a_line("heroku", 1, b"one"))

    try:
        os.dup2(pipe.stream.fileno(), high)
        pipe.stream.close()
        pipe.stream = os.fdopen(high, "rb")
        pipe.feed(one)
        with open_store() as store:
            result = importer.import_stream(pipe.stream, store, "live")
        pipe.join()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (result.lines, messages("live")) == (1, ["one"])


@pytest.mark.subprocess
def test_ctrl_c_ends_an_import_from_a_live_pipe_with_its_lines_stored() -> None:
    """The way a `heroku logs --tail | herolog import -` ends: what had come is stored,
    and the message says how much, exit status 130."""
    proc = importing("-", "-a", "live")
    assert proc.stdin is not None
    try:
        lines = b"".join(_a_line("syslog", i, b"line %d" % i) for i in range(3))
        proc.stdin.write(lines)
        proc.stdin.flush()
        assert _wait_for("live", 3) == ["line 0", "line 1", "line 2"]
        err = ctrl_c(proc)
    finally:
        proc.kill()
        proc.communicate()
    assert err.decode() == (
        "standard input: interrupted; the 3 lines before it were imported (the input's first"
        f" {len(lines)} bytes), nothing after it\n"
    )


@pytest.mark.parametrize("fmt", ["heroku", "syslog", "json"])
def test_a_line_longer_than_many_chunks_imports_whole(
    fmt: Format, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line spread over many reads is put together once, whole, between its neighbours."""
    from herolog import importer

    monkeypatch.setattr(importer, "CHUNK_SIZE", 50)
    long = "x" * 1000
    text = {
        "heroku": f"2024-03-05T09:00:00+00:00 app[web.1]: a\n"
        f"2024-03-05T09:00:01+00:00 app[web.1]: {long}\n"
        f"2024-03-05T09:00:02+00:00 app[web.1]: b",
        "syslog": f"<190>1 2024-03-05T09:00:00+00:00 host app web.1 - a\n"
        f"<190>1 2024-03-05T09:00:01+00:00 host app web.1 - {long}\r\n"
        f"<190>1 2024-03-05T09:00:02+00:00 host app web.1 - b",
        "json": "\n".join(
            json.dumps({"timestamp": f"2024-03-05T09:00:0{i}+00:00", "source": "app",
                        "dyno": "web.1", "message": m})
            for i, m in enumerate(["a", long, "b"])
        ),
    }[fmt]  # fmt: skip
    with open_store() as store:
        result = importer.import_stream(io.BytesIO(text.encode()), store, "demo", fmt)
        assert (result.lines, result.bytes_stored) == (3, len(text))
        assert [x.message for x in store.last(LineFilter(app="demo"), 9)[0]] == ["a", long, "b"]


def _a_line(fmt: Format, i: int, message: bytes) -> bytes:
    """Line ``i`` of an input in ``fmt``, saying ``message``."""
    if fmt == "heroku":
        return b"2024-03-05T09:14:%02dZ app[web.1]: %s\n" % (i, message)
    if fmt == "syslog":
        return b"<190>1 2024-03-05T09:14:%02dZ host app web.1 - %s\n" % (i, message)
    record = {"timestamp": f"2024-03-05T09:14:{i:02d}Z", "source": "app", "dyno": "web.1"}
    return json.dumps({**record, "message": message.decode()}).encode() + b"\n"


def messages(app: str) -> list[str]:
    with open_store() as store:
        return [x.message for x in store.last(LineFilter(app=app), 999)[0]]


@pytest.mark.parametrize("chunk", [64, 1 << 20], ids=["over many reads", "in one read"])
@pytest.mark.parametrize("fmt", ["heroku", "syslog", "json"])
def test_a_line_over_the_limit_stops_the_import_after_the_lines_before_it(
    fmt: Format, chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line over MAX_LINE is not a log line (a file without newlines, a gzip bomb): the
    import stops at it, once it has read past the limit, and says where to go on from, as
    for a broken frame, a store that fails or Ctrl-C."""
    from herolog import importer

    monkeypatch.setattr(importer, "MAX_LINE", 1000)
    monkeypatch.setattr(importer, "CHUNK_SIZE", chunk)
    before = b"\xef\xbb\xbf" + b"".join(_a_line(fmt, i, b"line %d" % i) for i in range(5))
    long = _a_line(fmt, 5, b"x" * 1200)
    after = b"".join(_a_line(fmt, i, b"line %d" % i) for i in range(6, 9))
    path = tmp_path / "long.log"
    path.write_bytes(before + long + after)
    code, _, err = invoke("import", str(path), "-a", "demo", "--format", fmt)
    assert (code, err) == (
        1,
        f"Error: {path}: line 6 at byte {len(before)}: a line over the 1,000-byte limit is"
        f" not a log line; the 5 lines before it were imported (the input's first"
        f" {len(before)} bytes), nothing after it\n",
    )
    assert messages("demo") == [f"line {i}" for i in range(5)]
    # What follows the offset, without the long line, stores every other line once.
    code, _, err = invoke("import", "-", "-a", "demo", "--format", fmt, input=after)
    assert code == 0, err
    assert messages("demo") == [f"line {i}" for i in (0, 1, 2, 3, 4, 6, 7, 8)]


@pytest.mark.parametrize("chunk", [64, 1 << 20], ids=["over many reads", "in one read"])
@pytest.mark.parametrize("continuation", ["many lines", "one long line"])
def test_a_message_whose_continuation_lines_add_up_past_the_limit_stops_the_import(
    continuation: str, chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In heroku logs text a line without a header continues the message before it: a
    message that grows past MAX_LINE that way is no more a log line than one line is."""
    from herolog import importer

    monkeypatch.setattr(importer, "MAX_LINE", 1000)
    monkeypatch.setattr(importer, "CHUNK_SIZE", chunk)
    before = b"".join(_a_line("heroku", i, b"line %d" % i) for i in range(3))
    rest = {
        "many lines": b"".join(b'  File "x.py", line %d, in y\n' % i for i in range(40)),
        "one long line": b"x" * 1200 + b"\n",
    }[continuation]
    long = _a_line("heroku", 3, b"Traceback (most recent call last):") + rest
    after = b"".join(_a_line("heroku", i, b"line %d" % i) for i in range(4, 6))
    path = tmp_path / "long.log"
    path.write_bytes(before + long + after)
    code, _, err = invoke("import", str(path), "-a", "demo")
    assert (code, err) == (
        1,
        f"Error: {path}: line 4 at byte {len(before)}: a message over the 1,000-byte limit,"
        " with the lines that continue it, is not a log line; the 3 lines before it were"
        f" imported (the input's first {len(before)} bytes), nothing after it\n",
    )
    assert messages("demo") == ["line 0", "line 1", "line 2"]
    assert invoke("import", "-", "-a", "demo", input=after)[0] == 0
    assert messages("demo") == ["line 0", "line 1", "line 2", "line 4", "line 5"]


@pytest.mark.parametrize("fmt", ["heroku", "syslog", "json"])
def test_a_line_or_a_message_of_the_limit_imports_whole(
    fmt: Format, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herolog import importer

    monkeypatch.setattr(importer, "MAX_LINE", 1000)
    monkeypatch.setattr(importer, "CHUNK_SIZE", 64)
    empty = len(_a_line(fmt, 1, b"")) - 1
    longest = _a_line(fmt, 1, b"x" * (1000 - empty))
    assert len(longest) == 1001
    text = _a_line(fmt, 0, b"a") + longest + _a_line(fmt, 2, b"b")
    if fmt == "heroku":  # a message of the limit, of a header line and the lines after it
        message = _a_line(fmt, 3, b"c") + b"d\n" * ((1000 - len(_a_line(fmt, 3, b"c"))) // 2)
        text += message + b"e" * (1000 - len(message)) + b"\n"
    code, _, err = invoke("import", "-", "-a", "demo", "--format", fmt, input=text)
    assert code == 0, err
    stored_messages = messages("demo")
    assert stored_messages[:3] == ["a", "x" * (1000 - empty), "b"]
    if fmt == "heroku":
        assert len(stored_messages) == 4
        assert len(_a_line(fmt, 3, b"")) + len(stored_messages[3]) == 1001


def test_a_line_of_the_real_limit_imports_whole() -> None:
    from herolog.importer import MAX_LINE, import_stream

    header = b"2024-03-05T09:14:07Z app[web.1]: "
    text = (
        b"2024-03-05T09:14:06Z app[web.1]: a\n"
        + header
        + b"x" * (MAX_LINE - len(header))
        + b"\n2024-03-05T09:14:08Z app[web.1]: b\n"
    )
    with open_store() as store:
        result = import_stream(io.BytesIO(text), store, "demo")
    assert (result.lines, result.bytes_stored) == (3, len(text))
    assert [len(x) for x in messages("demo")] == [1, MAX_LINE - len(header), 1]


PEAK_MEMORY = """\
import resource, subprocess, sys
status = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(status)
"""
"""Runs the command in its arguments, then prints its peak memory in KiB (Linux), from a
process of its own: a child forked from pytest itself starts with the memory pytest has."""


@pytest.mark.subprocess
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_an_input_without_newlines_is_refused_in_bounded_memory(compressed: bool) -> None:
    """200 MB without a newline, read from a pipe as it is written (a gzip of it too, which
    decompresses to that): the import stops once past the limit, its memory about the limit
    and a chunk, where it took five times the line and, past SQLite's 1 GB, said the store
    was unusable."""
    import zlib

    from herolog.importer import MAX_LINE

    gzip = zlib.compressobj(wbits=31)  # the gzip format
    block = b"x" * (1 << 20)
    with subprocess.Popen(
        [sys.executable, "-c", PEAK_MEMORY, sys.executable, "-m", "herolog", "import", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=herolog_env(),
    ) as proc:
        assert proc.stdin is not None
        try:
            for _ in range(200):
                proc.stdin.write(gzip.compress(block) if compressed else block)
            if compressed:
                proc.stdin.write(gzip.flush())
        except BrokenPipeError:  # it stopped reading, as it should
            pass
        out, err_bytes = proc.communicate(timeout=60)
    err = err_bytes.decode()
    assert int(out) < 250 << 10, out  # KiB
    assert proc.returncode == 1, err
    assert err == (
        f"Error: standard input: line 1 at byte 0: a line over the {MAX_LINE:,}-byte limit is not a log"
        " line; the 0 lines before it were imported, nothing after it\n"
    )
