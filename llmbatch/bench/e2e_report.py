"""The end-to-end scenario's figures (``llmbatch/bench/e2e.py``) as text and markdown, and issue 12's
targets against them. ``docs/benchmarks.md`` holds them between two markers, so a run of
``--scenario local-e2e`` alone replaces its own section and leaves the rest."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from llmbatch.bench.e2e import FIFTHS, LOCAL_UP, RPM_LIMIT, TITLE, E2ERun
from llmbatch.bench.fairness import FairnessRun
from llmbatch.bench.harness import BASE_SIMULATOR, template_requests_setting
from llmbatch.bench.turnover_model import LAMBDA, LOCAL, Workload, sized, utilisation
from llmbatch.client.worker_sizing import HEADROOM
from llmbatch.local.moto_sqs import HOT_READY_MAX
from llmbatch.local.provision import DEFAULT_TEMPLATE
from llmbatch.local.template import load_template, parameter_values

START = "<!-- local-e2e: start -->"
END = "<!-- local-e2e: end -->"

COLUMNS = (
    "job",
    "requests",
    "ok",
    "failed",
    "submit s",
    "submit msgs/s",
    "last result s",
    "req/s",
    "endpoint util",
    "of RPM limit",
    "429s",
    "stack CPU ms/req",
    "of it moto and poller",
    "simulator CPU ms/req",
    "client CPU ms/req",
    "moto and poller MB",
    "containers MB",
    f"req/s by {FIFTHS}ths of the job",
)

#: The endpoint's capacity in requests/s: slots / seconds per call.
CAPACITY = int(BASE_SIMULATOR["slots"]) / float(BASE_SIMULATOR["base_latency_s"])


def rows(runs: Sequence[E2ERun]) -> list[list[str]]:
    return [
        [
            r.name,
            str(r.requests),
            str(r.succeeded),
            str(r.failed),
            f"{r.submit_s:.1f}",
            f"{r.submit_msgs_per_s:.0f}",
            f"{r.last_result_s:.1f}",
            f"{r.requests_per_s:.1f}",
            f"{r.utilisation:.2f}",
            "-" if r.of_rpm_limit is None else f"{r.of_rpm_limit:.2f}",
            f"{r.rate_limited_429} ({r.share_429:.1%})",
            f"{r.cpu_ms_per_request('stack'):.2f}",
            f"{r.cpu_ms_per_request(LOCAL_UP):.2f}",
            f"{r.cpu_ms_per_request('simulator'):.2f}",
            f"{r.cpu_ms_per_request('client'):.2f}",
            f"{r.rss_mb:.0f}",
            f"{r.containers_rss_mb:.0f}",
            " / ".join(f"{x:.0f}" for x in r.fifths_per_s),
        ]
        for r in runs
    ]


def targets(runs: Sequence[E2ERun]) -> list[str]:
    """Issue 12's targets against this run's figures."""
    full = [r for r in runs if r.rpm_limit is None]
    lines: list[str] = []
    if full:
        first = full[0]
        work_s = first.requests / CAPACITY
        window_s = float(template_requests_setting("MaximumBatchingWindowInSeconds"))
        lines.append(
            f"- End to end, submit included, >= 0.9 of the endpoint's capacity ({0.9 * CAPACITY:.0f} requests/s) "
            f"at {first.requests:,} requests: **{first.requests_per_s:.1f}** requests/s, "
            f"**{first.requests_per_s / CAPACITY:.2f}** of capacity (utilisation {first.utilisation:.2f}). "
            f"The job is {work_s:.1f} s of the endpoint's work. Before the first call come submit's start (its "
            f"client, the file's check, the job's record) and the first batch filling (the mapping fills one "
            f"batch at a time, within its batching window of {window_s:g} s). The invocations start one batch "
            f"apart (the model takes {LOCAL.stagger_s * 1000:.0f} ms, as traced in session 15), so their "
            f"turnovers (final writes, next gather, start-of-batch lookup) do not all fall at the same moments. "
            f"The turnover model "
            f"(`llmbatch/bench/turnover_model.py`) puts the most this sizing reaches at "
            f"**{utilisation(_workload(first.requests).timed(LAMBDA)):.2f}** with Lambda's turnovers (~"
            f"{LAMBDA.turnover_s * 1000:.0f} ms) and **{utilisation(_workload(first.requests).timed(LOCAL)):.2f}** "
            f"with the local stack's as traced (~{LOCAL.turnover_s * 1000:.0f} ms, its first calls "
            f"{LOCAL.first_s:g} s after submit starts)."
        )
        for r in full[1:]:
            ratio = r.requests_per_s / first.requests_per_s if first.requests_per_s else 0.0
            fifths = r.fifths_per_s
            spread = (max(fifths) / min(fifths)) if fifths and min(fifths) > 0 else 0.0
            lines.append(
                f"- {r.requests:,} requests within ±15% of {first.requests:,}'s requests/s: **{r.requests_per_s:.1f}**, "
                f"**{ratio:.2f}x**; its fifths {' / '.join(f'{x:.0f}' for x in fifths)} requests/s "
                f"(highest / lowest {spread:.2f}); stack CPU **{r.cpu_ms_per_request('stack'):.2f}** ms per request "
                f"against {first.cpu_ms_per_request('stack'):.2f}; moto's and the poller's memory {r.rss_mb:.0f} MB against "
                f"{first.rss_mb:.0f} MB."
            )
        slowest = min(r.submit_msgs_per_s for r in full)
        lines.append(f"- Submit >= 1,000 messages/s: **{slowest:.0f}** messages/s at the slowest job.")
    for r in runs:
        if r.rpm_limit is not None and r.of_rpm_limit is not None:
            lines.append(
                f"- RPM-bound ({r.rpm_limit:,} RPM, {r.requests:,} requests): >= 0.95 of the limit with < 1% 429s: "
                f"**{r.of_rpm_limit:.2f}** of the limit end to end (submit and the empty buckets' start included), "
                f"**{r.share_429:.1%}** of calls answered 429."
            )
    return lines


@functools.cache
def _template_defaults() -> dict[str, Any]:
    """The template's parameters' defaults, read once."""
    return dict(parameter_values(load_template(DEFAULT_TEMPLATE)))


def _defaults() -> str:
    """The template's defaults that shape these runs, as the local stack starts with them."""
    values = _template_defaults()
    return ", ".join(f"{name} {values[name]}" for name in ("BatchSize", "WorkerMaxConcurrency", "ModelCallConcurrency"))


def _workload(requests: int) -> Workload:
    """The benchmark's job in the turnover model: its endpoint, the template's batches and
    calls, the workers sized as ``auto_workers`` sizes them."""
    values = _template_defaults()
    base = Workload(
        requests=requests,
        batch_size=int(values["BatchSize"]),
        calls=int(values["ModelCallConcurrency"]),
        slots=int(BASE_SIMULATOR["slots"]),
        call_s=float(BASE_SIMULATOR["base_latency_s"]),
        jitter_s=float(BASE_SIMULATOR["jitter_s"]),
    )
    return sized(base, HEADROOM)


def _sizing() -> str:
    """How the workers are sized here, e.g. ``2.5x the slots in calls: 5 x 16``."""
    w = _workload(0)
    return f"{HEADROOM:g}x the slots in calls: {w.invocations} x {w.calls}"


def fairness_lines(runs: Sequence[FairnessRun]) -> list[str]:
    """Issue 14's fairness figure: the small job's time behind the big one against alone."""
    if not runs:
        return []
    first = runs[0]
    return [
        "### Fairness between jobs",
        "",
        f"A {first.small}-request job submitted right after a {first.big:,}-request job (enqueued whole, far more "
        "than the workers hold in flight), against the same job alone on the same warm stack "
        "(`llmbatch/bench/fairness.py`; the big job is cancelled afterwards). Each message's `MessageGroupId` is its "
        "job id, and the queue serves a job with few messages in flight before one with a backlog (SQS fair queues; "
        "the local stack's queue reproduces them, `llmbatch/local/moto_sqs.py`).",
        "",
        "| workers | model calls in flight at most | small job alone s | behind the big job s "
        "| slowdown (target <= 2x) | big job's requests answered by then |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r.workers_by} | {r.calls_in_flight} | {r.small_alone_s:.1f} | {r.small_behind_s:.1f} "
            f"| {r.slowdown:.2f}x | {r.big_answered:,} of {r.big:,} |"
            for r in runs
        ),
        "",
        "The queue's part holds: the small job's messages are the next ones received (`tests/functional/"
        "test_fairness.py` counts it). The rest is waiting for a worker to take them: every invocation slot is "
        "busy with a batch of the big job, so the small job waits for one to end, about one batch's time "
        "(smaller batches shorten it, at the price of more AWS calls per request: `BatchSize` in template.yaml). "
        "Then it shares that container's calls (a free slot goes to the batch's job with the fewest calls in flight "
        "there: `shared/limits/limiter.py`). With more calls in flight than the endpoint serves, each call also "
        "waits in the endpoint's own queue and every batch takes that much longer; so the stack sizes its workers "
        "to what the endpoint declares it serves at once (`auto_workers`, `llmbatch/client/worker_sizing.py`: "
        f"here {int(BASE_SIMULATOR['slots'])} slots, {HEADROOM:g}x that many calls in flight). The second run is the template's "
        "`WorkerMaxConcurrency` set by hand, unsized.",
        "",
    ]


def markdown(runs: Sequence[E2ERun], fairness: Sequence[FairnessRun] = ()) -> list[str]:
    if not runs and not fairness:
        return []
    header = list(COLUMNS)
    return [
        START,
        f"## local-e2e: {TITLE}",
        "",
        "The local stack as a user runs it (`llmbatch/bench/e2e.py`): `llmbatch local up --slots 32` in a process of its "
        "own, the simulator set to the benchmark's endpoint (32 slots, 200 ms a call ± 20 ms: capacity "
        f"{CAPACITY:.0f} requests/s), the template's defaults otherwise ({_defaults()}), the worker's invocations "
        f"sized to the simulator's slots when `local up` starts (`auto_workers`: {_sizing()}); "
        "for each job `submit` (the CLI's code, in the benchmark's process, where "
        "a client opens in ~60 ms: the process has parsed the AWS service models once; a fresh `llmbatch submit` "
        "also pays its imports and ~0.3 s for its first client) and "
        "`status` polled once a second until completed. The jobs run one after another on the same `local up`, so "
        "its tables and queues keep what the earlier ones left. The RPM-bound job sets the limits parameter's "
        f"`rpm_limit` to {RPM_LIMIT:,} (and the simulator's limit to the same, both buckets starting empty).",
        "",
        "Columns: *submit msgs/s* requests enqueued per second of `submit`; *last result s* from the start of "
        "`submit` to the last result stored (its `finished_at`); *req/s* requests / that; *endpoint util* the "
        "simulator's busy slot-seconds / (slots x that); *of RPM limit* req/s / (RPM / 60); *429s* the calls the "
        "simulator refused for the rate limit; *stack CPU* `local up` and every process under it (moto's, the "
        "poller's, the worker containers') but the simulator, whose CPU is apart, *of it moto and poller* without the "
        "containers, and *client CPU* the benchmark's own process (submit and the status polls); *MB* the "
        "processes' memory at the end (proportional set size: pages the forked containers share are divided "
        "among them), moto's two processes and the poller's, and the worker containers'; "
        f"*req/s by {FIFTHS}ths* the rate in each fifth of the job's requests, from the status polls.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows(runs)),
        "",
        "### Issue 12's targets against this run",
        "",
        *targets(runs),
        "",
        *fairness_lines(fairness),
        "Notes. A job's rate end to end is its steady rate less what its two ends cost, and those are fixed, "
        "not per request: before the endpoint is full, the first `submit` calls and the first batch filling "
        "(the worker containers' cold starts are paid by `local up` before it reports ready, as "
        "each has CPU of its own in AWS); after it, the last batches' partial waves of calls (a container has at "
        "most `ModelCallConcurrency` calls out, so the endpoint is no longer full once fewer than two batches "
        "are left). Together under 2 s here, against "
        "12.5 s of work for 2,000 requests at capacity, so the first, smallest job shows the lowest rate; the "
        "fifths show the steady rate, and the CPU per request, about the same at every size, shows no "
        "local-stack operation growing with it. The results table's items are on disk "
        f"(`llmbatch/local/moto_spill.py`), a deep queue's backlog beyond {HOT_READY_MAX:,} messages waits on disk too "
        "(`llmbatch/local/moto_sqs_cold.py`) and its messages are freed as they are deleted, so memory "
        "grows little with the job (docs/local-stack-profiles.md, memory). Before the mapping filled one "
        "batch at a time (above), a job's invocations all started, ended and turned over together, and "
        "6,000-request jobs on the same code in the same hour ranged from 0.73 to 0.87 in utilisation. The "
        "runs share the "
        "machine's two CPUs with the simulator and the benchmark's own process; the machine's host is shared "
        "too: the same job's CPU per request, the simulator's included, has doubled from one hour to the "
        "next, so compare runs made together.",
        "",
        "Profiles of the local processes before and after the changes (py-spy, top frames) and what each change "
        "did are in [local-stack-profiles.md](local-stack-profiles.md).",
        END,
        "",
    ]


def splice(existing: str, section: Sequence[str]) -> str:
    """``existing`` with its end-to-end section replaced by ``section`` (added before the
    caveats, or at the end, if it has none yet)."""
    block = "\n".join(section).rstrip() + "\n"
    if START in existing and END in existing:
        before, rest = existing.split(START, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        return before + block + "\n" + after
    marker = "\n## Caveats"
    if marker in existing:
        before, after = existing.split(marker, 1)
        return before.rstrip("\n") + "\n\n" + block + "\n" + marker.lstrip("\n") + after
    return existing.rstrip("\n") + "\n\n" + block
