"""Every async AWS client's config, with one TLS context per process.

aiobotocore builds a new SSL context for each client's connection pool, on the client's first
request, loading the whole CA bundle each time: 40-60 ms of CPU per client (issue 12). A
worker container has up to four clients and pays it in its first invocation; ``submit`` has
five, and paid three of them in parallel threads before its first message went out. The
context depends only on the client's ``verify`` setting, and one ``SSLContext`` serves any
number of connections: it is made once per setting and shared. A context aiobotocore changes
after building it keeps being its own, as before: a client's with a certificate of its own
(mutual TLS), and a proxy's (its CA bundle and certificate are loaded into it).
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession

_lock = threading.Lock()
#: The shared contexts, by the clients' ``verify`` setting (True, False or a CA bundle's path).
_contexts: dict[bool | str, ssl.SSLContext] = {}


class SharedTLSSession(AIOHTTPSession):
    """aiobotocore's HTTP session, whose TLS context is the process's one for its setting."""

    #: Set while aiobotocore builds a proxy's context, which it then changes.
    _own_context = False

    def _build_verify_context(self) -> ssl.SSLContext:
        if self._cert_file or self._own_context:  # a context that gets a certificate: its own
            return super()._build_verify_context()  # type: ignore[no-any-return]
        key = self._verify
        with _lock:  # clients start in parallel threads (aiobotocore builds it off the loop)
            context = _contexts.get(key)
            if context is None:
                context = _contexts[key] = super()._build_verify_context()
            return context

    def _setup_proxy_ssl_context(self, proxy_url: str) -> ssl.SSLContext | None:
        self._own_context = True
        try:
            return super()._setup_proxy_ssl_context(proxy_url)  # type: ignore[no-any-return]
        finally:
            self._own_context = False


def aws_config(**options: Any) -> AioConfig:
    """An ``AioConfig`` of ``options`` whose clients share the process's TLS context."""
    return AioConfig(http_session_cls=SharedTLSSession, **options)


def warm_tls(session: AioSession) -> None:
    """Make the shared context the session's clients will use now (a Lambda container's
    init), not in a first request. The setting is found as botocore finds a client's: the
    session's CA bundle (``AWS_CA_BUNDLE``), else ``REQUESTS_CA_BUNDLE``, else the default."""
    verify = session.get_config_variable("ca_bundle")
    if verify is None:
        verify = os.environ.get("REQUESTS_CA_BUNDLE", True)
    SharedTLSSession(verify=verify)._build_verify_context()
