"""The benchmark report renders fixed figures to the very text it wrote before its prose moved
into ``llmbatch/bench/report_template.md``: the snapshots under ``report_snapshots/`` were
captured from the f-string version of ``llmbatch/bench/report.py``. No benchmark runs here:
the figures are built by hand, one of each kind of run the report has a sentence for."""

from __future__ import annotations

import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmbatch.bench.e2e import RPM_LIMIT, E2ERun
from llmbatch.bench.harness import SCENARIOS, BatchOutcome, RunResult, Scenario
from llmbatch.bench.importtime import ImportTime
from llmbatch.bench.packing_scenario import PackingRun
from llmbatch.bench.parallel import ParallelRun
from llmbatch.bench.report import TEXT, BenchReport, markdown_report, template_blocks, text_report
from llmbatch.bench.sweep import SweepPoint

SNAPSHOTS = Path(__file__).parent / "report_snapshots"
NOW = datetime(2026, 3, 14, 15, 9, tzinfo=UTC)
SETTINGS = {
    "cpus": 2,
    "command": "python -m llmbatch.bench --write-docs",
    "concurrency": 32,
    "batch_size": 100,
    "sequential_requests": 60,
}


def sim(slots: int, busy_s: float, calls: int, *, queued: int = 0, r429: int = 0) -> dict[str, object]:
    return {
        "slots": slots,
        "busy_slot_seconds": busy_s,
        "requests_total": calls,
        "max_queued": queued,
        "rate_limited_429": r429,
        "prompt_tokens": calls * 12,
        "completion_tokens": calls * 24,
    }


def run(
    approach: str,
    scenario: str,
    *,
    requests: int = 400,
    wall_s: float = 3.2,
    succeeded: int | None = None,
    returned: int = 0,
    failed: int = 0,
    sim_figures: dict[str, object] | None = None,
    limit: int | None = None,
    containers: int = 1,
    spans: list[tuple[int, float, float]] | None = None,
    phases: list[tuple[float, float, float]] | None = None,
    calls: dict[str, dict[str, int]] | None = None,
) -> RunResult:
    ok = requests - returned - failed if succeeded is None else succeeded
    outcome = BatchOutcome(
        succeeded=ok,
        failed=failed,
        returned=returned,
        latencies_ms=[180.0 + 7.5 * (i % 41) for i in range(ok)],
        phases_s=phases or [],
    )
    return RunResult(
        approach=approach,
        scenario=scenario,
        requests=requests,
        invocations=max(1, len(phases or [])),
        outcome=outcome,
        wall_s=wall_s,
        cpu_s=0.85,
        moto_cpu_s=None if approach == "sequential" else 1.4,
        sim=sim_figures or sim(32, 0.2 * requests, requests),
        aws_calls=calls or {"dynamodb": {"put_item": requests}, "sqs": {}, "ssm": {}},
        stored=ok,
        concurrency_limit=limit,
        invocation_figures=[(100, 0.9), (100, 0.7), (100, 0.72), (100, 0.71)],
        containers=containers,
        spans=spans or [],
    )


def ours_calls(requests: int) -> dict[str, dict[str, int]]:
    return {
        "dynamodb": {"transact_write_items": requests // 25, "batch_get_item": requests // 50, "update_item": 3},
        "sqs": {"delete_message_batch": 1},
        "ssm": {"get_parameter": 4},
    }


def one_container_ours(scenario: str, *, limit: int, **kwargs: Any) -> RunResult:
    spans = [(0, 0.0, 0.8), (0, 0.8, 1.6), (0, 1.6, 2.4), (0, 2.4, 3.2)]
    phases = [(0.04, 0.7, 0.03), (0.03, 0.71, 0.03), (0.03, 0.7, 0.04), (0.03, 0.72, 0.02)]
    return run("ours", scenario, limit=limit, spans=spans, phases=phases, calls=ours_calls(400), **kwargs)


def parallel(containers: int, per: int, batch: int, *, in_step: bool) -> ParallelRun:
    requests = containers * batch * 2
    offset = 0.005 if in_step else 0.33
    wall_s = round(requests * 0.2 / min(32, per * containers) / (0.8 if in_step else 0.9), 2)
    took = round(wall_s / 2 - 0.02, 3)
    spans = [(c, i * took + c * offset, (i + 1) * took + c * offset) for c in range(containers) for i in range(2)]
    phases = [(0.05, wall_s / 2 - 0.1, 0.03)] * len(spans)
    r = run(
        "ours",
        f"slots32x{containers}-{per}-b{batch}",
        requests=requests,
        wall_s=wall_s,
        sim_figures=sim(32, 0.2 * requests, requests, queued=per * containers - 32 if per * containers > 32 else 0),
        limit=per,
        containers=containers,
        spans=spans,
        phases=phases,
        calls=ours_calls(requests),
    )
    return ParallelRun(containers=containers, per_container=per, run=r, batch_size=batch)


def e2e(name: str, requests: int, last_s: float, *, rpm: int | None = None) -> E2ERun:
    progress = [(last_s * k / 10, requests * k // 10) for k in range(1, 11)]
    return E2ERun(
        name=name,
        requests=requests,
        submit_s=requests / 1800,
        last_result_s=last_s,
        succeeded=requests,
        failed=0,
        sim=sim(32, 0.2 * requests, requests + 3, r429=3 if rpm else 0),
        stack_cpu_s={"local up": requests * 0.0011, "containers": requests * 0.0042},
        sim_cpu_s=requests * 0.0007,
        client_cpu_s=requests * 0.0004,
        rss_mb=310.0 + requests / 1000,
        containers_rss_mb=820.0,
        rpm_limit=rpm,
        progress=progress,
    )


def full_report() -> BenchReport:
    """Every section, and both sides of each of the report's conditions."""
    slots32, rpm, adaptive = SCENARIOS["slots32"], SCENARIOS["rpm"], SCENARIOS["adaptive"]
    results = [
        one_container_ours("slots32", limit=32, sim_figures=sim(32, 78.0, 400, queued=0)),
        run("sequential", "slots32", requests=60, wall_s=12.4, sim_figures=sim(32, 12.0, 60)),
        run("gather", "slots32", wall_s=3.0, returned=2, sim_figures=sim(32, 79.0, 400, queued=68)),
        one_container_ours("rpm", limit=32, wall_s=10.5, sim_figures=sim(32, 80.0, 400, r429=2)),
        run("gather", "rpm", wall_s=2.9, returned=250, sim_figures=sim(32, 30.0, 400, r429=250)),
        one_container_ours("adaptive", limit=36, sim_figures=sim(32, 77.0, 400, queued=5)),
    ]
    return BenchReport(
        # "errors" has no runs: its section is left out.
        scenarios=[slots32, rpm, SCENARIOS["errors"], adaptive],
        results=results,
        settings=dict(SETTINGS),
        imports={
            "worker": ImportTime("worker", "import functions.worker.app", 0.412, (0.431, 0.412, 0.420)),
            "powertools": ImportTime("powertools", "from aws_lambda_powertools import Logger", 0.118, (0.118, 0.121)),
        },
        heaviest=[
            ("botocore", 0.101),
            ("pydantic", 0.062),
            ("aiohttp", 0.041),
            ("httpx2", 0.019),
            ("aws_lambda_powertools", 0.017),
            ("shared", 0.011),
            ("yarl", 0.004),
        ],
        sweep=[
            SweepPoint(8, run("ours", "slots32", wall_s=10.1, limit=8, sim_figures=sim(32, 79.0, 400))),
            SweepPoint(32, run("ours", "slots32", wall_s=3.1, limit=32, sim_figures=sim(32, 79.0, 400, queued=2))),
        ],
        parallel=[
            parallel(2, 32, 100, in_step=True),  # the production setting
            parallel(2, 16, 100, in_step=False),  # the total at the endpoint's slots
            parallel(2, 32, 400, in_step=False),  # a bigger BatchSize
            parallel(3, 5, 100, in_step=False),  # none of those
        ],
        packing=[
            PackingRun(cap=1, requests=512, calls=512, wall_s=4.1, succeeded=512),
            PackingRun(cap=8, requests=512, calls=66, wall_s=0.9, succeeded=512),
            PackingRun(cap=32, requests=512, calls=18, wall_s=0.6, succeeded=512),
        ],
        e2e=[
            e2e("2,000 requests", 2_000, 17.5),
            e2e("20,000 requests", 20_000, 131.0),
            e2e("RPM-bound", 1_200, 31.0, rpm=RPM_LIMIT),
        ],
    )


def minimal_report() -> BenchReport:
    """No optional section, no baseline to compare with, an RPM scenario that names no limit."""
    rpm_without_limit = Scenario("rpm", "32 slots, 200 ms, no limit told")
    return BenchReport(
        scenarios=[SCENARIOS["slots32"], rpm_without_limit],
        results=[
            run("ours", "slots32", limit=32, calls=ours_calls(400)),
            run("ours", "rpm", limit=32, sim_figures=sim(32, 70.0, 400)),
        ],
        settings={},
    )


@pytest.fixture(autouse=True)
def _same_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "python_version", lambda: "3.11.9")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


@pytest.mark.parametrize(
    ("build", "snapshot"),
    [(full_report, "benchmarks_full.md"), (minimal_report, "benchmarks_minimal.md")],
)
def test_the_markdown_report_is_the_text_it_always_was(build: Callable[[], BenchReport], snapshot: str) -> None:
    # GIVEN fixed figures
    report = build()

    # WHEN they are rendered for docs/benchmarks.md at a fixed time
    text = markdown_report(report, now=NOW)

    # THEN the text is the snapshot's, character for character
    assert text == (SNAPSHOTS / snapshot).read_text()


@pytest.mark.parametrize(
    ("build", "snapshot"),
    [(full_report, "console_full.txt"), (minimal_report, "console_minimal.txt")],
)
def test_the_console_report_is_the_text_it_always_was(build: Callable[[], BenchReport], snapshot: str) -> None:
    # GIVEN fixed figures / WHEN they are printed for the console
    # THEN the text is the snapshot's
    assert text_report(build()) == (SNAPSHOTS / snapshot).read_text()


def test_every_block_of_the_template_is_printed() -> None:
    # GIVEN both reports' texts, which take every branch of the report between them
    texts = [markdown_report(build(), now=NOW) for build in (full_report, minimal_report)]

    # WHEN each block's text up to its first field is looked for
    unused = [name for name, block in TEXT.items() if not any(block.split("{", 1)[0] in t for t in texts)]

    # THEN each is there: a block no code fills would be prose the report never prints
    assert unused == []


def test_the_template_is_read_in_blocks_and_a_repeated_name_is_refused() -> None:
    # GIVEN notes, then two blocks, one continuing a sentence (a leading space) and ending in blank lines
    source = "notes, not printed\n\n%% first\nline one\n\nline {two}\n\n\n%% second\n in the last wave\n"

    # WHEN / THEN each block is its lines, its leading space kept and its trailing blank lines left out
    assert template_blocks(source) == {"first": "line one\n\nline {two}", "second": " in the last wave"}
    with pytest.raises(ValueError, match="twice"):
        template_blocks(source + "%% first\nagain\n")


def test_the_fairness_section_shows_each_runs_figures_and_its_slowdown() -> None:
    from llmbatch.bench.e2e_report import fairness_lines
    from llmbatch.bench.fairness import FairnessRun

    runs = [
        FairnessRun(
            calls_in_flight=160,
            workers_by="WorkerMaxConcurrency",
            big=3000,
            small=20,
            small_alone_s=2.0,
            small_behind_s=5.0,
            big_answered=1200,
            small_submitted_after_s=8.0,
        ),
        FairnessRun(
            calls_in_flight=32,
            workers_by="sized to the endpoint",
            big=3000,
            small=20,
            small_alone_s=1.5,
            small_behind_s=2.4,
            big_answered=400,
            small_submitted_after_s=8.0,
        ),
    ]
    text = "\n".join(fairness_lines(runs))
    assert "| WorkerMaxConcurrency | 160 | 2.0 | 5.0 | 2.50x | 1,200 of 3,000 |" in text
    assert "| sized to the endpoint | 32 | 1.5 | 2.4 | 1.60x | 400 of 3,000 |" in text
    assert fairness_lines([]) == []
