"""Analysis of completed runs: tables of runs and metrics, statistics over seeds, reports.

    from gmf_jax import analysis
    runs = analysis.load_runs("runs/vae_lr_beta")           # one row per run
    analysis.summarize(runs, "eval/nelbo")                   # per setting: mean, CI, IQM...
    print(analysis.compare(runs, "eval/nelbo", {"loss.beta": 1.0}, {"loss.beta": 2.0}))
    analysis.seeds_needed(a_values, b_values)               # seeds per group for 80% power
    metrics = analysis.load_metrics(runs, names=["eval/nelbo"])
    fig = analysis.plots.plot_curves(analysis.curve_stats(metrics, runs, "eval/nelbo"))
    analysis.write_report("runs/vae_lr_beta")                # report.md, groups.csv, PNGs

Everything is read from the run folders' files; nothing of a run's code is imported or run.
"""

from gmf_jax.analysis.loading import find_runs, load_diagnostics, load_metrics, load_runs
from gmf_jax.analysis.power import seeds_needed
from gmf_jax.analysis.similarity import linear_cka
from gmf_jax.analysis.stats import (
    Comparison,
    best_group,
    cohort_keys,
    compare,
    compare_groups,
    curve_stats,
    group_keys,
    higher_is_better,
    holm,
    split_cohorts,
    summarize,
)

_LAZY = {"plots": "gmf_jax.analysis.plots", "write_report": "gmf_jax.analysis.report",
         "Report": "gmf_jax.analysis.report", "main_metric": "gmf_jax.analysis.report"}


def __getattr__(name: str):
  if name in _LAZY:
    import importlib

    module = importlib.import_module(_LAZY[name])
    value = module if name == "plots" else getattr(module, name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'gmf_jax.analysis' has no attribute {name!r}")


__all__ = ["Comparison", "Report", "best_group", "cohort_keys", "compare", "compare_groups",
           "curve_stats", "find_runs", "group_keys", "higher_is_better", "holm",
           "linear_cka", "load_diagnostics", "load_metrics", "load_runs", "main_metric", "plots",
           "seeds_needed", "split_cohorts", "summarize", "write_report"]
