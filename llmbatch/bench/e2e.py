"""The local stack end to end, as a user runs it (``--scenario local-e2e``).

``llmbatch local up --slots 32`` in a process of its own (moto, the poller and its container
processes, the simulator: everything it starts), the simulator set to the benchmark's endpoint
(32 slots, 200 ms a call), then for each job: ``submit`` (the CLI's own code,
``cli.commands.submit``, timed in this process), and ``status`` polled until the job is
completed. Nothing is invoked directly: records reach the worker through SQS and the local
event source mapping, results through DynamoDB, as in ``make demo``.

Figures per job: submit messages/s; time from the start of submit to the last result stored
(the latest ``finished_at`` of the job's results); requests/s end to end over that time;
endpoint utilisation (the simulator's busy slot-seconds / (slots x that time)); the CPU of the
local processes per request (``local up`` and every process under it but the simulator; the
simulator's apart); the resident memory of those processes at the end; and requests/s in each
fifth of the job (from the status polls), to show whether the rate stays flat as it goes.

Every job of a run goes to the same ``local up``, one after another, so the tables and the
queue's history grow from one to the next, as over a ``local up``'s life.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llmbatch.bench.harness import BASE_SIMULATOR
from llmbatch.bench.procs import child_env, cpu_seconds

#: Job sizes of the default run: the issue's 2,000, and ten times that to show the cost per
#: request does not grow with the job.
SIZES = (2_000, 20_000)
#: The RPM-bound run: a quarter of the endpoint's 9,600 RPM, set in the limits parameter.
RPM_LIMIT = 2_400
RPM_REQUESTS = 1_200
#: The long run (opt-in, ``--e2e-large``): ~10 minutes at the endpoint's capacity.
LARGE = 100_000
#: How often ``status`` is polled (``cli.commands.wait_for`` polls once a second too).
POLL_S = 1.0
#: Slices of the job whose rates show the throughput is flat.
FIFTHS = 5
#: Longest a job may take, per request (a stuck run fails instead of hanging the benchmark).
TIMEOUT_S_PER_REQUEST = 0.1
TIMEOUT_MIN_S = 120.0
#: The workers read the limits parameter at most this old (template: LIMITS_MAX_AGE_S 5).
LIMITS_SETTLE_S = 6.0

#: The kinds of the stack's processes whose CPU and memory are told apart.
CONTAINERS = "containers"
LOCAL_UP = "local up"

TITLE = "local stack end to end: `local up` (simulator 32 slots x 200 ms), `submit`, `status` until completed"


@dataclass
class E2ERun:
    name: str
    requests: int
    submit_s: float
    #: From the start of submit to the last result stored.
    last_result_s: float
    succeeded: int
    failed: int
    sim: dict[str, Any]
    #: CPU seconds during the job: ``local up`` and its processes but the simulator, by kind
    #: (moto and the poller: ``local up``; the worker's ``containers``); the simulator; this process.
    stack_cpu_s: dict[str, float]
    sim_cpu_s: float
    client_cpu_s: float
    #: Resident memory at the end (MB): ``local up`` and its processes but the simulator and
    #: the containers (moto, the poller), and the containers.
    rss_mb: float
    containers_rss_mb: float
    rpm_limit: int | None = None
    #: (seconds since submit started, requests finished) at each status poll.
    progress: list[tuple[float, int]] = field(default_factory=list)

    @property
    def submit_msgs_per_s(self) -> float:
        return self.requests / self.submit_s if self.submit_s else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.last_result_s if self.last_result_s else 0.0

    @property
    def utilisation(self) -> float:
        slots = int(self.sim.get("slots", 0))
        busy = float(self.sim.get("busy_slot_seconds", 0.0))
        return busy / (slots * self.last_result_s) if slots and self.last_result_s else 0.0

    @property
    def rate_limited_429(self) -> int:
        return int(self.sim.get("rate_limited_429", 0))

    @property
    def endpoint_calls(self) -> int:
        return int(self.sim.get("requests_total", 0))

    @property
    def share_429(self) -> float:
        return self.rate_limited_429 / self.endpoint_calls if self.endpoint_calls else 0.0

    @property
    def of_rpm_limit(self) -> float | None:
        return self.requests_per_s / (self.rpm_limit / 60.0) if self.rpm_limit else None

    def cpu_ms_per_request(self, which: str) -> float:
        """``stack`` (all of it), ``local up`` (moto and the poller), ``containers``, ``simulator`` or ``client``."""
        cpu = {
            "stack": sum(self.stack_cpu_s.values()),
            "simulator": self.sim_cpu_s,
            "client": self.client_cpu_s,
        }.get(which, self.stack_cpu_s.get(which, 0.0))
        return cpu * 1000 / self.requests if self.requests else 0.0

    @property
    def fifths_per_s(self) -> list[float]:
        """Requests finished per second in each fifth of the job (by requests finished),
        from the status polls."""
        rates: list[float] = []
        points = [(0.0, 0), *self.progress]
        for k in range(1, FIFTHS + 1):
            lo, hi = self.requests * (k - 1) / FIFTHS, self.requests * k / FIFTHS
            t_lo = _time_at(points, lo)
            t_hi = _time_at(points, hi)
            rates.append((hi - lo) / (t_hi - t_lo) if t_hi > t_lo else 0.0)
        return rates

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "submit_s": self.submit_s,
            "submit_msgs_per_s": self.submit_msgs_per_s,
            "last_result_s": self.last_result_s,
            "requests_per_s": self.requests_per_s,
            "utilisation": self.utilisation,
            "endpoint_calls": self.endpoint_calls,
            "rate_limited_429": self.rate_limited_429,
            "rpm_limit": self.rpm_limit,
            "of_rpm_limit": self.of_rpm_limit,
            "stack_cpu_ms_per_request": self.cpu_ms_per_request("stack"),
            "local_up_cpu_ms_per_request": self.cpu_ms_per_request(LOCAL_UP),
            "containers_cpu_ms_per_request": self.cpu_ms_per_request(CONTAINERS),
            "simulator_cpu_ms_per_request": self.cpu_ms_per_request("simulator"),
            "client_cpu_ms_per_request": self.cpu_ms_per_request("client"),
            "rss_mb": self.rss_mb,
            "containers_rss_mb": self.containers_rss_mb,
            "fifths_requests_per_s": self.fifths_per_s,
            "progress": [list(p) for p in self.progress],
        }


def _time_at(points: Sequence[tuple[float, int]], done: float) -> float:
    """When ``done`` requests had finished, interpolated between status polls."""
    for (t0, n0), (t1, n1) in itertools.pairwise(points):
        if n1 >= done:
            return t0 + (t1 - t0) * ((done - n0) / (n1 - n0)) if n1 > n0 else t1
    return points[-1][0]


# ---- the processes --------------------------------------------------------------------------


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> list[int]:
    """``root`` and every process under it (Linux ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (ppid := _parent_of(int(entry.name))) is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [root], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mb(pid: int) -> float:
    """A process's proportional set size (its resident memory, pages shared with other
    processes divided among them: containers forked from one server share most of theirs),
    or its resident set size where the kernel does not tell the former."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            continue
    return 0.0


class LocalUp:
    """``llmbatch local up --slots N`` in a process of its own, its state file and logs in a
    temporary directory; stopped with Ctrl-C (SIGINT), as a user stops it."""

    def __init__(self, slots: int, *, extra_args: Sequence[str] = ()) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="llmbatch-e2e-")
        self.dir = Path(self._tmp.name)
        self.state = self.dir / "local.json"
        self._args = ["local", "up", "--slots", str(slots), *extra_args]
        self.proc: subprocess.Popen[str] | None = None
        self.sim_pid: int | None = None
        #: CPU seconds of processes that ended (containers replaced), so totals never go back.
        self._ended_cpu: dict[str, float] = {}
        self._last_cpu: dict[int, tuple[str, float]] = {}
        self._kinds: dict[int, str] = {}

    def start(self, timeout_s: float = 120.0) -> dict[str, Any]:
        env = {**child_env(), "LLMBATCH_STATE": str(self.state)}
        # As on a user's machine: modules compiled once, not at every container's start.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmbatch.cli.main", *self._args],
            cwd=self.dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self.state.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
                self.stop()
                raise RuntimeError(f"`llmbatch local up` did not come up: {err.strip()[-2000:]}")
            time.sleep(0.2)
        state = dict(json.loads(self.state.read_text()))
        self.sim_pid = _listening_pid(state.get("model_endpoint_url") or "", self.pids())
        return state

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc else []

    def stack_pids(self) -> list[int]:
        return [p for p in self.pids() if p != self.sim_pid]

    def stack_cpu_s(self) -> dict[str, float]:
        """CPU seconds so far of ``local up`` and its processes but the simulator, by kind
        (``containers``: the worker's container processes; ``local up``: the rest, i.e. moto
        and the poller), counting processes that have ended at their last known figure."""
        now: dict[int, tuple[str, float]] = {}
        for pid in self.stack_pids():
            if (cpu := cpu_seconds(pid)) is not None:
                now[pid] = (self._kinds.get(pid) or self._kinds.setdefault(pid, _kind(pid)), cpu)
        for pid, (kind, cpu) in self._last_cpu.items():
            if pid not in now:
                self._ended_cpu[kind] = self._ended_cpu.get(kind, 0.0) + cpu
        self._last_cpu = now
        totals = dict(self._ended_cpu)
        for kind, cpu in now.values():
            totals[kind] = totals.get(kind, 0.0) + cpu
        return totals

    def sim_cpu_s(self) -> float:
        return (cpu_seconds(self.sim_pid) or 0.0) if self.sim_pid else 0.0

    def stack_rss_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.stack_pids():
            kind = self._kinds.get(p) or self._kinds.setdefault(p, _kind(p))
            out[kind] = out.get(kind, 0.0) + rss_mb(p)
        return out

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()
        self._tmp.cleanup()

    def __enter__(self) -> LocalUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kind(pid: int) -> str:
    """``containers`` for the worker's container processes (multiprocessing's, spawned by the
    poller), ``local up`` for the rest (moto, the poller)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return LOCAL_UP
    return CONTAINERS if b"multiprocessing" in cmdline else LOCAL_UP


def _listening_pid(url: str, candidates: Sequence[int]) -> int | None:
    """The process among ``candidates`` listening on ``url``'s port (the simulator)."""
    port = url.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[-1]
    if not port.isdigit():
        return None
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == int(port) and cols[3] == "0A":  # LISTEN
                    inodes.add(cols[9])
    for pid in candidates:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return pid
    return None


# ---- the simulator's control routes ---------------------------------------------------------


def _sim_post(sim_url: str, path: str, body: Mapping[str, Any]) -> None:
    req = urllib.request.Request(
        sim_url.removesuffix("/v1") + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(req, timeout=10).close()


def _sim_stats(sim_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(sim_url.removesuffix("/v1") + "/_sim/stats", timeout=30) as resp:
        stats = dict(json.load(resp))
    stats.pop("calls_by_custom_id", None)
    return stats


def sim_prepare(sim_url: str, rpm_limit: int | None) -> None:
    """The benchmark's endpoint, counters reset; a rate limit starts from an empty bucket (as
    in the in-process scenarios: configured at 1, reset, then raised)."""
    _sim_post(sim_url, "/_sim/config", {**BASE_SIMULATOR, "rpm_limit": 1 if rpm_limit else None})
    _sim_post(sim_url, "/_sim/reset", {})
    if rpm_limit:
        _sim_post(sim_url, "/_sim/config", {"rpm_limit": rpm_limit})


# ---- one job --------------------------------------------------------------------------------


def write_job(path: Path, n: int, *, max_tokens: int = 24) -> Path:
    """The benchmark's job as a JSONL file: the in-process scenarios' chat completions."""
    with path.open("w") as f:
        for i in range(n):
            body = {
                "model": "sim-model",
                "messages": [
                    {"role": "system", "content": "You are a concise poet."},
                    {"role": "user", "content": f"Write one line about the sea (#{i})."},
                ],
                "max_tokens": max_tokens,
            }
            f.write(
                json.dumps(
                    {"custom_id": f"request-{i:06d}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                )
                + "\n"
            )
    return path


async def _run_job(up: LocalUp, state: Mapping[str, Any], name: str, n: int, rpm_limit: int | None) -> E2ERun:
    from llmbatch.cli import commands
    from llmbatch.client.client import LlmbatchClient
    from llmbatch.client.stack import StackResources

    resources = StackResources(**state)
    sim_url = str(state["model_endpoint_url"])
    job_path = write_job(up.dir / f"{name}.jsonl", n)
    async with LlmbatchClient(resources) as client:
        limits = await client.get_limits()
        if limits.rpm_limit != rpm_limit:
            await client.set_limits(limits.with_changes(rpm_limit=rpm_limit))
            await asyncio.sleep(LIMITS_SETTLE_S)  # every worker container sees the new limit
        sim_prepare(sim_url, rpm_limit)
        stack0, sim0, client0 = up.stack_cpu_s(), up.sim_cpu_s(), time.process_time()
        started_wall, started = time.time(), time.monotonic()
        job_id = await commands.submit(resources, job_path, name=name, endpoint="default")
        submit_s = time.monotonic() - started
        progress: list[tuple[float, int]] = []
        deadline = started + max(TIMEOUT_MIN_S, n * TIMEOUT_S_PER_REQUEST)
        while True:
            st = await client.status(job_id)
            progress.append((time.monotonic() - started, st.counts.terminal))
            if st.finished:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name}: job {job_id} not finished after {deadline - started:.0f} s: {st.to_dict()}"
                )
            await asyncio.sleep(POLL_S)
        stack1 = up.stack_cpu_s()
        stack_cpu = {k: v - stack0.get(k, 0.0) for k, v in stack1.items()}
        sim_cpu = up.sim_cpu_s() - sim0
        client_cpu = time.process_time() - client0
        rss = up.stack_rss_mb()
        sim = _sim_stats(sim_url)
        finished = await finished_times(client, resources.results_table, job_id)
        last = max(finished, default=started_wall + progress[-1][0])
        if rpm_limit:
            await client.set_limits(limits.with_changes(rpm_limit=None))
    return E2ERun(
        name=name,
        requests=n,
        submit_s=submit_s,
        last_result_s=last - started_wall,
        succeeded=st.counts.succeeded,
        failed=st.counts.failed,
        sim=sim,
        stack_cpu_s=stack_cpu,
        sim_cpu_s=sim_cpu,
        client_cpu_s=client_cpu,
        rss_mb=rss.get(LOCAL_UP, 0.0),
        containers_rss_mb=rss.get(CONTAINERS, 0.0),
        rpm_limit=rpm_limit,
        progress=progress,
    )


async def finished_times(client: Any, table: str, job_id: str) -> list[float]:
    """Every result's ``finished_at`` (unix seconds), read with a projection: the whole
    items of a 100,000-request job are far more to read (and for moto to serialise)."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "job_id = :j",
        "ExpressionAttributeValues": {":j": {"S": job_id}},
        "ProjectionExpression": "finished_at",
    }
    times: list[float] = []
    while True:
        resp = await client.ddb.query(**kwargs)
        times += [datetime.fromisoformat(i["finished_at"]["S"]).timestamp() for i in resp.get("Items", [])]
        if "LastEvaluatedKey" not in resp:
            return times
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


@dataclass(frozen=True)
class E2EPlan:
    sizes: tuple[int, ...] = SIZES
    rpm_requests: int = RPM_REQUESTS
    large: int = 0

    def jobs(self) -> Iterator[tuple[str, int, int | None]]:
        """(name, requests, RPM limit) of each job, in order."""
        for n in self.sizes:
            yield f"e2e-{n}", n, None
        if self.rpm_requests:
            yield f"e2e-rpm-{self.rpm_requests}", self.rpm_requests, RPM_LIMIT
        if self.large:
            yield f"e2e-{self.large}", self.large, None


def run_e2e(plan: E2EPlan, *, log: Callable[[str], None] = lambda _: None) -> list[E2ERun]:
    runs: list[E2ERun] = []
    with LocalUp(int(BASE_SIMULATOR["slots"])) as up:
        state = up.start()
        log(f"local up: AWS {state.get('aws_endpoint_url')}, endpoint {state.get('model_endpoint_url')}")
        for name, n, rpm in plan.jobs():
            run = asyncio.run(_run_job(up, state, name, n, rpm))
            log(
                f"{name:14} {n:6} requests: submit {run.submit_msgs_per_s:7.0f} msgs/s, last result at "
                f"{run.last_result_s:7.1f} s, {run.requests_per_s:6.1f} req/s, util {run.utilisation:.2f}, "
                f"stack CPU {run.cpu_ms_per_request('stack'):.2f} ms/req "
                f"({run.cpu_ms_per_request(LOCAL_UP):.2f} moto and poller), {run.rss_mb:.0f} MB"
            )
            runs.append(run)
    return runs
