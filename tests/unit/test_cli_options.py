"""The command line's options as click reads them (llmbatch/cli/main.py, options.py): each refusal
is a usage error (exit 2) said before anything starts, as argparse's were."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbatch.cli.main import main
from llmbatch.cli.options import stack_parameter


@pytest.mark.parametrize("command", [["demo"], ["local", "up"]])
def test_endpoint_and_endpoint_url_together_are_refused(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN / WHEN both ways of naming the endpoint at once
    code = main([*command, "--endpoint", "simulator", "--endpoint-url", "http://127.0.0.1:1/v1"])

    # THEN a usage error names the clash, and nothing was started
    assert code == 2
    assert "--endpoint-url: not allowed with --endpoint" in capsys.readouterr().err


def test_demo_against_a_url_needs_the_model_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--endpoint-url", "http://127.0.0.1:1/v1"]) == 2
    assert "--endpoint-url needs --model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "reason"),
    [("Endpoints", "expected NAME=VALUE, got 'Endpoints'"), ("Endpoints=@/no/such/file", "cannot read /no/such/file")],
)
def test_a_malformed_stack_parameter_is_refused_with_the_reason(
    value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "up", "--parameter", value]) == 2
    assert reason in capsys.readouterr().err


def test_a_stack_parameter_value_at_a_file_is_the_files_text(tmp_path: Path) -> None:
    # GIVEN a file / WHEN a parameter names it with @ / THEN its text (stripped) is the value
    (tmp_path / "endpoints.json").write_text('{"a": {}}\n')
    assert stack_parameter(f"Endpoints=@{tmp_path / 'endpoints.json'}") == ("Endpoints", '{"a": {}}')
    assert stack_parameter(" Name =a=b") == ("Name", "a=b")


def test_a_drill_scenario_that_does_not_exist_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "--scenario", "chaos"]) == 2
    assert "faults" in capsys.readouterr().err


def test_no_command_is_a_usage_error_that_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN / WHEN `llmbatch` alone
    code = main([])

    # THEN exit 2, with every command listed (the benchmark's without importing it)
    out = capsys.readouterr()
    assert code == 2
    listed = out.out + out.err
    for name in ("submit", "status", "limits", "bench", "local", "drill"):
        assert f"  {name} " in listed


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["limits", "set", "--help"]) == 0
    assert "--rpm" in capsys.readouterr().out
