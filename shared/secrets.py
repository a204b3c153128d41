"""Endpoint API keys: read from Secrets Manager or an SSM SecureString, never from plain
configuration, cached by Powertools Parameters, and never logged.

A key rotated in its store must not turn every later request into a permanent 401 while
the cache still holds the old one: :class:`ApiKey` re-reads the key, bypassing the cache,
when the endpoint refuses it, and the call is tried once more if the key changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from shared.errors import ConfigError

KEY_MAX_AGE_S = 300

log = logging.getLogger("llmbatch.secrets")


def resolve_api_key(ref: str, *, fresh: bool = False) -> str | None:
    """``ssm:/path/to/key`` or ``secretsmanager:name``; empty means no key. ``fresh``
    reads the store itself rather than the cache (and refreshes the cache)."""
    if not ref:
        return None
    kind, _, name = ref.partition(":")
    if not name:
        raise ConfigError("an API key reference looks like 'ssm:/name' or 'secretsmanager:name'")
    from aws_lambda_powertools.utilities import parameters

    if kind == "ssm":
        value = parameters.get_parameter(name, decrypt=True, max_age=KEY_MAX_AGE_S, force_fetch=fresh)
    elif kind == "secretsmanager":
        value = parameters.get_secret(name, max_age=KEY_MAX_AGE_S, force_fetch=fresh)
    else:
        raise ConfigError(f"unknown API key store {kind!r}: use 'ssm:' or 'secretsmanager:'")
    return str(value) if value else None


class KeyResolver(Protocol):
    def __call__(self, ref: str, *, fresh: bool = False) -> str | None: ...


class ApiKey:
    """An endpoint's API key, as its store holds it, shared by every call of a container.

    ``value`` is the key calls use. After a call is refused (401), :meth:`after_refusal`
    says which key to try instead: the store is read again (bypassing the cache) unless a
    read that began after the refusal has already answered, so a burst of refused calls
    costs one read, not one each, and every refusal is judged against a read made after it.
    """

    def __init__(self, ref: str, resolve: KeyResolver = resolve_api_key) -> None:
        self._ref = ref
        self._resolve = resolve
        self.value = resolve(ref) if ref else None
        #: When the last read of the store began (monotonic), and the lock that makes
        #: concurrent refusals share one read.
        self._read_at = time.monotonic()
        self._lock = asyncio.Lock()

    @classmethod
    def fixed(cls, value: str | None) -> ApiKey:
        """A key given as it is, with no store to read again."""
        key = cls("")
        key.value = value
        return key

    def __repr__(self) -> str:  # never show the key
        return f"ApiKey(ref={self._ref!r})"

    async def after_refusal(self, used: str | None, refused_at: float) -> str | None:
        """The key to retry a call with, refused at ``refused_at`` (monotonic) while using
        ``used``; None when the store holds no other key (the refusal is the answer)."""
        if not self._ref:
            return None
        async with self._lock:
            if self._read_at < refused_at:
                self._read_at = time.monotonic()
                fresh = await asyncio.to_thread(self._resolve, self._ref, fresh=True)
                if fresh != self.value:
                    log.warning("an endpoint refused its API key; the key in the store has changed")
                    self.value = fresh
            return self.value if self.value != used else None
