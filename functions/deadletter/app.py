"""DeadLetter Lambda: records requests that used up their retries as failed, so their job
still finishes, and keeps every dead letter for inspection and redrive.

Wiring only; the logic is :mod:`shared.deadletter`.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.container import DeadLetterContainer
from shared.observability import capture_handler, make_tracer

logger = Logger(service="llmbatch-deadletter")
#: None unless the stack's Tracing parameter is Active.
tracer = make_tracer("llmbatch-deadletter")
_container: DeadLetterContainer | None = None


def container() -> DeadLetterContainer:
    global _container
    if _container is None:
        _container = DeadLetterContainer.create()
    return _container


# Clients are made during Lambda's init phase (full CPU, outside the invocation's timeout),
# not in the first invocation, whose deadline they would eat into. Outside Lambda (tests
# importing this module) the first invocation makes them.
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    container()


@capture_handler(tracer)
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return container().handle(event, context)
