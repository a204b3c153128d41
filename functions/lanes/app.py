"""LanePoller Lambda: run on a schedule, moves every batch-lane job one step further.

Wiring only; the logic is :mod:`shared.lanes.poller`. The container (event loop, clients)
is made at init and reused by the next invocations.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.lanes.runtime import LaneContainer

logger = Logger(service="llmbatch-lanes")
logging.getLogger("llmbatch")
copy_config_to_registered_loggers(source_logger=logger, include={"llmbatch"})
_container: LaneContainer | None = None


def container() -> LaneContainer:
    global _container
    if _container is None:
        _container = LaneContainer.create()
    return _container


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    container()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = container().handle(event, context)
    logger.info("lane poller run", extra={k: v for k, v in report.items() if k != "errors"})
    return report
