"""Leaving the console as terminal tools are left (q, ctrl+c, ctrl+q), without losing an edit
unasked, and without taking a q typed into an input for a quit."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, Select

from shared.priority import Priority
from tui.app import LlmbatchConsole
from tui.demo import write_demo_files
from tui.pilot import wait_for
from tui.quitting import QuitConfirmScreen
from tui.screens.job_detail import JobDetailScreen
from tui.screens.jobs import JobsScreen
from tui.screens.limits import LimitsScreen
from tui.screens.submit import SubmitScreen
from tui.screenshots import EXAMPLES, SIZE, demo_app, jobs_scene


def quitting(app: LlmbatchConsole) -> bool:
    return app.return_code is not None


@pytest.mark.parametrize("key", ["q", "ctrl+c", "ctrl+q"])
async def test_each_quit_key_leaves_the_console_from_the_main_screen(key: str) -> None:
    # GIVEN the jobs screen, nothing edited
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        assert isinstance(app.screen, JobsScreen)

        # WHEN the key is pressed / THEN the console quits without asking
        await pilot.press(key)
        await wait_for(pilot, lambda: quitting(app), what=f"{key} to quit")
        assert not isinstance(app.screen, QuitConfirmScreen)


async def test_q_typed_into_an_input_types_a_q() -> None:
    # GIVEN a job's detail with its search box focused
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen), what="the job detail")
        await pilot.press("slash")

        # WHEN q is typed
        await pilot.press("q", "u")
        await pilot.pause()

        # THEN the search holds it and the console is still there
        assert app.screen.query_one("#result-search", Input).value == "qu"
        assert not quitting(app)


async def test_with_an_unapplied_limit_edit_q_asks_and_n_stays_and_y_quits() -> None:
    # GIVEN a limit edited on the limits screen, not applied, and the jobs screen shown
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, LimitsScreen) and app.screen.polls >= 1, what="limits")
        limits = app.screen
        assert isinstance(limits, LimitsScreen)
        limits.field("rpm_limit").input.focus()
        await pilot.press("end", "0")
        assert limits.unsaved_changes() == ["limits edited but not applied: Requests per minute"]
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), what="the jobs screen")

        # WHEN q is pressed, then n
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirmScreen), what="the question")
        await pilot.press("n")

        # THEN the console stays, the edit with it
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), what="the jobs screen again")
        assert not quitting(app)
        assert limits.field("rpm_limit").input.value == "6000"

        # WHEN q is pressed again, then y / THEN it quits
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirmScreen), what="the question again")
        await pilot.press("y")
        await wait_for(pilot, lambda: quitting(app), what="y to quit")


async def test_an_applied_edit_asks_nothing_and_ctrl_q_asks_once_then_quits() -> None:
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, LimitsScreen) and app.screen.polls >= 1, what="limits")
        limits = app.screen
        assert isinstance(limits, LimitsScreen)
        limits.field("rpm_limit").input.focus()
        await pilot.press("end", "0", "enter")
        await wait_for(pilot, lambda: limits.applied >= 1, what="the edit to be applied")
        assert limits.unsaved_changes() == []
        limits.field("tpm_limit").input.focus()
        await pilot.press("1")
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirmScreen), what="the question")
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: quitting(app), what="ctrl+q to quit")


async def test_a_file_chosen_but_not_submitted_asks_and_a_submitted_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_demo_files(tmp_path / EXAMPLES)
    monkeypatch.chdir(tmp_path)
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen), what="the submit screen")
        submit = app.screen
        submit.query_one("#submit-path", Input).value = str(EXAMPLES / "requests.jsonl")
        await pilot.press("f1")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirmScreen), what="the question")
        await pilot.press("n")
        await pilot.press("f4")
        await wait_for(pilot, lambda: app.screen is submit, what="the submit screen again")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, JobsScreen), what="the submitted job")
        await pilot.press("q")
        await wait_for(pilot, lambda: quitting(app), what="q to quit")


@pytest.mark.parametrize(
    ("field", "value"),
    [(None, None), ("#submit-within", "2d"), ("#submit-name", "nightly"), ("#submit-priority", Priority.HIGH)],
)
async def test_any_field_of_the_submit_form_changed_counts_as_unsaved(field: str | None, value: object) -> None:
    # GIVEN the submit screen at its defaults (no file chosen) but for one field, or none
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await jobs_scene(pilot)
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen), what="the submit screen")
        app.screen.query_one("#submit-path", Input).value = ""
        if field is not None:
            app.screen.query_one(field, Input | Select).value = value

        # WHEN q is pressed from the jobs screen
        await pilot.press("f1")
        await pilot.press("q")

        # THEN an untouched form lets the console quit; a changed one makes it ask, naming the form
        if field is None:
            await wait_for(pilot, lambda: quitting(app), what="q to quit")
            return
        await wait_for(pilot, lambda: isinstance(app.screen, QuitConfirmScreen), what="the question")
        assert isinstance(app.screen, QuitConfirmScreen)
        assert "the submit screen's form, filled in but not submitted" in app.screen.question
        assert not quitting(app)
