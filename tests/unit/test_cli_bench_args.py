"""`llmbatch bench ARGS`: every argument after `bench` reaches the benchmark's own parser, in
order, including a first one that looks like an option (`make bench` runs `llmbatch bench --write-docs`)."""

from __future__ import annotations

from typing import Any

import pytest

import llmbatch.bench.run
from llmbatch.cli.main import main


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--write-docs", "--scenario", "rpm"],
        ["bench", "--", "--write-docs", "--scenario", "rpm"],
    ],
)
def test_the_benchmarks_options_reach_it_in_order(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(llmbatch.bench.run, "main", lambda args: seen.append(args) or 0)
    assert main(argv) == 0
    assert seen == [["--write-docs", "--scenario", "rpm"]]


def test_an_option_the_benchmark_does_not_know_is_refused_by_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err
