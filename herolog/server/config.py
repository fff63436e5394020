"""What ``herolog serve`` is told: addresses, credentials, TLS, limits."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import socket
import ssl
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from herolog.interrupt import unless_stopped
from herolog.server.http import same_secret
from herolog.store import APP_NAME_RULE, valid_app_name

DEFAULT_PORT = 8514
DEFAULT_MAX_BODY = 5 << 20
DEFAULT_SYSLOG_APP = "default"
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_SYSLOG_MAX_CONNECTIONS = 10_000


class ConfigError(ValueError):
    """A configuration that must not start: the message says why and what to do. ``about``:
    the options whose values it is about that it does not name (``--host`` in "cannot listen
    on HOST:PORT")."""

    def __init__(self, message: str, about: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.about = about


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, value: str) -> Credentials:
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise ConfigError("--auth takes USER:PASSWORD, both non-empty")
        if re.search("[\x00-\x1f\x7f-\x9f]", value):
            # An env file saved with CRLF line ends gives HEROLOG_AUTH a \r: serve started,
            # and every drain got 401 with nothing on screen to say why.
            raise ConfigError(
                "--auth holds a control character (an env file's \\r?): no drain URL carries one"
            )
        return cls(user, password)


@dataclass(frozen=True)
class DrainTiming:
    """How long drain delivery waits: for an answer, between retries, to flush on exit."""

    timeout_s: float = 10.0
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 5.0
    retry_after_cap_s: float = 60.0
    """The longest a drain's Retry-After is waited for."""
    flush_s: float = 5.0
    """As serve stops (``--drain-flush-timeout``); the stream of a tail that the stop ends
    asks its client to come back after it, and 5 s more."""


@dataclass(frozen=True)
class ServeConfig:
    store_path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    syslog_port: int | None = None
    syslog_app: str = DEFAULT_SYSLOG_APP
    syslog_max_connections: int = DEFAULT_SYSLOG_MAX_CONNECTIONS
    """Syslog connections open at once, at most; more are closed as they arrive."""
    auth: Credentials | None = None
    api_key: str | None = field(default=None, repr=False)
    certfile: Path | None = None
    keyfile: Path | None = None
    history: int | None = None
    max_body: int = DEFAULT_MAX_BODY
    insecure_no_auth: bool = False
    drain_buffer: int = 1024
    """Lines each drain holds while it cannot deliver; past that the oldest are dropped."""
    drain_timing: DrainTiming = DrainTiming()
    public_url: str | None = None
    """The address clients reach this server at, for the session URLs it hands out."""
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    """Seconds a request's body may take to arrive after its headers; then 408."""
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    """Seconds a request's headers may take to arrive (from the connection, or from the
    first bytes of a later request on it); then 408 and the connection is closed."""

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    def check(self) -> None:
        """Raise ConfigError for a configuration that must not start."""
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("--certfile and --keyfile go together")
        # Bytes that are not UTF-8 (a secrets file in Latin-1) come as surrogates, which no
        # request's credentials can match and no answer or start-up line can carry.
        for option, value in (
            ("--auth", self.auth and f"{self.auth.user}:{self.auth.password}"),
            ("--public-url", self.public_url),
        ):
            if value and not _utf8(value):
                raise ConfigError(f"{option} must be UTF-8 text: it holds bytes that are not")
        if self.api_key and not (self.api_key.isascii() and self.api_key.isprintable()):
            # What herolog logs --server sends, and the heroku CLI can put in a header.
            raise ConfigError("--api-key must be printable ASCII, as API keys are")
        if self.api_key and self.api_key.strip(" ") != self.api_key:
            # An Authorization header's value comes without the spaces around it (h11 strips
            # them): a heroku CLI or herolog logs sending this key would get 401 every time.
            raise ConfigError(
                "--api-key must not begin or end with a space: clients send it in a header,"
                " which does not carry the spaces around its value"
            )
        if self.api_key and self.auth and same_secret(self.api_key, self.auth.password):
            # The API takes Basic auth with the key as its password, and every drain URL
            # (in Heroku's drain list, a dashboard) carries --auth's: it would open the API.
            raise ConfigError(
                "--api-key must not be the password of --auth: drain URLs carry that password,"
                " and with it the Platform API would read every log and add drains; give each"
                " its own secret"
            )
        if not is_loopback(self.host) and self.auth is None and not self.insecure_no_auth:
            resolve(self.host, self.port, ("--host",))  # a misspelt name: not a public address
            raise ConfigError(
                f"refusing to listen on {self.host} without --auth: anyone who can reach it"
                " could write logs. Give --auth USER:PASSWORD (and put the same credentials"
                " in the drain URL), or --insecure-no-auth if a proxy in front checks them.",
                about=("--host",),
            )
        if self.public_url is not None:
            from herolog.drains import mask_loosely, spaced

            shown = f"--public-url {mask_loosely(self.public_url)!r}"  # what was typed
            if not self.public_url.startswith(("http://", "https://")):
                raise ConfigError(f"{shown} must start with http:// or https://")
            # Log-session URLs are this URL followed by a path, which after a ?, a # or a
            # space (an env file's trailing one) is no path: every heroku logs would fail.
            if spaced(self.public_url):
                raise ConfigError(f"{shown} holds a space or a control character, as no URL does")
            if "?" in self.public_url or "#" in self.public_url:
                raise ConfigError(
                    f"{shown} must be http(s)://HOST[:PORT][/PATH], with no ?query or #fragment:"
                    " herolog adds its paths to it"
                )
            try:
                parts = urlsplit(self.public_url)
                parts.port  # noqa: B018 (raises ValueError for a port that is not one)
            except ValueError as error:
                raise ConfigError(f"{shown} is not a URL: {error}") from None
            if not parts.hostname:
                raise ConfigError(f"{shown} has no host name")
        if self.syslog_port == self.port != 0:
            raise ConfigError(
                f"--syslog-port and --port are both {self.port}: drains and syslog need a port each"
            )
        if self.drain_buffer < 1:
            raise ConfigError("--drain-buffer must be at least 1 line")
        if self.syslog_max_connections < 1:
            raise ConfigError("--syslog-max-connections must be at least 1")
        if self.max_body < 1024:
            raise ConfigError("--max-body must be at least 1024 bytes")
        if not valid_app_name(self.syslog_app):
            raise ConfigError(
                f"--syslog-app {self.syslog_app!r} is not an app name: {APP_NAME_RULE}"
            )
        # inf would switch the limit off: a client could hold a connection for ever.
        if not (self.body_timeout > 0 and math.isfinite(self.body_timeout)):
            raise ConfigError("the body timeout must be a number of seconds more than 0")
        if not (self.header_timeout > 0 and math.isfinite(self.header_timeout)):
            raise ConfigError("the header timeout must be a number of seconds more than 0")
        if not (0 <= self.drain_timing.flush_s <= 86400):  # nan and inf too
            raise ConfigError("the drain flush timeout must be a number of seconds, 0 to 86400")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def listen_host(value: str) -> str:
    """``--host`` as given, as the address to listen on: an IPv6 address may come in
    brackets, as URLs write it (``[::1]``). ConfigError for a URL or a port with it, which
    would otherwise be looked up as a name (or refused as a public address without --auth)."""
    if "://" in value:
        raise ConfigError(f"--host takes an address or a host name, not a URL: {value!r}")
    host, port = value, None
    if bracketed := re.fullmatch(r"\[([^\]]*)\](?::(.*))?", value):
        host, port = bracketed[1], bracketed[2]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(
                f"--host takes only an IPv6 address in brackets, not {host!r}"
            ) from None
    elif value.count(":") == 1:  # an IPv6 address has two at least
        host, port = value.split(":")
    if port is not None:
        raise ConfigError(f"--host takes no port: give --host {host} --port {port}")
    return host


def resolve(host: str, port: int, about: tuple[str, ...]) -> list[tuple[int, tuple[Any, ...]]]:
    """The addresses ``host:port`` resolves to, each with its family, in the resolver's
    order; ConfigError, about the options ``about``, for a name that resolves to none."""
    from herolog.drains import spaced

    if spaced(host):
        # An env file's HEROLOG_HOST='127.0.0.1 ': the resolver's "Name or service not known"
        # hid the space in 'cannot listen on 127.0.0.1 :8514'.
        shown = host if host.isprintable() else repr(host)  # one line
        raise ConfigError(f"cannot listen on {shown}:{port}: {host!r} is not a host name", about)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:  # from the IDNA codec: an empty label (a..b), one over 63 characters
        raise ConfigError(
            f"cannot listen on {host}:{port}: {host!r} is not a host name", about
        ) from None
    except OSError as error:
        why = error.strerror or str(error)
        raise ConfigError(f"cannot listen on {url_host(host, port)}: {why}", about) from None
    return list(dict.fromkeys((family, address) for family, *_, address in found))


def url_host(host: str, port: int | None = None) -> str:
    """``host`` (and ``:port``) as a URL writes them: an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NeedsPassphrase(Exception):
    pass


def _no_passphrase() -> str:
    raise _NeedsPassphrase


@dataclass(frozen=True)
class TLSFiles:
    """``--certfile`` and ``--keyfile`` and what they hold, each read once: one may be a pipe
    (bash's ``<(...)``, a FIFO a secrets manager writes into), which the second reading of
    it would find empty or wait on for ever."""

    certfile: Path
    keyfile: Path
    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)

    @classmethod
    def read(cls, certfile: Path, keyfile: Path) -> TLSFiles:
        cert = _read("--certfile", certfile)
        # One file for both (a PEM of the certificate and its key, as HAProxy takes them):
        # read once too, where a pipe's second reading would be empty.
        key = cert if _same_file(certfile, keyfile) else _read("--keyfile", keyfile)
        return cls(certfile, keyfile, cert, key)


MAX_TLS_FILE = 1 << 20
"""The most ``--certfile`` or ``--keyfile`` may hold, 1 MiB: a certificate with its chain, or
a key, is a few KB, and a file given by mistake (a log, /dev/zero) is not read whole."""


def _read(option: str, path: Path) -> bytes:
    def read() -> bytes:
        with path.open("rb") as file:
            return file.read(MAX_TLS_FILE + 1)

    try:
        data = read() if _regular(path) else unless_stopped(read)
    except OSError as error:
        raise ConfigError(
            f"cannot read {option} {path}: {error.strerror or error}", about=(option,)
        ) from None
    if len(data) > MAX_TLS_FILE:
        raise ConfigError(
            f"cannot use {option} {path}: it holds over {MAX_TLS_FILE >> 20} MiB, where a PEM"
            " certificate with its chain, or a key, is a few KB",
            about=(option,),
        )
    return data


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.samefile(other)
    except OSError:
        return False


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return True  # to fail as it is read, saying why


@contextlib.contextmanager
def _loadable(files: TLSFiles) -> Iterator[tuple[str, str]]:
    """Paths OpenSSL can read the certificate and key at: a regular file's own (OpenSSL reads
    it again), else, where Linux has them, a file in memory holding what was read (a key is
    written to no disk)."""
    paths, fds = [str(files.certfile), str(files.keyfile)], []
    try:
        for at, data in enumerate((files.cert, files.key)):
            path = (files.certfile, files.keyfile)[at]
            if sys.platform != "linux" or _regular(path):
                continue
            fd = os.memfd_create("herolog-tls")
            fds.append(fd)
            with open(fd, "wb", closefd=False) as memory:
                memory.write(data)
            paths[at] = f"/proc/self/fd/{fd}"
        yield paths[0], paths[1]
    finally:
        for fd in fds:
            os.close(fd)


SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""The TLS 1.2 ciphers serve takes: forward secrecy (ECDHE) and AEAD (AES-GCM, ChaCha20)."""


def tls_context(files: TLSFiles) -> ssl.SSLContext:
    """A server's TLS context for the certificate and key; ConfigError, saying what is wrong
    with them, if they cannot be used (never a prompt for a passphrase)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # Set here, not left to Python's defaults: Debian's and Ubuntu's Python (built with
    # --with-ssl-default-suites=openssl) leaves both to OpenSSL's settings, whose ciphers
    # include TLS 1.2 ones without forward secrecy (plain RSA key exchange) and with CBC and
    # SHA-1; CPython's own list has CBC ones. This is Mozilla's "intermediate" choice less
    # its DHE suites (serve loads no DH parameters), which Logplex, rsyslog and any current
    # client offer. TLS 1.3's suites are all forward-secret and AEAD.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(SERVER_CIPHERS)
    certfile, keyfile = files.certfile, files.keyfile
    try:
        with _loadable(files) as (cert, key):
            context.load_cert_chain(cert, key, password=_no_passphrase)
    except _NeedsPassphrase:
        raise ConfigError(
            f"the key in {keyfile} is encrypted: give --keyfile a key without a passphrase"
            f" (openssl pkey -in {keyfile} -out plain-key.pem)"
        ) from None
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH" and files.cert.count(_BEGIN) > 1:
            # OpenSSL takes the first one for the server's: a chain written CA first fails.
            why = (
                "the key is not the key of its first certificate (put the server's"
                " certificate first, then the ones that issued it, as fullchain.pem has them)"
            )
        elif error.reason == "KEY_VALUES_MISMATCH":
            why = "the key is not the certificate's key"
        else:
            detail = f" ({error.reason})" if error.reason else ""
            why = f"they must be a PEM certificate and its PEM private key{detail}"
        raise ConfigError(
            f"cannot use --certfile {certfile} and --keyfile {keyfile}: {why}"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"cannot read {error.filename or 'the TLS files'}: {error.strerror or error}",
            about=("--certfile", "--keyfile"),
        ) from None
    return context


def syslog_tls_context(files: TLSFiles) -> ssl.SSLContext:
    """The syslog+tls listener's context: one that sends no TLS 1.3 session tickets. A
    syslog client reads nothing, and one that closes with them unread (an application's
    logging handler, a script) has its kernel reset the connection, upon which Linux drops
    what serve had not read yet of what it sent."""
    context = tls_context(files)
    context.num_tickets = 0
    return context


_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


EXPIRY_NOTICE_S = 7 * 86400.0
"""How long before its certificate expires serve says so (a third of its lifetime for a
shorter-lived one, as Let's Encrypt's six-day ones): certbot renews a 90-day certificate 30
days before, and serve reads the certificate only as it starts."""


class CertificateDates(NamedTuple):
    """The validity of the server's certificate (the first in ``--certfile``)."""

    certfile: Path
    not_before: datetime
    not_after: datetime

    @classmethod
    def of(cls, files: TLSFiles) -> CertificateDates | None:
        try:
            begin = files.cert.index(_BEGIN)
            end = files.cert.index(_END, begin) + len(_END)
            pem = files.cert[begin:end].decode("ascii")
            return cls(files.certfile, *_validity(ssl.PEM_cert_to_DER_cert(pem)))
        except (ValueError, IndexError):  # loaded by OpenSSL, so not likely: say nothing
            return None

    def state(self, now: datetime) -> str:
        """``early``, ``valid``, ``expiring`` (within EXPIRY_NOTICE_S, or a third of its
        lifetime) or ``expired``."""
        if now > self.not_after:
            return "expired"
        if now < self.not_before:
            return "early"
        left = (self.not_after - now).total_seconds()
        return "expiring" if left <= self._notice_s() else "valid"

    def _notice_s(self) -> float:
        return min(EXPIRY_NOTICE_S, (self.not_after - self.not_before).total_seconds() / 3)

    def warning(self, now: datetime | None = None) -> str | None:
        """What to say of the certificate if it is out of its validity (OpenSSL loads it
        all the same, and clients refuse it) or about to be."""
        now = now or datetime.now(UTC)
        refused = "Heroku and every client that checks it refuse it"
        state = self.state(now)
        if state == "expired":
            return (
                f"the certificate in {self.certfile} expired on {self.not_after:%Y-%m-%d %H:%M}"
                f" UTC: {refused} (renew it, then restart serve)"
            )
        if state == "early":
            return (
                f"the certificate in {self.certfile} is not valid until"
                f" {self.not_before:%Y-%m-%d %H:%M} UTC (is this machine's clock right?):"
                f" {refused} until then"
            )
        if state == "expiring":
            left = (self.not_after - now).total_seconds()
            return (
                f"the certificate in {self.certfile} expires on {self.not_after:%Y-%m-%d %H:%M}"
                f" UTC, {_within(left)}: renew it, then restart serve, which reads it only as"
                " it starts"
            )
        return None

    def next_change(self, now: datetime | None = None) -> float | None:
        """Seconds until :meth:`warning` says something else, or None once it never will."""
        now = now or datetime.now(UTC)
        for moment in (self.not_before, self.not_after - timedelta(seconds=self._notice_s())):
            if now < moment:
                return (moment - now).total_seconds()
        if now <= self.not_after:
            return (self.not_after - now).total_seconds() + 1.0  # past it, not at it
        return None


def _within(seconds: float) -> str:
    """``in 3 days``, ``in 5 hours``, ``in 12 minutes``, rounded down."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"in {count} {unit}{'s' if count != 1 else ''}"
    return "in less than a minute"


def _validity(der: bytes) -> tuple[datetime, datetime]:
    """notBefore and notAfter of a DER certificate (RFC 5280, 4.1): the standard library
    reads them only from a peer's certificate."""

    def element(at: int) -> tuple[int, int, int]:
        """The tag, the start of the contents and their end, of the element at ``at``."""
        tag, size = der[at], der[at + 1]
        at += 2
        if size & 0x80:
            count = size & 0x7F
            size, at = int.from_bytes(der[at : at + count]), at + count
        return tag, at, at + size

    tbs = element(element(0)[1])[1]  # Certificate, then TBSCertificate: its contents
    tag, _, end = element(tbs)
    at = end if tag == 0xA0 else tbs  # the version, [0], is optional
    for _ in range(3):  # serialNumber, signature, issuer
        at = element(at)[2]
    at = element(at)[1]  # validity
    times = []
    for _ in range(2):
        tag, start, end = element(at)
        # UTCTime (YYMMDDHHMMSSZ) from 1950 to 2049, GeneralizedTime (YYYYMMDDHHMMSSZ)
        # outside those years (RFC 5280, 4.1.2.5).
        shape = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
        moment = datetime.strptime(der[start:end].decode("ascii"), shape).replace(tzinfo=UTC)
        if tag == 0x17 and moment.year >= 2050:  # strptime's %y: 69 to 99 only are 19YY
            moment = moment.replace(year=moment.year - 100)
        times.append(moment)
        at = end
    return times[0], times[1]
