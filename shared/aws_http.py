"""Every async AWS client's config, with one TLS context per process.

aiobotocore builds a new SSL context for each client's connection pool, on the client's first
request, loading the whole CA bundle each time: 40-60 ms of CPU per client (issue 12). A
worker container has up to four clients and pays it in its first invocation; ``submit`` has
five, and paid three of them in parallel threads before its first message went out. The
context depends only on the client's ``verify`` setting, and one ``SSLContext`` serves any
number of connections: it is made once per setting and shared. A client with a certificate of
its own (mutual TLS) keeps a context of its own, as before.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession

_lock = threading.Lock()
#: The shared contexts, by the clients' ``verify`` setting (True, False or a CA bundle's path).
_contexts: dict[bool | str, ssl.SSLContext] = {}


class SharedTLSSession(AIOHTTPSession):
    """aiobotocore's HTTP session, whose TLS context is the process's one for its setting."""

    def _build_verify_context(self) -> ssl.SSLContext:
        if self._cert_file:  # the context gets the client's certificate: its own
            return super()._build_verify_context()  # type: ignore[no-any-return]
        key = self._verify
        with _lock:  # clients start in parallel threads (aiobotocore builds it off the loop)
            context = _contexts.get(key)
            if context is None:
                context = _contexts[key] = super()._build_verify_context()
            return context


def aws_config(**options: Any) -> AioConfig:
    """An ``AioConfig`` of ``options`` whose clients share the process's TLS context."""
    return AioConfig(http_session_cls=SharedTLSSession, **options)


def warm_tls(verify: bool | str = True) -> None:
    """Make the shared context now (a Lambda container's init), not in a first request."""
    SharedTLSSession(verify=verify)._build_verify_context()
