"""The handler each container process of :mod:`llmbatch.bench.parallel` runs: our worker, built as
:class:`llmbatch.bench.harness.OursApproach` builds it in-process, with its figures sent back beside
its response (the real handler returns only the response)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from llmbatch.bench.harness import counting_sync_calls, worker_aws_calls, worker_outcome
from shared.budget import LambdaContextLike
from shared.config import WorkerConfig
from shared.container import Container

# Built on import, before the process reports ready: setup stays out of the timing, as
# OursApproach builds its container before the run starts.
_container = Container.create(WorkerConfig.from_env())
_sync_calls: dict[str, Counter[str]] = {}


def handler(event: dict[str, Any], context: LambdaContextLike) -> dict[str, Any]:
    with counting_sync_calls(_sync_calls):
        response = _container.handle(event, context)
    worker = _container.worker
    return {
        "response": response,
        "outcome": worker_outcome(worker.last_stats, response),
        "concurrency_limit": worker.last_stats.concurrency_limit,
        # So far, in this container.
        "aws_calls": {service: dict(ops) for service, ops in worker_aws_calls(worker, _sync_calls).items()},
    }
