"""Snapshots of the main screens, fed by the in-memory demo stack with its clock frozen.

Regenerate after a deliberate change with ``pytest tests/tui --snapshot-update`` and look at
the SVGs under ``__snapshots__/`` before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tui.demo import write_demo_files
from tui.pilot import wait_for
from tui.screens.job_detail import JobDetailScreen
from tui.screenshots import EXAMPLES, SCENES, SIZE, demo_app, jobs_scene


@pytest.fixture(autouse=True)
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo job files under ``examples/`` in a fresh working directory."""
    write_demo_files(tmp_path / EXAMPLES)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("scene", list(SCENES))
def test_screen(scene: str, snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=SCENES[scene])


def test_jobs_in_the_light_theme(snap_compare: Callable[..., bool]) -> None:
    async def light(pilot: Pilot[Any]) -> None:
        await jobs_scene(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=light)


def test_a_small_jobs_figures(snap_compare: Callable[..., bool]) -> None:
    """Latency mean/p50/p99, error rate and requests/s of a finished job, from its counters."""

    async def smoke_job(pilot: Pilot[Any]) -> None:
        await jobs_scene(pilot)
        await pilot.press("down", "down", "down", "down", "enter")
        app = pilot.app
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen) and bool(app.screen.results))
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=SIZE, run_before=smoke_job)
