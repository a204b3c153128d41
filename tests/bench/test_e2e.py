"""``llmbatch bench --scenario local-e2e`` runs the local stack end to end at a tiny size, and
its accounting adds up. Figures are never asserted as timings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmbatch.bench.e2e import E2ERun
from llmbatch.bench.e2e_report import END, START, splice
from llmbatch.bench.run import main

REQUESTS = 60
RPM_REQUESTS = 30
#: The fairness runs' big job, tiny too (the figures come from `make bench`, not from tests).
FAIRNESS_BIG = 100

EXISTING_DOCS = "# Benchmarks\n\n## slots32: in-process figures\n\nkept\n\n## Caveats\n\n- kept too\n"


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("e2e")
    json_path, docs_path = out / "figures.json", out / "benchmarks.md"
    docs_path.write_text(EXISTING_DOCS)
    argv = [
        "--scenario",
        "local-e2e",
        "--e2e-requests",
        str(REQUESTS),
        "--e2e-rpm-requests",
        str(RPM_REQUESTS),
        "--e2e-fairness",
        str(FAIRNESS_BIG),
        "--json",
        str(json_path),
        "--write-docs",
        str(docs_path),
    ]
    assert main(argv) == 0
    data = json.loads(json_path.read_text())
    data["docs"] = docs_path.read_text()
    return data


@pytest.mark.functional
def test_each_job_ran_through_the_local_stack_and_every_request_was_answered(figures: dict[str, Any]) -> None:
    runs = {r["name"]: r for r in figures["e2e"]}
    assert set(runs) == {f"e2e-{REQUESTS}", f"e2e-rpm-{RPM_REQUESTS}"}
    for run in runs.values():
        assert run["succeeded"] == run["requests"] and run["failed"] == 0
        # the endpoint was called once per request: no duplicates, nothing skipped
        assert run["endpoint_calls"] == run["requests"]
        assert run["stack_cpu_ms_per_request"] > 0 and run["rss_mb"] > 0
        assert run["progress"][-1][1] == run["requests"]
    assert runs[f"e2e-rpm-{RPM_REQUESTS}"]["rpm_limit"] == 2400
    assert runs[f"e2e-{REQUESTS}"]["rpm_limit"] is None
    # only the end-to-end scenario ran
    assert figures["runs"] == [] and figures["sweep"] == []


@pytest.mark.functional
def test_the_fairness_runs_timed_both_jobs_with_each_setting(figures: dict[str, Any]) -> None:
    runs = figures["fairness"]
    # the workers the stack sizes to the endpoint, then the template's WorkerMaxConcurrency
    # (10 x 16 calls): more calls in flight
    assert [r["workers_by"] for r in runs] == ["sized to the endpoint", "WorkerMaxConcurrency"]
    assert runs[0]["calls_in_flight"] < runs[1]["calls_in_flight"] == 160
    for run in runs:
        assert run["big"] == FAIRNESS_BIG and 0 <= run["big_answered"] <= FAIRNESS_BIG
        assert run["small_alone_s"] > 0 and run["small_behind_s"] > 0
        assert run["slowdown"] == pytest.approx(run["small_behind_s"] / run["small_alone_s"])


@pytest.mark.functional
def test_alone_it_replaces_only_its_own_section_of_the_docs(figures: dict[str, Any]) -> None:
    docs = figures["docs"]
    assert docs.startswith("# Benchmarks\n\n## slots32: in-process figures\n\nkept\n")
    assert docs.count(START) == 1 and docs.index(START) < docs.index(END) < docs.index("## Caveats")
    assert "- kept too" in docs
    assert f"| e2e-{REQUESTS} | {REQUESTS} | {REQUESTS} | 0 |" in docs


def test_splicing_twice_keeps_one_section() -> None:
    once = splice(EXISTING_DOCS, [START, "## local-e2e: one", END])
    twice = splice(once, [START, "## local-e2e: two", END])
    assert twice.count(START) == 1 and "two" in twice and "one" not in twice
    assert twice.endswith("## Caveats\n\n- kept too\n")


def test_fifths_are_read_from_the_status_polls() -> None:
    run = E2ERun(
        name="x",
        requests=100,
        submit_s=1.0,
        last_result_s=10.0,
        succeeded=100,
        failed=0,
        sim={},
        stack_cpu_s={},
        sim_cpu_s=0.0,
        client_cpu_s=0.0,
        rss_mb=0.0,
        containers_rss_mb=0.0,
        progress=[(2.0, 0), (4.0, 40), (6.0, 60), (7.0, 100)],
    )
    # 20 requests per fifth, their times interpolated between polls: 20/s, then 10/s, then 40/s
    assert [round(r, 1) for r in run.fifths_per_s] == [20.0, 20.0, 10.0, 40.0, 40.0]
