"""Which lines a reader wants: the filters of ``herolog logs`` and of log sessions."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

# The regular expression parser's own tree (no stubs: private to re, stable since 3.11).
_c: Any = importlib.import_module("re._constants")
_parser: Any = importlib.import_module("re._parser")
_compiler: Any = importlib.import_module("re._compiler")
_parse: Any = _parser.parse


class SlowPattern(re.error):
    """A valid regular expression refused for the time it can take (see compile_pattern)."""


def compile_pattern(text: str) -> re.Pattern[str]:
    """``text`` as a regular expression for ``--grep``/``--exclude``; re.error if it is not
    one, if it repeats a repetition (``(a+)+``, ``(\\w+\\s?)*``), or if it repeats a choice
    between branches that can match the same text (``(a|aa)*``, ``(.|\\s)+``).

    Python's regular expressions backtrack: on a line that almost matches, such a pattern
    takes time exponential in the line's length, and nothing can interrupt it (not Ctrl-C,
    not a server's other requests, which wait behind it)."""
    pattern = re.compile(text)
    items = list(_walk(_parse(pattern.pattern, pattern.flags), inside_repeat=False))
    if any(
        op in (_c.MAX_REPEAT, _c.MIN_REPEAT)
        and repeated
        and arg[1] == _c.MAXREPEAT
        and not _cut_off(arg[2], after, pattern.flags)
        for op, arg, repeated, after in items
    ):
        raise SlowPattern(
            "it repeats a repetition, like (a+)+, which can take exponential time on some"
            " lines: repeat a character class instead, like [\\w.]+"
        )
    if any(
        op is _c.BRANCH and repeated and _ambiguous(arg[1], pattern.flags)
        for op, arg, repeated, _ in items
    ):
        raise SlowPattern(
            "it repeats a choice whose branches can match the same text, like (a|aa)* or"
            " (.|\\s)+, which can take exponential time on some lines: give the branches"
            " different first characters, or use a character class, like [\\w\\s]+"
        )
    return pattern


def _walk(items: Any, *, inside_repeat: bool) -> Iterator[tuple[Any, Any, bool, list[Any]]]:
    """Every item of the parser's tree, with whether a repeat around it can backtrack into
    it (one that can repeat more than once, and is not possessive or atomic), and the items
    after it in its sequence."""
    items = list(items)
    for i, (op, arg) in enumerate(items):
        yield op, arg, inside_repeat, items[i + 1 :]
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            parts, repeated = [arg[2]], inside_repeat or arg[1] > 1
        elif op is _c.POSSESSIVE_REPEAT:  # never backtracked into: only within one round
            parts, repeated = [arg[2]], False
        elif op is _c.ATOMIC_GROUP:  # the same, but what is inside still backtracks inside
            parts, repeated = [arg], False
        elif op is _c.SUBPATTERN:
            parts, repeated = [arg[3]], inside_repeat
        elif op is _c.BRANCH:
            parts, repeated = arg[1], inside_repeat
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            parts, repeated = [arg[1]], inside_repeat
        elif op is _c.GROUPREF_EXISTS:
            parts, repeated = [x for x in arg[1:] if x is not None], inside_repeat
        else:
            continue
        for part in parts:
            yield from _walk(part, inside_repeat=repeated)


_ONE_CHARACTER = (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN, _c.CATEGORY)


def _cut_off(repeated: Any, after: list[Any], flags: int) -> bool:
    """Whether a repeat of one character (class) always stops at the same place, because
    what follows it must start with a character it cannot match: the ``\\d+`` of
    ``(\\d+\\.){3}`` takes every digit before the dot, and no other split of the line is
    tried, however often the group around it repeats."""
    body = list(repeated)
    if len(body) != 1 or body[0][0] not in _ONE_CHARACTER:
        return False
    firsts, empty = _first(after)
    return not empty and not any(_overlap(body[0], first, flags) for first in firsts)


def _ambiguous(branches: list[Any], flags: int) -> bool:
    firsts = []
    for branch in branches:
        first, empty = _first(branch)
        if empty:
            return True
        firsts.append(first)
    return any(
        _overlap(x, y, flags)
        for i, one in enumerate(firsts)
        for other in firsts[i + 1 :]
        for x in one
        for y in other
    )


_ANYTHING = (None, None)
"""A first character that could be any character at all."""


def _first(items: Any) -> tuple[list[tuple[Any, Any]], bool]:
    """The parser items that can match the first character of what ``items`` matches, and
    whether ``items`` can match the empty string."""
    firsts: list[tuple[Any, Any]] = []
    for op, arg in items:
        if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN, _c.CATEGORY):
            return [*firsts, (op, arg)], False
        if op is _c.SUBPATTERN:
            first, empty = _first(arg[3])
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            first, empty = _first(arg[2])
            empty = empty or arg[0] == 0
        elif op is _c.ATOMIC_GROUP:
            first, empty = _first(arg)
        elif op is _c.BRANCH:
            arms = [_first(branch) for branch in arg[1]]
            first = [item for arm, _ in arms for item in arm]
            empty = any(arm_empty for _, arm_empty in arms)
        elif op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            first, empty = [], True
        else:  # a back-reference, a conditional group: anything, or nothing
            first, empty = [_ANYTHING], True
        firsts += first
        if not empty:
            return firsts, False
    return firsts, True


def _overlap(one: tuple[Any, Any], other: tuple[Any, Any], flags: int) -> bool:
    """Whether two first items can match the same character (yes, when unsure)."""
    if one[0] is not _c.LITERAL:
        one, other = other, one
    if one[0] is not _c.LITERAL:
        return True  # two classes, or anything
    if other[0] is _c.LITERAL:
        a, b = chr(one[1]), chr(other[1])
        return a == b or bool(flags & re.IGNORECASE and a.casefold() == b.casefold())
    if other is _ANYTHING:
        return True
    state = _parser.State()
    state.flags = flags
    matcher = _compiler.compile(_parser.SubPattern(state, [other]), flags)
    return matcher.match(chr(one[1])) is not None


class FilteredLine(Protocol):
    @property
    def app(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def dyno(self) -> str: ...
    @property
    def time(self) -> str: ...
    @property
    def received_at(self) -> str: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True, slots=True)
class LineFilter:
    """Filters are ANDed; each is applied before any line limit.

    ``dynos`` holds names from ``--dyno`` and ``--process-type``: each matches a dyno
    exactly, as a prefix followed by ``.`` (``web`` matches ``web.1``, not ``webby.1``), or
    as the process type of a Fir dyno's name (``web`` matches ``web-7d9f8c6b5-x2kqz``, not
    ``web-api-7d9f8c6b5-x2kqz``; see fir_dyno_rest).
    ``since`` is inclusive and ``until`` exclusive; both are instant strings. A line passes
    the patterns when it matches any ``grep`` pattern (if there are any) and no ``exclude``
    pattern; patterns are searched in the message.
    """

    app: str | None = None
    source: str | None = None
    dynos: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    grep: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    @property
    def has_patterns(self) -> bool:
        return bool(self.grep or self.exclude)

    def matches(self, line: FilteredLine) -> bool:
        """Whether ``line`` passes every filter: what the store's queries select, for lines
        already in hand (a server handing new lines to its tail sessions)."""
        if self.app is not None and line.app != self.app:
            return False
        if self.source is not None and line.source != self.source:
            return False
        if not all(dyno_matches(dyno, line.dyno) for dyno in self.dynos):
            return False
        if self.since is not None and line.time < self.since:
            return False
        if self.until is not None and line.time >= self.until:
            return False
        return self.matches_patterns(line.message)

    def matches_patterns(self, message: str) -> bool:
        if self.grep and not any(p.search(message) for p in self.grep):
            return False
        return not any(p.search(message) for p in self.exclude)


FIR_DYNO_REST = re.compile(r"[0-9a-z]+-[0-9a-z]{5}")
"""What follows ``TYPE-`` in a Fir-generation dyno's name (``web-7d9f8c6b5-x2kqz``), as
Kubernetes names a deployment's pods: the replica set's hash, then the pod's own five
characters."""


def dyno_matches(wanted: str, dyno: str) -> bool:
    if dyno == wanted or dyno.startswith(wanted + "."):
        return True
    return dyno.startswith(wanted + "-") and bool(FIR_DYNO_REST.fullmatch(dyno, len(wanted) + 1))
