"""The AWS SDK session of the operator's side: one per client, sharing one data loader.

Every ``LlmbatchClient`` opens its own aiobotocore session (sessions hold credentials and,
with refreshable credentials, locks of the event loop that made them, so they are not shared
between clients). What a session spends most of its clients' creation on is reading the
service models and endpoint rules from botocore's data files: parsed once per process here,
by one loader every session uses (its caches are read-only data), so a program or the
console that opens clients again and again pays it once (issue 12: `status` polls, the tests).
"""

from __future__ import annotations

from functools import cache

from aiobotocore.session import AioSession, get_session
from botocore.loaders import Loader, create_loader


@cache
def _data_loader() -> Loader:
    return create_loader()


def aws_session() -> AioSession:
    """A new session whose service models and endpoint data are the process's shared ones."""
    session = get_session()
    session.register_component("data_loader", _data_loader())
    return session
