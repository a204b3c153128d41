"""Tests of the install extras: a command of the `local` extra, run without it, says in one
line which extra to install (instead of an ImportError's traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmbatch.cli.main import LOCAL_EXTRA_HINT, missing_extra

ROOT = Path(__file__).resolve().parents[2]

#: Runs the CLI in a fresh interpreter where moto and PyYAML cannot be imported, as after
#: `pip install llmbatch` without the `local` extra.
WITHOUT_LOCAL_EXTRA = (
    "import sys\n"
    "for name in ('moto', 'yaml'):\n"
    "    sys.modules[name] = None\n"
    "from llmbatch.cli.main import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize("argv", [["drill"], ["local", "up"], ["demo"], ["bench", "--scenario", "rpm"]])
def test_a_local_command_without_the_local_extra_names_the_extra_in_one_line(argv: list[str]) -> None:
    # GIVEN an install without moto and PyYAML
    # WHEN a command of the local extra runs
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_LOCAL_EXTRA, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120
    )

    # THEN it exits 2 with one line naming the extra, and no traceback
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert LOCAL_EXTRA_HINT in out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_module_of_no_extra_is_not_explained_away() -> None:
    # GIVEN a missing module that no extra provides (a bug, not an install choice)
    # WHEN / THEN no hint is made up for it: the error is raised as it is
    assert missing_extra(ModuleNotFoundError("No module named 'nothing_here'", name="nothing_here"), "drill") is None
    assert missing_extra(ModuleNotFoundError("No module named 'moto.server'", name="moto.server"), "drill")
