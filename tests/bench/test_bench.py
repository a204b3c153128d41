"""The benchmark runs end to end at a tiny size and its accounting adds up.

Figures are never asserted as timings: a slow CI machine must not fail these tests.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from llmbatch.bench.run import main
from llmbatch.bench.sweep import SVG_NAME

pytestmark = pytest.mark.functional

REQUESTS = 40
SEQUENTIAL = 10
SWEEP = (4, 8)
SWEEP_REQUESTS = 20
#: Two batches of the template's 100, one for each container.
PARALLEL_REQUESTS = 200
PER_CONTAINER = 8
BIG_BATCH = 20
PACKING_REQUESTS = 40


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
        "--sweep",
        ",".join(str(c) for c in SWEEP),
        "--sweep-requests",
        str(SWEEP_REQUESTS),
        "--parallel",
        str(PER_CONTAINER),
        "--parallel-requests",
        str(PARALLEL_REQUESTS),
        "--parallel-batch-size",
        str(BIG_BATCH),
        "--packing-requests",
        str(PACKING_REQUESTS),
        "--skip-import-time",
        "--json",
        str(json_path),
        "--write-docs",
        str(docs_path),
    ]
    assert main(argv) == 0
    data = json.loads(json_path.read_text())
    data["docs"] = docs_path.read_text()
    data["chart"] = (out / SVG_NAME).read_text()
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


def assert_accounted(run: dict[str, Any]) -> None:
    parts = run["succeeded"] + run["failed"] + run["returned_for_retry"] + run["other"]
    assert parts == run["accounted"] == run["requests"]
    assert run["stored"] == run["succeeded"] + run["failed"]
    assert run["succeeded"] <= run["endpoint_calls"] <= run["requests"]


def test_the_sweep_runs_our_worker_once_per_concurrency_at_that_limit(figures: dict[str, Any]) -> None:
    points = figures["sweep"]
    assert [p["concurrency"] for p in points] == list(SWEEP)
    for p in points:
        assert p["approach"] == "ours" and p["requests"] == SWEEP_REQUESTS
        assert_accounted(p)
        # The limits parameter reached the worker: its limiter ended at the point's concurrency.
        assert p["concurrency_limit"] == p["concurrency"]


def test_the_chart_has_a_point_per_concurrency_in_each_panel(figures: dict[str, Any]) -> None:
    root = ET.fromstring(figures["chart"])
    ns = {"svg": "http://www.w3.org/2000/svg"}
    panels = root.findall("svg:g[@class='panel']", ns)
    assert len(panels) == 2
    for panel in panels:
        assert len(panel.findall("svg:circle", ns)) == len(SWEEP)
    assert f"]({SVG_NAME})" in figures["docs"]


def test_several_containers_share_the_job_and_every_request_is_accounted_for(figures: dict[str, Any]) -> None:
    (run,) = [r for r in figures["parallel"] if r["batch_size"] == figures["settings"]["batch_size"]]
    assert run["containers"] == 2 and run["per_container"] == PER_CONTAINER
    assert run["requests"] == PARALLEL_REQUESTS
    assert_accounted(run)
    assert run["concurrency_limit"] == PER_CONTAINER
    # Both containers handled a batch, and each invocation reported its phases.
    assert {c for c, _, _ in run["invocation_spans_s"]} == {0, 1}
    assert len(run["phases_s"]) == len(run["invocation_spans_s"]) == run["invocations"]
    # Their AWS calls came back from the container processes and were summed.
    assert run["aws_calls"]["dynamodb"].get("transact_write_items", 0) > 0


def test_the_bigger_batch_run_uses_its_batch_size_and_accounts_for_every_request(figures: dict[str, Any]) -> None:
    (run,) = [r for r in figures["parallel"] if r["batch_size"] == BIG_BATCH]
    # At least two batches per container, each of at most BIG_BATCH records.
    assert run["requests"] == max(PARALLEL_REQUESTS, 2 * 2 * BIG_BATCH)
    assert_accounted(run)
    assert run["invocations"] == -(-run["requests"] // BIG_BATCH)
    assert f"batches of {BIG_BATCH}" in figures["docs"]


def test_packing_makes_fewer_calls_for_the_same_answers(figures: dict[str, Any]) -> None:
    by_cap = {r["cap"]: r for r in figures["packing"]}
    assert set(by_cap) == {1, 16}
    for r in by_cap.values():
        assert r["requests"] == r["succeeded"] == PACKING_REQUESTS
    assert by_cap[1]["calls"] == PACKING_REQUESTS
    assert by_cap[16]["calls"] < by_cap[1]["calls"]


def test_the_extra_sections_are_written(figures: dict[str, Any]) -> None:
    docs = figures["docs"]
    for heading in (
        "## Throughput and p99 against concurrency",
        "## Several containers at once",
        "## Request packing",
    ):
        assert heading in docs
    assert f"| ours, 2 x {PER_CONTAINER} |" in docs
