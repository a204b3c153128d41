"""Worker Lambda: an SQS batch of requests in, results in DynamoDB, failures back to SQS.

Wiring only; the logic is :mod:`shared.worker`. The container (event loop, connection
pools, clients) is made on the first invocation and reused by the next ones.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.container import Container

logger = Logger(service="llmbatch-worker")
_container: Container | None = None


def container() -> Container:
    global _container
    if _container is None:
        _container = Container.create()
    return _container


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return container().handle(event, context)
