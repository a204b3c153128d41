"""The Worker's cold start imports only what every container needs.

Counted, not timed: the handler module is imported in a fresh interpreter and the modules
it loaded are listed. Endpoint kinds a stack may not use (Bedrock, SageMaker) load when an
endpoint of that kind is built (shared/endpoints/factory.py), the DeadLetter function's
recorder when its container is (shared/container.py), tracing when the stack turns it on.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmbatch.bench.procs import ROOT, child_env

HANDLER = "functions.worker.app"

#: Never needed by a Worker cold start: other endpoint kinds, the other functions' code,
#: the console, the local stack, the benchmark, and the test and demo tooling.
NOT_AT_COLD_START = (
    "shared.endpoints.bedrock",
    "shared.endpoints.bedrock_translate",
    "shared.endpoints.sagemaker",
    "shared.endpoints.sagemaker_mapping",
    "shared.deadletter",
    "llmbatch",
    "aws_xray_sdk",
    "textual",
    "moto",
    "tui",
    "yaml",
)


@pytest.fixture(scope="module")
def loaded() -> set[str]:
    code = f"import json, sys; import {HANDLER}; print(json.dumps(sorted(sys.modules)))"
    env = child_env()
    env.pop("POWERTOOLS_TRACE_DISABLED", None)  # the stack's default: tracing off
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT), env=env, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_handler_and_the_core_it_runs_are_loaded(loaded: set[str]) -> None:
    # The measurement itself worked: the worker's own modules are there.
    assert {HANDLER, "shared.container", "shared.worker.processor", "shared.endpoints.openai_http"} <= loaded


def test_nothing_a_cold_start_does_not_need_is_loaded(loaded: set[str]) -> None:
    unwanted = sorted(m for m in loaded if any(m == name or m.startswith(name + ".") for name in NOT_AT_COLD_START))
    assert unwanted == []
