"""Operator comparison studies (`factorconv compare`): every operator of a spec trained on one backbone and
recipe at the width that meets each budget, over paired seeds, with statistics, run health, latency of the
deploy forms, the Pareto front and a report.

One concept per module: `spec` (what a study is, budgets, width matching), `execution` (running one run
anywhere, the executor interface and the local executor), `cluster` (Ray and submitit executors), `lock` (one
driver per study directory), `runner` (plan, execute, measure, report), `stats` (summaries, paired
differences, verdicts), `front` (Pareto front and its steps), `latency`, `report` (rows, table, report.md)
and `plot`.

A study directory holds `study.json` (the spec and the widths chosen), `runs/<conv>/w<width>/seed<k>/`
(ordinary training run directories), `latency.json`, `results.json`, `report.md` and `study.png`; running
the same study again skips every finished run and resumes an interrupted one from its checkpoint.
"""

from .execution import Executor, LocalExecutor, RunTask, StudyError, execute_run
from .executors import EXECUTORS, create_executor
from .front import front_steps, pareto_front
from .report import build_report, render_table, summarize_text
from .runner import plan_runs, run_study
from .spec import (
    DEFAULT_BUDGET,
    DEFAULT_CONV_KWARGS,
    DEFAULT_CONVS,
    DEFAULT_PRESET,
    DEFAULT_SEEDS,
    Budget,
    Entry,
    StudySpec,
    match_widths,
    operator_of,
    parse_budgets,
    parse_count,
)
from .stats import Summary, paired_difference, summarize, t_quantile, verdict, welch_difference

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_CONVS",
    "DEFAULT_CONV_KWARGS",
    "DEFAULT_PRESET",
    "DEFAULT_SEEDS",
    "EXECUTORS",
    "Budget",
    "Entry",
    "Executor",
    "LocalExecutor",
    "RunTask",
    "StudyError",
    "StudySpec",
    "Summary",
    "build_report",
    "create_executor",
    "execute_run",
    "front_steps",
    "match_widths",
    "operator_of",
    "paired_difference",
    "pareto_front",
    "parse_budgets",
    "parse_count",
    "plan_runs",
    "render_table",
    "run_study",
    "summarize",
    "summarize_text",
    "t_quantile",
    "verdict",
    "welch_difference",
]
