"""Cold-start import time: the worker's handler module against a bare Powertools handler,
each imported in a fresh interpreter (best of N, so a busy machine counts less)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from llmbatch.bench.procs import ROOT, child_env

#: What each measurement imports (after the interpreter itself has started).
TARGETS: dict[str, str] = {
    "worker": "import functions.worker.app",
    "powertools": "from aws_lambda_powertools import Logger; import aws_lambda_powertools.utilities.batch",
}

_PROBE = (
    "import time, json; t = time.perf_counter(); exec({code!r}); print(json.dumps({{'s': time.perf_counter() - t}}))"
)


@dataclass(frozen=True)
class ImportTime:
    name: str
    statement: str
    best_s: float
    runs_s: tuple[float, ...]


def measure_import(name: str, statement: str, *, repeat: int = 3) -> ImportTime:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE.format(code=statement)],
            capture_output=True,
            text=True,
            check=True,
            cwd=str(ROOT),
            env=child_env(),
            timeout=120,
        )
        runs.append(float(json.loads(out.stdout.strip().splitlines()[-1])["s"]))
    return ImportTime(name, statement, min(runs), tuple(runs))


def measure_all(repeat: int = 3) -> dict[str, ImportTime]:
    return {name: measure_import(name, stmt, repeat=repeat) for name, stmt in TARGETS.items()}


def heaviest_imports(statement: str, top: int | None = 6) -> list[tuple[str, float]]:
    """``python -X importtime``: where the statement's import time goes, as seconds of
    module bodies (self time) summed by top-level package, heaviest first (all with ``top=None``)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(ROOT),
        env=child_env(),
        timeout=120,
    )
    totals: dict[str, float] = {}
    for line in out.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(parts[0]) / 1e6
    return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:top]
