"""Which lines a reader wants: the filters of ``herolog logs`` and of log sessions."""

from __future__ import annotations

import functools
import importlib
import re
import sys
import warnings
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
    one, if it repeats a repetition that can end in more than one place (``(a+)+``,
    ``(\\w+\\s?)*``, ``(a?a?)+``), or if it repeats a choice between branches that can
    match the same text (``(a|aa)*``, ``(.|\\s)+``).

    Python's regular expressions backtrack: on a line that almost matches, such a pattern
    takes time exponential in the line's length, and nothing can interrupt it (not Ctrl-C,
    not a server's other requests, which wait behind it). A repetition or a choice is safe
    inside a repeat when the next character decides it: ``(\\d+\\.){3}`` (a digit goes on,
    the dot ends it), ``(ab?)*`` (a ``b`` goes on, the next ``a`` ends it)."""
    with warnings.catch_warnings():
        # re's FutureWarning ("Possible nested set" for [[a]) is about what a later Python
        # may read: the pattern means what it means now, and the warning came out with
        # herolog's own source lines, twice (re.compile, then _check's parse).
        warnings.simplefilter("ignore", FutureWarning)
        pattern = re.compile(text)
        try:
            _check(pattern, _Budget())
        finally:
            _every_character.cache_clear()
    return pattern


CHECK_STEPS = 300_000
"""The steps a pattern's check may take (see _Budget): looking at an item for what can
follow another, comparing two first items, and telling a literal from a class
(_COMPARING_A_LITERAL steps) or two classes apart (_COMPARING_CLASSES). The worst patterns
within it, a repeat around 387 optional characters, 774 branches, or 19 pairs of classes
told apart, took 0.3-0.5 s to check on this project's 2-core machine (0.66 s once, busy);
what grows only linearly with a pattern's length is not counted (200,000 characters of
text, 0.5 s)."""

_COMPARING_A_LITERAL = 30
"""What telling a literal from a class costs in steps (compiling a pattern, about 35 µs,
against about a microsecond for the other steps), or two literals with IGNORECASE."""

_COMPARING_CLASSES = 15_000
"""What telling two classes apart costs in steps (searching every code point, 15-20 ms)."""

TOO_COMPLEX = (
    "it is too long or too complex to check that it cannot backtrack for ever (a repeat"
    " around hundreds of optional items or branches, each compared with those after it):"
    " put fewer of them inside the repeat, like a character class ([abc]*) for a run of"
    " optional characters, or give each part of a choice between such parts (A|B) its own"
    " --grep or --exclude (a line matches if any does)"
)


class _Budget:
    """The steps one compile_pattern call's check has left, and the answers it has found:
    its own object, as a server checks patterns in several threads at once. Repeats around
    many optional items or branches take time quadratic in their number (each is compared
    with every one after it): 8,000 optional characters took 34 s, and a log session's
    filter of 64 KB held a server's worker for minutes."""

    __slots__ = ("left", "overlaps")

    def __init__(self, steps: int = CHECK_STEPS) -> None:
        self.left = steps
        self.overlaps: dict[tuple[str, str, int], bool] = {}
        """_overlap's answers: a long pattern compares the same few items again and again
        (\\w and \\s in each of a hundred (?:\\w+\\s)+), and telling two classes apart
        searches every code point, tens of milliseconds each time."""

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise SlowPattern(TOO_COMPLEX)


def _check(pattern: re.Pattern[str], budget: _Budget) -> None:
    items = list(_walk(_parse(pattern.pattern, pattern.flags), None, repeated=False))
    # A group's own flags ((?i:a), (?s:.)) make its characters match more: two first
    # characters are compared with every such flag any group turns on, which can only find
    # more overlaps than the group's own flags would.
    widening = re.IGNORECASE | re.DOTALL
    flags = pattern.flags
    for op, arg, _, _ in items:
        if op is _c.SUBPATTERN:
            flags |= arg[1] & widening
    if any(
        op is _c.BRANCH and repeated and _ambiguous(arg[1], after, flags, budget)
        for op, arg, repeated, after in items
    ):
        raise SlowPattern(
            "it repeats a choice whose branches can match the same text (or nothing), like"
            " (a|aa)* or (.|\\s)+, which can take exponential time on some lines: give the"
            " branches different first characters, or use a character class, like [\\w\\s]+"
        )
    if any(
        op in (_c.MAX_REPEAT, _c.MIN_REPEAT)
        and repeated
        and arg[0] != arg[1]
        and not _decided([_first(arg[2], budget)], after, flags, budget)
        for op, arg, repeated, after in items
    ):
        raise SlowPattern(
            "it repeats a repetition, like (a+)+, which can take exponential time on some"
            " lines: repeat a character class instead, like [\\w.]+"
        )


# What can come after a point of the pattern, as far as the outermost repeat around it:
#   ("seq", items, i, then)  a sequence from its item i on, then what follows it (an index,
#                            not a copy of the rest: a long pattern's check stays linear)
#   ("loop", body, then)     a repeat's end: its body again, or (unless then is None: the
#                            outermost repeat, which ends once) what follows the repeat
#   ("any",)                 anything (inside a lookaround)
_Follow = tuple[Any, ...] | None
_UNKNOWN: _Follow = ("any",)


def _walk(items: Any, then: _Follow, *, repeated: bool) -> Iterator[tuple[Any, Any, bool, _Follow]]:
    """Every item of the parser's tree, with whether a repeat around it can backtrack into
    it (one that can repeat more than once, and is not possessive or atomic), and what can
    come after it."""
    items = list(items)
    for i, (op, arg) in enumerate(items):
        after: _Follow = ("seq", items, i + 1, then)
        yield op, arg, repeated, after
        inner, inner_repeated = after, repeated
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            parts = [arg[2]]
            if arg[1] > 1:
                inner, inner_repeated = ("loop", arg[2], after if repeated else None), True
        elif op is _c.POSSESSIVE_REPEAT:  # never backtracked into: only within one round
            parts, inner_repeated = [arg[2]], False
        elif op is _c.ATOMIC_GROUP:  # the same, but what is inside still backtracks inside
            parts, inner_repeated = [arg], False
        elif op is _c.SUBPATTERN:
            parts = [arg[3]]
        elif op is _c.BRANCH:
            parts = arg[1]
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            parts, inner = [arg[1]], _UNKNOWN
        elif op is _c.GROUPREF_EXISTS:
            parts = [x for x in arg[1:] if x is not None]
        else:
            continue
        for part in parts:
            yield from _walk(part, inner, repeated=inner_repeated)


def _next_firsts(then: _Follow, budget: _Budget) -> list[tuple[Any, Any]] | None:
    """The items that can match the first character after a point (None: anything, or the
    end of a round that can match nothing)."""
    firsts: list[tuple[Any, Any]] = []
    while then is not None:
        if then[0] == "seq":
            first, empty = _first(then[1], budget, then[2])
            firsts += first
            if not empty:
                return firsts
            then = then[3]
        elif then[0] == "loop":
            first, empty = _first(then[1], budget)
            if empty:
                return None
            firsts += first
            then = then[2]
        else:
            return None
    return firsts


def _decided(
    choices: list[tuple[list[Any], bool]], then: _Follow, flags: int, budget: _Budget
) -> bool:
    """Whether the next character decides between going on with one of ``choices`` (the
    first items of each, and whether it can match nothing) and what comes after."""
    if any(empty for _, empty in choices):
        return False
    following = _next_firsts(then, budget)
    return following is not None and not any(
        _overlap(x, y, flags, budget) for first, _ in choices for x in first for y in following
    )


def _ambiguous(branches: list[Any], then: _Follow, flags: int, budget: _Budget) -> bool:
    arms = [_first(branch, budget) for branch in branches]
    if sum(empty for _, empty in arms) > 1:
        return True
    if any(
        _overlap(x, y, flags, budget)
        for i, (one, _) in enumerate(arms)
        for other, _ in arms[i + 1 :]
        for x in one
        for y in other
    ):
        return True
    # A branch that can match nothing leaves the choice to what follows, as x? does.
    taking = [(first, False) for first, empty in arms if not empty]
    return any(empty for _, empty in arms) and not _decided(taking, then, flags, budget)


_ANYTHING = (None, None)
"""A first character that could be any character at all."""


def _first(items: Any, budget: _Budget, start: int = 0) -> tuple[list[tuple[Any, Any]], bool]:
    """The parser items that can match the first character of what ``items`` (from its item
    ``start`` on) matches, and whether that can match the empty string."""
    firsts: list[tuple[Any, Any]] = []
    for index in range(start, len(items)):
        budget.spend(1)
        op, arg = items[index]
        if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN, _c.CATEGORY):
            return [*firsts, (op, arg)], False
        if op is _c.SUBPATTERN:
            first, empty = _first(arg[3], budget)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            first, empty = _first(arg[2], budget)
            empty = empty or arg[0] == 0
        elif op is _c.ATOMIC_GROUP:
            first, empty = _first(arg, budget)
        elif op is _c.BRANCH:
            arms = [_first(branch, budget) for branch in arg[1]]
            first = [item for arm, _ in arms for item in arm]
            empty = any(arm_empty for _, arm_empty in arms)
        elif op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            first, empty = [], True
        else:  # a back-reference, a conditional group: anything, or nothing
            first, empty = [_ANYTHING], True
        budget.spend(len(first))  # copied into each group around it
        firsts += first
        if not empty:
            return firsts, False
    return firsts, True


def _overlap(one: tuple[Any, Any], other: tuple[Any, Any], flags: int, budget: _Budget) -> bool:
    """Whether two first items can match the same character (yes, when unsure)."""
    budget.spend(1)
    if one is _ANYTHING or other is _ANYTHING:
        return True
    if one[0] is not _c.LITERAL:
        one, other = other, one
    if one[0] is _c.LITERAL and other[0] is _c.LITERAL and not flags & re.IGNORECASE:
        return bool(one[1] == other[1])
    low, high = sorted((repr(one), repr(other)))
    key = (low, high, flags)
    known = budget.overlaps.get(key)
    if known is None:
        budget.spend(_COMPARING_A_LITERAL if one[0] is _c.LITERAL else _COMPARING_CLASSES)
        known = budget.overlaps[key] = _compared(one, other, flags)
    return known


def _compared(one: tuple[Any, Any], other: tuple[Any, Any], flags: int) -> bool:
    """_overlap's answer for a literal (if either is one: ``one``) or two classes."""
    state = _parser.State()
    state.flags = flags
    if one[0] is _c.LITERAL:
        # Cases as re folds them, not as str.casefold does: I, i, \u0130 and \u0131 match
        # one another, where casefold keeps the dotless and the dotted i apart.
        matcher = _compiler.compile(_parser.SubPattern(state, [other]), flags)
        return matcher.match(chr(one[1])) is not None
    # Two classes (\w and \s, [a-z] and /): a character that both match, among them all.
    lookahead = (_c.ASSERT, (1, _parser.SubPattern(state, [one])))
    both = _compiler.compile(_parser.SubPattern(state, [lookahead, other]), flags)
    # Searched first where two classes that overlap mostly do.
    return (
        both.search(_first_characters()) is not None or both.search(_every_character()) is not None
    )


@functools.cache
def _first_characters() -> str:
    """The first 2,048 code points: built when a pattern needs them, not at every start."""
    return "".join(map(chr, range(0x800)))


@functools.cache
def _every_character() -> str:
    """Every code point (4 MiB), for the time compile_pattern takes; then freed."""
    import array

    codec = "utf-32-le" if sys.byteorder == "little" else "utf-32-be"
    return array.array("I", range(sys.maxunicode + 1)).tobytes().decode(codec, "surrogatepass")


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


MAX_TERMS = 100
"""The most sources, dyno names (of -d and -p together), grep and exclude patterns a filter
holds, each: every one is a term of the store's query, which SQLite refuses past a depth of
1,000 terms (about 330 dyno names, or 1,000 plain texts to grep), and plans in a time that
grows faster than their number."""


@dataclass(frozen=True, slots=True)
class LineFilter:
    """Filters are ANDed; each is applied before any line limit.

    ``sources``: a line's source must be one of them (when there are any). ``dynos`` holds
    groups of names, from ``--dyno`` and from ``--process-type``: a line's dyno must match a
    name of every group. A name matches a dyno exactly, as a prefix followed by ``.``
    (``web`` matches ``web.1``, not ``webby.1``), or as the process type of a Fir dyno's
    name (``web`` matches ``web-7d9f8c6b5-x2kqz``, not ``web-api-7d9f8c6b5-x2kqz``; see
    FIR_DYNO_REST).
    ``since`` is inclusive and ``until`` exclusive; both are instant strings. A line passes
    the patterns when it matches any ``grep`` pattern (if there are any) and no ``exclude``
    pattern; patterns are searched in the message.
    """

    app: str | None = None
    sources: tuple[str, ...] = ()
    dynos: tuple[tuple[str, ...], ...] = ()
    since: str | None = None
    until: str | None = None
    grep: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    def matches(self, line: FilteredLine) -> bool:
        """Whether ``line`` passes every filter: what the store's queries select, for lines
        already in hand (a server handing new lines to its tail sessions)."""
        if self.app is not None and line.app != self.app:
            return False
        if self.sources and line.source not in self.sources:
            return False
        for names in self.dynos:
            if not any(dyno_matches(name, line.dyno) for name in names):
                return False
        if self.since is not None and line.time < self.since:
            return False
        if self.until is not None and line.time >= self.until:
            return False
        return self.matches_patterns(line.message)

    def over_limit(self) -> str | None:
        """The first of ``sources``, ``dynos`` (their names in all), ``grep`` and
        ``exclude`` that holds more than MAX_TERMS, if one does."""
        counts = {
            "sources": len(self.sources),
            "dynos": sum(len(names) for names in self.dynos),
            "grep": len(self.grep),
            "exclude": len(self.exclude),
        }
        return next((name for name, count in counts.items() if count > MAX_TERMS), None)

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
