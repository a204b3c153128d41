"""Cost both ways: an endpoint's ``batch_discount`` (a price setting in ``Prices``) gives the
batch price beside the online one, and a batch-lane job is priced at the batch price."""

from __future__ import annotations

import json

import pytest

from llmbatch.cli.commands import JobReport, report_text
from llmbatch.client.cost import PriceList, Pricing, TokenPrice, estimate_cost
from shared.errors import ConfigError
from shared.jobs import Counts, JobMeta, JobStatus

PRICES = json.dumps({"endpoints": {"e": {"input_per_million": 2.0, "output_per_million": 8.0, "batch_discount": 0.5}}})


def job(lane: str = "") -> JobStatus:
    meta = JobMeta("job-1", 10, endpoint="e", sealed=True, enqueued=10, lane=lane, lane_reason="test")
    return JobStatus(meta, Counts(succeeded=10, prompt_tokens=1_000_000, completion_tokens=500_000))


def pricing(raw: str = PRICES) -> Pricing:
    return Pricing(memory_mb=512, architecture="arm64", prices=PriceList.from_json(raw))


def test_the_discount_is_read_from_the_price_list() -> None:
    assert PriceList.from_json(PRICES).endpoints["e"] == TokenPrice(2.0, 8.0, 0.5)
    assert PriceList.from_json(PRICES).endpoints["e"].batch() == TokenPrice(1.0, 4.0, 0.5)


@pytest.mark.parametrize("bad", [1, 1.5, -0.1, "half", True])
def test_a_discount_outside_zero_to_one_is_refused(bad: object) -> None:
    raw = json.dumps({"endpoints": {"e": {"input_per_million": 1, "output_per_million": 1, "batch_discount": bad}}})
    with pytest.raises(ConfigError, match="batch_discount"):
        PriceList.from_json(raw)


@pytest.mark.parametrize(("lane", "model_usd"), [("", 6.0), ("online", 6.0), ("batch", 3.0)])
def test_both_prices_are_shown_and_the_job_pays_its_lanes(lane: str, model_usd: float) -> None:
    cost = estimate_cost(job(lane), pricing())
    assert (cost.model_online_usd, cost.model_batch_usd, cost.model_usd) == (6.0, 3.0, model_usd)
    assert cost.lanes_line() == "online $6.00 · batch $3.00 (50% batch discount)"


def test_without_a_discount_both_prices_are_the_same_and_it_says_so() -> None:
    raw = json.dumps({"endpoints": {"e": {"input_per_million": 2.0, "output_per_million": 8.0}}})
    cost = estimate_cost(job("batch"), pricing(raw))
    assert cost.model_online_usd == cost.model_batch_usd == 6.0
    assert cost.lanes_line().endswith("(no batch_discount set)")
    assert estimate_cost(job(), pricing("{}")).lanes_line() == "not priced"


def test_status_shows_the_lane_its_reason_and_both_prices() -> None:
    text = report_text(JobReport(job("batch"), estimate_cost(job("batch"), pricing())), False)
    lines = fields(text)
    assert lines["lane"] == "batch" and lines["lane_reason"] == "test"
    assert lines["native"] == "0 completed, 0 failed; parts 0 of 0 done, 0 running"
    assert lines["model_by_lane"] == "online $6.00 · batch $3.00 (50% batch discount)"
    assert "lane" not in fields(report_text(JobReport(job(), None, "x"), False))


def fields(text: str) -> dict[str, str]:
    """``status``'s lines, name (18 columns) to value."""
    return {line[:18].strip(): line[18:].strip() for line in text.splitlines()}
