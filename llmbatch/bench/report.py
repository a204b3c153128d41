"""Printing the figures: a plain table per scenario for the console, and the same tables
in markdown for ``docs/benchmarks.md``, with the prose of ``report_template.md`` (this package's
data file) filled in with the run's figures."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from llmbatch.bench import e2e_report
from llmbatch.bench.e2e import E2ERun
from llmbatch.bench.fairness import FairnessRun
from llmbatch.bench.harness import ADAPTIVE_CEILING, RunResult, Scenario
from llmbatch.bench.importtime import ImportTime
from llmbatch.bench.packing_scenario import CONCURRENCY as PACKING_CONCURRENCY
from llmbatch.bench.packing_scenario import SIMULATOR as PACKING_SIM
from llmbatch.bench.packing_scenario import PackingRun
from llmbatch.bench.parallel import ParallelRun
from llmbatch.bench.sweep import SVG_NAME, SweepPoint
from llmbatch.bench.time_budget import TimeBudget, time_budget

SERVICES = ("dynamodb", "sqs", "ssm")

#: The report's prose: this package's data file, in blocks (see its first lines).
TEMPLATE = "report_template.md"
_BLOCK = "%% "


def template_blocks(source: str) -> dict[str, str]:
    """``source``'s blocks by name: each from its ``%% name`` line to the next, without the
    blank lines at its end; the text before the first is the file's own notes."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in source.split("\n"):
        if line.startswith(_BLOCK):
            name = line.removeprefix(_BLOCK).strip()
            if name in blocks:
                raise ValueError(f"{TEMPLATE}: block {name!r} twice")
            current = blocks[name] = []
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).rstrip("\n") for name, lines in blocks.items()}


#: Block name -> its text, fields unfilled.
TEXT = template_blocks(resources.files("llmbatch.bench").joinpath(TEMPLATE).read_text(encoding="utf-8"))


def _say(block: str, **fields: Any) -> str:
    """The block's text with ``fields`` filled in (``str.format``)."""
    return TEXT[block].format(**fields)


COLUMNS = (
    "approach",
    "requests",
    "ok",
    "returned",
    "failed",
    "wall s",
    "req/s",
    "ok/s",
    "tokens/s",
    "mean ms",
    "p50 ms",
    "p99 ms",
    "error rate",
    "endpoint util",
    "endpoint max queued",
    "calls limit",
    "429s",
    "DynamoDB/req",
    "SQS/req",
    "SSM/req",
    "CPU ms/req",
    "moto CPU ms/req",
)


@dataclass
class BenchReport:
    scenarios: list[Scenario]
    results: list[RunResult]
    settings: dict[str, Any]
    imports: dict[str, ImportTime] = field(default_factory=dict)
    #: Packages by the self time of their modules in the worker's import, heaviest first.
    heaviest: list[tuple[str, float]] = field(default_factory=list)
    sweep: list[SweepPoint] = field(default_factory=list)
    parallel: list[ParallelRun] = field(default_factory=list)
    packing: list[PackingRun] = field(default_factory=list)
    #: The local stack end to end (``--scenario local-e2e``).
    e2e: list[E2ERun] = field(default_factory=list)
    #: A small job behind a big one, against its time alone (``--e2e-fairness``).
    fairness: list[FairnessRun] = field(default_factory=list)

    def for_scenario(self, name: str) -> dict[str, RunResult]:
        return {r.approach: r for r in self.results if r.scenario == name}


def _row(r: RunResult, label: str | None = None) -> list[str]:
    moto = r.moto_cpu_ms_per_request
    return [
        label or r.approach,
        str(r.requests),
        str(r.outcome.succeeded),
        str(r.outcome.returned),
        str(r.outcome.failed),
        f"{r.wall_s:.2f}",
        f"{r.requests_per_s:.1f}",
        f"{r.succeeded_per_s:.1f}",
        f"{r.tokens_per_s:.0f}",
        f"{r.mean_ms:.0f}",
        f"{r.p50_ms:.0f}",
        f"{r.p99_ms:.0f}",
        f"{r.error_rate:.3f}",
        f"{r.utilisation:.2f}",
        str(int(r.sim.get("max_queued", 0))),
        "-" if r.concurrency_limit is None else str(r.concurrency_limit),
        str(r.rate_limited_429),
        *(f"{r.calls_per_request(s):.3f}" for s in SERVICES),
        f"{r.cpu_ms_per_request:.2f}",
        "n/a" if moto is None else f"{moto:.2f}",
    ]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


RATIO_COLUMNS = ("vs", "throughput (ok/s)", "p99 latency", "AWS calls/req", "DynamoDB writes/req", "CPU ms/req")

_WRITE_OPS = frozenset({"put_item", "transact_write_items", "batch_write_item", "update_item", "delete_item"})


def writes_per_request(r: RunResult) -> float:
    writes = sum(n for op, n in r.aws_calls.get("dynamodb", {}).items() if op in _WRITE_OPS)
    return writes / r.requests if r.requests else 0.0


def _ratio_rows(runs: dict[str, RunResult]) -> list[list[str]]:
    ours = runs.get("ours")
    rows: list[list[str]] = []
    if ours is None:
        return rows
    for name in ("sequential", "gather"):
        base = runs.get(name)
        if base is None:
            continue
        rows.append(
            [
                f"ours / {name}",
                _ratio(ours.succeeded_per_s, base.succeeded_per_s),
                _ratio(ours.p99_ms, base.p99_ms),
                _ratio(ours.calls_per_request(), base.calls_per_request()),
                _ratio(writes_per_request(ours), writes_per_request(base)),
                _ratio(ours.cpu_ms_per_request, base.cpu_ms_per_request),
            ]
        )
    return rows


def _aligned(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def _md_table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _import_rows(report: BenchReport) -> list[list[str]]:
    base = report.imports.get("powertools")
    return [
        [
            name,
            f"`{t.statement}`",
            f"{t.best_s * 1000:.0f}",
            ", ".join(f"{s * 1000:.0f}" for s in t.runs_s),
            _ratio(t.best_s, base.best_s) if base else "n/a",
        ]
        for name, t in report.imports.items()
    ]


IMPORT_COLUMNS = ("handler", "imports", "best ms", "runs ms", "vs bare Powertools")


SWEEP_COLUMNS = (
    "calls per invocation",
    "requests",
    "ok",
    "wall s",
    "ok/s",
    "p50 ms",
    "p99 ms",
    "endpoint util",
    "endpoint max queued",
)


def _sweep_rows(points: Sequence[SweepPoint]) -> list[list[str]]:
    return [
        [
            str(p.concurrency),
            str(p.run.requests),
            str(p.run.outcome.succeeded),
            f"{p.run.wall_s:.2f}",
            f"{p.run.succeeded_per_s:.1f}",
            f"{p.run.p50_ms:.0f}",
            f"{p.run.p99_ms:.0f}",
            f"{p.run.utilisation:.2f}",
            str(int(p.run.sim.get("max_queued", 0))),
        ]
        for p in points
    ]


def _parallel_label(run: ParallelRun, template_batch: Any = None) -> str:
    batches = f", batches of {run.batch_size}" if template_batch and run.batch_size != template_batch else ""
    return f"ours, {run.containers} x {run.per_container}{batches}"


def _one_container(report: BenchReport) -> RunResult | None:
    """The slots32 scenario's run of our worker: one container, the reference."""
    return report.for_scenario("slots32").get("ours")


def _budgets(report: BenchReport) -> list[tuple[str, RunResult, TimeBudget]]:
    """(label, run, budget): the one-container reference, then each several-containers run."""
    runs: list[tuple[str, RunResult]] = [
        (_parallel_label(pr, report.settings.get("batch_size")), pr.run) for pr in report.parallel
    ]
    if (single := _one_container(report)) is not None:
        runs.insert(0, (f"ours, 1 x {single.concurrency_limit}", single))
    return [(label, run, b) for label, run in runs if (b := time_budget(run)) is not None]


BUDGET_COLUMNS = (
    "containers x calls",
    "container s",
    "prepare",
    "running records",
    "finishing writes",
    "outside the worker",
    "idle",
    "wall with no container running records",
    "calls served per container while running records",
    "records phase ms: measured / in whole waves / least",
)


def _budget_rows(budgets: Sequence[tuple[str, RunResult, TimeBudget]]) -> list[list[str]]:
    return [
        [
            label.removeprefix("ours, "),
            f"{b.container_s:.2f}",
            *(f"{b.share(x):.0%}" for x in (b.prepare_s, b.records_s, b.finish_s, b.outside_s, b.idle_s)),
            f"{b.none_running_s / b.wall_s:.0%}" if b.wall_s else "n/a",
            f"{b.served_while_running:.1f} of {b.limit}",
            f"{b.records_s / b.invocations * 1000:.0f} / {b.whole_waves_s * 1000:.0f} / {b.least_records_s * 1000:.0f}",
        ]
        for label, _, b in budgets
    ]


PACKING_COLUMNS = ("inputs per call (cap)", "requests", "calls", "wall s", "req/s")


def _packing_rows(runs: Sequence[PackingRun]) -> list[list[str]]:
    return [[str(r.cap), str(r.requests), str(r.calls), f"{r.wall_s:.2f}", f"{r.requests_per_s:.1f}"] for r in runs]


def _packing_summary(runs: Sequence[PackingRun]) -> str:
    off = next((r for r in runs if r.cap == 1), None)
    on = [r for r in runs if r.cap > 1]
    if off is None or not on:
        return ""
    caps = [
        _say(
            "packing_cap",
            cap=r.cap,
            fewer_calls=_ratio(off.calls, r.calls),
            faster=_ratio(r.requests_per_s, off.requests_per_s),
        )
        for r in on
    ]
    return _say("packing_summary", caps="; ".join(caps))


def text_report(report: BenchReport) -> str:
    lines: list[str] = []
    for sc in report.scenarios:
        runs = report.for_scenario(sc.name)
        if not runs:
            continue
        lines += ["", f"== {sc.name}: {sc.title}"]
        lines += _aligned(COLUMNS, [_row(r) for r in runs.values()])
        ratios = _ratio_rows(runs)
        if ratios:
            lines += ["", *_aligned(RATIO_COLUMNS, ratios)]
    if report.sweep:
        lines += ["", "== ours against model calls per invocation (slots32, one container)"]
        lines += _aligned(SWEEP_COLUMNS, _sweep_rows(report.sweep))
    if report.parallel:
        lines += ["", "== ours in several containers at once (slots32)"]
        rows = [_row(pr.run, _parallel_label(pr, report.settings.get("batch_size"))) for pr in report.parallel]
        lines += _aligned(COLUMNS, rows)
        lines += ["", *_aligned(BUDGET_COLUMNS, _budget_rows(_budgets(report)))]
    if report.packing:
        lines += ["", "== request packing (/v1/embeddings, single-input requests)"]
        lines += _aligned(PACKING_COLUMNS, _packing_rows(report.packing))
        if summary := _packing_summary(report.packing):
            lines.append(summary)
    if report.e2e:
        lines += ["", f"== local-e2e: {e2e_report.TITLE}"]
        lines += _aligned(e2e_report.COLUMNS, e2e_report.rows(report.e2e))
        lines += ["", *e2e_report.targets(report.e2e)]
    lines += e2e_report.fairness_lines(report.fairness)
    if report.imports:
        lines += ["", "== cold-start import time (fresh interpreter, best of runs)"]
        lines += _aligned(IMPORT_COLUMNS, _import_rows(report))
        if report.heaviest:
            lines.append(
                "worker import, self time by package: "
                + ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in report.heaviest[:HEAVIEST_SHOWN])
            )
    return "\n".join(lines) + "\n"


def markdown_report(report: BenchReport, *, now: datetime | None = None) -> str:
    """The whole of ``docs/benchmarks.md``; ``now`` (the run's time) defaults to the clock."""
    s = report.settings
    out = [
        _say(
            "header",
            date=(now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
            python=platform.python_version(),
            machine=platform.machine(),
            cpus=s.get("cpus", "?"),
            command=s.get("command", "llmbatch bench"),
            concurrency=s.get("concurrency"),
            batch_size=s.get("batch_size"),
            sequential_requests=s.get("sequential_requests"),
        ),
        "",
    ]
    for sc in report.scenarios:
        runs = report.for_scenario(sc.name)
        if not runs:
            continue
        out += [_say("scenario", name=sc.name, title=sc.title), ""]
        out += _md_table(COLUMNS, [_row(r) for r in runs.values()])
        ratios = _ratio_rows(runs)
        if ratios:
            out += ["", *_md_table(RATIO_COLUMNS, ratios)]
        out.append("")
    out += _md_sweep(report)
    out += _md_parallel(report)
    out += _md_packing(report)
    if report.imports:
        out += [_say("imports"), ""]
        out += _md_table(IMPORT_COLUMNS, _import_rows(report))
        if report.heaviest:
            packages = ", ".join(f"{p} {sec * 1000:.0f} ms" for p, sec in report.heaviest[:HEAVIEST_SHOWN])
            out += ["", _say("imports_heaviest", packages=packages)]
        out += ["", *_cold_start_notes(report)]
        out.append("")
    out += _targets(report)
    out += e2e_report.markdown(report.e2e, report.fairness)
    out += [_caveats(report), ""]
    return "\n".join(out).rstrip() + "\n"


def _caveats(report: BenchReport, slots: int = 32) -> str:
    """The caveats, with the batches the in-process scenarios ran (the template's BatchSize)."""
    batch = int(report.settings.get("batch_size") or 0)
    if not batch:  # a report without its settings
        return _say("caveats", batch_size="`BatchSize` records", waves="a few waves of calls")
    full, rest = divmod(batch, slots)
    waves = f"{full} full wave{'' if full == 1 else 's'} of calls" if full else ""
    if rest:
        waves += f" and a last one of {rest}" if full else f"one partial wave of {rest} calls"
    return _say("caveats", batch_size=batch, waves=waves)


def splice_e2e_section(existing: str, report: BenchReport) -> str:
    """``existing`` docs with the end-to-end section replaced by this run's."""
    return e2e_report.splice(existing, e2e_report.markdown(report.e2e, report.fairness))


def _md_sweep(report: BenchReport) -> list[str]:
    if not report.sweep:
        return []
    first = report.sweep[0].run
    return [
        _say("sweep", requests=first.requests, chart=SVG_NAME),
        "",
        *_md_table(SWEEP_COLUMNS, _sweep_rows(report.sweep)),
        "",
    ]


def _md_parallel(report: BenchReport) -> list[str]:
    if not report.parallel:
        return []
    rows = [_row(pr.run, _parallel_label(pr, report.settings.get("batch_size"))) for pr in report.parallel]
    single = _one_container(report)
    if single is not None:
        rows.insert(0, _row(single, f"ours, 1 x {single.concurrency_limit}"))
    return [
        _parallel_intro(report),
        "",
        *_md_table(COLUMNS, rows),
        "",
        _say("parallel_budget"),
        "",
        *_md_table(BUDGET_COLUMNS, _budget_rows(_budgets(report))),
        "",
        *_parallel_findings(report),
        "",
    ]


def _parallel_intro(report: BenchReport) -> str:
    """The section's heading and first paragraph: what ran, and what each setting stands for."""
    own = report.settings.get("concurrency")
    slots = int(report.parallel[0].run.sim.get("slots", 0))
    settings = []
    template_batch = report.settings.get("batch_size")
    for pr in report.parallel:
        label = _parallel_label(pr, template_batch).removeprefix("ours, ")
        if template_batch and pr.batch_size != template_batch:
            settings.append(
                _say("parallel_bigger_batch", label=label, template_batch=template_batch, batch_size=pr.batch_size)
            )
        elif pr.per_container == own:
            settings.append(_say("parallel_production", label=label, concurrency=own))
        elif pr.per_container * pr.containers == slots:
            settings.append(_say("parallel_at_the_slots", label=label, slots=slots))
        else:
            settings.append(_say("parallel_other", label=label, per_container=pr.per_container))
    return _say("parallel", containers=report.parallel[0].containers, settings=" ".join(settings))


#: Containers whose invocations end closer than this share of an invocation run "in step".
IN_STEP_SHARE = 0.1


def _step_clause(b: TimeBudget, run: RunResult) -> str:
    if b.ends_apart_s is None or not run.spans:
        return ""
    took = sum(e - s for _, s, e in run.spans) / len(run.spans)
    apart = _say("finding_apart", apart_ms=b.ends_apart_s * 1000, took_ms=took * 1000)
    return _say("finding_in_step" if b.ends_apart_s < IN_STEP_SHARE * took else "finding_out_of_step", apart=apart)


def _parallel_findings(report: BenchReport) -> list[str]:
    """Where each run's endpoint time went, in words, from its time budget."""
    lines = []
    for label, run, b in _budgets(report):
        if not b.wall_s or not b.invocations:
            continue
        lines.append(
            _say(
                "finding",
                label=label.removeprefix("ours, "),
                utilisation=run.utilisation,
                none_running=b.none_running_s / b.wall_s,
                prepare_ms=b.prepare_s / b.invocations * 1000,
                step=_step_clause(b, run),
                served=b.served_while_running,
                lanes=b.lanes,
                limit=b.limit,
                slots=b.slots,
                waves=_waves_sentence(b),
            )
        )
    return lines


def _waves_sentence(b: TimeBudget) -> str:
    n, lanes = b.records_per_invocation, b.lanes
    full, last = int(n // lanes), n - (n // lanes) * lanes
    shape = _say("waves_shape_partial", full=full, last=last) if last else _say("waves_shape_whole", full=full)
    measured = b.records_s / b.invocations
    return _say(
        "waves",
        measured_ms=measured * 1000,
        records=n,
        waves=b.waves,
        lanes=lanes,
        shape=shape,
        whole_waves_ms=b.whole_waves_s * 1000,
        call_ms=b.mean_call_s * 1000,
        least_ms=b.least_records_s * 1000,
        in_the_last_wave=_say("waves_in_the_last_wave") if last else "",
        remaining_ms=max(0.0, measured - b.whole_waves_s) * 1000,
    )


def _md_packing(report: BenchReport) -> list[str]:
    if not report.packing:
        return []
    return [
        _say(
            "packing",
            concurrency=PACKING_CONCURRENCY,
            slots=PACKING_SIM["slots"],
            call_ms=PACKING_SIM["base_latency_s"] * 1000,
            token_ms=PACKING_SIM["per_prompt_token_s"] * 1000,
        ),
        "",
        *_md_table(PACKING_COLUMNS, _packing_rows(report.packing)),
        "",
        _packing_summary(report.packing),
        "",
    ]


#: Packages named in "where the worker's import time goes".
HEAVIEST_SHOWN = 6
#: Imported by aiobotocore when installed (its optional httpx backend); here it comes with the
#: demo's packages (openai, llm), and the Lambda layer (shared/requirements.txt) lacks it.
NOT_IN_LAYER = "httpx2"


def _cold_start_notes(report: BenchReport) -> list[str]:
    by_package = dict(report.heaviest)
    notes = [_say("cold_start_lazy")]
    if NOT_IN_LAYER in by_package:
        notes.append(_say("cold_start_not_in_layer", package=NOT_IN_LAYER, ms=by_package[NOT_IN_LAYER] * 1000))
    return [" ".join(notes)]


def _targets(report: BenchReport) -> list[str]:
    """Issue 5's targets, against this run's figures."""
    lines = [_say("targets"), ""]
    slots = report.for_scenario("slots32")
    if "ours" in slots:
        ours = slots["ours"]
        several = "".join(
            _say(
                "target_utilisation_several",
                utilisation=pr.run.utilisation,
                containers=pr.containers,
                per_container=pr.per_container,
                batches=_say("target_utilisation_batches", batch_size=pr.batch_size)
                if pr.batch_size != report.settings.get("batch_size")
                else "",
            )
            for pr in report.parallel
        )
        if several:
            several += _say("target_utilisation_see_several")
        lines.append(_say("target_utilisation", utilisation=ours.utilisation, several=several))
        if "sequential" in slots:
            seq = slots["sequential"]
            ratio = ours.succeeded_per_s / seq.succeeded_per_s if seq.succeeded_per_s else 0.0
            lines.append(_say("target_sequential", ratio=ratio))
    rpm = report.for_scenario("rpm")
    if "ours" in rpm:
        ours = rpm["ours"]
        limit = next((sc.simulator.get("rpm_limit") for sc in report.scenarios if sc.name == "rpm"), None)
        share = ours.rate_limited_429 / ours.endpoint_calls if ours.endpoint_calls else 0.0
        allowed = (limit / 60.0) if limit else 0.0
        lines.append(
            _say(
                "target_rpm",
                steady=ours.steady_succeeded_per_s / allowed,
                whole=ours.succeeded_per_s / allowed,
                share_429=share,
            )
            if allowed
            else _say("target_rpm_unknown")
        )
    adaptive = report.for_scenario("adaptive")
    if "ours" in adaptive:
        ours = adaptive["ours"]
        lines.append(
            _say(
                "target_adaptive",
                slots=int(ours.sim.get("slots", 0)),
                limit=ours.concurrency_limit,
                ceiling=ADAPTIVE_CEILING,
                max_queued=int(ours.sim.get("max_queued", 0)),
                utilisation=ours.utilisation,
            )
        )
    for name, runs in ((sc.name, report.for_scenario(sc.name)) for sc in report.scenarios):
        if "ours" in runs:
            ours = runs["ours"]
            lines.append(
                _say(
                    "target_writes",
                    scenario=name,
                    writes=writes_per_request(ours),
                    sqs=ours.calls_per_request("sqs"),
                )
            )
    return [*lines, ""]
