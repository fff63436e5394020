"""Timestamps: RFC 3339 from the wire, a sortable UTC form for the store, user time expressions.

Every instant herolog stores or compares is an "instant string":
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, fixed width, so that string order is time order
(in Python and in SQLite alike) and no datetime object is built on the ingest hot path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_HEAD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]"
    r"(?P<time>[0-9]{2}:[0-9]{2}):(?P<sec>[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]+))?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}:?[0-9]{2})?"
)
# Validated "YYYY-MM-DDTHH:MM:SS" prefixes. Log lines arrive in bursts within the same
# second, so most lines skip validation; the cap keeps memory bounded.
_valid_heads: dict[str, bool] = {}
_VALID_HEADS_MAX = 4096


def is_canonical_seconds(head: str) -> bool:
    """Whether ``head`` is ``YYYY-MM-DDTHH:MM:SS`` exactly as an instant string writes it."""
    valid = _valid_heads.get(head)
    if valid is None:
        valid = _HEAD.fullmatch(head) is not None and _is_date_time(head)
        if len(_valid_heads) >= _VALID_HEADS_MAX:
            _valid_heads.clear()
        _valid_heads[head] = valid
    return valid


def normalize(timestamp: str) -> str | None:
    """The instant string for an RFC 3339 timestamp, or None if it is not one.

    Any fractional precision and any offset are accepted; digits past microseconds are
    truncated. A timestamp without an offset is taken as UTC.
    """
    head = timestamp[:19]
    if is_canonical_seconds(head):
        tail = timestamp[19:]
        if tail == "+00:00" or tail == "Z":
            return head + ".000000Z"
        if tail[:1] == ".":
            if tail[-6:] == "+00:00":
                frac = tail[1:-6]
            elif tail[-1:] == "Z":
                frac = tail[1:-1]
            else:
                frac = ""
            if frac and frac.isascii() and frac.isdecimal():
                return f"{head}.{frac[:6]:0<6}Z"
    return _normalize_slow(timestamp)


def _is_date_time(head: str) -> bool:
    try:
        datetime.fromisoformat(head)
    except ValueError:
        return False
    return True


def _normalize_slow(timestamp: str) -> str | None:
    m = _RFC3339.fullmatch(timestamp)
    if m is None:
        return None
    try:
        return _rfc3339_instant(m, "Z")
    except (ValueError, OverflowError):
        return None


def _rfc3339_instant(m: re.Match[str], offset: str) -> str:
    """The instant string of an ``_RFC3339`` match, ``offset`` (``""``: local time) for one
    without; ValueError for no such date or time, OverflowError for one out of range."""
    sec = m["sec"]
    frac = (m["frac"] or "")[:6]
    if sec == "60":  # a leap second: the last representable instant of that minute
        sec, frac = "59", "999999"
    tz = m["tz"] or offset
    if tz in ("Z", "z"):
        tz = "+00:00"
    elif tz and ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    return to_instant(datetime.fromisoformat(f"{m['date']}T{m['time']}:{sec}.{frac:0<6}{tz}"))


def to_instant(moment: datetime) -> str:
    """The instant string of an aware (or, taken as local time, naive) datetime."""
    return heroku_to_instant(to_heroku(moment))


def to_heroku(moment: datetime) -> str:
    """A timestamp the way Logplex writes them: microseconds and ``+00:00``."""
    if moment.tzinfo is None:
        moment = local(moment)
    # Not strftime: its %Y does not pad years before 1000 to four digits everywhere.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


_TWO_DAYS = timedelta(days=2)


def local(moment: datetime) -> datetime:
    """A naive datetime as local time, aware, as zoneinfo reads one (PEP 495): a time the
    clocks go through twice is the first, one they skip has the offset from before."""
    try:
        aware = moment.astimezone()
    except (ValueError, OverflowError):
        # Python looks up the zone's offsets a day either side, past year 1 or 9999 there:
        # the offset two days in is the one (OverflowError if UTC is then out of range).
        shift = _TWO_DAYS if moment.year == 1 else -_TWO_DAYS
        aware = (moment + shift).astimezone() - shift
    if aware.replace(tzinfo=None) != moment:
        # Skipped (02:30 as 02:00 became 03:00). Python reads it with one of the two offsets
        # and gives the instant with the other: 3.11 as 01:30 EST, 3.12 and later as 03:30
        # EDT. Reading it with the offset given finds the other; the one from before the
        # change (PEP 495's) is the smaller, the clocks having gone forward.
        other = (moment - _offset(aware)).replace(tzinfo=UTC).astimezone()
        aware = moment.replace(tzinfo=min(aware, other, key=_offset).tzinfo)
    return aware


def _offset(moment: datetime) -> timedelta:
    return moment.utcoffset() or timedelta()


def heroku_to_instant(timestamp: str) -> str:
    """The instant string of a timestamp that :func:`to_heroku` wrote."""
    return timestamp[:26] + "Z"


def logplex_seconds(moment: str) -> str:
    """An instant string or a :func:`to_heroku` timestamp as Logplex writes the time its L10
    and L11 lines give: whole seconds and ``+00:00`` (``2013-04-17T19:04:46+00:00``)."""
    return from_instant(moment).isoformat(timespec="seconds")


def now() -> datetime:
    return datetime.now(UTC)


def from_instant(instant: str) -> datetime:
    return datetime.fromisoformat(instant)


def seconds_until(instant: str) -> float:
    """How long until ``instant`` (negative once it has passed)."""
    return (from_instant(instant) - now()).total_seconds()


_RELATIVE = re.compile(r"([0-9]+)\s*(sec|min|s|m|h|d|w)", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_user_time(text: str, reference: datetime | None = None) -> str:
    """The instant string for a ``--since``/``--until`` value.

    Accepts relative durations before now (``90s``, ``10m``, ``2h``, ``1d``, ``1w``,
    ``1h30m``), ``now``, and ISO 8601 dates or date-times (RFC 3339 timestamps as the
    intake reads them); a date or date-time without an offset is local time, as with
    ``docker logs --since``. Raises ValueError with a message fit for a usage error.
    """
    try:
        return _parse_user_time(text, reference)
    except (OverflowError, OSError):
        raise ValueError(f"{text!r} is outside the times herolog can handle") from None


def _parse_user_time(text: str, reference: datetime | None) -> str:
    value = text.strip()
    moment = reference or now()
    if value.lower() == "now":
        return to_instant(moment)
    pos, seconds = 0, 0
    try:
        while m := _RELATIVE.match(value, pos):
            seconds += int(m.group(1)) * _UNITS[m.group(2).lower()]
            pos = m.end()
    except ValueError:  # more digits than int() reads (4,300), where years end at 9999
        raise OverflowError from None
    if pos and pos == len(value):
        return to_instant(moment - timedelta(seconds=seconds))
    try:
        # As the intake reads a timestamp (a leap second, a lower-case t or z), so that one
        # copied from a line selects it; ISO 8601's other forms (dates, minutes) after.
        m = _RFC3339.fullmatch(value)
        if m is not None:
            return _rfc3339_instant(m, "")
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use now, a duration before now (90s, 10m, 2h, 1d, 1w,"
            " 1h30m), or an ISO 8601 date or date-time (2024-03-05, 2024-03-05T09:14,"
            " 2024-03-05T09:14:07Z), local time without an offset"
        ) from None
    return to_instant(parsed)
