"""The live limits, re-read from their SSM parameter at most every few seconds."""

from __future__ import annotations

import logging
from typing import Any

from shared.config import RuntimeLimits, WorkerConfig
from shared.errors import ConfigError

log = logging.getLogger("llmbatch.limits")

#: Connect and read timeouts of the limits read, each.
SSM_TIMEOUT_S = 1.0


class LimitsSource:
    """Callable returning the limits in force; falls back to the last good value (or the
    configured defaults) when the parameter is missing or unreadable, and to the configured
    defaults for each limit the parameter does not name."""

    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._last = config.default_limits
        self._provider: Any = None
        #: Read the parameter afresh next time, whatever the cache holds.
        self._fetch_next = False

    def warm(self) -> None:
        """Make the SSM client and read the limits once now, in the container's init phase:
        creating the client loads and parses botocore's endpoint and service data (~0.15 s of
        CPU), and its first call sets up the connection and the response parser, which the
        first invocation otherwise paid inside its deadline (ten fresh containers at once
        spent most of a job's first 1.5 s on them; issue 12). The first invocation still reads
        the parameter afresh: the limits in force are those of its start, not of the init."""
        self()
        self._fetch_next = True

    def _ssm(self) -> Any:
        """Powertools' SSM provider (its cache honours ``max_age``) on a client whose calls
        are bounded: the read happens inside the invocation's deadline, and a slow SSM must
        cost at most a few seconds, after which the last good limits serve."""
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SSMProvider
            from botocore.config import Config

            self._provider = SSMProvider(
                boto_config=Config(
                    connect_timeout=SSM_TIMEOUT_S, read_timeout=SSM_TIMEOUT_S, retries={"max_attempts": 2}
                )
            )
        return self._provider

    def __call__(self) -> RuntimeLimits:
        if not self._config.limits_parameter:
            return self._last
        try:
            fetch, self._fetch_next = self._fetch_next, False
            raw = self._ssm().get(
                self._config.limits_parameter, max_age=int(self._config.limits_max_age_s), force_fetch=fetch
            )
            self._last = RuntimeLimits.from_json(str(raw), defaults=self._config.default_limits)
        except ConfigError as e:
            log.warning("ignoring invalid limits parameter: %s", e)
        except Exception as e:  # SSM unreachable: keep working with what we had
            log.warning("cannot read limits parameter: %s", type(e).__name__)
        return self._last
