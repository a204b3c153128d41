"""The benchmark runs end to end at a tiny size and its accounting adds up.

Figures are never asserted as timings: a slow CI machine must not fail these tests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.run import main

pytestmark = pytest.mark.functional

REQUESTS = 40
SEQUENTIAL = 10


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    json_path, docs_path = out / "figures.json", out / "benchmarks.md"
    argv = [
        "--scenario",
        "errors",  # 10% transient 5xx: some records are returned, so both outcomes are exercised
        "--scenario",
        "rpm",  # an RPM limit the baselines run into and our worker keeps
        "--requests",
        str(REQUESTS),
        "--sequential-requests",
        str(SEQUENTIAL),
        "--latency-ms",
        "20",
        "--skip-import-time",
        "--json",
        str(json_path),
        "--write-docs",
        str(docs_path),
    ]
    assert main(argv) == 0
    data = json.loads(json_path.read_text())
    data["docs"] = docs_path.read_text()
    return data


def runs_of(figures: dict[str, Any], scenario: str) -> dict[str, dict[str, Any]]:
    return {r["approach"]: r for r in figures["runs"] if r["scenario"] == scenario}


def test_every_approach_ran_once_per_scenario(figures: dict[str, Any]) -> None:
    for scenario in ("errors", "rpm"):
        sizes = {name: r["requests"] for name, r in runs_of(figures, scenario).items()}
        assert sizes == {"ours": REQUESTS, "gather": REQUESTS, "sequential": SEQUENTIAL}, scenario


def test_every_request_is_accounted_for(figures: dict[str, Any]) -> None:
    for run in figures["runs"]:
        name = run["approach"]
        parts = run["succeeded"] + run["failed"] + run["returned_for_retry"] + run["other"]
        assert parts == run["accounted"] == run["requests"], name
        # What a handler says it stored is what the results table holds.
        assert run["stored"] == run["succeeded"] + run["failed"], name
        # Each record reached the endpoint at most once, and every answer came from a call.
        assert run["succeeded"] <= run["endpoint_calls"] <= run["requests"], name
        # Only transient errors happened (injected 5xx, 429s of the RPM limit): what failed
        # went back for retry, nothing was lost.
        refused = run["injected_5xx"] + run["rate_limited_429"]
        assert run["returned_for_retry"] <= refused, name
        assert run["succeeded"] + refused >= run["requests"] - run["other"], name


def test_aws_calls_are_counted(figures: dict[str, Any]) -> None:
    for run in figures["runs"]:
        assert sum(run["aws_calls"]["dynamodb"].values()) > 0, run["approach"]
        assert run["aws_calls_per_request"]["dynamodb"] > 0, run["approach"]
    baselines = [r for r in figures["runs"] if r["approach"] != "ours"]
    for run in baselines:  # one put_item per stored answer, nothing else
        assert run["aws_calls"]["dynamodb"] == {"put_item": run["succeeded"]}
    ours = runs_of(figures, "errors")["ours"]
    assert ours["aws_calls"]["dynamodb"].get("transact_write_items", 0) > 0
    if ours["returned_for_retry"]:
        assert ours["aws_calls"]["sqs"].get("change_message_visibility_batch", 0) > 0
    # Under the RPM limit, the global bucket's reads and writes are ours too, and counted.
    assert runs_of(figures, "rpm")["ours"]["aws_calls"]["dynamodb"].get("update_item", 0) > 0


def test_under_an_rpm_limit_ours_waits_where_a_burst_collects_429s(figures: dict[str, Any]) -> None:
    # The endpoint's bucket starts empty (steady state): an unbounded gather is refused at
    # once; our worker, told the limit, spends it as it refills and is never refused.
    runs = runs_of(figures, "rpm")
    assert runs["gather"]["rate_limited_429"] > 0
    assert runs["ours"]["rate_limited_429"] == 0
    assert runs["ours"]["succeeded"] == REQUESTS


def test_the_figures_are_written_as_markdown(figures: dict[str, Any]) -> None:
    docs = figures["docs"]
    assert docs.startswith("# Benchmarks")
    assert "## errors:" in docs and "## rpm:" in docs
    assert "With an RPM limit" in docs
    for name in ("ours", "sequential", "gather", "ours / sequential", "ours / gather"):
        assert f"| {name} |" in docs
