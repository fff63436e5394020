"""httpx's request functions for the tests, with one TLS context for all: httpx makes a new
one for every request and client it is not given one for (loading the trusted CAs, 25-30
ms), even for an http:// URL, where it is never used; across the suite that was half a
minute. A request that needs a context of its own (an https:// server with a CA of the
test's) passes ``verify`` as with httpx.

Nor do they take a proxy from the environment (trust_env): the servers they ask are on this
machine, which a proxy in $HTTP_PROXY, set on many a CI runner, cannot reach. herolog itself
goes past a proxy for a loopback server (remote.proxy_for)."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx

PLAIN_HTTP = ssl.create_default_context()
"""The context passed as ``verify`` where a test does not pass its own."""

get = functools.partial(httpx.get, verify=PLAIN_HTTP, trust_env=False)
post = functools.partial(httpx.post, verify=PLAIN_HTTP, trust_env=False)
put = functools.partial(httpx.put, verify=PLAIN_HTTP, trust_env=False)
patch = functools.partial(httpx.patch, verify=PLAIN_HTTP, trust_env=False)
delete = functools.partial(httpx.delete, verify=PLAIN_HTTP, trust_env=False)
head = functools.partial(httpx.head, verify=PLAIN_HTTP, trust_env=False)
options = functools.partial(httpx.options, verify=PLAIN_HTTP, trust_env=False)
request = functools.partial(httpx.request, verify=PLAIN_HTTP, trust_env=False)
stream = functools.partial(httpx.stream, verify=PLAIN_HTTP, trust_env=False)


def Client(**settings: Any) -> httpx.Client:
    return httpx.Client(**{"verify": PLAIN_HTTP, "trust_env": False, **settings})
