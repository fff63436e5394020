from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given

from herolog.parser import Received, parse_syslog
from herolog.timestamps import normalize, parse_user_time, to_heroku, to_instant
from tests.helpers import RFC3339_PARTS, rfc3339

NOW = datetime(2024, 3, 5, 12, 0, 0, tzinfo=UTC)
RECEIVED = Received("2026-01-02T03:04:05.000006+00:00", "2026-01-02T03:04:05.000006Z")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", "2024-03-05T12:00:00.000000Z"),
        ("10m", "2024-03-05T11:50:00.000000Z"),
        ("90s", "2024-03-05T11:58:30.000000Z"),
        ("10sec", "2024-03-05T11:59:50.000000Z"),
        ("5min", "2024-03-05T11:55:00.000000Z"),
        ("2h", "2024-03-05T10:00:00.000000Z"),
        ("1d", "2024-03-04T12:00:00.000000Z"),
        ("1w", "2024-02-27T12:00:00.000000Z"),
        ("1h30m", "2024-03-05T10:30:00.000000Z"),
        ("2024-03-05T09:14:07Z", "2024-03-05T09:14:07.000000Z"),
        ("2024-03-05T11:14:07+02:00", "2024-03-05T09:14:07.000000Z"),
        ("2024-03-05 09:14", "2024-03-05T09:14:00.000000Z"),
        ("2024-03-05", "2024-03-05T00:00:00.000000Z"),
        # As a shell or a copied line may hand them over.
        ("NOW", "2024-03-05T12:00:00.000000Z"),
        ("1H30M", "2024-03-05T10:30:00.000000Z"),
        (" 2h ", "2024-03-05T10:00:00.000000Z"),
        ("2024-03-05T09:14:07Z\n", "2024-03-05T09:14:07.000000Z"),
    ],
)
def test_user_times(text: str, expected: str) -> None:
    assert parse_user_time(text, NOW) == expected


def test_naive_user_times_are_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    assert parse_user_time("2024-03-05T09:00", NOW) == "2024-03-05T14:00:00.000000Z"


@given(*RFC3339_PARTS)
@example(datetime(2016, 12, 31, 23, 59, 59), "T", 0, "Z", True)
@example(datetime(2016, 12, 31, 23, 59, 59, 250000), "t", 2, "z", True)
def test_user_times_take_every_timestamp_the_intake_takes(
    moment: datetime, separator: str, digits: int, offset: str, leap: bool
) -> None:
    """--since and --until read a timestamp as the intake does: the same instant string,
    for the forms RFC 3339 allows and senders use (a leap second, lower-case t and z)."""
    stamp = rfc3339(moment, separator, digits, offset, leap)
    assert normalize(stamp) is not None
    assert parse_user_time(stamp, NOW) == normalize(stamp)


@pytest.mark.parametrize(
    "zone", ["America/New_York", "Europe/Dublin", "Australia/Lord_Howe", "America/Santiago"]
)
def test_local_user_times_across_a_dst_change_are_read_as_zoneinfo_reads_them(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """A local time in the hour the clocks skip (--since 2026-03-08T02:30 in New York) was
    read with the offset after, an hour before the times that follow the change: lines of
    01:59 were at or after it. As PEP 495 and zoneinfo read it, it takes the offset before
    (03:30 EDT); a time the clocks go through twice is the first."""
    from zoneinfo import ZoneInfo

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    moment, wrong = datetime(2026, 1, 1), []
    while moment.year == 2026:  # every half hour of a year: each DST change, whole
        expected = to_instant(moment.replace(tzinfo=ZoneInfo(zone)))
        if parse_user_time(moment.isoformat(timespec="minutes"), NOW) != expected:
            wrong.append(moment)
        moment += timedelta(minutes=30)
    assert wrong == []


@pytest.mark.parametrize(
    "bad",
    # A duration with more after it ("1h30": 30 what?) is no duration either.
    ["yesterday-ish", "10", "10 parsecs", "", "m10", "2024-13-01", "1h30", "10m ago"],
)
def test_bad_user_times(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_user_time(bad, NOW)


@pytest.mark.parametrize(
    "bad",
    [
        "-",
        "",
        "2024-03-05",
        "2024-03-05T25:00:00Z",
        "2024-03-05T09:14:07.Z",
        "2024-03-05T09:14:07.1x+00:00",
        "2024-03-05T09:14:07.١٢+00:00",
    ],
)
def test_not_rfc3339(bad: str) -> None:
    assert normalize(bad) is None


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_timestamp_past_the_ends_of_the_calendar_in_utc_is_none(stamp: str) -> None:
    """Year 1 or 9999 with an offset that takes it past them in UTC: a line with it is kept
    whole, as one whose timestamp herolog cannot read, not an error of the intake."""
    assert normalize(stamp) is None
    message = f"<13>1 {stamp} myhost app web.1 - - hi"
    line = parse_syslog(message.encode(), RECEIVED)
    assert (line.source, line.dyno, line.message, line.time) == (
        "unknown",
        "unknown",
        message,
        RECEIVED.time,
    )


def test_instant_strings_sort_like_time() -> None:
    stamps = [
        "2024-03-05T09:14:07+00:00",
        "2024-03-05T09:14:07.5+00:00",
        "2024-03-05T09:14:07.41Z",
        "2024-03-05T10:14:06+01:00",
    ]
    assert sorted(stamps, key=lambda s: normalize(s) or "") == [
        stamps[3],
        stamps[0],
        stamps[2],
        stamps[1],
    ]


def test_early_years_keep_four_digits_and_sort() -> None:
    assert parse_user_time("0999-01-01T00:00:00Z", NOW) == "0999-01-01T00:00:00.000000Z"
    assert normalize("0999-01-01T00:00:00+01:00") == "0998-12-31T23:00:00.000000Z"
    assert parse_user_time("0999-01-01T00:00:00Z", NOW) < parse_user_time(
        "1000-01-01T00:00:00Z", NOW
    )


def test_conversions_round_trip() -> None:
    moment = datetime(2024, 3, 5, 9, 14, 7, 418233, tzinfo=UTC)
    assert to_heroku(moment) == "2024-03-05T09:14:07.418233+00:00"
    assert to_instant(moment) == "2024-03-05T09:14:07.418233Z"


@pytest.mark.parametrize(
    ("moment", "heroku", "instant"),
    [
        (
            datetime(2024, 3, 5, 9, 14, 7, tzinfo=UTC),
            "2024-03-05T09:14:07.000000+00:00",
            "2024-03-05T09:14:07.000000Z",
        ),
        (
            datetime(2024, 3, 5, 1, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
            "2024-03-04T23:00:00.000005+00:00",
            "2024-03-04T23:00:00.000005Z",
        ),
        (
            datetime(999, 1, 1, tzinfo=UTC),
            "0999-01-01T00:00:00.000000+00:00",
            "0999-01-01T00:00:00.000000Z",
        ),
    ],
)
def test_conversions_write_utc_with_microseconds(
    moment: datetime, heroku: str, instant: str
) -> None:
    assert to_heroku(moment) == heroku
    assert to_instant(moment) == instant
    assert Received.at(moment) == (heroku, instant)
