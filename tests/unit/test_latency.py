"""The latency histogram (shared/latency.py): percentiles read from its buckets are within the
stated resolution of the exact percentile, and shards add up."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from llmbatch.stats import percentile
from shared.jobs import Counts, JobMeta, JobStatus
from shared.latency import (
    BOUNDS,
    BUCKETS,
    RANGE_BUCKETS,
    RESOLUTION,
    JobTiming,
    bucket_attribute,
    bucket_of,
    bucket_value,
    counter_update,
    percentile_of,
    started_at,
)


def test_the_histogram_has_fifty_buckets_from_10_ms_to_about_eleven_minutes() -> None:
    assert BUCKETS == 50
    assert BOUNDS[0] == 10
    assert BOUNDS[-1] == pytest.approx(655_360)
    assert 0.12 < RESOLUTION < 0.123
    assert bucket_attribute(7) == "lat#07"


@pytest.mark.parametrize(
    ("ms", "bucket"),
    [(0, 0), (9, 0), (10, 1), (12, 1), (13, 2), (20, 4), (655_359, RANGE_BUCKETS), (655_360, BUCKETS - 1)],
)
def test_each_latency_falls_in_the_bucket_its_bounds_say(ms: int, bucket: int) -> None:
    assert bucket_of(ms) == bucket


def test_every_value_in_range_reads_within_the_resolution_of_its_bucket_value() -> None:
    for ms in range(10, 655_360, 7):
        estimate = bucket_value(bucket_of(ms))
        assert abs(estimate - ms) / ms <= RESOLUTION + 1e-9, ms


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("p", [50, 90, 99])
def test_percentiles_from_buckets_are_within_the_resolution_of_the_exact_ones(seed: int, p: int) -> None:
    # GIVEN latencies of a lognormal shape, as a model endpoint's are
    rng = random.Random(seed)
    samples = [max(10, int(rng.lognormvariate(math.log(400), 0.8))) for _ in range(2000)]

    # WHEN the percentile is read from the histogram
    estimate = JobTiming.of_latencies(samples).percentile_ms(p)

    # THEN it is within the resolution of the exact nearest-rank percentile
    exact = percentile(samples, p)
    assert estimate is not None
    assert abs(estimate - exact) / exact <= RESOLUTION + 1e-9


def test_a_simulators_200_ms_with_jitter_reads_as_200_ms_within_the_resolution() -> None:
    rng = random.Random(1)
    timing = JobTiming.of_latencies(200 + rng.randint(-20, 20) for _ in range(500))
    assert timing.percentile_ms(50) == pytest.approx(200, rel=RESOLUTION)
    assert timing.mean_ms == pytest.approx(200, abs=3)


def test_no_latency_reads_as_none() -> None:
    assert percentile_of([0] * BUCKETS, 50) is None
    assert JobTiming().mean_ms is None
    assert JobTiming().active_s is None


def test_shards_add_up_to_the_histogram_of_all_their_latencies() -> None:
    # GIVEN latencies spread over three shards
    latencies = [15, 180, 220, 230, 900, 30_000, 5, 1_000_000]
    shards = [latencies[0:3], latencies[3:5], latencies[5:]]
    t0 = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
    stamps = [t0 + timedelta(seconds=s) for s in (0, 2, 5)]

    # WHEN each is read from its counter item and they are added
    total = JobTiming()
    for shard, at in zip(shards, stamps, strict=True):
        adds, _ = counter_update(shard, [])
        item = {**adds, "first_started_at": at.isoformat(), "updated_at": (at + timedelta(seconds=1)).isoformat()}
        total = total + JobTiming.from_item(item)

    # THEN the sum is the histogram of them all, first start the earliest, last write the latest
    assert total == JobTiming.of_latencies(
        latencies,
        first_started_at=stamps[0].isoformat(),
        last_finished_at=(stamps[2] + timedelta(seconds=1)).isoformat(),
    )
    assert total.active_s == 6.0


def test_one_transactions_update_adds_only_the_buckets_it_touches_and_the_earliest_start() -> None:
    adds, first = counter_update([200, 201, 950], ["2026-11-29T06:00:02.000+00:00", "2026-11-29T06:00:01.500+00:00"])
    assert adds == {bucket_attribute(bucket_of(200)): 2, bucket_attribute(bucket_of(950)): 1, "latency_sum_ms": 1351}
    assert first == "2026-11-29T06:00:01.500+00:00"
    assert counter_update([], ["not a time"]) == ({}, "")


def test_a_results_start_is_its_end_less_its_latency() -> None:
    assert started_at("2026-11-29T06:00:01.000+00:00", 250) == "2026-11-29T06:00:00.750+00:00"
    assert started_at("", 250) == ""


def test_a_jobs_figures_come_from_its_counts_and_timing() -> None:
    # GIVEN 48 answered in 200 ms, 2 failed, 50 in 10 s
    t0 = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
    timing = JobTiming.of_latencies(
        [200] * 48, first_started_at=t0.isoformat(), last_finished_at=(t0 + timedelta(seconds=10)).isoformat()
    )
    job = JobStatus(JobMeta("job-x", 50, sealed=True), Counts(48, 2), timing=timing)

    # THEN
    f = job.figures()
    assert f["latency_mean_ms"] == 200
    assert f["latency_p50_ms"] == pytest.approx(200, rel=RESOLUTION)
    assert f["error_rate"] == 0.04
    assert f["requests_per_s"] == 5.0
    assert JobStatus(JobMeta("job-y", 5), Counts()).figures()["requests_per_s"] is None
