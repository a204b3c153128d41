"""The console's pure parts, and its keyboard paths on the in-memory demo stack."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from rich.console import Console
from textual.widgets import DataTable, DirectoryTree, Input, Static

from llmbatch.client.client import QueueStats
from shared.deadletter import UNASSIGNED
from shared.errors import ConfigError, JobFileError
from shared.jobs import Counts, JobMeta, JobStatus
from tui.demo import FIXED_NOW, DemoClient, demo_results, write_demo_files
from tui.errors import describe_error
from tui.formatting import progress_bar
from tui.pilot import wait_for
from tui.rates import RateTracker, duration, eta_seconds, eta_text, ewma, rate_text
from tui.screens import job_detail
from tui.screens.base import MAX_BACKOFF_S, next_delay
from tui.screens.confirm import ConfirmScreen
from tui.screens.dead_letters import DeadLettersScreen
from tui.screens.job_detail import JobDetailScreen, failure_groups
from tui.screens.queue import QueueScreen, Sample, rate_per_s
from tui.screens.submit import SubmitScreen
from tui.screenshots import SIZE, demo_app, jobs_scene
from tui.widgets.limit_field import parse_limit


def test_polling_backs_off_doubling_and_capped() -> None:
    assert [next_delay(3.0, n) for n in range(5)] == [3.0, 6.0, 12.0, 24.0, 48.0]
    assert next_delay(3.0, 30) == MAX_BACKOFF_S
    assert next_delay(120.0, 3) == 120.0  # never faster than the healthy interval


def test_progress_bar_reads_as_a_percentage() -> None:
    assert progress_bar(1, 4, width=8).plain == "██░░░░░░  25%"
    assert progress_bar(0, 0, width=4).plain == "████ 100%"


def test_failures_are_grouped_by_reason_most_first() -> None:
    groups = failure_groups(demo_results("job-x"))
    assert groups[0][0] == "context_length_exceeded" and groups[0][2] == 3
    assert sum(n for *_, n in groups) == 6


def test_rate_is_finished_requests_per_second_between_samples() -> None:
    stats = QueueStats(0, 0, 0, 0)
    first = Sample(FIXED_NOW, stats, 100)
    assert rate_per_s(None, first) is None
    assert rate_per_s(first, Sample(FIXED_NOW + timedelta(seconds=4), stats, 120)) == 5.0
    assert rate_per_s(first, Sample(FIXED_NOW, stats, 120)) is None


def test_job_rate_is_smoothed_over_polls_from_terminal_deltas() -> None:
    rates = RateTracker(alpha=0.5)
    assert rates.observe("j", 100, FIXED_NOW) is None  # one poll: no interval yet
    assert rates.observe("j", 100, FIXED_NOW) is None  # no time passed
    assert rates.observe("j", 130, FIXED_NOW + timedelta(seconds=3)) == 10.0  # 30 in 3 s
    assert rates.observe("j", 190, FIXED_NOW + timedelta(seconds=6)) == 15.0  # 0.5 * 20 + 0.5 * 10
    assert rates.observe("j", 190, FIXED_NOW + timedelta(seconds=9)) == 7.5  # stalled: decays
    assert rates.observe("j", 190, FIXED_NOW + timedelta(seconds=9)) == 7.5  # same instant: kept
    rates.forget_except({"other"})
    assert rates.observe("j", 200, FIXED_NOW + timedelta(seconds=12)) is None
    assert ewma(None, 4.0) == 4.0 and ewma(4.0, 8.0, alpha=0.25) == 5.0


def test_eta_is_pending_over_rate() -> None:
    assert eta_seconds(300, 12.0) == 25.0
    assert eta_seconds(300, None) is None and eta_seconds(300, 0.0) is None
    assert eta_seconds(0, None) == 0.0
    assert [duration(s) for s in (0, 45.4, 725, 11_220, 187_200)] == ["0s", "45s", "12m05s", "3h07m", "2d04h"]
    running = JobStatus(JobMeta("j", 1000, sealed=True, enqueued=1000), Counts(succeeded=400))
    done = JobStatus(JobMeta("k", 10, sealed=True, enqueued=10), Counts(succeeded=9, failed=1))
    assert (rate_text(running, 12.0), eta_text(running, 12.0)) == ("12.0", "50s")
    assert (rate_text(running, None), eta_text(running, None)) == ("\N{EM DASH}", "\N{EM DASH}")
    assert (rate_text(running, 0.0), eta_text(running, 0.0)) == ("0.0", "\N{EM DASH}")
    assert (rate_text(done, 3.0), eta_text(done, 3.0)) == ("\N{EM DASH}", "done")


class FailingOldest(DemoClient):
    async def oldest_message_age_s(self) -> float | None:
        raise RuntimeError("CloudWatch is down")


class WithoutOldest(DemoClient):
    """A client from before ``oldest_message_age_s``."""

    def __getattribute__(self, name: str) -> object:
        if name == "oldest_message_age_s":
            raise AttributeError(name)
        return super().__getattribute__(name)


@pytest.mark.parametrize(
    ("factory", "shown", "errors"),
    [(DemoClient, "1m24s", 0), (FailingOldest, "unavailable", 1), (WithoutOldest, "\N{EM DASH}", 0)],
)
async def test_queue_shows_the_oldest_message_age_and_survives_its_errors(
    factory: type, shown: str, errors: int
) -> None:
    app = demo_app()
    app.client_factory = factory
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen) and app.screen.polls >= 1)
        screen = app.screen
        assert isinstance(screen, QueueScreen)
        screen.poll_now()  # a second failure is not reported again
        await wait_for(pilot, lambda: screen.polls >= 2)
        assert screen.failures == 0
        assert plain(screen.query_one("#stat-oldest .stat-value", Static)).strip() == shown
        assert plain(screen.query_one("#stat-visible .stat-value", Static)).strip() == "3,158"
        assert len(app._notifications) == errors


@pytest.mark.parametrize(
    ("raw", "optional", "expected"), [("42", False, 42), (" 1,000 ", False, 1000), ("", True, None)]
)
def test_limits_parse(raw: str, optional: bool, expected: int | None) -> None:
    assert parse_limit(raw, optional=optional) == expected


@pytest.mark.parametrize(("raw", "reason"), [("", "a value is required"), ("-", "is not a whole number")])
def test_limits_refuse_what_is_not_a_number(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_limit(raw, optional=False)


def test_errors_get_a_title_and_a_short_message() -> None:
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetParameter")
    assert describe_error(denied) == ("AWS error in GetParameter", "AccessDenied: no")
    title, message = describe_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert title == "AWS unreachable" and "127.0.0.1:1" in message
    assert describe_error(ConfigError("bad"))[0] == "Invalid configuration"
    assert describe_error(JobFileError(["f:2: x"], 1))[1].endswith("f:2: x")
    assert len(describe_error(RuntimeError("x" * 1000))[1]) <= 300


async def test_every_screen_is_reachable_from_the_keyboard_and_the_palette() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        for key, screen_type in (("f2", QueueScreen), ("f4", SubmitScreen)):
            await pilot.press(key)
            await wait_for(pilot, lambda t=screen_type: isinstance(app.screen, t), what=key)  # type: ignore[misc]
        await pilot.press("f1", "ctrl+p", *"show queue")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen), what="the palette command")
        dark = app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark is not dark


class WithCancel(DemoClient):
    """The demo stack with ``cancel``, as ``LlmbatchClient`` has."""

    cancelled: str | None = None

    async def cancel(self, job_id: str) -> JobStatus:
        self.cancelled = job_id
        job = self.jobs[job_id]
        self.jobs[job_id] = replace(job, meta=replace(job.meta, cancel_requested=True))
        return self.jobs[job_id]


class WithRetry(DemoClient):
    """The demo stack with ``retry_failed``, as ``LlmbatchClient`` has."""

    retried: list[str]

    async def retry_failed(self, job_id: str) -> int:
        self.retried = [*getattr(self, "retried", []), job_id]
        return self.jobs[job_id].counts.failed


async def test_retry_failed_asks_first_and_retries_only_when_confirmed() -> None:
    app = demo_app()
    app.client_factory = WithRetry
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen))
        assert app.screen.check_action("retry_failed", ()) is True
        # Declining does nothing; confirming calls retry_failed once for this job.
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen), what="the detail screen")
        assert getattr(app.client, "retried", []) == []
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: getattr(app.client, "retried", []) != [], what="the retry call")
        assert app.client.retried == [app.screen.job_id]  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: any(n.title == "Retry" for n in app._notifications), what="the notice")


@pytest.mark.parametrize(("factory", "shown"), [(DemoClient, False), (WithCancel, True)])
async def test_cancel_and_retry_are_hidden_unless_the_client_offers_them(factory: type, shown: bool) -> None:
    app = demo_app()
    app.client_factory = factory
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen))
        assert (app.screen.check_action("cancel_job", ()) is True) is shown
        assert app.screen.check_action("retry_failed", ()) is False
        if shown:
            # Declining the confirmation does nothing; confirming cancels, then the action greys out.
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen), what="the detail screen")
            assert app.client.cancelled is None  # type: ignore[attr-defined]
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
            await pilot.press("y")
            await wait_for(pilot, lambda: app.client.cancelled is not None, what="the cancel call")  # type: ignore[attr-defined]
            detail = app.screen
            await wait_for(pilot, lambda: detail.check_action("cancel_job", ()) is None, what="cancel greyed out")


def plain(widget: Static) -> str:
    """What a Static shows, as plain text, whatever renderable it holds."""
    console = Console(record=True, width=100, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


async def test_dead_letters_show_the_body_and_mark_unassigned_ones_not_redrivable() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("ctrl+p", *"dead letters")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DeadLettersScreen), what="the palette command")
        screen = app.screen
        assert isinstance(screen, DeadLettersScreen)
        table = screen.query_one("#dead-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 5, what="the dead letters")
        body = screen.query_one("#dead-letter-body", Static)
        assert '"custom_id": "ticket-01102"' in plain(body)
        assert screen.check_action("redrive_job", ()) is True

        await pilot.press("down")  # an unassigned letter: shown, marked, not redrivable
        await wait_for(pilot, lambda: "row-7" in plain(body), what="its body")
        assert "not redrivable" in str(table.get_row_at(1)[2])
        assert screen.check_action("redrive_job", ()) is None
        await pilot.press("d")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)

        await pilot.press("down", "down", "down")  # the unreadable body is shown as it came
        await wait_for(pilot, lambda: "not JSON" in plain(body), what="the raw body")
        assert '{"custom_id": "x-1", "prompt": "hello"' in plain(body)


async def test_redrive_asks_first_then_redrives_one_job_or_all() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, DeadLettersScreen) and app.screen.polls >= 1)
        screen = app.screen
        assert isinstance(screen, DeadLettersScreen)
        client = app.client
        assert isinstance(client, DemoClient)
        table = screen.query_one("#dead-table", DataTable)

        await pilot.press("down", "down")  # eval-set-a's request-0203 (the job has two)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        assert client.redriven == []

        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 3, what="the job's letters to go")
        assert sorted(d.key for d in client.redriven) == ["request-0017", "request-0203"]

        await pilot.press("D")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.click("#confirm-yes")
        await wait_for(pilot, lambda: table.row_count == 2, what="every redrivable letter to go")
        assert all(d.job_id == UNASSIGNED for d in screen.letters)
        assert screen.check_action("redrive_all", ()) is None
        assert any(n.title == "Redriven" for n in app._notifications)


async def test_choosing_a_file_in_the_tree_fills_the_path(tmp_path: Path) -> None:
    good, _ = write_demo_files(tmp_path / "jobs")
    app = demo_app()
    app.start_dir = tmp_path / "jobs"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen))
        tree = app.screen.query_one(DirectoryTree)
        await wait_for(pilot, lambda: len(tree.root.children) == 2, what="the tree")
        tree.focus()
        await pilot.press("down", "down", "enter")  # broken.jsonl, requests.jsonl (sorted)
        path_input = app.screen.query_one("#submit-path", Input)
        await wait_for(pilot, lambda: path_input.value == str(good), what="the path")


async def test_a_big_jobs_detail_holds_only_the_first_results_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a screen that holds at most 40 results, and the demo's eval job of 250
    monkeypatch.setattr(job_detail, "RESULTS_SHOWN", 40)
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        # WHEN its detail opens
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen))
        detail = app.screen
        assert isinstance(detail, JobDetailScreen)
        await wait_for(pilot, lambda: bool(detail.results), what="results")

        # THEN it read 40 results, shows 40 rows, and says it holds only part of the job
        assert len(detail.results) == 40
        assert detail.query_one("#results-table", DataTable).row_count == 40
        assert "first 40 of 250" in detail.query_one("#result-search", Input).placeholder
        assert "in the first 40 results" in plain(detail.query_one("#failures-title", Static))
