"""The operator's side: submit jobs, read status and results, watch queues, tune limits.

The CLI and the console both act only through this class, with the same AWS calls they
would make against a deployed stack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from llmbatch.client.aws_session import aws_session
from llmbatch.client.cost import Pricing
from llmbatch.client.enqueue import SUBMIT_PARALLELISM, send_messages
from llmbatch.client.estimate import ASSUMED_LATENCY_S, LATENCY_SAMPLE, JobEstimate, Latency, LiveLimits, estimate_job
from llmbatch.client.jobfile import MAX_REPORTED_PROBLEMS, JobFile, NumberedLine, read_job_file
from llmbatch.client.lanes import Lane, LaneChoice, choose_lane
from llmbatch.client.stack import StackResources
from llmbatch.client.worker_sizing import ESM_CONCURRENCY_BOUNDS, WorkerSizing, workers_for
from shared.aws_http import aws_config
from shared.config import RuntimeLimits, WorkerConfig
from shared.deadletter import DeadLetter, dead_letter_body, is_redrivable, keep_dead_letters, list_dead_letters
from shared.errors import ConfigError, JobFileError, PermanentError
from shared.finish import EventBridgePublisher, JobFinisher
from shared.jobs import JobMeta, JobStatus, NewJob, new_job_id
from shared.lanes.native import NativeRecord
from shared.lanes.parts import LaneTable, stage_parts
from shared.lanes.poller import progress_figures
from shared.lanes.registry import native_limits, native_refusal
from shared.limits.throttle import Throttle
from shared.messages import RequestMessage, new_sign_key
from shared.notify import check_url
from shared.payloads import OFFLOAD_MAX_BYTES, PayloadStore, request_body_key
from shared.priority import DEFAULT_PRIORITY, Priority, PriorityQueues
from shared.results import RequestResult, RequestStatus, utc_now_iso
from shared.store.result_store import ResultStore

log = logging.getLogger("llmbatch.client")

#: The error code of a result line whose offloaded answer is no longer in the payload bucket.
RESPONSE_EXPIRED = "response_expired"

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class QueueStats:
    visible: int
    in_flight: int
    delayed: int
    dead_letters: int


@dataclass(frozen=True)
class ExportSummary:
    written: int
    errors: int
    missing: int


class LlmbatchClient:
    """Async client of one stack. Use as ``async with LlmbatchClient(resources) as c:``."""

    def __init__(self, resources: StackResources) -> None:
        self.resources = resources
        self._stack = AsyncExitStack()
        self.sqs: Any = None
        self.ddb: Any = None
        self.ssm: Any = None
        self.lambda_: Any = None
        self.store: ResultStore
        #: Clients only a few commands use, made on first use (``_client_made_once``).
        self._occasional: dict[str, Any] = {}
        self._occasional_lock = asyncio.Lock()
        self._client_args: tuple[Any, dict[str, Any]] | None = None
        self._finisher: JobFinisher | None = None
        #: The workers could not be sized to the endpoints (said once per client).
        self._sizing_warned = False

    async def __aenter__(self) -> LlmbatchClient:
        session = aws_session()
        config = aws_config(max_pool_connections=SUBMIT_PARALLELISM, retries={"mode": "standard", "max_attempts": 5})
        kw = {**self.resources.client_kwargs(), "config": config}
        # The SQS calls are ours (a job's messages, checked line by line before), not a
        # user's parameters: the SDK's check of each against the model was a fifth of
        # submit's CPU per SendMessageBatch (issue 12), and SQS checks them anyway.
        sqs_config = aws_config(
            max_pool_connections=SUBMIT_PARALLELISM,
            retries={"mode": "standard", "max_attempts": 5},
            parameter_validation=False,
        )
        sqs_kw = {**kw, "config": sqs_config}
        self.sqs = await self._stack.enter_async_context(session.create_client("sqs", **sqs_kw))
        self.ddb = await self._stack.enter_async_context(session.create_client("dynamodb", **kw))
        self.ssm = await self._stack.enter_async_context(session.create_client("ssm", **kw))
        self.lambda_ = await self._stack.enter_async_context(session.create_client("lambda", **kw))
        self._client_args = (session, kw)
        self.payloads: PayloadStore | None = None
        if self.resources.payload_bucket:
            s3 = await self._stack.enter_async_context(session.create_client("s3", **kw))
            self.payloads = PayloadStore(s3, self.resources.payload_bucket)
        self.store = ResultStore(
            self.ddb,
            jobs_table=self.resources.jobs_table,
            results_table=self.resources.results_table,
            payloads=self.payloads,
        )
        return self

    async def _client_made_once(self, service: str) -> Any:
        """A client of a service few commands call (CloudWatch, EventBridge), made on its first
        use: each costs 30-40 ms of CPU to make, which ``status`` or ``submit`` need not pay."""
        assert self._client_args is not None, "use the client as `async with`"
        session, kw = self._client_args
        async with self._occasional_lock:  # calls in parallel make one client
            if service not in self._occasional:
                made = await self._stack.enter_async_context(session.create_client(service, **kw))
                self._occasional[service] = made
            return self._occasional[service]

    async def finisher(self) -> JobFinisher | None:
        """What publishes a cancelled job's finished event, as the workers do (shared/finish.py);
        None when the stack has no event bus."""
        if self.resources.event_bus and self._finisher is None:
            events = await self._client_made_once("events")
            self._finisher = JobFinisher(self.store, EventBridgePublisher(events, self.resources.event_bus))
        return self._finisher

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    # ---- submit ---------------------------------------------------------------------------

    async def max_message_bytes(self) -> int:
        attrs = await self.sqs.get_queue_attributes(
            QueueUrl=self.resources.request_queue_url, AttributeNames=["MaximumMessageSize"]
        )
        return int(attrs["Attributes"]["MaximumMessageSize"])

    async def check_file(self, path: Path, *, endpoint: str = "default") -> JobFile:
        """Validate a job file against this stack: its queue, its live caps, and its
        endpoints as the workers read them (a job on an endpoint the stack lacks, or a line
        its endpoint cannot serve, is refused). Raises ``JobFileError``."""
        # Three reads of three services, independent: at once.
        limits, max_message_bytes, worker = await asyncio.gather(
            self.get_limits(), self.max_message_bytes(), self.worker_settings()
        )
        return read_job_file(
            path,
            max_message_bytes=max_message_bytes,
            endpoint=endpoint,
            offload_max_bytes=OFFLOAD_MAX_BYTES if self.payloads else None,
            max_requests=limits.max_requests_per_job,
            max_tokens_per_request=limits.max_tokens_per_request,
            endpoints=worker.endpoints,
        )

    async def worker_settings(self) -> WorkerConfig:
        """The worker's settings, its endpoints among them, read from its environment with
        the worker's own parser (``WorkerConfig.from_env``), so submit knows exactly the
        endpoints the workers serve."""
        try:
            config = await self.worker_configuration()
        except (ClientError, BotoCoreError) as e:
            raise ConfigError(
                f"cannot read the worker's configuration ({self.resources.worker_function}), which names the "
                f"stack's endpoints: {e}"
            ) from e
        return WorkerConfig.from_env((config.get("Environment") or {}).get("Variables") or {})

    async def estimate(self, path: Path, *, endpoint: str = "default") -> JobEstimate:
        """Check the file as ``submit`` does, then estimate its tokens, cost and duration at
        the stack's prices and live limits. Enqueues nothing and creates no job."""
        job_file = await self.check_file(path, endpoint=endpoint)
        config, runtime, mapping = await asyncio.gather(
            self.worker_configuration(), self.get_limits(), self._worker_mapping()
        )
        worker = WorkerConfig.from_env((config.get("Environment") or {}).get("Variables") or {})
        limits = LiveLimits(
            workers=int((mapping.get("ScalingConfig") or {}).get("MaximumConcurrency") or ESM_CONCURRENCY_BOUNDS[1]),
            calls_per_worker=runtime.max_concurrency,
            batch_size=int(mapping.get("BatchSize") or 1),
            rate=Throttle(None, worker.rate_limit_overrides()).limits_for(endpoint, runtime),
        )
        return estimate_job(
            job_file,
            endpoint=endpoint,
            pricing=Pricing.from_function_configuration(config),
            limits=limits,
            latency=await self.typical_latency(endpoint),
        )

    async def typical_latency(self, endpoint: str) -> Latency:
        """The median latency of the answers of the newest job on ``endpoint`` that has
        some (up to ``LATENCY_SAMPLE`` of them), else ``ASSUMED_LATENCY_S``."""
        for job in await self.list_jobs():
            if job.meta.endpoint != endpoint or not job.counts.succeeded:
                continue
            answered: list[int] = []
            async for r in self.store.iter_results(job.job_id):
                if r.status is RequestStatus.SUCCEEDED and r.latency_ms > 0:
                    answered.append(r.latency_ms)
                if len(answered) >= LATENCY_SAMPLE:
                    break
            answered.sort()
            if answered:
                median_ms = answered[len(answered) // 2]
                return Latency(median_ms / 1000, f"median of {len(answered)} answer(s) of job {job.job_id}")
        return Latency(ASSUMED_LATENCY_S, f"assumed: no answered job on endpoint {endpoint!r} yet")

    async def submit(
        self,
        path: Path,
        *,
        name: str | None = None,
        endpoint: str = "default",
        on_progress: ProgressCallback | None = None,
        resume_job_id: str | None = None,
        notify_url: str = "",
        priority: Priority | str = DEFAULT_PRIORITY,
        lane: LaneChoice | None = None,
        job_file: JobFile | None = None,
    ) -> str:
        """Validate the whole file, create the job, enqueue every request. Returns the job id.
        The requests go to the queue of the job's ``priority`` (a resumed job keeps its own).

        The job record notes how many requests are sent every ``SUBMIT_CHECKPOINT``
        (llmbatch/client/enqueue.py), and shows ``submitting`` until all are. With ``resume_job_id`` a
        submit that died part way picks up at its last checkpoint (a request sent twice is
        answered once: the workers' writes are conditional).
        """
        job_file = job_file or await self.check_file(path, endpoint=endpoint)
        if resume_job_id:
            job = await self.status(resume_job_id)
            if job.total != job_file.total:
                raise ConfigError(f"{path} has {job_file.total} requests, job {resume_job_id} has {job.total}")
            # A job made before jobs had keys has none: its messages go unsigned, as before.
            job_id, sign_key, start = resume_job_id, job.meta.sign_key, job.meta.enqueued
            priority = job.meta.priority
            if job.meta.sealed:
                return job_id
        else:
            job_id, sign_key = await self.create_job(
                job_file.total,
                name=name or path.name,
                endpoint=endpoint,
                sealed=False,
                notify_url=notify_url,
                priority=priority,
                lane=lane,
                size_workers=False,  # below, while the messages go out
            )
            start = 0
        unsent = job_file.lines[start:]

        # The lines whose message may be over the queue's limit (at its largest: a worker's
        # fresh copy adds its receives) have their bodies put in the payload bucket first, a
        # few at a time (the claim check); the rest are encoded as the senders take them, so
        # the first call does not wait for the last message to be made, and the encoded
        # messages are not all held at once.
        def message(n: NumberedLine) -> RequestMessage:
            return RequestMessage.from_job_line(
                n.request, job_id=job_id, line_no=n.line_no, endpoint=endpoint, sign_key=sign_key
            )

        checked = await self._claim_checked(
            job_id, {n.line_no: message(n) for n in unsent if n.largest_bytes > job_file.max_message_bytes}
        )

        def encoded() -> Iterator[str]:
            for n in unsent:
                yield checked[n.line_no] if n.line_no in checked else message(n).encode()

        if unsent:

            async def note(sent: int) -> None:
                await self.store.record_enqueued(job_id, sent, sealed=False)

            # The workers are sized to the endpoints while the messages go out (it needs none
            # of them, and a submit should not wait for three more calls first).
            await asyncio.gather(
                send_messages(
                    self.sqs,
                    self.resources.queue_url(_priority(priority)),
                    encoded(),
                    total=job_file.total,
                    group=job_id,
                    start=start,
                    on_progress=on_progress,
                    checkpoint=note,
                ),
                self.size_workers_if_allowed(),
            )
        await self.store.record_enqueued(job_id, job_file.total, sealed=True)
        return job_id

    async def _claim_checked(self, job_id: str, messages: dict[int, RequestMessage]) -> dict[int, str]:
        """``messages`` (by line number) encoded, each body put in the payload bucket and named
        by its key; none without a payload bucket (SQS then refuses them as too big)."""
        payloads = self.payloads
        if payloads is None:
            return {}
        puts = asyncio.Semaphore(SUBMIT_PARALLELISM)

        async def checked(line_no: int, msg: RequestMessage) -> tuple[int, str]:
            async with puts:
                key = await payloads.put(request_body_key(job_id, line_no), json.dumps(msg.body).encode())
            return line_no, msg.model_copy(update={"body": {}, "body_ref": key}).encode()

        return dict(await asyncio.gather(*(checked(line_no, msg) for line_no, msg in messages.items())))

    async def create_job(
        self,
        total: int,
        *,
        name: str = "",
        endpoint: str = "default",
        sealed: bool = True,
        notify_url: str = "",
        priority: Priority | str = DEFAULT_PRIORITY,
        lane: LaneChoice | None = None,
        size_workers: bool = True,
    ) -> NewJob:
        """Create a job of ``total`` requests for a program that enqueues its own messages.

        Returns its id and signing key (``NewJob``, which unpacks as ``job_id, sign_key``):
        each message must carry ``sig = NewJob.sign(custom_id, line)`` (see
        ``shared.messages.sign``), or the workers treat it as a stranger's. ``sealed``
        (the default) shows the job ``queued`` at once; pass False and call
        ``store.record_enqueued`` when every message is sent to show ``submitting`` until then.
        With ``size_workers`` (and the ``auto_workers`` limit on) the worker's mappings are
        sized to the endpoints first (:meth:`size_workers_if_allowed`).
        """
        if total < 1:
            raise ConfigError(f"a job has at least one request, got {total}")
        priority = _priority(priority)
        self.resources.queue_url(priority)  # the stack has its queue, or the job is not made
        if notify_url:  # plain http only to this machine, and only on the local stack
            try:
                check_url(notify_url, allow_loopback_http=bool(self.resources.aws_endpoint_url))
            except PermanentError as e:
                raise ConfigError(e.message) from e
        job = NewJob(new_job_id(), new_sign_key())
        await self.store.create_job(
            JobMeta(
                job_id=job.job_id,
                total=total,
                name=name,
                endpoint=endpoint,
                sealed=sealed,
                enqueued=total if sealed else 0,
                sign_key=job.sign_key,
                notify_url=notify_url,
                priority=priority.value,
                lane=lane.lane.value if lane else "",
                lane_reason=lane.reason if lane else "",
            )
        )
        if size_workers:
            await self.size_workers_if_allowed()
        return job

    # ---- lanes (llmbatch/client/lanes.py) -----------------------------------------------

    async def choose_lane(
        self, job_file: JobFile, *, lane: Lane | str, endpoint: str = "default", within_s: float | None = None
    ) -> LaneChoice:
        """The lane the checked ``job_file`` would run on (raises ``LaneRefusedError``)."""
        spec = (await self.worker_settings()).endpoints[endpoint]
        return choose_lane(
            lane, records=job_file.total, endpoint=endpoint, limits=native_limits(spec), within_s=within_s
        )

    async def submit_on_lane(
        self,
        path: Path,
        *,
        lane: Lane | str,
        within_s: float | None = None,
        name: str | None = None,
        endpoint: str = "default",
        on_progress: ProgressCallback | None = None,
        notify_url: str = "",
        priority: Priority | str = DEFAULT_PRIORITY,
    ) -> tuple[str, LaneChoice]:
        """``submit --lane``: check the file as ``submit`` does, choose the lane, then take
        the online path, or stage the records for the lane poller (nothing goes to SQS)."""
        job_file = await self.check_file(path, endpoint=endpoint)
        choice = await self.choose_lane(job_file, lane=lane, endpoint=endpoint, within_s=within_s)
        if choice.lane is Lane.ONLINE:
            job_id = await self.submit(
                path,
                name=name,
                endpoint=endpoint,
                on_progress=on_progress,
                notify_url=notify_url,
                priority=priority,
                lane=choice,
                job_file=job_file,
            )
        else:
            job_id = await self._submit_batch(
                job_file, choice, name=name or path.name, endpoint=endpoint, notify_url=notify_url
            )
        return job_id, choice

    async def _submit_batch(
        self, job_file: JobFile, choice: LaneChoice, *, name: str, endpoint: str, notify_url: str
    ) -> str:
        """Create the job, stage its records in parts in the payload bucket (the lane poller
        starts them), then seal it."""
        if self.payloads is None or choice.limits is None:
            raise ConfigError("the batch lane stages a job's records in the payload bucket: this stack has none")
        spec = (await self.worker_settings()).endpoints[endpoint]
        refused = [
            f"{job_file.path}:{n.line_no}: {why}"
            for n in job_file.lines
            if (why := native_refusal(endpoint, spec, n.request.url, n.request.body)) is not None
        ]
        if refused:
            raise JobFileError(refused[:MAX_REPORTED_PROBLEMS], len(refused))
        job_id, _ = await self.create_job(
            job_file.total, name=name, endpoint=endpoint, sealed=False, notify_url=notify_url, lane=choice
        )
        records = [NativeRecord(n.line_no, n.request.custom_id, n.request.url, n.request.body) for n in job_file.lines]
        lanes = LaneTable(self.store.dynamo, self.store.jobs_table)
        parts = await stage_parts(
            self.payloads,
            lanes,
            job_id=job_id,
            endpoint=endpoint,
            records=records,
            max_records=choice.limits.max_records,
        )
        await lanes.set_job_progress(job_id, progress_figures(parts))
        await self.store.record_enqueued(job_id, job_file.total, sealed=True)
        return job_id

    async def enqueue(
        self,
        bodies: list[str],
        *,
        on_progress: ProgressCallback | None = None,
        job_id: str | None = None,
        priority: Priority | str = DEFAULT_PRIORITY,
    ) -> None:
        """SendMessageBatch in batches of up to 10 entries and 1 MiB, several in flight, to
        the request queue of ``priority``. ``job_id`` is each message's ``MessageGroupId``:
        SQS fair queues (and the local stack's) then serve a job with few messages in flight
        before one with many."""
        await send_messages(
            self.sqs,
            self.resources.queue_url(_priority(priority)),
            bodies,
            total=len(bodies),
            group=job_id,
            on_progress=on_progress,
        )

    # ---- jobs and results ---------------------------------------------------------------

    async def status(self, job_id: str) -> JobStatus:
        return await self.store.get_job(job_id)

    async def worker_configuration(self) -> dict[str, Any]:
        """The worker function's configuration: its memory, architecture and environment
        (with the stack's price list), which a job's cost estimate needs."""
        return dict(await self.lambda_.get_function_configuration(FunctionName=self.resources.worker_function))

    async def cancel(self, job_id: str) -> JobStatus:
        """Stop a job: requests not yet answered end as ``cancelled`` without a model call.

        A job with nothing left to run (all answered, or not yet enqueued) is finished now:
        its finished event is published here, through the same claim as the workers'."""
        await self.store.request_cancel(job_id)
        finisher = await self.finisher()
        if finisher is not None:
            await finisher.check([job_id])
        return await self.status(job_id)

    async def dead_letters(self, job_id: str | None = None) -> list[DeadLetter]:
        return await list_dead_letters(self.store, job_id)

    async def redrive(self, job_id: str | None = None) -> int:
        """Move dead letters (of one job, or all) back to their job's request queue (its
        priority's) and reopen their requests. Each step is safe to repeat: a redrive cut
        short can simply be run again.

        A letter is forgotten only once its request is settled: reopened and re-sent, or
        re-sent because it has no result (a consistent read), or left alone because it has
        one that is not a failure. ``reopen`` retries a conflicting transaction rather than
        take it for "nothing to reopen", and raises if it cannot tell: the letter then stays.
        """
        moved = 0
        priorities: dict[str, str] = {}
        for letter in await self.dead_letters(job_id):
            if not is_redrivable(letter):
                continue
            body = await dead_letter_body(letter, self.payloads)
            if not is_redrivable(replace(letter, body=body, body_ref=None)):
                continue
            reopened = await self.store.reopen(letter.job_id, letter.key)
            if reopened or not await self.store.stored_results([(letter.job_id, letter.key)]):
                if letter.job_id not in priorities:
                    priorities[letter.job_id] = (await self.status(letter.job_id)).meta.priority
                await self.enqueue([body], job_id=letter.job_id, priority=priorities[letter.job_id])
                moved += 1
            await self.store.forget_dead_letter(letter.job_id, letter.key)
        return moved

    async def retry_failed(self, job_id: str) -> int:
        """Send the job's failed requests again, as new attempts; the job reopens.

        The failures are first kept as dead letters (the resume point if this is cut
        short), then redriven: each failure is taken back and its message re-sent (a
        message too big for its result item is read back from the payload bucket).
        """
        failed = [
            r
            for r in await self.results(job_id)
            if r.status is RequestStatus.FAILED
            and (r.request_message or r.request_ref)
            and r.error_code != "invalid_message"
        ]
        await keep_dead_letters(
            self.store,
            [
                DeadLetter(
                    job_id,
                    r.custom_id,
                    r.request_message or "",
                    f"retry: {r.error_code}",
                    utc_now_iso(),
                    body_ref=None if r.request_message else r.request_ref,
                )
                for r in failed
            ],
        )
        return await self.redrive(job_id)

    async def list_jobs(self, limit: int = 100) -> list[JobStatus]:
        return await self.store.list_jobs(limit)

    async def results(self, job_id: str, limit: int | None = None) -> list[RequestResult]:
        """Every stored result of the job (or the first ``limit`` in key order: a view of a
        big job need not read it all), in the order of the input file."""
        results: list[RequestResult] = []
        async for r in self.store.iter_results(job_id):
            results.append(r)
            if limit is not None and len(results) >= limit:
                break
        results.sort(key=lambda r: (r.line, r.custom_id))
        if self.payloads:
            for i, r in enumerate(results):
                if r.response_ref:
                    results[i] = await self._with_response(self.payloads, r)
        return results

    @staticmethod
    async def _with_response(payloads: PayloadStore, r: RequestResult) -> RequestResult:
        """The result with its offloaded answer read back; an answer whose object is gone
        (expired or deleted) is reported on its line as ``response_expired``."""
        key = r.response_ref or ""
        try:
            return replace(r, response_body=json.loads(await payloads.get(key)))
        except PermanentError as e:
            if e.code != "body_missing":  # what PayloadStore.get says of a missing object
                raise
            return replace(
                r,
                response_body=None,
                error_code=RESPONSE_EXPIRED,
                error_message=f"the answer was stored in the payload bucket as {key!r}, which no longer holds it",
            )

    async def export_results(self, job_id: str, out: Path, errors: Path | None = None) -> ExportSummary:
        """Write the OpenAI Batch output format; failures (and answers that cannot be read
        back) go to ``errors`` when given."""
        job = await self.status(job_id)
        results = await self.results(job_id)
        n_out = n_err = 0
        with out.open("w") as fo, (errors or Path(os.devnull)).open("w") as fe:
            for r in results:
                line = json.dumps(r.to_output_line()) + "\n"
                if errors is not None and (r.status is not RequestStatus.SUCCEEDED or r.error_code):
                    fe.write(line)
                    n_err += 1
                else:
                    fo.write(line)
                    n_out += 1
        return ExportSummary(written=n_out, errors=n_err, missing=max(0, job.total - len(results)))

    # ---- queues and limits --------------------------------------------------------------

    async def queue_stats(self) -> QueueStats:
        """The request queues' messages (every priority's, summed) and the dead letters."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        r = self.resources
        urls = [u for u in (r.high_priority_queue_url, r.request_queue_url, r.low_priority_queue_url) if u]
        *requests, dlq = await asyncio.gather(
            *(self.sqs.get_queue_attributes(QueueUrl=u, AttributeNames=names) for u in urls),
            self.sqs.get_queue_attributes(
                QueueUrl=r.dead_letter_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            ),
        )
        visible, in_flight, delayed = (sum(int(q["Attributes"].get(n, 0)) for q in requests) for n in names)
        return QueueStats(
            visible=visible,
            in_flight=in_flight,
            delayed=delayed,
            dead_letters=int(dlq["Attributes"].get("ApproximateNumberOfMessages", 0)),
        )

    async def oldest_message_age_s(self) -> float | None:
        """Age of the oldest message in the request queues (each priority's), from SQS's
        CloudWatch metric (published every minute in AWS); None when there is no datapoint
        (as locally)."""
        r = self.resources
        urls = (r.high_priority_queue_url, r.request_queue_url, r.low_priority_queue_url)
        ages = await asyncio.gather(*(self._oldest_age_s(url.rsplit("/", 1)[-1]) for url in urls if url))
        known = [a for a in ages if a is not None]
        return max(known) if known else None

    async def _oldest_age_s(self, queue_name: str) -> float | None:
        now = datetime.now(UTC)
        cloudwatch = await self._client_made_once("cloudwatch")
        resp = await cloudwatch.get_metric_statistics(
            Namespace="AWS/SQS",
            MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": queue_name}],
            StartTime=now - timedelta(minutes=10),
            EndTime=now + timedelta(minutes=1),
            Period=60,
            Statistics=["Maximum"],
        )
        points = sorted(resp.get("Datapoints", []), key=lambda p: p["Timestamp"])
        return float(points[-1]["Maximum"]) if points else None

    async def get_limits(self) -> RuntimeLimits:
        resp = await self.ssm.get_parameter(Name=self.resources.limits_parameter)
        return RuntimeLimits.from_json(resp["Parameter"]["Value"])

    async def set_limits(self, limits: RuntimeLimits) -> None:
        """Write the limits; with ``auto_workers``, size the workers to them (the calls per
        invocation may have changed)."""
        await self.ssm.put_parameter(
            Name=self.resources.limits_parameter, Value=limits.to_json(), Type="String", Overwrite=True
        )
        if limits.auto_workers:
            await self.size_workers_if_allowed(limits)

    async def size_workers(self, limits: RuntimeLimits | None = None) -> WorkerSizing | None:
        """With ``auto_workers`` on, set the worker's mappings' MaximumConcurrency to what the
        endpoints serve at once (llmbatch/client/worker_sizing.py): the normal and high
        priority ones to the size, the low one to at most that (it must not outnumber them).
        None, and nothing changed, when it is off or an endpoint declares no capacity."""
        limits = limits or await self.get_limits()
        if not limits.auto_workers:
            return None
        worker, mappings = await asyncio.gather(self.worker_settings(), self._worker_mappings())
        normal = mappings.get(Priority.NORMAL)
        if normal is None:
            raise ConfigError(f"function {self.resources.worker_function} has no event source mapping")
        # A batch smaller than the calls allowed puts no more calls in flight than its records.
        calls = min(limits.max_concurrency, int(normal.get("BatchSize") or limits.max_concurrency))
        sizing = workers_for(worker.endpoints, calls_per_invocation=calls, bounds=ESM_CONCURRENCY_BOUNDS)
        if sizing is None:
            return None
        changed = False
        for priority, mapping in mappings.items():
            current = (mapping.get("ScalingConfig") or {}).get("MaximumConcurrency")
            wanted = sizing.workers if priority is not Priority.LOW else min(current or sizing.workers, sizing.workers)
            if current != wanted:
                await self.lambda_.update_event_source_mapping(
                    UUID=mapping["UUID"], ScalingConfig={"MaximumConcurrency": wanted}
                )
                changed = True
        if changed:
            log.info("worker concurrency set: %s", sizing.describe())
        return sizing

    async def size_workers_if_allowed(self, limits: RuntimeLimits | None = None) -> None:
        """:meth:`size_workers` for a caller that may lack the permissions (an SDK producer
        allowed to create jobs and send messages only; an operator allowed to change the
        limits parameter only), or that meets a mapping still updating: then the workers
        are left as they are, said once per client."""
        try:
            await self.size_workers(limits)
        except (ClientError, BotoCoreError, ConfigError) as e:
            if not self._sizing_warned:
                self._sizing_warned = True
                log.warning("worker concurrency not sized to the endpoints: %s", e)

    async def limits_changed_at(self) -> datetime | None:
        """When the limits parameter last changed (SSM's LastModifiedDate)."""
        resp = await self.ssm.get_parameter(Name=self.resources.limits_parameter)
        changed: datetime | None = resp["Parameter"].get("LastModifiedDate")
        return changed

    async def worker_concurrency_changed_at(self) -> datetime | None:
        """When the worker's event source mapping last changed (its LastModified); None
        when the function has no mapping."""
        mappings = await self._worker_mappings()
        changed: datetime | None = mappings[Priority.NORMAL].get("LastModified") if mappings else None
        return changed

    async def _worker_mappings(self) -> dict[Priority, dict[str, Any]]:
        """The worker's event source mapping of each priority's queue; a mapping of no queue
        the stack names counts as the normal one (a stack of another version)."""
        resp = await self.lambda_.list_event_source_mappings(FunctionName=self.resources.worker_function)
        r = self.resources
        queues = PriorityQueues.of(
            normal=r.request_queue_url, high=r.high_priority_queue_url, low=r.low_priority_queue_url
        )
        found: dict[Priority, dict[str, Any]] = {}
        for m in resp.get("EventSourceMappings") or []:
            found.setdefault(queues.priority_of(m.get("EventSourceArn")) or Priority.NORMAL, dict(m))
        return found

    async def _worker_mapping(self) -> dict[str, Any]:
        """The normal-priority queue's mapping: its concurrency is the worker's
        (WorkerMaxConcurrency, which the high-priority queue's mapping shares)."""
        mappings = await self._worker_mappings()
        if Priority.NORMAL not in mappings:
            raise ConfigError(f"function {self.resources.worker_function} has no event source mapping")
        return mappings[Priority.NORMAL]

    async def get_worker_concurrency(self) -> int | None:
        mapping = await self._worker_mapping()
        return mapping.get("ScalingConfig", {}).get("MaximumConcurrency")

    async def set_worker_concurrency(self, value: int) -> None:
        """The operator's own number: the workers no longer follow the endpoints
        (``auto_workers`` off) until told to again."""
        lo, hi = ESM_CONCURRENCY_BOUNDS
        if not lo <= value <= hi:
            raise ConfigError(f"maximum concurrency must be from {lo} to {hi}, got {value}")
        # Auto off first: a job made meanwhile must not size the mappings over this number.
        limits = await self.get_limits()
        if limits.auto_workers:
            await self.set_limits(limits.with_changes(auto_workers=False))
        await self._set_mappings_concurrency(value)

    async def _set_mappings_concurrency(self, value: int) -> None:
        mappings = await self._worker_mappings()
        if Priority.NORMAL not in mappings:
            raise ConfigError(f"function {self.resources.worker_function} has no event source mapping")
        # High and normal share WorkerMaxConcurrency (template.yaml); low keeps its own share.
        for priority in (Priority.HIGH, Priority.NORMAL):
            if priority in mappings:
                await self.lambda_.update_event_source_mapping(
                    UUID=mappings[priority]["UUID"], ScalingConfig={"MaximumConcurrency": value}
                )


def _priority(value: Priority | str) -> Priority:
    try:
        return Priority(value)
    except ValueError:
        raise ConfigError(f"priority must be one of {', '.join(Priority)}, got {value!r}") from None
