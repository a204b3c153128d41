"""Worker Lambda: an SQS batch of requests in, results in DynamoDB, failures back to SQS.

Wiring only; the logic is :mod:`shared.worker`. The container (event loop, connection
pools, clients) is made on the first invocation and reused by the next ones.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.container import Container
from shared.observability import (
    capture_handler,
    make_tracer,
    publish_invocation,
    record_invocation_metering,
    trace_model_calls,
)

logger = Logger(service="llmbatch-worker")
# The core logs through the standard "llmbatch.*" loggers; give them the same JSON format
# (and only them: the AWS SDKs' INFO lines are noise).
logging.getLogger("llmbatch")
copy_config_to_registered_loggers(source_logger=logger, include={"llmbatch"})
metrics = Metrics(namespace="llmbatch", service="worker")
#: None unless the stack's Tracing parameter is Active.
tracer = make_tracer("llmbatch-worker")
_container: Container | None = None


def container() -> Container:
    global _container
    if _container is None:
        _container = Container.create()
        if tracer is not None:
            trace_model_calls(_container.worker, tracer)
    return _container


# Clients are made during Lambda's init phase (full CPU, outside the invocation's timeout),
# not in the first invocation, whose deadline they would eat into. Outside Lambda (tests
# importing this module) the first invocation makes them.
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    container()


@capture_handler(tracer)
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.monotonic()
    c = container()
    response = c.handle(event, context)
    publish_invocation(metrics, c.worker.last_stats)
    record_invocation_metering(c.loop, c.worker.store, c.worker.last_stats, context, started)
    return response
