"""The console against a real moto server: every screen acts through ``LlmbatchClient``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Input, Static

from llmbatch.client.client import LlmbatchClient
from llmbatch.client.stack import StackResources
from shared.deadletter import UNASSIGNED
from shared.jobs import JobMeta
from shared.messages import RequestMessage
from shared.results import RequestResult, RequestStatus, Usage
from tui.app import LlmbatchConsole, create_app
from tui.pilot import text_of, wait_for
from tui.screens.confirm import ConfirmScreen
from tui.screens.dead_letters import DeadLettersScreen
from tui.screens.job_detail import JobDetailScreen
from tui.screens.jobs import JobsScreen
from tui.screens.limits import LimitsScreen
from tui.screens.submit import SubmitScreen

SIZE = (120, 36)


def aws(service: str, url: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]  # service is any name
        service, region_name="us-east-1", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def console(stack: StackResources, tmp_path: Path, refresh_s: float = 0.2) -> LlmbatchConsole:
    return create_app(lambda: LlmbatchClient(stack), refresh_s=refresh_s, start_dir=tmp_path)


def cell(table: DataTable, row: int, column: str) -> str:  # type: ignore[type-arg]
    value = table.get_cell_at(Coordinate(row, table.get_column_index(column)))
    return str(getattr(value, "plain", value))


def results_for(job_id: str) -> list[RequestResult]:
    ok = [
        RequestResult(
            job_id,
            f"req-{i}",
            i,
            RequestStatus.SUCCEEDED,
            attempt=1,
            endpoint="default",
            status_code=200,
            response_body={"choices": [{"message": {"content": f"answer {i}"}}]},
            usage=Usage(10, 5),
        )
        for i in (1, 2)
    ]
    failed = RequestResult(
        job_id,
        "req-3",
        3,
        RequestStatus.FAILED,
        attempt=1,
        endpoint="default",
        status_code=400,
        error_code="invalid_request",
        error_message="bad body",
    )
    return [*ok, failed]


async def test_a_submitted_job_appears_and_completes_when_its_results_are_written(
    stack: StackResources, tmp_path: Path, job_files: tuple[Path, Path]
) -> None:
    good, _ = job_files
    app = console(stack, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        # GIVEN the submit screen with a valid file, checked before anything is sent
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen))
        submit = app.screen
        assert isinstance(submit, SubmitScreen)
        submit.query_one("#submit-path", Input).value = str(good)
        await pilot.press("ctrl+r")
        result = submit.query_one("#check-result", Static)
        await wait_for(pilot, lambda: "Ready to submit" in text_of(result), what="the check")
        assert "3 request(s)" in text_of(result)

        # WHEN it is submitted
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: submit.last_job_id is not None, what="the submit")
        job_id = submit.last_job_id
        assert job_id is not None

        # THEN the console shows the Jobs screen with the job, queued (no worker runs)
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), what="the jobs screen")
        jobs = app.screen
        assert isinstance(jobs, JobsScreen)
        table = jobs.query_one("#jobs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1 and cell(table, 0, "job") == job_id, what="the job row")
        assert cell(table, 0, "status") == "queued"
        assert cell(table, 0, "pending") == "3"
        assert (
            aws("sqs", stack.aws_endpoint_url or "").get_queue_attributes(
                QueueUrl=stack.request_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
            == "3"
        )

        # WHEN the worker's write happens (the same call the worker makes)
        async with LlmbatchClient(stack) as client:
            await client.store.write_terminal(job_id, results_for(job_id))

        # THEN the next poll shows it completed
        await wait_for(pilot, lambda: cell(table, 0, "status") == "completed", what="completed")
        assert (cell(table, 0, "succeeded"), cell(table, 0, "failed")) == ("2", "1")

        # AND its detail screen lists the results, groups the failure and exports the file
        table.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen), what="the detail screen")
        detail = app.screen
        assert isinstance(detail, JobDetailScreen)
        results = detail.query_one("#results-table", DataTable)
        await wait_for(pilot, lambda: results.row_count == 3, what="the results")
        failures = detail.query_one("#failures-table", DataTable)
        assert failures.row_count == 1
        assert str(failures.get_row_at(0)[1]) == "invalid_request"

        await pilot.press("slash", *"req-2", "enter")
        await wait_for(pilot, lambda: results.row_count == 1, what="the search")
        assert "answer 2" in str(detail.query_one("#response-pane", Static).render())

        out = tmp_path / "out.jsonl"
        await pilot.press("e")
        await wait_for(pilot, lambda: app.screen.query("#export-path"), what="the export dialog")
        app.screen.query_one("#export-path", Input).value = str(out)
        await pilot.press("enter")
        await wait_for(pilot, lambda: out.exists() and len(out.read_text().splitlines()) == 3, what="the export")
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [line["custom_id"] for line in lines] == ["req-1", "req-2", "req-3"]


async def test_a_bad_file_is_refused_with_its_line_numbers_and_nothing_is_sent(
    stack: StackResources, tmp_path: Path, job_files: tuple[Path, Path]
) -> None:
    _, bad = job_files
    app = console(stack, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen))
        submit = app.screen
        assert isinstance(submit, SubmitScreen)
        submit.query_one("#submit-path", Input).value = str(bad)
        result = submit.query_one("#check-result", Static)

        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "refused" in text_of(result), what="the check")
        shown = text_of(result)
        for line in (2, 3, 5):
            assert f"{bad}:{line}:" in shown
        assert f"{bad}:1:" not in shown

        # Submit checks again and refuses the whole file: no job, no message.
        result.update("")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "refused" in text_of(result), what="the refused submit")
        assert submit.last_job_id is None
    assert aws("dynamodb", stack.aws_endpoint_url or "").scan(TableName=stack.jobs_table)["Count"] == 0
    assert (
        aws("sqs", stack.aws_endpoint_url or "").get_queue_attributes(
            QueueUrl=stack.request_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        == "0"
    )


def _ssm_limits(stack: StackResources) -> tuple[dict[str, int | None], int]:
    param = aws("ssm", stack.aws_endpoint_url or "").get_parameter(Name=stack.limits_parameter)["Parameter"]
    return json.loads(param["Value"]), int(param["Version"])


def _esm_concurrency(stack: StackResources) -> int:
    lam = aws("lambda", stack.aws_endpoint_url or "")
    mapping = lam.list_event_source_mappings(FunctionName=stack.worker_function)["EventSourceMappings"][0]
    return int(mapping["ScalingConfig"]["MaximumConcurrency"])


async def _edit(pilot, screen: LimitsScreen, name: str, value: str) -> None:  # type: ignore[no-untyped-def]
    field = screen.field(name)
    before = screen.applied
    field.input.value = value
    field.input.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.applied > before, what=f"the edit of {name}")


async def test_each_limit_is_written_to_aws_and_read_back(stack: StackResources, tmp_path: Path) -> None:
    app = console(stack, tmp_path, refresh_s=30)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, LimitsScreen) and app.screen.polls >= 1)
        screen = app.screen
        assert isinstance(screen, LimitsScreen)
        assert screen.field("worker_concurrency").in_force == _esm_concurrency(stack)

        await _edit(pilot, screen, "worker_concurrency", "7")
        await _edit(pilot, screen, "max_concurrency", "32")
        await _edit(pilot, screen, "rpm_limit", "600")
        await _edit(pilot, screen, "tpm_limit", "90000")

        assert _esm_concurrency(stack) == 7
        limits, _ = _ssm_limits(stack)
        assert {k: limits[k] for k in ("max_concurrency", "rpm_limit", "tpm_limit")} == {
            "max_concurrency": 32,
            "rpm_limit": 600,
            "tpm_limit": 90000,
        }
        for name, value in (("worker_concurrency", 7), ("max_concurrency", 32), ("rpm_limit", 600)):
            field = screen.field(name)
            assert field.in_force == value
            assert f"in force: {value:,}" in text_of(field.query_one(".limit-in-force", Static))
            assert "changed" in text_of(field.query_one(".limit-in-force", Static))

        # Emptying an optional limit removes it.
        await _edit(pilot, screen, "rpm_limit", "")
        assert _ssm_limits(stack)[0]["rpm_limit"] is None


async def test_out_of_range_values_are_refused_with_the_reason_and_nothing_is_written(
    stack: StackResources, tmp_path: Path
) -> None:
    app = console(stack, tmp_path, refresh_s=30)
    esm_before = _esm_concurrency(stack)
    limits_before, version_before = _ssm_limits(stack)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, LimitsScreen) and app.screen.polls >= 1)
        screen = app.screen
        assert isinstance(screen, LimitsScreen)

        cases = {
            "worker_concurrency": ("1", "maximum concurrency must be from 2 to 1000, got 1"),
            "max_concurrency": ("1001", "max_concurrency must be a whole number from 1 to 1000, got 1001"),
            "rpm_limit": ("0", "rpm_limit must be a whole number from 1 to 10000000, got 0"),
            "tpm_limit": ("-5", "tpm_limit must be a whole number from 1 to 1000000000, got -5"),
        }
        for name, (value, reason) in cases.items():
            await _edit(pilot, screen, name, value)
            field = screen.field(name)
            assert reason in text_of(field.query_one(".limit-error", Static))
            assert field.has_class("-invalid")

    assert _esm_concurrency(stack) == esm_before
    assert _ssm_limits(stack) == (limits_before, version_before)


async def test_aws_errors_are_notified_and_polling_backs_off_and_continues(
    stack: StackResources, tmp_path: Path
) -> None:
    broken = StackResources(**{**stack.__dict__, "jobs_table": "no-such-table"})
    app = create_app(lambda: LlmbatchClient(broken), refresh_s=0.05, start_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.polls >= 3, what="3 polls")
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        assert screen.failures >= 3
        notices = list(app._notifications)
        assert notices and all(n.severity == "error" for n in notices)
        assert any(n.title.startswith("AWS error") and "ResourceNotFound" in n.message for n in notices)
        assert "testing" not in " ".join(n.message for n in notices)


def _dead_letter_job(job_id: str) -> tuple[RequestResult, str]:
    """A request that used up its retries: its failed result, and its message (the dead letter's body)."""
    message = RequestMessage(
        v=1,
        job_id=job_id,
        custom_id="req-7",
        line=7,
        url="/v1/chat/completions",
        body={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]},
    ).encode()
    result = RequestResult(
        job_id,
        "req-7",
        7,
        RequestStatus.FAILED,
        attempt=5,
        endpoint="default",
        error_code="retries_exhausted",
        error_message="retries exhausted after 5 attempts; last error: timeout: no answer",
    )
    return result, message


async def test_a_dead_letter_is_shown_and_redriven_to_the_request_queue(stack: StackResources, tmp_path: Path) -> None:
    url = stack.aws_endpoint_url or ""
    ddb, sqs = aws("dynamodb", url), aws("sqs", url)
    job_id = "job-20261129T061500Z-dead0001"
    result, message = _dead_letter_job(job_id)
    async with LlmbatchClient(stack) as client:
        await client.store.create_job(JobMeta(job_id=job_id, total=7, name="dl.jsonl", sealed=True, enqueued=7))
        await client.store.write_terminal(job_id, [result])
    # Kept as the DeadLetter function keeps them: a readable request, and a message nobody could read.
    for item in (
        {
            "job_id": job_id,
            "item": "dead#req-7",
            "body": message,
            "reason": result.error_message,
            "dead_at": "2026-11-29T06:15:00+00:00",
        },
        {
            "job_id": UNASSIGNED,
            "item": "dead#m-1",
            "body": "{not json",
            "reason": "message body is not JSON",
            "dead_at": "2026-11-29T06:00:00+00:00",
        },
    ):
        ddb.put_item(TableName=stack.jobs_table, Item={k: {"S": v} for k, v in item.items()})

    app = console(stack, tmp_path, refresh_s=30)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, DeadLettersScreen) and app.screen.polls >= 1)
        screen = app.screen
        assert isinstance(screen, DeadLettersScreen)
        table = screen.query_one("#dead-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, what="the dead letters")
        assert (cell(table, 0, "job"), cell(table, 0, "key")) == (job_id, "req-7")
        assert "retries exhausted" in cell(table, 0, "reason")
        assert cell(table, 1, "job") == "(unassigned)" and "not redrivable" in cell(table, 1, "reason")

        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.redrives == 1 and table.row_count == 1, what="the redrive")
        assert cell(table, 0, "key") == "m-1"  # the unreadable one stays

    received = sqs.receive_message(QueueUrl=stack.request_queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in received] == [message]
    assert "Item" not in ddb.get_item(
        TableName=stack.jobs_table, Key={"job_id": {"S": job_id}, "item": {"S": "dead#req-7"}}
    )
    assert "Item" not in ddb.get_item(
        TableName=stack.results_table, Key={"job_id": {"S": job_id}, "custom_id": {"S": "req-7"}}
    )
    assert "Item" in ddb.get_item(
        TableName=stack.jobs_table, Key={"job_id": {"S": UNASSIGNED}, "item": {"S": "dead#m-1"}}
    )


async def test_cancel_from_job_detail_asks_then_flags_the_job_in_dynamodb(
    stack: StackResources, tmp_path: Path
) -> None:
    job_id = "job-20261129T061500Z-cafe0001"
    async with LlmbatchClient(stack) as client:
        await client.store.create_job(JobMeta(job_id=job_id, total=3, name="c.jsonl", sealed=True, enqueued=3))
    app = console(stack, tmp_path, refresh_s=30)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen) and app.screen.polls >= 1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.polls >= 1)
        detail = app.screen
        assert isinstance(detail, JobDetailScreen)
        assert detail.check_action("cancel_job", ()) is True

        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: any(n.title == "Cancel requested" for n in app._notifications), what="cancel")
        await wait_for(pilot, lambda: detail.check_action("cancel_job", ()) is None, what="cancel greyed out")
        assert detail.job is not None and detail.job.state.value == "cancelling"

    meta = aws("dynamodb", stack.aws_endpoint_url or "").get_item(
        TableName=stack.jobs_table, Key={"job_id": {"S": job_id}, "item": {"S": "meta"}}
    )["Item"]
    assert meta["cancel_requested"] == {"BOOL": True}
