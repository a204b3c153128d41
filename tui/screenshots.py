"""SVG screenshots of the main screens from fixed data: ``python -m tui.screenshots [DIR]``.

The same scenes feed the snapshot tests (``tests/tui/test_console_snapshots.py``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DirectoryTree, Input

from tui.app import LlmbatchConsole, create_app
from tui.demo import FIXED_NOW, DemoClient, demo_jobs_before, demo_queue_samples, write_demo_files
from tui.pilot import wait_for
from tui.screens.base import PollingScreen
from tui.screens.job_detail import JobDetailScreen
from tui.screens.queue import QueueScreen
from tui.screens.submit import SubmitScreen

SIZE = (120, 36)
#: Relative, so the file tree and paths read the same wherever the demo files are.
EXAMPLES = Path("examples")

Scene = Callable[[Pilot[Any]], Awaitable[None]]


def demo_app() -> LlmbatchConsole:
    """The console on the in-memory demo stack, its clock frozen, never polling again."""
    return create_app(
        DemoClient, refresh_s=3600, clock=lambda: FIXED_NOW, start_dir=EXAMPLES, stack_label="stack demo (us-east-1)"
    )


async def _polled(pilot: Pilot[Any], screen_type: type[PollingScreen]) -> PollingScreen:
    app = pilot.app
    await wait_for(
        pilot, lambda: isinstance(app.screen, screen_type) and app.screen.polls >= 1, what=screen_type.__name__
    )
    screen = app.screen
    assert isinstance(screen, PollingScreen)
    return screen


async def jobs_scene(pilot: Pilot[Any]) -> None:
    """The jobs screen after two polls 30 s apart, so rates and ETAs show."""
    from tui.rates import RateTracker
    from tui.screens.jobs import JobsScreen

    screen = await _polled(pilot, JobsScreen)
    assert isinstance(screen, JobsScreen)
    screen.rates = RateTracker()
    screen.show_jobs(demo_jobs_before(30), at=FIXED_NOW - timedelta(seconds=30))
    screen.show_jobs(await screen.client.list_jobs(), at=FIXED_NOW)
    await pilot.pause()


async def job_detail_scene(pilot: Pilot[Any]) -> None:
    await jobs_scene(pilot)
    await pilot.press("down", "enter")
    screen = await _polled(pilot, JobDetailScreen)
    assert isinstance(screen, JobDetailScreen)
    await wait_for(pilot, lambda: bool(screen.results), what="results")
    await pilot.press("down", "down")  # a failed request (line 17) is further down; show a success
    await pilot.pause()


async def queue_scene(pilot: Pilot[Any]) -> None:
    await jobs_scene(pilot)
    await pilot.press("f2")
    screen = await _polled(pilot, QueueScreen)
    assert isinstance(screen, QueueScreen)
    assert screen.last is not None
    for sample in demo_queue_samples(screen.last.terminal):
        screen.add_sample(sample)
    await pilot.pause()


async def limits_scene(pilot: Pilot[Any]) -> None:
    from tui.screens.limits import LimitsScreen

    await jobs_scene(pilot)
    await pilot.press("f3")
    screen = await _polled(pilot, LimitsScreen)
    assert isinstance(screen, LimitsScreen)
    # An edit refused in the form: the reason shows beside the field, nothing is written.
    field = screen.field("max_concurrency")
    field.input.cursor_blink = False  # the cursor shown, whenever the picture is taken
    field.input.value = "5000"
    field.input.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.applied >= 1, what="the edit to be handled")
    await pilot.pause()


async def submit_scene(pilot: Pilot[Any]) -> None:
    await jobs_scene(pilot)
    await pilot.press("f4")
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, SubmitScreen), what="submit screen")
    screen = app.screen
    assert isinstance(screen, SubmitScreen)
    tree = screen.query_one(DirectoryTree)
    await wait_for(pilot, lambda: len(tree.root.children) == 2, what="the file tree")
    path = screen.query_one("#submit-path", Input)
    path.cursor_blink = False  # the cursor shown, whenever the picture is taken (CI's timing)
    path.value = str(EXAMPLES / "broken.jsonl")
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: "refused" in str(screen.query_one("#check-result").render()), what="the check")
    await pilot.pause()


async def dead_letters_scene(pilot: Pilot[Any]) -> None:
    from tui.screens.dead_letters import DeadLettersScreen

    await jobs_scene(pilot)
    await pilot.press("f5")
    screen = await _polled(pilot, DeadLettersScreen)
    assert isinstance(screen, DeadLettersScreen)
    await wait_for(pilot, lambda: bool(screen.letters), what="the dead letters")
    await pilot.pause()


SCENES: dict[str, Scene] = {
    "jobs": jobs_scene,
    "job-detail": job_detail_scene,
    "queue": queue_scene,
    "limits": limits_scene,
    "submit": submit_scene,
    "dead-letters": dead_letters_scene,
}


async def save_all(out_dir: Path, work_dir: Path) -> list[Path]:
    """Write ``<scene>.svg`` for every scene into ``out_dir`` (absolute, existing), running in
    ``work_dir``, where the demo job files are."""
    saved = []
    cwd = Path.cwd()
    os.chdir(work_dir)
    try:
        for name, scene in SCENES.items():
            app = demo_app()
            async with app.run_test(size=SIZE) as pilot:
                await scene(pilot)
                saved.append(Path(app.save_screenshot(f"{name}.svg", path=str(out_dir))))
    finally:
        os.chdir(cwd)
    return saved


def main(argv: list[str] | None = None) -> None:
    import tempfile

    args = sys.argv[1:] if argv is None else argv
    out_dir = (Path(args[0]) if args else Path("docs/screenshots")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work_dir:
        write_demo_files(Path(work_dir) / EXAMPLES)
        for path in asyncio.run(save_all(out_dir, Path(work_dir))):
            print(path)


if __name__ == "__main__":
    main()
