"""What an invocation reports: CloudWatch metrics (EMF, through Powertools Metrics).

Only counts and timings leave the worker; prompt and response text never do.
"""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from shared.worker import InvocationStats

#: EMF takes at most 100 values per metric in one document.
MAX_LATENCY_VALUES = 100


def publish_invocation(metrics: Metrics, stats: InvocationStats, *, endpoint: str) -> None:
    metrics.add_dimension(name="endpoint", value=endpoint)
    counts = {
        "ModelCalls": stats.calls,
        "RequestsSucceeded": stats.succeeded,
        "RequestsFailed": stats.failed,
        "RequestsRetried": stats.retried,
        "BudgetExhausted": stats.budget_exhausted,
        "DuplicatesSkipped": stats.duplicates,
        "DeadLettered": stats.dead_lettered,
    }
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for latency in stats.latencies_ms[:MAX_LATENCY_VALUES]:
        metrics.add_metric(name="ModelLatency", unit=MetricUnit.Milliseconds, value=latency)
    metrics.add_metric(name="TokensIn", unit=MetricUnit.Count, value=stats.prompt_tokens)
    metrics.add_metric(name="TokensOut", unit=MetricUnit.Count, value=stats.completion_tokens)
