"""Notifier Lambda: POSTs each queued "Job Finished" event to its job's webhook, signed.

Wiring only; the logic is :mod:`shared.notify`.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.notify import NotifierConfig, NotifyHandler, build_handler

logger = Logger(service="llmbatch-notifier")
processor = BatchProcessor(event_type=EventType.SQS)
_handler: NotifyHandler | None = None


def handler() -> NotifyHandler:
    global _handler
    if _handler is None:
        _handler = build_handler(NotifierConfig.from_env(os.environ), boto3.client("sqs"))
    return _handler


def record_handler(record: SQSRecord) -> str:
    return handler()(record, int(record.attributes.approximate_receive_count or 1))


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )
