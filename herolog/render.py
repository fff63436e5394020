"""How lines are shown: ``TIMESTAMP SOURCE[DYNO]: MESSAGE`` text, NDJSON, or Heroku's colours.

Every output path renders through here. rich is imported only by the colour renderer, so
plain and JSON output start fast.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import IO, TYPE_CHECKING, Protocol

from herolog.parser import nested_too_deep, parse_fields, parse_structured_data
from herolog.store import StoredLine

if TYPE_CHECKING:
    from rich.style import Style


def format_text(line: StoredLine) -> str:
    return f"{line.timestamp} {line.source}[{line.dyno}]: {line.message}"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and its noun as herolog's messages say a number: ``1 line``, ``1,500
    lines`` (a store may keep one line per app, a drain hold one, an import bring one)."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
"""What JSON leaves raw but str.splitlines ends a line at, as JSON escapes."""
_BIDI_OVERRIDES = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
"""Unicode's bidirectional embeddings, overrides and isolates: a terminal that does bidi
(VTE, Konsole, mlterm) shows the text after one reordered, so a line could show words in
another order than it holds them (Trojan Source). The implicit marks (U+200E, U+200F),
which right-to-left text uses and which cannot reorder its letters, stay."""
_RAW_IN_JSON = str.maketrans(
    {
        **_LINE_BREAKS,
        **{code: f"\\u{code:04x}" for code in [*range(0x80, 0xA0), *_BIDI_OVERRIDES]},
    }
)
"""The line breaks above, the C1 controls that JSON leaves raw and terminals obey (U+009B
as ESC [, U+009D as ESC ]), and the bidirectional overrides, as JSON escapes."""


_ENCODERS = {
    ascii_only: json.JSONEncoder(ensure_ascii=ascii_only, separators=(",", ":"))
    for ascii_only in (False, True)
}


def format_json(line: StoredLine, *, ascii_only: bool = False) -> str:
    """One NDJSON record of the README's schema, one line for any line splitter (a script's
    str.splitlines too), with no control character a terminal would obey."""
    # Written field by field, not as json.dumps of a dict: the same text (the tests check it
    # against json.dumps of the schema) for much less work, which --tail --json needs to keep
    # up with a busy app.
    string = encode_basestring_ascii if ascii_only else encode_basestring
    encode = _ENCODERS[ascii_only].encode
    sd, attributes = line.structured_data, line.attributes
    fields = parse_fields(line.message)
    end = "}" if fields is None else f',"fields":{encode(fields)}}}'
    text = (
        f'{{"id":{line.id},"app":{string(line.app)},"timestamp":{string(line.timestamp)},'
        f'"time":{string(line.time)},"source":{string(line.source)},'
        f'"dyno":{string(line.dyno)},"message":{string(line.message)},'
        f'"pri":{"null" if line.pri is None else line.pri},'
        f'"hostname":{"null" if line.hostname is None else string(line.hostname)},'
        f'"msgid":{"null" if line.msgid is None else string(line.msgid)},'
        f'"structured_data":{encode(parse_structured_data(sd)) if sd else "null"},'
        f'"received_at":{string(line.received_at)},'
        f'"attributes":{_attributes_json(attributes, ascii_only) if attributes else "{}"}{end}'
    )
    return text if text.isascii() else text.translate(_RAW_IN_JSON)


@functools.lru_cache(maxsize=64)
def _attributes_json(attributes: str, ascii_only: bool) -> str:
    # Every line a drain sent carries the same attributes (its URL's query parameters).
    return _ENCODERS[ascii_only].encode(json.loads(attributes)) if _an_object(attributes) else "{}"


@functools.lru_cache(maxsize=64)
def _an_object(attributes: str) -> bool:
    """Whether a line's stored attributes are a JSON object, as herolog writes them: another
    program's ('{bad', '[1]') are shown as none, where --json ended in a traceback or printed
    an array, and a --server client refused the record; so is an object nested past
    FIELDS_DEPTH, which would stop jq 1.6 reading --json's stream, as a message's fields."""
    try:
        value = json.loads(attributes)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and not nested_too_deep(attributes, value)


def encode_record(line: StoredLine, *, msgid: bool = True) -> str:
    """A line as ``herolog logs --server`` receives it: every stored field, in order, on one
    line for any line splitter (some SSE clients split as str.splitlines does). The MSGID,
    last, only when the line has one and ``msgid``: an older herolog, which does not ask
    for it, stops at a record of 13 fields."""
    # Written field by field, not as json.dumps of a list: the same text (the tests check it)
    # in a quarter of the time, which is most of what serve spends on a --server tail's line.
    string = encode_basestring
    pri, hostname, sd, attributes = line.pri, line.hostname, line.structured_data, line.attributes
    text = (
        f"[{line.id},{string(line.app)},{string(line.timestamp)},{string(line.time)},"
        f"{string(line.source)},{string(line.dyno)},{string(line.message)},"
        f"{'null' if pri is None else pri},{'null' if hostname is None else string(hostname)},"
        f"{'null' if sd is None else string(sd)},"
        f"{string(attributes) if attributes and _an_object(attributes) else 'null'},"
        f"{string(line.received_at)}"
        f"{',' + string(line.msgid) if msgid and line.msgid is not None else ''}]"
    )
    return text if text.isascii() else text.translate(_LINE_BREAKS)


def _pipe_fd(stream: IO[str]) -> int | None:
    """The file descriptor under ``stream`` if it is a pipe's writing end, or a socket (what
    node gives the processes it starts for a pipe), else None."""
    import stat

    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
        return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None
    except (OSError, ValueError, AttributeError):
        return None


def reader_gone(stream: IO[str]) -> Callable[[], bool]:
    """For output into a pipe: whether the reader at its other end has gone, so that a tail
    of a quiet app stops then (as GNU ``tail -f`` does), not at its next line."""
    import select

    fd = _pipe_fd(stream)
    if fd is None:
        return lambda: False
    poller = select.poll()
    poller.register(fd, 0)  # no events asked for: POLLERR (the reader closed) still comes
    return lambda: bool(poller.poll(0))


@contextlib.contextmanager
def exit_when_reader_gone(stream: IO[str]) -> Iterator[Callable[[], None]]:
    """For output into a pipe, around work that has nothing to finish (reading from a
    server): exit 0 as soon as the reader at the pipe's other end goes, even while waiting
    on the network (``logs --server -t | head``), as GNU ``tail -f`` does; but only once the
    function it yields has been called (the work has begun), so that an error found before
    (an unknown app, a refused key) keeps its status, as it does locally.

    A thread waits for the pipe's POLLERR and ends the process: the main thread may be
    blocked in a read that no check between reads would interrupt, and an exception
    raised into it from a signal handler could land anywhere, in the HTTP client's
    clean-up too."""
    import select
    import threading

    begun = threading.Event()
    fd = _pipe_fd(stream)
    if fd is None:
        yield begun.set
        return
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)
        poller.poll()
        begun.wait()
        if watching.is_set():
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os._exit(0)

    threading.Thread(target=watch, name="herolog-reader-gone", daemon=True).start()
    try:
        yield begun.set
    finally:
        watching.clear()
        begun.set()  # the watcher, if it is waiting for it, then ends without exiting


OPENING_RETRY_MS = 1000
"""The SSE ``retry`` every log session stream herolog serves opens with: a tail client that
loses the stream comes back this soon. Not a "come back later", which a serve that stops or
cannot read its store asks for with a longer one as the stream ends."""
STREAM_ENDS = ("x-herolog-stream", "ends-with-event")
"""A header of every log session stream herolog serves: it ends with an ``event: end``, so
that one that just stops was cut off (the server stopped) and is not the whole history."""


def decode_record(data: str) -> StoredLine:
    """The inverse of :func:`encode_record`; ValueError for anything else."""
    fields = json.loads(data)
    if not isinstance(fields, list) or len(fields) not in (
        len(_RECORD_TYPES) - 1,
        len(_RECORD_TYPES),
    ):
        raise ValueError("not a herolog log record")
    for value, kinds in zip(fields, _RECORD_TYPES, strict=False):
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ValueError("not a herolog log record")
        if isinstance(value, str) and not value.isascii():
            value.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
    attributes = fields[10]
    if attributes is not None and not isinstance(json.loads(attributes), dict):
        raise ValueError("not a herolog log record: its attributes are not an object")
    return StoredLine(*fields)


_OPTIONAL_STR = (str, type(None))
_RECORD_TYPES: tuple[type | tuple[type, ...], ...] = (
    int,  # id
    str,  # app
    str,  # timestamp
    str,  # time
    str,  # source
    str,  # dyno
    str,  # message
    (int, type(None)),  # pri
    _OPTIONAL_STR,  # hostname
    _OPTIONAL_STR,  # structured_data
    _OPTIONAL_STR,  # attributes
    str,  # received_at
    str,  # msgid, sent only when the line has one
)
"""What each field of a record must be: a server sending anything else is not herolog."""


class Renderer(Protocol):
    def write(self, lines: Sequence[StoredLine]) -> None:
        """Write the lines and flush, so a reader at the end of a pipe sees them at once."""
        ...


_CONTROL = re.compile(
    r"(\x1b\[[0-9;:]*m|\r(?=\n|\Z))|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)
_RESET = "\x1b[0m"


def _shown(m: re.Match[str]) -> str:
    # A colour (SGR) sequence, or the \r a CRLF sender ends its lines with, does no harm.
    if m[1]:
        return m[1]
    code = ord(m[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str, *, line_goes_on: bool = False) -> str:
    """``text`` fit for a terminal: the control characters that anyone sending a line could
    use to drive it (set its title, clear it, write the clipboard, overwrite the header with
    a \\r) shown as ``\\x1b`` escapes; tabs, newlines and colours kept, as less -R does.
    ``line_goes_on``: ``text`` is a run of a line that more text follows, so a \\r that ends
    it does not end the line."""
    if text.isprintable():
        return text
    shown = _CONTROL.sub(_shown, text)
    if line_goes_on and shown.endswith("\r"):
        return shown[:-1] + "\\x0d"
    return shown


def writer_for(stream: IO[str]) -> Callable[[str], None]:
    """A function that writes text to ``stream`` and flushes it, every character of it.

    Another program sharing the output (an ssh or node started in the same terminal while a
    tail runs) can set O_NONBLOCK on it at any time, for every program sharing it; a full
    output then makes Python's buffered writes fail, or drop what does not fit without an
    error. So text for a file descriptor is written to it here, waiting for room."""
    if isinstance(stream, io.TextIOWrapper):
        with contextlib.suppress(OSError, ValueError):  # no descriptor: over a BytesIO
            return _descriptor_writer(stream, stream.fileno())

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


def _descriptor_writer(stream: io.TextIOWrapper, fd: int) -> Callable[[str], None]:
    import codecs

    # Incremental, as the stream's own: a UTF-16 output has one byte order mark, at its start.
    encode = codecs.getincrementalencoder(stream.encoding)(stream.errors or "strict").encode

    def write_all(text: str) -> None:
        stream.flush()  # whatever was written to the stream itself goes first
        data = memoryview(encode(text))
        while data:
            try:
                data = data[os.write(fd, data) :]
            except BlockingIOError:
                _wait_for_room(fd)

    return write_all


def _wait_for_room(fd: int) -> None:
    import select

    poller = select.poll()
    poller.register(fd, select.POLLOUT)  # POLLERR and POLLHUP end it too: the write then fails
    poller.poll()


class TextRenderer:
    def __init__(self, stream: IO[str], *, terminal: bool = False) -> None:
        self.stream = stream
        self.terminal = terminal
        self._write = writer_for(stream)

    def write(self, lines: Sequence[StoredLine]) -> None:
        if not lines:
            return
        if self.terminal:
            text = "".join(_terminal_line(format_text(line)) for line in lines)
        else:
            text = "".join(f"{format_text(line)}\n" for line in lines)
        self._write(text)


def _terminal_line(text: str) -> str:
    shown = for_terminal(text)
    # A message's own colours end with it, not in the next line's header or the prompt.
    return f"{shown}{_RESET}\n" if "\x1b" in shown else f"{shown}\n"


class JsonRenderer(TextRenderer):
    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        # JSON's own \u escapes, where the output's encoding cannot carry every character:
        # each line stays valid JSON of the same text.
        self.ascii_only = not writes_unicode(stream)

    def write(self, lines: Sequence[StoredLine]) -> None:
        if lines:
            ascii_only = self.ascii_only
            self._write("".join(f"{format_json(line, ascii_only=ascii_only)}\n" for line in lines))


def writes_unicode(stream: IO[str]) -> bool:
    """Whether ``stream``'s encoding can carry every character (a UTF codec)."""
    import codecs

    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name.startswith("utf")
    except LookupError:
        return False


def color_wanted(choice: str, force_colors: bool, isatty: bool, env: Mapping[str, str]) -> bool:
    """Whether to colour: the flags, then the environment, then whether stdout is a terminal.

    Explicit flags win over the environment (as no-color.org asks). Then, as the heroku CLI
    11 reads the environment: ``HEROKU_LOGS_COLOR=0`` and ``HEROKU_COLOR=0`` switch colour
    off; ``FORCE_COLOR`` switches it on whatever else is set, unless it is exactly ``0`` or
    ``false``; ``NO_COLOR`` and ``TERM=dumb`` switch it off.
    """
    if choice == "always" or force_colors:
        return True
    if choice == "never":
        return False
    if env.get("HEROKU_LOGS_COLOR") == "0" or env.get("HEROKU_COLOR") == "0":
        return False
    force = env.get("FORCE_COLOR")
    if force is not None:
        return force not in ("0", "false")
    if env.get("NO_COLOR"):
        return False
    if env.get("TERM") == "dumb":
        return False
    return isatty


# Heroku's colours (heroku-cli-util's theme): what each kind of value is drawn in.
SUCCESS = "color(40)"
INFO = "color(43)"
WARNING = "color(214)"
FAILURE = "#ff8787"
CODE = "bold color(255) on color(237)"
DIM = "dim"
HEADER_COLORS = (
    "yellow", "green", "cyan", "magenta", "blue",
    "bold green", "bold cyan", "bold magenta", "bold yellow", "bold blue",
)  # fmt: skip
# The heroku CLI hands these out first, so they look the same in every session.
_PRESET = {"run": 0, "router": 1, "web": 2, "postgres": 3, "heroku-postgres": 4}

_IDENTIFIER = re.compile(r"([\w-]+)([\d.]+)?", re.ASCII)
_TOKENS = re.compile(r"\s+|\S+")
_LEADING_NUMBER = re.compile(r"[0-9]+")
_STATE_CHANGE = re.compile(r"(State changed from )(\w+)( to )(\w+)")
_EXITED = re.compile(r"(Process exited with status )(\d+)")
_STARTING = re.compile(r"(Starting process with command )(`.+`)( by user )?(.*)")
_APACHE = re.compile(
    r'(\d+\.\d+\.\d+\.\d+ -[^-]*- \[[^\]]+] ")(\w+)( )([^ ]+)( HTTP/\d+\.\d+" )(\d+)( .+)'
)
_LAST_VERSION = re.compile(r'.*(HTTP/\d+\.\d+" )', re.DOTALL)
_WORD = re.compile(r"\w+")
_BUILD_STARTED = re.compile(r"(Build started by user )(.+)")
_DEPLOY = re.compile(r"(Deploy )(\w+)( by user )(.+)")
_RELEASE = re.compile(r"(Release )(v\d+)( created by user )(.+)")
_METRICS = re.compile(r"source=\w+ sample#")
_CREATE_TABLE = re.compile(r"(\[DATABASE].*)(CREATE TABLE)(.*)")


def identifier(dyno: str) -> str | None:
    """The dyno's name without its ``.N`` (``web.1`` -> ``web``), as the heroku CLI finds it."""
    m = _IDENTIFIER.fullmatch(dyno)
    return m.group(1) if m else None


def header_color(name: str) -> str:
    """The colour of a dyno's headers: Heroku's presets, else a stable pick of the rest.

    The heroku CLI gives colours in order of first appearance, so they change between
    sessions; a hash of the name (not Python's randomised ``hash``) keeps them stable.
    """
    preset = _PRESET.get(name)
    if preset is not None:
        return HEADER_COLORS[preset]
    return HEADER_COLORS[5 + zlib.crc32(name.encode()) % 5]


def status_style(value: str) -> str | None:
    code = int(m.group()) if (m := _LEADING_NUMBER.match(value)) else 0
    if 200 <= code < 300:
        return SUCCESS
    if 300 <= code < 400:
        return INFO
    if 400 <= code < 500:
        return WARNING
    if 500 <= code < 600:
        return FAILURE
    return None


def duration_style(value: str) -> str | None:
    m = _LEADING_NUMBER.match(value)
    if m is None:  # an empty value (connect= on router errors)
        return None
    ms = int(m.group())
    if ms < 100:
        return SUCCESS
    if ms < 500:
        return INFO
    if ms < 5000:
        return WARNING
    if ms < 10000:
        return FAILURE
    return "bold " + FAILURE


_Parts = list[tuple[str, str | None]]


def _router(body: str) -> _Parts:
    parts: _Parts = []
    for token in _TOKENS.findall(body):
        key, eq, value = token.partition("=")
        if token.isspace() or not eq:
            parts.append((token, None if token.isspace() else DIM))
            continue
        parts.append((key + "=", DIM))
        style: str | None
        if key == "at":
            style = FAILURE if value == "error" else DIM
        elif key == "code":
            style = "bold " + FAILURE
        elif key == "method":
            style = "magenta"
        elif key == "path":
            style = "green"
        elif key == "dyno":
            name = identifier(value)
            style = header_color(name) if name else None
        elif key == "status":
            style = status_style(value)
        elif key in ("connect", "service"):
            style = duration_style(value)
        else:
            style = DIM
        parts.append((value, style))
    return parts


def _state(state: str) -> str | None:
    return {"up": SUCCESS, "complete": SUCCESS, "down": FAILURE, "starting": INFO}.get(state)


def _lifecycle(body: str) -> _Parts | None:
    """A dyno's platform messages: start, state changes, exits, SIGTERM."""
    if body == "Stopping all processes with SIGTERM":
        return [(body, FAILURE)]
    if m := _STARTING.fullmatch(body):
        return [(m[1], None), (m[2], CODE), (m[3] or "", None), (m[4] or "", "green")]
    if m := _STATE_CHANGE.fullmatch(body):
        return [(m[1], None), (m[2], _state(m[2])), (m[3], None), (m[4], _state(m[4]))]
    if m := _EXITED.fullmatch(body):
        return [(m[1], None), (m[2], SUCCESS if m[2] == "0" else FAILURE)]
    return None


def _web(body: str) -> _Parts | None:
    if body in ("Unidling", "Restarting"):
        return [(body, "yellow")]
    if m := _APACHE.fullmatch(body):
        return [
            (m[1], DIM), (m[2], "magenta"), (m[3], DIM), (m[4], "green"),
            (m[5], DIM), (m[6], status_style(m[6])), (m[7], DIM),
        ]  # fmt: skip
    return _route(body)


def _route(body: str) -> _Parts | None:
    """The heroku CLI's ``(.* ")(\\w+)(.+)(HTTP/\\d+\\.\\d+" .*)``, split as it splits, in time
    linear in the line's length: the pattern backtracks into every quote of the line, which
    took 30 s for a line of 100 kB of JSON."""
    version = _LAST_VERSION.match(body)
    if version is None:
        return None
    path_end = version.start(1)
    # The last ' "' with a word after it and at least one character before the version.
    quote = body.rfind(' "', 0, path_end - 2)
    while quote >= 0:
        if word := _WORD.match(body, quote + 2, path_end):
            method_end = min(word.end(), path_end - 1)
            return [
                (body[: quote + 2], None),
                (body[quote + 2 : method_end], "magenta"),
                (body[method_end:path_end], "green"),
                (body[path_end:], None),
            ]
        quote = body.rfind(' "', 0, quote + 1)
    return None


def _api(body: str) -> _Parts | None:
    if body == "Build succeeded":
        return [(body, SUCCESS)]
    if body.startswith("Build failed"):
        return [(body, FAILURE)]
    if m := _BUILD_STARTED.fullmatch(body):
        return [(m[1], None), (m[2], "green")]
    if m := _DEPLOY.fullmatch(body):
        return [(m[1], None), (m[2], "cyan"), (m[3], None), (m[4], "green")]
    if m := _RELEASE.fullmatch(body):
        return [(m[1], None), (m[2], "magenta"), (m[3], None), (m[4], "green")]
    return _lifecycle(body)


def _postgres(body: str) -> _Parts | None:
    if m := _CREATE_TABLE.fullmatch(body):
        return [(m[1], DIM), (m[2], "magenta"), (m[3], "cyan")]
    return _metrics(body)


def _metrics(body: str) -> _Parts | None:
    return [(body, DIM)] if _METRICS.search(body) else None


def body_parts(name: str, source: str, body: str) -> _Parts:
    """The first line of a message cut into (text, style) runs by Heroku's rules.

    Beyond the heroku CLI, which colours lifecycle messages of ``web`` and ``run`` only,
    the platform's messages about any dyno (``heroku[worker.1]``) are coloured the same way.
    """
    parts: _Parts | None = None
    if name == "router":
        parts = _router(body)
    elif name == "api":
        parts = _api(body)
    elif name in ("web", "run"):
        parts = _lifecycle(body) or (_web(body) if name == "web" else None)
    elif name in ("postgres", "heroku-postgres"):
        parts = _postgres(body)
    elif name == "heroku-redis":
        parts = _metrics(body)
    elif source == "heroku":
        parts = _lifecycle(body)
    return parts or [(body, None)]


def colored_parts(line: StoredLine) -> _Parts:
    """The rendered line as (text, style) runs; joined, the text is exactly format_text's."""
    header = f"{line.timestamp} {line.source}[{line.dyno}]:"
    name = identifier(line.dyno)
    if name is None:  # the heroku CLI leaves lines it cannot split untouched
        return [(f"{header} {line.message}", None)]
    first, newline, rest = line.message.partition("\n")
    parts: _Parts = [(header, header_color(name)), (" ", None)]
    parts += body_parts(name, line.source, first)
    if newline:
        parts.append((newline + rest, None))
    return parts


class ColorRenderer:
    """Heroku-coloured text for terminals (or when colour is forced), styled by rich.

    Each run of text is written as it is, wrapped in the escape codes rich renders for its
    style: nothing in a log line is read as markup, and no character of it is dropped
    (rich's Text would strip control characters such as a carriage return).
    """

    def __init__(self, stream: IO[str], *, terminal: bool = False) -> None:
        from rich.color import ColorSystem
        from rich.console import Console

        self.stream = stream
        self.terminal = terminal
        self._write = writer_for(stream)
        detected = Console(file=stream, force_terminal=True).color_system
        systems = {
            "standard": ColorSystem.STANDARD,
            "256": ColorSystem.EIGHT_BIT,
            "truecolor": ColorSystem.TRUECOLOR,
            "windows": ColorSystem.WINDOWS,
        }
        # Colour was asked for, so a terminal rich thinks dumb still gets the basic 16.
        self.color_system = systems.get(detected or "", ColorSystem.STANDARD)
        self._styles: dict[str, Style] = {}

    def _render(self, text: str, style: str) -> str:
        from rich.style import Style

        parsed = self._styles.get(style)
        if parsed is None:
            parsed = self._styles[style] = Style.parse(style)
        return parsed.render(text, color_system=self.color_system)

    def write(self, lines: Sequence[StoredLine]) -> None:
        if not lines:
            return
        out = []
        for line in lines:
            kept_escapes = False
            parts = colored_parts(line)
            whole = "".join(text for text, _ in parts) if self.terminal else ""
            end = 0
            for text, style in parts:
                if self.terminal:
                    end += len(text)
                    goes_on = whole[end : end + 1] not in ("", "\n")
                    text = for_terminal(text, line_goes_on=goes_on)
                    kept_escapes = kept_escapes or "\x1b" in text
                out.append(self._render(text, style) if style else text)
            out.append(f"{_RESET}\n" if kept_escapes else "\n")
        self._write("".join(out))


def _block_on(stream: IO[str]) -> None:
    """Make writes to ``stream`` wait for room again, where another program sharing it set
    O_NONBLOCK (an ssh in the background, on a terminal): Python's buffered writes drop what
    does not fit at once there, with no error."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = stream.fileno()
        if not os.get_blocking(fd):
            os.set_blocking(fd, True)


def renderer_for(
    stream: IO[str], *, json_output: bool, color: bool, terminal: bool = False
) -> Renderer:
    """``terminal``: the stream is a terminal, which a message's control characters could
    drive; they are shown escaped there (JSON output escapes them always)."""
    _block_on(stream)
    if json_output:
        return JsonRenderer(stream)
    if isinstance(stream, io.TextIOWrapper) and not writes_unicode(stream):
        # Logs are UTF-8 whatever the locale (LANG=en_US.ISO-8859-1, PYTHONIOENCODING=ascii):
        # what the output cannot carry is written as a \u escape, not a traceback.
        stream.reconfigure(errors="backslashreplace")
    if color:
        return ColorRenderer(stream, terminal=terminal)
    return TextRenderer(stream, terminal=terminal)
