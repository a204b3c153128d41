"""The AWS SDK session of the operator's side: one per client, sharing one data loader.

Every ``LlmbatchClient`` opens its own aiobotocore session (sessions hold credentials and,
with refreshable credentials, locks of the event loop that made them, so they are not shared
between clients). What a session spends most of its clients' creation on is reading the
service models and endpoint rules from botocore's data files: parsed once per process here,
by one loader every session uses (what it caches is the files' data, only ever completed in
place the same way by whichever session reads it first), so a program or the
console that opens clients again and again pays it once (issue 12: `status` polls, the tests).
"""

from __future__ import annotations

from functools import cache

from aiobotocore.session import AioSession, get_session
from botocore.loaders import Loader, create_loader


@cache
def _data_loader(data_path: str | None) -> Loader:
    return create_loader(data_path)


def aws_session() -> AioSession:
    """A new session whose service models and endpoint data are the process's shared ones
    (one loader per ``data_path``: ``AWS_DATA_PATH`` or the profile's, as botocore's own)."""
    session = get_session()
    session.register_component("data_loader", _data_loader(session.get_config_variable("data_path")))
    return session
