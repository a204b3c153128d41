"""Job priority: three request queues, one per priority, and which queue a record came from.

A job is submitted to the queue of its priority (``submit --priority``); each queue has its
own event source mapping on the worker (template.yaml). The worker serves a record only
while no queue of a higher priority has work; otherwise it defers the record as a fresh copy
to its own queue (shared/worker/priority.py), which never counts as an attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def ahead(self) -> tuple[Priority, ...]:
        """The priorities served before this one."""
        order = tuple(Priority)
        return order[: order.index(self)]


DEFAULT_PRIORITY = Priority.NORMAL


def queue_name(url_or_arn: str) -> str:
    """The queue's name, the last part of its URL (``https://.../123/name``) or ARN
    (``arn:aws:sqs:region:123:name``)."""
    return url_or_arn.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


@dataclass(frozen=True)
class PriorityQueues:
    """The request queue of each priority (a stack made before priorities has the normal
    one only: its other URLs are empty)."""

    urls: Mapping[Priority, str]

    @classmethod
    def of(cls, *, normal: str, high: str = "", low: str = "") -> PriorityQueues:
        return cls({Priority.HIGH: high, Priority.NORMAL: normal, Priority.LOW: low})

    def url(self, priority: Priority) -> str:
        return self.urls.get(priority, "")

    def priority_of(self, source_arn: str | None) -> Priority | None:
        """The priority of the queue a record came from (its ``eventSourceARN``); None for a
        queue that is none of these."""
        if not source_arn:
            return None
        name = queue_name(source_arn)
        return next((p for p, url in self.urls.items() if url and queue_name(url) == name), None)

    def url_of(self, source_arn: str | None) -> str:
        """The URL of the queue a record came from, where its deferred copy and retry delay
        go; the normal queue for a record of an unknown queue (as before priorities)."""
        return self.url(self.priority_of(source_arn) or Priority.NORMAL)
