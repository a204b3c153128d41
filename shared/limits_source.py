"""The live limits, re-read from their SSM parameter at most every few seconds."""

from __future__ import annotations

import logging

from shared.config import RuntimeLimits, WorkerConfig
from shared.errors import ConfigError

log = logging.getLogger("llmbatch.limits")


class LimitsSource:
    """Callable returning the limits in force; falls back to the last good value (or the
    configured defaults) when the parameter is missing or unreadable."""

    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._last = config.default_limits

    def __call__(self) -> RuntimeLimits:
        if not self._config.limits_parameter:
            return self._last
        from aws_lambda_powertools.utilities import parameters

        try:
            raw = parameters.get_parameter(self._config.limits_parameter, max_age=int(self._config.limits_max_age_s))
            self._last = RuntimeLimits.from_json(str(raw))
        except ConfigError as e:
            log.warning("ignoring invalid limits parameter: %s", e)
        except Exception as e:  # SSM unreachable: keep working with what we had
            log.warning("cannot read limits parameter: %s", type(e).__name__)
        return self._last
