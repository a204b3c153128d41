"""`llmbatch bench ARGS`: a subcommand like the others, whose options are the benchmark's own
(`make bench` runs `llmbatch bench --write-docs`), mapped to the same function as `python -m llmbatch.bench`."""

from __future__ import annotations

import argparse

import pytest

import llmbatch.bench.run
from llmbatch.bench.run import DOCS_PATH
from llmbatch.cli.main import main


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """What the benchmark would have run with, instead of running it."""
    calls: list[argparse.Namespace] = []
    monkeypatch.setattr(llmbatch.bench.run, "run", lambda args: calls.append(args) or 0)
    return calls


def test_the_benchmarks_options_reach_it_with_an_option_right_after_write_docs(
    seen: list[argparse.Namespace],
) -> None:
    # GIVEN / WHEN --write-docs without a path, followed by another option
    code = main(["bench", "--write-docs", "--scenario", "rpm", "--sweep", "4,8"])

    # THEN the docs go to their default path, and the other options are read as such
    assert code == 0
    [args] = seen
    assert args.write_docs == str(DOCS_PATH)
    assert args.scenario == ("rpm",)
    assert args.sweep == (4, 8)


def test_the_benchmarks_defaults_are_those_of_python_m_bench(seen: list[argparse.Namespace]) -> None:
    # GIVEN / WHEN the same arguments through `llmbatch bench` and `python -m llmbatch.bench`
    assert main(["bench", "--write-docs", "out.md"]) == 0
    assert llmbatch.bench.run.main(["--write-docs", "out.md"]) == 0

    # THEN both reach the benchmark alike
    through_cli, direct = seen
    assert vars(through_cli) == vars(direct)
    assert through_cli.write_docs == "out.md" and through_cli.requests == 600 and through_cli.scenario == ()


def test_an_option_the_benchmark_does_not_know_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN / WHEN an unknown option
    code = main(["bench", "--no-such-option"])

    # THEN it is a usage error naming it
    assert code == 2
    assert "--no-such-option" in capsys.readouterr().err


def test_a_malformed_list_of_counts_is_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--sweep", "4,x"]) == 2
    assert "expected whole numbers separated by commas" in capsys.readouterr().err
