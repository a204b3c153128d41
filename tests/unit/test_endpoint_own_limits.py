"""An endpoint's own limits from its spec (``ENDPOINTS``): RPM/TPM that win over the live
limits parameter, and an inputs-per-call cap the packer applies to that endpoint only."""

from __future__ import annotations

import json
import math

from shared.config import RuntimeLimits, WorkerConfig
from shared.limits.rate_math import RateLimits
from shared.limits.throttle import Throttle
from shared.packing import Packer
from tests.unit.test_packing import EMB, FakeEndpoint, ask, emb

ENV = {
    "JOBS_TABLE": "jobs",
    "RESULTS_TABLE": "results",
    "ENDPOINT_URL": "http://127.0.0.1:9/v1",
    "ENDPOINTS": json.dumps(
        {
            "claude": {"kind": "bedrock", "default_model": "a.b", "rpm_limit": 500},
            "vllm": {"kind": "openai", "url": "http://127.0.0.1:9/v1", "tpm_limit": 90_000, "max_inputs_per_call": 4},
        }
    ),
}


def test_endpoint_specs_give_their_own_rate_limits_and_packing_caps() -> None:
    config = WorkerConfig.from_env(ENV)

    assert config.rate_limit_overrides() == {"claude": RateLimits(rpm=500), "vllm": RateLimits(tpm=90_000)}
    assert config.packing_caps() == {"vllm": 4}


def test_an_endpoints_own_limit_wins_field_by_field_over_the_live_limits() -> None:
    throttle = Throttle(None, overrides=WorkerConfig.from_env(ENV).rate_limit_overrides())
    live = RuntimeLimits(rpm_limit=100, tpm_limit=1_000)

    assert throttle.limits_for("claude", live) == RateLimits(rpm=500, tpm=1_000)
    assert throttle.limits_for("vllm", live) == RateLimits(rpm=100, tpm=90_000)
    assert throttle.limits_for("default", live) == RateLimits(rpm=100, tpm=1_000)


async def test_the_packer_applies_an_endpoints_own_cap_and_the_live_cap_elsewhere() -> None:
    # GIVEN a packer whose live cap is 16, and an endpoint capped at 4 by its spec
    packer = Packer(max_inputs=16, endpoint_caps=WorkerConfig.from_env(ENV).packing_caps())
    vllm, other = FakeEndpoint("vllm"), FakeEndpoint("default")
    bodies = [emb(f"text {i}") for i in range(10)]

    # WHEN ten single-input requests go to each
    await ask(packer, vllm, EMB, bodies)
    await ask(packer, other, EMB, bodies)

    # THEN the capped endpoint got calls of at most 4 inputs, the other one call of 10
    assert len(vllm.calls) == math.ceil(10 / 4)
    assert max(len(c.inputs) for c in vllm.calls) == 4
    assert [len(c.inputs) for c in other.calls] == [10]
