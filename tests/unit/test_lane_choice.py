"""``submit --lane``'s choice at every boundary, and the native limits per endpoint kind."""

from __future__ import annotations

import pytest

from llmbatch.client.lanes import Lane, LaneRefusedError, choose_lane, parse_duration
from shared.endpoints.specs import parse_spec
from shared.errors import ConfigError
from shared.lanes.native import NativeLimits
from shared.lanes.registry import native_limits

WINDOW = 24 * 3600
LIMITS = NativeLimits(min_records=100, max_records=1000, max_concurrent_jobs=2, completion_window_s=WINDOW)


def choose(lane: str, records: int, within_s: float | None = None, limits: NativeLimits | None = LIMITS) -> Lane:
    return choose_lane(lane, records=records, endpoint="e", limits=limits, within_s=within_s).lane


@pytest.mark.parametrize(("records", "lane"), [(99, Lane.ONLINE), (100, Lane.BATCH), (101, Lane.BATCH)])
def test_auto_runs_online_below_the_native_minimum(records: int, lane: Lane) -> None:
    assert choose("auto", records) is lane


@pytest.mark.parametrize(
    ("within", "lane"), [(WINDOW - 1, Lane.ONLINE), (WINDOW, Lane.BATCH), (WINDOW + 1, Lane.BATCH)]
)
def test_auto_runs_online_when_within_is_shorter_than_the_completion_window(within: float, lane: Lane) -> None:
    assert choose("auto", 500, within) is lane


def test_auto_without_within_takes_the_batch_lane_and_says_why() -> None:
    c = choose_lane("auto", records=2500, endpoint="e", limits=LIMITS)
    assert c.lane is Lane.BATCH and c.parts(2500) == 3
    assert c.reason == "auto: no --within given; 2,500 record(s) in 3 native job(s) of at most 1,000, done within 1d"


def test_auto_on_an_endpoint_without_a_native_api_runs_online() -> None:
    c = choose_lane("auto", records=10_000, endpoint="e", limits=None)
    assert (c.lane, c.reason) == (Lane.ONLINE, "auto: endpoint 'e' has no native batch API")


@pytest.mark.parametrize(("records", "limits"), [(99, LIMITS), (5000, None)])
def test_batch_is_refused_where_the_native_api_cannot_take_the_job(records: int, limits: NativeLimits | None) -> None:
    with pytest.raises(LaneRefusedError, match=r"^--lane batch refused: "):
        choose("batch", records, limits=limits)


def test_batch_at_the_minimum_and_online_whatever_the_size() -> None:
    assert choose("batch", 100) is Lane.BATCH
    assert choose("batch", 100, within_s=1) is Lane.BATCH  # --within is auto's only
    assert choose("online", 10**6) is Lane.ONLINE and choose("online", 1, limits=None) is Lane.ONLINE


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("45m", 2700), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("600", 600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2x", "1h soon"])
def test_unreadable_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_native_limits_per_endpoint_kind() -> None:
    openai = parse_spec("o", {"kind": "openai", "url": "https://api.openai.com/v1", "batch_max_jobs": 3})
    limits = native_limits(openai)
    assert limits == NativeLimits(min_records=1, max_records=50_000, max_concurrent_jobs=3, completion_window_s=WINDOW)
    small = parse_spec(
        "o", {"kind": "openai", "url": "http://vllm:8000/v1", "batch_api": True, "batch_max_records": 20}
    )
    assert native_limits(small) is not None and native_limits(small).max_records == 20  # type: ignore[union-attr]
    assert native_limits(parse_spec("v", {"kind": "openai", "url": "http://vllm:8000/v1"})) is None
    assert native_limits(parse_spec("s", {"kind": "sagemaker", "endpoint_name": "x", "mapping": "tgi"})) is None


async def test_the_builder_makes_each_kinds_api_from_the_containers_clients() -> None:
    from shared.lanes.bedrock_batch import BedrockBatchApi, bedrock_limits
    from shared.lanes.openai_batch import OpenAIBatchApi
    from shared.lanes.registry import ApiBuilder, LaneClients

    made: list[tuple[str, str | None, str | None]] = []

    async def aws_client(service: str, region: str | None, url: str | None) -> object:
        made.append((service, region, url))
        return object()

    async def http_session() -> object:
        return object()

    builder = ApiBuilder(
        LaneClients(http_session, aws_client, bucket="b", role_arn="arn:role", resolve_key=lambda ref: "k")  # type: ignore[arg-type]
    )
    claude = parse_spec("claude", {"kind": "bedrock", "region": "us-west-2", "default_model": "anthropic.x"})
    assert native_limits(claude) == bedrock_limits(claude)  # type: ignore[arg-type]
    api = await builder.api("claude", claude)
    assert isinstance(api, BedrockBatchApi) and await builder.api("claude", claude) is api  # made once
    assert made == [("bedrock", "us-west-2", None), ("s3", None, None)]
    openai = parse_spec("o", {"kind": "openai", "url": "https://api.openai.com/v1", "api_key_ref": "ssm:/k"})
    assert isinstance(await builder.api("o", openai), OpenAIBatchApi)
    assert await builder.api("v", parse_spec("v", {"kind": "openai", "url": "http://vllm/v1"})) is None
