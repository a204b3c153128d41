"""Poison: messages of every malformed kind, mixed into a job's own requests.

Anyone who can send to the request queue can send anything. The promise under test: no
message can change another message's outcome, and a job's counts are its own. Each kind
below says how it must end:

* a **stranger** -- unreadable, of no job, or naming a job without its signature -- is
  dead-lettered with a reason and kept under ``_unassigned``, once, and is never counted
  or answered under any job;
* a **member** -- one of the job's own requests (it carries the job's signature) that is
  malformed or names an endpoint that does not exist -- is recorded under its job as
  failed, once, with the error code given.

``run_poison`` is the body of ``llmbatch drill --scenario poison``: a job whose requests
are enqueued through the SDK together with the whole catalogue, then checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

import boto3

from llmbatch.client.client import LlmbatchClient
from llmbatch.local.drill import terminal_line, verdict_lines, wait_finished
from llmbatch.local.runner import LocalStack
from shared.deadletter import UNASSIGNED, DeadLetter, dead_letter_body
from shared.errors import TransientError
from shared.jobs import NewJob
from shared.messages import CUSTOM_ID_MAX_BYTES, CUSTOM_ID_MAX_LEN, MESSAGE_VERSION, RequestMessage
from shared.queue_ops import pack_batches
from shared.results import RequestResult, RequestStatus

#: The size of the oversized bodies: over DynamoDB's 400 KB item, under SQS's 1 MiB message.
OVERSIZED_BODY_CHARS = 900_000
#: Deeper than any JSON parser's recursion limit (Python's stops near 1,000).
DEEP_NESTING = 100_000
#: More digits than Python converts (``sys.get_int_max_str_digits``, 4,300 by default).
HUGE_NUMBER_DIGITS = 5_000
CHAT: Final = "/v1/chat/completions"


class Outcome(StrEnum):
    #: Dead-lettered with a reason and kept under ``_unassigned``, counted nowhere.
    DEAD_LETTERED = "dead-lettered"
    #: Recorded under its job as failed, with the error code given.
    FAILED = "failed"
    #: Recorded under its job in one terminal state, whichever (a request that is valid
    #: but big: the endpoint may answer it or refuse it).
    ANSWERED = "answered"


@dataclass(frozen=True)
class Poison:
    """One malformed message, and how it must end."""

    name: str
    body: str
    outcome: Outcome
    #: What the dead letter's reason must contain, or the result's error code.
    expect: str = ""
    #: A member's custom_id (its result's key).
    custom_id: str = ""

    def __repr__(self) -> str:  # bodies run to 900 KB
        return f"Poison({self.name!r}, {self.outcome.value}, {len(self.body)} chars)"


NOT_JSON = "not JSON"
NOT_AN_OBJECT = "must be a JSON object"
OFF_SCHEMA = "does not follow schema"
NOT_ITS_JOB = "not a request of job"
UNKNOWN_JOB = "unknown job"


def _chat(text: str) -> dict[str, Any]:
    return {"model": "sim-model", "messages": [{"role": "user", "content": text}], "max_tokens": 8}


def catalogue(job: NewJob, *, first_line: int, impostor_of: str, nonce: str | None = None) -> list[Poison]:
    """Every kind of poison for ``job``. Members take lines from ``first_line`` on (the
    job's total must count them); ``impostor_of`` is a custom_id of the job that a stranger
    claims too, unsigned. ``nonce`` makes each body unique to one run."""
    n = nonce or secrets.token_hex(4)
    j = job.job_id

    def fields(custom_id: str, line: int = 1, **over: Any) -> dict[str, Any]:
        d: dict[str, Any] = {
            "v": MESSAGE_VERSION,
            "job_id": j,
            "custom_id": custom_id,
            "line": line,
            "url": CHAT,
            "body": _chat(f"poison {n}"),
        }
        return {**d, **over}

    def raw(d: dict[str, Any]) -> str:
        return json.dumps(d)  # ASCII: a lone surrogate travels as its \\uXXXX escape

    def with_infinity(d: dict[str, Any]) -> str:
        return raw({**d, "body": {**d["body"], "temperature": "INFINITY"}}).replace('"INFINITY"', "1e999")

    strangers = [
        Poison("not-json", f"{{broken json {n}", Outcome.DEAD_LETTERED, NOT_JSON),
        Poison("deep-nesting", f'["{n}",' + "[" * DEEP_NESTING, Outcome.DEAD_LETTERED, NOT_JSON),
        Poison(
            "huge-number",
            raw(fields(f"huge-{n}")).replace('"line": 1', '"line": ' + "9" * HUGE_NUMBER_DIGITS),
            Outcome.DEAD_LETTERED,
            NOT_JSON,
        ),
        Poison("array", json.dumps([n]), Outcome.DEAD_LETTERED, NOT_AN_OBJECT),
        Poison("string", json.dumps(n), Outcome.DEAD_LETTERED, NOT_AN_OBJECT),
        Poison("number", str(int(n, 16)), Outcome.DEAD_LETTERED, NOT_AN_OBJECT),
        Poison("lone-surrogate-custom-id", raw(fields(f"\ud800{n}")), Outcome.DEAD_LETTERED, OFF_SCHEMA),
        Poison("lone-surrogate-job-id", raw(fields(f"x-{n}", job_id=j + "\udfff")), Outcome.DEAD_LETTERED, OFF_SCHEMA),
        Poison(
            "lone-surrogate-body-unsigned",
            raw(fields(f"surrogate-{n}", body=_chat(f"\udc00 {n}"))),
            Outcome.DEAD_LETTERED,
            OFF_SCHEMA,
        ),
        Poison("infinite-number-unsigned", with_infinity(fields(f"inf-{n}")), Outcome.DEAD_LETTERED, OFF_SCHEMA),
        Poison(
            "oversized-body-unsigned",
            raw(fields(f"big-{n}", body=_chat("x" * OVERSIZED_BODY_CHARS))),
            Outcome.DEAD_LETTERED,
            NOT_ITS_JOB,
        ),
        Poison(
            "missing-fields",
            raw({"v": MESSAGE_VERSION, "job_id": j, "custom_id": f"missing-{n}"}),
            Outcome.DEAD_LETTERED,
            OFF_SCHEMA,
        ),
        Poison("empty-fields", raw(fields("", job_id="", body={"n": n})), Outcome.DEAD_LETTERED, OFF_SCHEMA),
        Poison(
            "wrong-types",
            raw(fields(["x", n], job_id=42, line="1", body="text", endpoint=None)),  # type: ignore[arg-type]
            Outcome.DEAD_LETTERED,
            OFF_SCHEMA,
        ),
        Poison(
            # At most 512 characters, but over the bytes a DynamoDB sort key holds.
            "custom-id-too-many-bytes",
            raw(fields(("€" * (CUSTOM_ID_MAX_BYTES // 3 + 1) + n)[:CUSTOM_ID_MAX_LEN])),
            Outcome.DEAD_LETTERED,
            OFF_SCHEMA,
        ),
        Poison("version-2-unsigned", raw(fields(f"v2-{n}", v=2)), Outcome.DEAD_LETTERED, OFF_SCHEMA),
        Poison("stranger-unsigned", raw(fields(f"stranger-{n}")), Outcome.DEAD_LETTERED, NOT_ITS_JOB),
        Poison("stranger-bad-sig", raw(fields(f"forged-{n}", sig="0" * 32)), Outcome.DEAD_LETTERED, NOT_ITS_JOB),
        Poison(
            # Claims one of the job's own requests, signed with another job's key: it
            # must neither answer that request nor keep the real one from being answered.
            "impostor",
            raw(fields(impostor_of, sig=NewJob(j, secrets.token_hex(16)).sign(impostor_of, 1), body=_chat(n))),
            Outcome.DEAD_LETTERED,
            NOT_ITS_JOB,
        ),
        Poison("unknown-job", raw(fields(f"orphan-{n}", job_id=f"job-none-{n}")), Outcome.DEAD_LETTERED, UNKNOWN_JOB),
        Poison(
            # Unsigned, so its payload-bucket reference must never be read.
            "body-ref-unsigned",
            raw(fields(f"ref-{n}", body={}, body_ref=f"requests/{j}/missing-{n}.json")),
            Outcome.DEAD_LETTERED,
            NOT_ITS_JOB,
        ),
    ]

    line = iter(range(first_line, first_line + 100))

    def member(name: str, outcome: Outcome, expect: str, encode: Any = raw, **over: Any) -> Poison:
        custom_id, at = f"member-{name}-{n}", next(line)
        d = fields(custom_id, at, sig=job.sign(custom_id, at), **over)
        return Poison(f"member-{name}", encode(d), outcome, expect, custom_id)

    members = [
        member("unknown-endpoint", Outcome.FAILED, "unknown_endpoint", endpoint="no-such-endpoint"),
        member("unsupported-url", Outcome.FAILED, "invalid_message", url="/v1/images/generations"),
        member("lone-surrogate-body", Outcome.FAILED, "invalid_message", body=_chat("\ud83d alone")),
        member("infinite-number", Outcome.FAILED, "invalid_message", encode=with_infinity),
        member("version-2", Outcome.FAILED, "invalid_message", v=2),
        member("oversized-body", Outcome.ANSWERED, "", body=_chat("x" * OVERSIZED_BODY_CHARS)),
    ]
    return strangers + members


def members_of(poisons: list[Poison]) -> list[Poison]:
    return [p for p in poisons if p.outcome is not Outcome.DEAD_LETTERED]


def enqueue_among(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    """Send ``bodies`` with boto3 in SendMessageBatch calls (10 entries, 1 MiB at most),
    in the order given, so poison shares batches with the job's requests."""
    for group in pack_batches(bodies):
        entries = {str(i): bodies[n] for i, n in enumerate(group)}
        for attempt in range(8):
            resp = sqs.send_message_batch(
                QueueUrl=queue_url, Entries=[{"Id": i, "MessageBody": b} for i, b in entries.items()]
            )
            refused = [f for f in resp.get("Failed") or [] if f.get("SenderFault")]
            if refused:
                raise ValueError(f"SQS refused a message: {refused[0].get('Message')}")
            entries = {f["Id"]: entries[f["Id"]] for f in resp.get("Failed") or []}
            if not entries:
                break
            time.sleep(min(2.0, 0.1 * 2**attempt))
        else:
            raise TransientError("SQS kept refusing messages", code="enqueue")


# ---- the scenario --------------------------------------------------------------------------


@dataclass
class PoisonReport:
    requests: int
    strangers: int
    members: int
    status: dict[str, Any]
    dead_lettered: int
    wall_s: float
    problems: list[str] = field(default_factory=list)
    #: The same job without the poison, on the same stack (``llmbatch drill`` measures it).
    clean_wall_s: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        s = self.status
        out = [
            f"requests            {self.requests} of the job, +{self.members} of its own malformed, "
            f"+{self.strangers} strangers' messages",
            terminal_line(s),
            f"dead letters        {self.dead_lettered} kept under {UNASSIGNED}",
            f"wall time           {self.wall_s:.1f}s"
            + (
                f" ({self.wall_s / self.clean_wall_s:.2f}x the {self.clean_wall_s:.1f}s of the same job without poison)"
                if self.clean_wall_s
                else ""
            ),
        ]
        return out + verdict_lines(self.problems, "every message accounted for once; the job's counts its own")


def run_poison_drill(requests: int = 300, *, timeout_s: float = 300.0) -> PoisonReport:
    """``llmbatch drill --scenario poison``: the scenario on a local stack of its own."""
    with LocalStack(write_state=False) as stack:
        clean_s = asyncio.run(_clean_run_s(stack, requests, timeout_s))
        report = asyncio.run(run_poison(stack, requests, timeout_s=timeout_s))
    report.clean_wall_s = clean_s
    return report


async def _clean_run_s(stack: LocalStack, requests: int, timeout_s: float) -> float:
    """Seconds the same job takes without any poison: the baseline of the figure."""
    res = stack.resources
    sqs = boto3.client("sqs", **res.client_kwargs())
    started = time.monotonic()
    async with LlmbatchClient(res) as client:
        job = await client.create_job(requests, name="poison drill baseline")
        enqueue_among(sqs, res.request_queue_url, [m.encode() for m in _good_messages(job, requests)])
        await wait_finished(client, job.job_id, timeout_s)
    return time.monotonic() - started


def _good_messages(job: NewJob, requests: int) -> list[RequestMessage]:
    return [
        RequestMessage(
            v=MESSAGE_VERSION,
            job_id=job.job_id,
            custom_id=f"good-{i:05d}",
            line=i,
            url=CHAT,
            body=_chat(f"q{i}"),
            sig=job.sign(f"good-{i:05d}", i),
        )
        for i in range(1, requests + 1)
    ]


async def run_poison(stack: LocalStack, requests: int = 50, *, seed: int = 1, timeout_s: float = 180.0) -> PoisonReport:
    """A job of ``requests`` chat requests plus its own malformed members, enqueued through
    the SDK shuffled among the whole catalogue (the impostor first), then checked: the
    job's requests all succeed once, its members fail once as their kind says, every
    stranger is dead-lettered and kept under ``_unassigned`` once, and nothing of a
    stranger's is answered or counted under the job."""
    rng = random.Random(seed)
    res = stack.resources
    sqs = boto3.client("sqs", **res.client_kwargs())
    started = time.monotonic()
    async with LlmbatchClient(res) as client:
        probe = NewJob("job-probe", "")
        members = len(members_of(catalogue(probe, first_line=requests + 1, impostor_of="x")))
        job = await client.create_job(requests + members, name="poison drill")
        good = _good_messages(job, requests)
        poisons = catalogue(job, first_line=requests + 1, impostor_of=good[0].custom_id)
        impostor = next(p for p in poisons if p.name == "impostor")
        rest = [p.body for p in poisons if p is not impostor] + [m.encode() for m in good]
        rng.shuffle(rest)
        enqueue_among(sqs, res.request_queue_url, [impostor.body, *rest])

        final = await wait_finished(client, job.job_id, timeout_s)
        results = await client.results(job.job_id)
        strangers = [p for p in poisons if p.outcome is Outcome.DEAD_LETTERED]
        letters = await _wait_letters(client, {p.body for p in strangers}, timeout_s=60.0)
        own_letters = await client.dead_letters(job.job_id)
    report = PoisonReport(
        requests=requests,
        strangers=len(strangers),
        members=members,
        status=final.to_dict(),
        dead_lettered=sum(1 for d in letters if d.job_id == UNASSIGNED),
        wall_s=time.monotonic() - started,
    )
    _check(report, [m.custom_id for m in good], poisons, results, letters, own_letters)
    return report


def _check(
    r: PoisonReport,
    good: list[str],
    poisons: list[Poison],
    results: list[RequestResult],
    letters: list[DeadLetter],
    own_letters: list[DeadLetter],
) -> None:
    s = r.status
    total = r.requests + r.members
    members = members_of(poisons)
    if s["status"] != "completed" or s["total"] != total:
        r.problems.append(f"job ended {s['status']} with total {s['total']} (expected completed, {total})")
    answered = sum(1 for m in members if m.outcome is Outcome.ANSWERED)
    if not r.requests <= s["succeeded"] <= r.requests + answered:
        r.problems.append(f"{s['succeeded']} succeeded; the job's {r.requests} requests should have")
    if s["succeeded"] + s["failed"] != total or s["cancelled"] or s["pending"]:
        r.problems.append(f"counts are not the job's own {total}: {s}")
    by_id: dict[str, list[RequestResult]] = {}
    for res in results:
        by_id.setdefault(res.custom_id, []).append(res)
    for custom_id in good:
        got = [x.status.value for x in by_id.get(custom_id, [])]
        if got != [RequestStatus.SUCCEEDED.value]:
            r.problems.append(f"request {custom_id}: {got or 'no result'} (expected one success)")
    for m in members:
        got_results = by_id.get(m.custom_id, [])
        if len(got_results) != 1:
            r.problems.append(f"{m.name}: {len(got_results)} results (expected one)")
        elif m.outcome is Outcome.FAILED and (
            got_results[0].status is not RequestStatus.FAILED or got_results[0].error_code != m.expect
        ):
            x = got_results[0]
            r.problems.append(f"{m.name}: {x.status.value} {x.error_code} (expected failed {m.expect})")
    ours = set(good) | {m.custom_id for m in members}
    strays = sorted(c for c in by_id if c not in ours)
    if strays:
        r.problems.append(f"results under the job for requests not its own: {[x[:40] for x in strays]}")
    if own_letters:
        r.problems.append(f"{len(own_letters)} dead letters kept under the job: {[d.key[:40] for d in own_letters]}")
    for p in poisons:
        if p.outcome is not Outcome.DEAD_LETTERED:
            continue
        kept = [d for d in letters if d.body == p.body]
        if len(kept) != 1 or kept[0].job_id != UNASSIGNED:
            r.problems.append(
                f"{p.name}: kept {len(kept)} times {[d.job_id for d in kept]} (expected once, unassigned)"
            )
        elif p.expect not in kept[0].reason:
            r.problems.append(f"{p.name}: reason {kept[0].reason[:120]!r} does not say {p.expect!r}")


async def _wait_letters(client: LlmbatchClient, bodies: set[str], timeout_s: float) -> list[DeadLetter]:
    """The dead letters kept of ``bodies``, once each is kept (or at the timeout), each with
    its whole body: one too big for an item is read back from the payload bucket, and one
    cut to fit (a stack without a bucket) stands for the body its SHA-256 names."""
    by_hash = {hashlib.sha256(b.encode()).hexdigest(): b for b in bodies}
    whole: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        letters = []
        for d in await client.dead_letters():
            if (d.job_id, d.key) not in whole:
                whole[(d.job_id, d.key)] = await _whole_body(client, d, by_hash)
            body = whole[(d.job_id, d.key)]
            if body in bodies:
                letters.append(replace(d, body=body))
        if {d.body for d in letters} >= bodies or time.monotonic() > deadline:
            return letters
        await asyncio.sleep(0.5)


async def _whole_body(client: LlmbatchClient, letter: DeadLetter, by_hash: dict[str, str]) -> str:
    if letter.body_ref is not None:
        return await dead_letter_body(letter, client.payloads)
    if letter.truncated:
        return by_hash.get(letter.body_sha256 or "", letter.body)
    return letter.body
