"""``herolog logs``: the last N matching lines, then (with ``--tail``) new ones as they land."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from herolog import timestamps
from herolog.filters import LineFilter
from herolog.parser import LOGPLEX_PRI, own_line
from herolog.render import Renderer, counted
from herolog.store import (
    APP_NAME_RULE,
    DEFAULT_HISTORY,
    MAX_HISTORY,
    Store,
    StoredLine,
    open_existing,
    unstored,
    valid_app_name,
)

POLL_INTERVAL_S = 0.05
_FOLLOW_BATCH = 1000
HELD_LINES = 10_000
"""A history of up to this many lines is read in one query and held; a longer one is read a
part at a time (see :func:`find_history`)."""


DEFAULT_NUM = 100


@dataclass(frozen=True, slots=True)
class LogsRequest:
    wanted: LineFilter
    num: int | None = None
    """None: the default, 100 lines or the whole history if the store keeps fewer."""
    tail: bool = False


def default_num(history: int) -> int:
    """Lines shown when no number is asked for: 100, or the whole history if it is less."""
    return min(DEFAULT_NUM, history)


class HistoryExceeded(ValueError):
    """More lines were asked for than the store keeps."""

    def __init__(self, num: int, history: int) -> None:
        if num <= MAX_HISTORY:
            how = f"raise that with: herolog store history {num}"
        else:
            how = f"a store keeps at most {MAX_HISTORY:,}: herolog store history {MAX_HISTORY}"
        super().__init__(
            f"{num:,} is more than the {counted(history, 'line')} the store keeps per app ({how})"
        )


class UnknownApp(LookupError):
    """``-a APP`` names an app the store has never had (a typo, as often as not)."""

    def __init__(self, path: Path, app: str, known: list[str], *, an_id: bool = False) -> None:
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        has = f"its apps: {shown}" if known else "it has no apps yet"
        if an_id:  # no app will ever have it: the id of an app is made when the app is
            super().__init__(
                f"the store {path} has no app named {app!r}, nor one with that id ({has})"
            )
            return
        if not valid_app_name(app):  # no intake takes it: a tail would wait for ever
            super().__init__(
                f"the store {path} has no app named {app!r}, and no app can have that name"
                f" ({APP_NAME_RULE}; {has})"
            )
            return
        super().__init__(
            f"the store {path} has no app named {app!r} ({has}; --tail waits for its first line)"
        )


def may_yet_come(app: str) -> bool:
    """Whether an app that ``-a`` names and the store has not had may yet come, for a tail
    to wait for its first line: not an id (an app's id comes with the app), nor a name no
    intake takes."""
    from herolog.drains import looks_like_id

    return valid_app_name(app) and not looks_like_id(app)


def overflow_line(app: str | None, dropped: int, since: str) -> StoredLine:
    """Heroku's L11 line, for a tail that lost lines its reader was too slow for; ``since``
    is an instant string, shown as Logplex does (``2011-05-03T17:35:00+00:00``)."""
    message = (
        "Error L11 (Tail buffer overflow) -> "
        f"This tail session dropped {dropped} messages since {timestamps.logplex_seconds(since)}."
    )
    return unstored(app or "", own_line("heroku", "logplex", message, LOGPLEX_PRI))


def read_after(
    store: Store,
    last_id: int,
    wanted: LineFilter,
    limit: int,
    missed_since: str,
    mark: int | None = None,
    upto: int | None = None,
    oldest: Mapping[int, int] | None = None,
) -> tuple[list[StoredLine], int, int | None]:
    """A tail's next lines after ``last_id`` (at most ``limit``, and none past ``upto``), the
    id to go on after and its mark. Lines of the span the ring buffer trimmed before the tail
    got to them are told first with Heroku's L11 line (``missed_since``: when the tail was
    last known to have missed none), for local tails and the server's alike. For a tail of
    one app, ``mark`` is the store's :meth:`~herolog.store.SQLiteStore.lines_through`
    ``last_id``, which makes the count exact where other apps' lines were trimmed too (None
    if not known). A history of every app gives ``oldest``, the store's
    :meth:`~herolog.store.SQLiteStore.oldest_ids` where it began: only the lines trimmed
    since are told, not those trimmed before among the lines it shows."""
    # Both in one snapshot: a trim committed between them (serve, run, import writing on)
    # would count the lines just read as lost too.
    with store.snapshot():
        lines, next_id = store.after(last_id, wanted, limit, upto)
        # Every id of the span came back (an unfiltered tail keeping up): none is missing.
        whole = next_id - last_id == len(lines)
        if wanted.app is None:
            if whole:
                trimmed = 0
            elif oldest is not None:
                trimmed = store.trimmed_since(oldest, last_id, next_id)
            else:
                trimmed = store.trimmed_between(last_id, next_id)
        elif whole:
            trimmed = 0
            mark = None if mark is None else mark + len(lines)
        else:
            trimmed, mark = store.trimmed_past(wanted.app, last_id, next_id, mark)
    if trimmed:
        lines.insert(0, overflow_line(wanted.app, trimmed, missed_since))
    return lines, next_id, mark


def show_logs(
    path: Path,
    request: LogsRequest,
    renderer: Renderer,
    *,
    on_waiting: Callable[[], None] | None = None,
    poll_interval: float = POLL_INTERVAL_S,
    reader_gone: Callable[[], bool] = lambda: False,
    say: Callable[[str], None] = lambda _: None,
) -> None:
    """Print the history, then follow the store if asked to, until interrupted or ``until``.

    Raises HistoryExceeded before printing anything when ``num`` is beyond the store's
    history, and UnknownApp when the app asked for is not in the store (a tail waits for
    it instead: its first line may be on its way).
    """
    started = timestamps.to_instant(timestamps.now())
    store = open_existing(path)
    try:
        history = store.history if store is not None else DEFAULT_HISTORY
        num = default_num(history) if request.num is None else request.num
        if num > history:
            raise HistoryExceeded(num, history)
        last_id = 0
        mark: int | None = None
        app = request.wanted.app
        if store is not None:
            held, first, last_id, oldest = find_history(store, request.wanted, num)
            if first is None and app is not None:
                from herolog.drains import find_app, looks_like_id

                info = find_app(store, app)
                an_id = looks_like_id(app)
                if info is not None and info.name != app:  # the app's id, as Heroku takes it
                    request = replace(request, wanted=replace(request.wanted, app=info.name))
                    held, first, last_id, oldest = find_history(store, request.wanted, num)
                elif info is None and (not request.tail or not may_yet_come(app)):
                    # A tail waits for an app's first line, of one that may yet come.
                    known = [known.name for known in store.apps()]
                    raise UnknownApp(path, app, known, an_id=an_id)
            if request.tail and request.wanted.app is not None:
                mark = store.lines_through(request.wanted.app, last_id)
            if held is not None:
                renderer.write(held)
            elif first is not None:
                _write_history(store, first - 1, last_id, request.wanted, renderer, started, oldest)
        elif app is not None and (not request.tail or not may_yet_come(app)):
            from herolog.drains import looks_like_id

            raise UnknownApp(path, app, [], an_id=looks_like_id(app))
        if not request.tail:
            return
        if store is None and on_waiting is not None:
            on_waiting()
        followed, store = store, None  # follow closes it
        follow(
            path,
            followed,
            last_id,
            request.wanted,
            renderer,
            started,
            poll_interval=poll_interval,
            reader_gone=reader_gone,
            say=say,
            mark=mark,
        )
    finally:
        if store is not None:
            store.close()


def find_history(
    store: Store, wanted: LineFilter, count: int
) -> tuple[list[StoredLine] | None, int | None, int, dict[int, int] | None]:
    """The last ``count`` matching lines, oldest first, if they may be held (at most
    HELD_LINES), else None; the id of the first of them (None if none match); the newest
    id in the store; and, for a long history of every app, each app's oldest line (the
    ``oldest`` of :func:`read_after`). A long history is not held, but read a part at a
    time from its first line (``-n 2000000`` held 2 GB); that reads it twice, once to find
    where it begins, which a short one, usually behind a filter that is slow to check
    (``--grep``), is spared."""
    if count <= HELD_LINES:
        lines, newest = store.last(wanted, count)
        return lines, lines[0].id if lines else None, newest, None
    with store.snapshot():
        first, newest = store.first_of_last(wanted, count)
        oldest = store.oldest_ids() if wanted.app is None else None
    return None, first, newest, oldest


def _write_history(
    store: Store,
    after: int,
    upto: int,
    wanted: LineFilter,
    renderer: Renderer,
    started: str,
    oldest: dict[int, int] | None,
) -> None:
    """Write the matching lines with ids in (``after``, ``upto``] a part at a time: a
    history of millions of lines is never held whole (``-n 2000000`` held 2 GB). Lines the
    ring buffer trims before they are read (a store filling faster than they are written)
    are told with L11, as to a tail."""
    while after < upto:
        lines, after, _ = read_after(
            store, after, wanted, _FOLLOW_BATCH, started, upto=upto, oldest=oldest
        )
        if lines:
            renderer.write(lines)


def follow(
    path: Path,
    store: Store | None,
    last_id: int,
    wanted: LineFilter,
    renderer: Renderer,
    confirmed_at: str,
    *,
    poll_interval: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
    reader_gone: Callable[[], bool] = lambda: False,
    say: Callable[[str], None] = lambda _: None,
    mark: int | None = None,
) -> None:
    """Write lines stored after ``last_id`` (whose mark, for a tail of one app, is ``mark``:
    see :func:`read_after`) as they arrive.

    When no store exists yet, or the file is deleted or replaced, waits for one and shows
    what it received since the old one was last seen (``confirmed_at``): that covers both a
    store created after the tail started and one swapped out underneath it. With
    ``wanted.until`` the tail ends once the clock passes it; it ends with BrokenPipeError
    once ``reader_gone`` says the output's reader has gone. ``say`` tells of a store that
    went and of the new one followed then.
    """
    version: int | None = None
    lost = ""  # "replaced", then "gone" while there is no store at the path
    shown = confirmed_at  # when the tail was last known to have missed nothing
    try:
        while True:
            if reader_gone():
                raise BrokenPipeError("the reader of the output has gone")
            now = timestamps.to_instant(timestamps.now())
            if wanted.until is not None and now >= wanted.until:
                if store is not None:
                    _drain(store, last_id, wanted, renderer, shown, mark)
                return
            if store is not None and store.replaced():
                store.close()
                store, lost = None, "replaced"
            if store is None:
                store = open_existing(path)
                if store is None:
                    if lost == "replaced":
                        say(f"the store {path} was moved or deleted; waiting for a new one...")
                        lost = "gone"
                    sleep(poll_interval)
                    continue
                if lost:
                    say(f"following the new store {path}")
                    lost = ""
                last_id = store.last_id_received_before(confirmed_at)
                mark = None if wanted.app is None else store.lines_through(wanted.app, last_id)
                version = None
            confirmed_at = now
            current = store.version()
            if current != version:
                version = current
                last_id, shown, mark = _drain(store, last_id, wanted, renderer, shown, mark)
            sleep(poll_interval)
    finally:
        if store is not None:
            store.close()


def _drain(
    store: Store,
    last_id: int,
    wanted: LineFilter,
    renderer: Renderer,
    shown: str,
    mark: int | None,
) -> tuple[int, str, int | None]:
    """Write the lines after ``last_id``; the id to go on after, when the tail last read
    (from then on it has missed nothing: a reader slower than the lines is told of what it
    lost while it wrote a batch as lost since it read that batch), and the id's mark."""
    while True:
        read_at = timestamps.to_instant(timestamps.now())
        lines, next_id, mark = read_after(store, last_id, wanted, _FOLLOW_BATCH, shown, mark)
        renderer.write(lines)
        shown = read_at
        if next_id == last_id:
            return last_id, shown, mark
        last_id = next_id
