"""Helper processes of the benchmark: moto's server in a process of its own, so the CPU
time the benchmark reports is the handlers' and not the AWS emulator's; CPU time of a process."""

from __future__ import annotations

import os
from pathlib import Path

from llmbatch.local.moto_server import MotoServerProcess

ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class MotoProcess(MotoServerProcess):
    """moto's server in a process of its own (``llmbatch.local.moto_server.MotoServerProcess``);
    ``faithful``: without the local stack's TransactWriteItems patch (``--faithful-moto``)."""

    def __init__(self, *, faithful: bool = False) -> None:
        super().__init__(patch_transactions=not faithful)
