"""Poison of every kind, sent through the SDK among a job's own requests, changes no other
message's outcome, and the job's counts stay its own (``llmbatch.local/poison.py``)."""

from __future__ import annotations

from typing import Any

from llmbatch.local.poison import Outcome, Poison, PoisonReport, _check, catalogue, members_of, run_poison
from llmbatch.local.runner import LocalStack
from shared.deadletter import UNASSIGNED, DeadLetter
from shared.errors import InvalidMessageError
from shared.jobs import NewJob
from shared.messages import decode_message
from shared.results import RequestResult, RequestStatus


def test_the_catalogue_covers_every_kind_the_issue_names() -> None:
    poisons = catalogue(NewJob("job-x", "0" * 32), first_line=11, impostor_of="good-1", nonce="abcd1234")
    names = {p.name for p in poisons}
    assert {
        "not-json",
        "lone-surrogate-custom-id",
        "deep-nesting",
        "oversized-body-unsigned",
        "huge-number",
        "missing-fields",
        "empty-fields",
        "custom-id-too-many-bytes",
        "stranger-unsigned",
        "stranger-bad-sig",
        "impostor",
        "unknown-job",
        "member-unknown-endpoint",
        "array",
        "wrong-types",
    } <= names
    # Bodies are unique, SQS-sendable (no raw surrogates: escapes only), and within 1 MiB
    assert len({p.body for p in poisons}) == len(poisons)
    assert all(len(p.body.encode("utf-8")) < 1_048_576 for p in poisons)
    # Members take the lines given, one each
    assert [decode_line(p.body) for p in members_of(poisons)] == list(range(11, 11 + len(members_of(poisons))))
    assert all(p.custom_id for p in members_of(poisons))
    assert all(p.expect for p in poisons if p.outcome is not Outcome.ANSWERED)


def a_clean_run() -> tuple[PoisonReport, list[str], list[Poison], list[RequestResult], list[DeadLetter]]:
    """What a run that went right reads back: the inputs of the checker."""
    poisons = catalogue(NewJob("job-x", "0" * 32), first_line=3, impostor_of="good-1", nonce="feed0001")
    members = members_of(poisons)
    good = ["good-1", "good-2"]
    results = [RequestResult("job-x", c, i, RequestStatus.SUCCEEDED, 1, "default") for i, c in enumerate(good, 1)]
    for m in members:
        ended = RequestStatus.FAILED if m.outcome is Outcome.FAILED else RequestStatus.SUCCEEDED
        results.append(RequestResult("job-x", m.custom_id, 0, ended, 1, "", error_code=m.expect or None))
    letters = [
        DeadLetter(UNASSIGNED, f"m{i}", p.body, f"because {p.expect}", "t")
        for i, p in enumerate(poisons)
        if p.outcome is Outcome.DEAD_LETTERED
    ]
    succeeded = sum(r.status is RequestStatus.SUCCEEDED for r in results)
    status = {
        "status": "completed",
        "total": len(results),
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "cancelled": 0,
        "pending": 0,
    }
    report = PoisonReport(2, len(letters), len(members), status, len(letters), 0.0)
    return report, good, poisons, results, letters


def test_the_checker_passes_a_clean_run_and_catches_each_way_poison_could_leak() -> None:
    # GIVEN what a clean run reads back
    report, good, poisons, results, letters = a_clean_run()
    _check(report, good, poisons, results, letters, [])
    assert report.problems == []

    # WHEN a stranger is answered under the job, counted, kept twice, kept under the job, or
    # a request of the job is lost: THEN each is a problem the drill reports
    stranger = next(p for p in poisons if p.name == "stranger-unsigned")
    leaks: dict[str, dict[str, Any]] = {
        "answered": dict(results=[*results, RequestResult("job-x", "stranger-x", 9, RequestStatus.FAILED, 1, "")]),
        "kept twice": dict(
            letters=[*letters, DeadLetter(UNASSIGNED, "again", stranger.body, "not a request of job", "")]
        ),
        "kept under the job": dict(own_letters=[DeadLetter("job-x", "stranger-x", stranger.body, "", "")]),
        "lost": dict(results=results[1:]),
    }
    for what, change in leaks.items():
        report, good, poisons, results, letters = a_clean_run()
        args: dict[str, Any] = {"results": results, "letters": letters, "own_letters": [], **change}
        _check(report, good, poisons, args["results"], args["letters"], args["own_letters"])
        assert report.problems, what
    report, good, poisons, results, letters = a_clean_run()
    report.status = {**report.status, "succeeded": report.status["succeeded"] + 1, "total": report.status["total"] + 1}
    _check(report, good, poisons, results, letters, [])
    assert report.problems, "counted"


def decode_line(body: str) -> int:
    try:
        return decode_message(body).line
    except InvalidMessageError as e:
        return e.line


async def test_poison_of_every_kind_changes_no_other_outcome(fresh_sim: LocalStack) -> None:
    # GIVEN/WHEN a job of 30 requests and 6 malformed ones of its own, enqueued shuffled
    # among every kind of stranger's poison (an impostor of one of its requests first)
    report = await run_poison(fresh_sim, requests=30, timeout_s=120)

    # THEN its requests all succeeded once, its own malformed ones failed once each, and
    # every stranger was dead-lettered and kept under _unassigned once, counted nowhere
    assert report.problems == [], "\n".join(report.lines())
    assert report.status["total"] == 30 + report.members
