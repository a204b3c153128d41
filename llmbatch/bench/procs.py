"""Helper processes of the benchmark: moto's server in a process of its own, so the CPU
time the benchmark reports is the handlers' and not the AWS emulator's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


class MotoProcess:
    """:class:`llmbatch.local.moto_server.MotoServer` (with its DynamoDB/SQS locking), run by
    ``python -m llmbatch.bench.procs``; it stops when its stdin closes."""

    def __init__(self, *, faithful: bool = False) -> None:
        self._faithful = faithful
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> str:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "llmbatch.bench.procs", *(["--faithful-moto"] if self._faithful else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=str(ROOT),
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("moto's server did not start")
        self.url = json.loads(line)["url"]
        return self.url

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _serve_moto() -> None:
    from llmbatch.local.moto_server import MotoServer

    server = MotoServer(copy_tables_once="--faithful-moto" not in sys.argv)
    url = server.start()
    print(json.dumps({"url": url}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()


if __name__ == "__main__":
    _serve_moto()
