"""Programs the benchmarks and the interop tests run, installed into cache folders.

No root-wide install: Debian packages are fetched with ``apt-get download`` and unpacked
with ``dpkg -x`` under ~/.cache/herolog-bench/NAME, and run from there with LD_LIBRARY_PATH
pointing at the libraries that came with them; the official heroku CLI is installed with
npm under ~/.cache/herolog-tests.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


class Unavailable(RuntimeError):
    """A program could not be installed; the message says why."""


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache(name: str) -> Path:
    return _cache_home() / "herolog-bench" / name


def unpack(name: str, packages: list[str], programs: list[str]) -> Path:
    """The root the packages are unpacked under, once ``programs`` (paths in it) exist."""
    root = cache(name) / "root"
    if all((root / program).exists() for program in programs):
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise Unavailable("needs apt-get and dpkg (Debian or Ubuntu)")
    debs = cache(name) / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(
        ["apt-get", "download", *packages], cwd=debs, capture_output=True, text=True, timeout=300
    )
    if got.returncode != 0:
        why = (got.stderr.strip().splitlines() or ["no message"])[-1]
        raise Unavailable(f"apt-get download {' '.join(packages)} failed: {why}")
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    missing = [program for program in programs if not (root / program).exists()]
    if missing:
        raise Unavailable(f"the packages did not hold {', '.join(missing)}")
    return root


def library_env(root: Path) -> dict[str, str]:
    """The environment to run a program unpacked under ``root`` with."""
    dirs = sorted({str(p.parent) for p in root.rglob("*.so*")})
    return {
        **os.environ,
        # An empty entry would be the current directory.
        "LD_LIBRARY_PATH": os.pathsep.join(
            filter(None, [*dirs, os.environ.get("LD_LIBRARY_PATH")])
        ),
    }


def version(name: str, command: Sequence[str | Path], env: dict[str, str] | None = None) -> str:
    """``name`` and the version ``command`` says it is (e.g. 'rsyslog 8.2302.0')."""
    try:
        told = subprocess.run(
            [str(part) for part in command], capture_output=True, text=True, env=env, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return f"{name} (version unknown)"
    m = re.search(r"\d+\.\d+[\w.+~-]*", told.stdout + "\n" + told.stderr)
    return f"{name} {m.group(0)}" if m else f"{name} (version unknown)"


def wrk_version() -> str:
    program, env = wrk()
    return version("wrk", [program, "-v"], env)


@functools.cache
def wrk() -> tuple[str, dict[str, str]]:
    """wrk (the HTTP load generator) and its environment: from PATH, else unpacked."""
    found = shutil.which("wrk")
    if found is not None:
        return found, dict(os.environ)
    root = unpack("wrk", ["wrk", "libluajit-5.1-2"], ["usr/bin/wrk"])
    return str(root / "usr/bin/wrk"), library_env(root)


def require_wrk(benchmark: str) -> None:
    """Exit with a one-line reason when wrk can be neither found nor installed."""
    try:
        wrk()
    except Unavailable as error:
        raise SystemExit(f"{benchmark} needs wrk (apt-get install wrk), and {error}") from None


HEROKU_CLI = "heroku@11.10.0"
"""The version the reference was written against; its cache folder is keyed on it."""
NODE_MAJOR = 20
"""The oldest Node.js the heroku CLI 11 runs on (its package's engines field)."""


def heroku_cli_dir() -> Path:
    configured = os.environ.get("HEROLOG_TEST_NPM_DIR")
    if configured:
        return Path(configured)
    return _cache_home() / "herolog-tests" / HEROKU_CLI.replace("@", "-")


def heroku_cli() -> Path:
    """The official ``heroku`` executable, installed with npm the first time."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        raise Unavailable(
            f"the official heroku CLI needs Node.js {NODE_MAJOR}+ and npm: install them"
            " (e.g. apt-get install nodejs npm)"
        )
    told = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60)
    version = told.stdout.strip()
    major = version.removeprefix("v").partition(".")[0]
    if not major.isdigit() or int(major) < NODE_MAJOR:
        # npm would install it all the same, and it would then fail without saying why.
        raise Unavailable(
            f"the official heroku CLI needs Node.js {NODE_MAJOR}+, and {node} is"
            f" {version or 'of no version it tells'}: install a newer one (from nodejs.org"
            " or NodeSource, where the system's own is older)"
        )
    where = heroku_cli_dir()
    executable = where / "node_modules" / ".bin" / "heroku"
    if executable.exists():
        return executable
    if npm is None:
        raise Unavailable(
            "the official heroku CLI is installed with npm, and there is none: install it"
            " (e.g. apt-get install npm)"
        )
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", HEROKU_CLI],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0 or not executable.exists():
        raise Unavailable(
            f"npm install {HEROKU_CLI} failed (exit {done.returncode}); it needs the npm"
            f" registry once, then uses the copy in {where}:\n{done.stderr[-2000:]}"
        )
    return executable
