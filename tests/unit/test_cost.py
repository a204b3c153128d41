"""The cost estimate (llmbatch/client/cost.py) and the per-invocation metering behind it
(shared/observability.py): pure arithmetic, no AWS."""

from __future__ import annotations

import json

import pytest

from llmbatch.client.cost import (
    PRICES_ENV,
    SQS_BILLED_CHUNK_BYTES,
    AwsPrices,
    PriceList,
    Pricing,
    TokenPrice,
    estimate_cost,
    usd,
)
from shared.errors import ConfigError
from shared.jobs import Counts, JobMeta, JobStatus, Metering
from shared.observability import invocation_metering
from shared.queue_ops import SQS_BATCH_MAX_ENTRIES
from shared.store.jobs_table import METERING_WRITE_UNITS
from shared.worker.stats import InvocationStats

#: Round numbers, so every expected figure below can be checked by hand.
PRICES = AwsPrices(
    lambda_gb_second_arm64=1.0,
    lambda_gb_second_x86_64=2.0,
    lambda_request=0.5,
    sqs_request=0.01,
    dynamodb_write_unit=0.001,
    dynamodb_read_unit=0.0001,
    s3_put=0.1,
    s3_get=0.01,
)


def job(total: int, counts: Counts, metering: Metering, endpoint: str = "default", enqueued: int = -1) -> JobStatus:
    enqueued = total if enqueued < 0 else enqueued
    return JobStatus(JobMeta("job-1", total, endpoint=endpoint, sealed=True, enqueued=enqueued), counts, metering)


def pricing(memory_mb: int = 1024, architecture: str = "arm64", **endpoints: TokenPrice) -> Pricing:
    return Pricing(memory_mb, architecture, PriceList(PRICES, endpoints))


# --------------------------------------------------------------------------------------------
# Each service
# --------------------------------------------------------------------------------------------


def test_lambda_is_memory_times_worker_time_at_the_architectures_price_plus_invocations() -> None:
    # GIVEN a job that took 3 s of a 2048 MB worker over 2 invocations
    done = job(10, Counts(succeeded=10), Metering(compute_ms=3000, invocations=2))

    # WHEN it is priced on arm64 and on x86_64
    arm, x86 = estimate_cost(done, pricing(2048, "arm64")), estimate_cost(done, pricing(2048, "x86_64"))

    # THEN it used 2 GB x 3 s = 6 GB-s, at each architecture's price, plus 2 requests
    assert arm.gb_seconds == pytest.approx(6.0)
    assert arm.lambda_usd == pytest.approx(6 * 1.0 + 2 * 0.5)
    assert x86.lambda_usd == pytest.approx(6 * 2.0 + 2 * 0.5)


def test_sqs_counts_send_receive_and_delete_calls_of_ten_small_messages() -> None:
    # GIVEN 100 small requests, each delivered once
    done = job(100, Counts(succeeded=100), Metering(invocations=1, deliveries=100, delivered_bytes=100 * 500))

    # WHEN it is priced
    cost = estimate_cost(done, pricing())

    # THEN 10 send calls + 10 receive calls + 10 delete calls were billed
    assert SQS_BATCH_MAX_ENTRIES == 10
    assert cost.sqs_requests == pytest.approx(30)
    assert cost.sqs_usd == pytest.approx(30 * 0.01)


def test_big_messages_are_billed_per_64_kb_chunk() -> None:
    # GIVEN 10 requests of 128 KB each, delivered once
    size = 2 * SQS_BILLED_CHUNK_BYTES
    done = job(10, Counts(succeeded=10), Metering(invocations=1, deliveries=10, delivered_bytes=10 * size))

    # WHEN it is priced
    cost = estimate_cost(done, pricing())

    # THEN sending and receiving cost 2 chunks per message (20 each), deleting one call
    assert cost.sqs_requests == pytest.approx(20 + 20 + 1)


def test_dynamodb_is_the_result_writes_the_metering_and_retry_notes_plus_lookups() -> None:
    # GIVEN 10 requests, 2 of them retried once (12 deliveries), over 3 invocations
    metering = Metering(invocations=3, deliveries=12, delivered_bytes=12 * 100, write_units=44)
    done = job(10, Counts(succeeded=9, failed=1), metering)

    # WHEN it is priced
    cost = estimate_cost(done, pricing())

    # THEN writes: the transactions' 44 units, each invocation's metering, one note per retry;
    # reads: half a unit per delivery looked up and per invocation's job read
    assert cost.dynamodb_write_units == 44 + 3 * METERING_WRITE_UNITS + 2
    assert cost.dynamodb_read_units == pytest.approx((12 + 3) * 0.5)
    assert cost.dynamodb_usd == pytest.approx(cost.dynamodb_write_units * 0.001 + cost.dynamodb_read_units * 0.0001)


def test_s3_counts_claim_checks_once_put_and_read_per_delivery_and_offloaded_answers() -> None:
    # GIVEN 4 claim-checked requests delivered 6 times in all, and 2 answers offloaded
    metering = Metering(invocations=1, deliveries=6, delivered_bytes=600, claim_checks=6, offloaded=2)
    done = job(4, Counts(succeeded=4), metering)

    # WHEN it is priced
    cost = estimate_cost(done, pricing())

    # THEN puts: 4 requests + 2 answers; gets: 6 deliveries + 2 answers read back
    assert cost.s3_requests == 6 + 8
    assert cost.s3_usd == pytest.approx(6 * 0.1 + 8 * 0.01)


def test_model_tokens_are_priced_per_million_at_the_jobs_endpoint() -> None:
    # GIVEN 2M tokens in and 1M out on the "fast" endpoint, priced $0.50 and $2 per million
    done = job(1, Counts(succeeded=1, prompt_tokens=2_000_000, completion_tokens=1_000_000), Metering(), "fast")
    priced = pricing(fast=TokenPrice(0.5, 2.0))

    # WHEN it is priced with and without a price for that endpoint
    cost, unpriced = estimate_cost(done, priced), estimate_cost(done, pricing(other=TokenPrice(9, 9)))

    # THEN the model costs $1 + $2, or is "not priced" (and counts as 0 in the total)
    assert cost.model_usd == pytest.approx(3.0)
    assert cost.total_usd == pytest.approx(cost.aws_usd + 3.0)
    assert unpriced.model_usd is None
    assert unpriced.total_usd == pytest.approx(unpriced.aws_usd)
    assert "model not priced" in unpriced.summary()


def test_a_job_not_yet_enqueued_costs_nothing() -> None:
    cost = estimate_cost(job(5, Counts(), Metering(), enqueued=0), pricing(default=TokenPrice(1, 1)))
    assert cost.total_usd == 0
    assert cost.summary().startswith("$0 ")


# --------------------------------------------------------------------------------------------
# Prices from configuration
# --------------------------------------------------------------------------------------------


def test_the_price_list_reads_endpoints_and_overrides_aws_prices() -> None:
    # GIVEN the Prices parameter with one endpoint and one AWS price replaced
    raw = json.dumps(
        {"endpoints": {"default": {"input_per_million": 0.15, "output_per_million": 0.6}}, "aws": {"sqs_request": 1e-6}}
    )

    # WHEN it is read
    prices = PriceList.from_json(raw)

    # THEN the endpoint is priced, the replaced price changed and the others kept their defaults
    assert prices.endpoints == {"default": TokenPrice(0.15, 0.6)}
    assert prices.aws.sqs_request == 1e-6
    assert prices.aws.dynamodb_write_unit == AwsPrices().dynamodb_write_unit
    assert PriceList.from_json("") == PriceList.from_json("{}") == PriceList()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{oops", "Expecting"),
        ("[]", "not a JSON object"),
        ('{"aws": {"lambda_per_gb": 1}}', "unknown AWS price"),
        ('{"endpoints": {"x": {"input_per_million": 1}}}', "output_per_million"),
        ('{"endpoints": {"x": {"input_per_million": -1, "output_per_million": 1}}}', "0 or more"),
        ('{"endpoints": {"x": {"input_per_million": "1", "output_per_million": 1}}}', "a number"),
    ],
)
def test_a_bad_price_list_is_refused_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as e:
        PriceList.from_json(raw)
    assert PRICES_ENV in str(e.value)


def test_pricing_comes_from_the_workers_function_configuration() -> None:
    # GIVEN Lambda's GetFunctionConfiguration of the worker
    prices = {"endpoints": {"default": {"input_per_million": 1, "output_per_million": 2}}}
    config = {
        "MemorySize": 1769,
        "Architectures": ["arm64"],
        "Environment": {"Variables": {PRICES_ENV: json.dumps(prices), "OTHER": "x"}},
    }

    # WHEN / THEN memory, architecture and prices are read from it; a function with no
    # variables and no architecture is x86_64 (Lambda's default) with AWS prices only
    assert Pricing.from_function_configuration(config) == Pricing(
        1769, "arm64", PriceList(AwsPrices(), {"default": TokenPrice(1.0, 2.0)})
    )
    assert Pricing.from_function_configuration({"MemorySize": 128}) == Pricing(128, "x86_64", PriceList())


@pytest.mark.parametrize(
    ("amount", "text"),
    [(0, "$0"), (1234.5, "$1,234.50"), (0.01234, "$0.0123"), (0.0000123, "$0.000012"), (1e-9, "<$0.000001")],
)
def test_dollars_show_the_digits_that_matter(amount: float, text: str) -> None:
    assert usd(amount) == text


# --------------------------------------------------------------------------------------------
# Metering one invocation
# --------------------------------------------------------------------------------------------


def test_an_invocations_records_are_metered_per_job() -> None:
    # GIVEN an invocation that took 3 messages of job A as A's (one claim-checked) and 1 of job B
    a = json.dumps({"job_id": "A", "custom_id": "1", "body": {"x": "y"}})
    a_ref = json.dumps({"job_id": "A", "custom_id": "2", "body": {}, "body_ref": "requests/A/2.json"})
    b = json.dumps({"job_id": "B", "custom_id": "1", "body": {}})
    stats = InvocationStats()
    for body, job, ref in ((a, "A", False), (a, "A", False), (a_ref, "A", True), (b, "B", False)):
        stats.delivered(job, body, claim_check=ref)

    # WHEN a 4001 ms invocation of it is metered
    usage = invocation_metering(stats, 4001)

    # THEN each job gets its messages, bytes, claim checks and share of the time
    assert set(usage) == {"A", "B"}
    assert usage["A"] == Metering(
        compute_ms=usage["A"].compute_ms,
        invocations=1,
        deliveries=3,
        delivered_bytes=2 * len(a) + len(a_ref),
        claim_checks=1,
    )
    assert usage["B"].deliveries == 1 and usage["B"].claim_checks == 0
    assert usage["A"].compute_ms + usage["B"].compute_ms == 4001
    assert usage["A"].compute_ms in (3000, 3001)
