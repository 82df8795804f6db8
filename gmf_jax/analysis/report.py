"""A report folder for a sweep, an ensemble or any folder of runs.

    <out>/report.md          the groups table, the best setting with its interval, every group
                             against the best (Holm-corrected), runs that failed, crashed, are
                             running or were preempted, and the figures
    <out>/groups.csv         `summarize`'s table
    <out>/comparisons.csv    `compare_groups`' table
    <out>/*.png              learning curves, the metric against each swept key, a heatmap for
                             a two-key grid, and each diagnostic's scalars over training

`python -m analyze.report runs/<sweep>` is the command line.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
from collections.abc import Sequence

import pandas as pd

from gmf_jax.analysis import stats
from gmf_jax.analysis.loading import load_metrics, load_runs

# The eval metric that says how good a run is, per loss (the report's default).
MAIN_METRICS = {"cross_entropy": "eval/accuracy", "elbo": "eval/nelbo",
                "reconstruction": "eval/loss"}


@dataclasses.dataclass
class Report:
  """What `write_report` wrote."""

  folder: str
  markdown: str  # the path of report.md
  groups_csv: str
  comparisons_csv: str
  figures: list[str]  # PNG paths
  metric: str
  metric_reason: str  # how the metric was chosen
  groups: pd.DataFrame
  comparisons: pd.DataFrame

  @property
  def text(self) -> str:
    with open(self.markdown) as f:
      return f.read()


def main_metric(runs: pd.DataFrame) -> tuple[str, str]:
  """The metric a report uses without `--metric`, and why (for the report to say).

  The loss's main eval metric (`eval/accuracy` for cross-entropy, `eval/nelbo` for the ELBO,
  `eval/loss` for reconstruction); else the runs' `checkpoint.best_metric`; else the first
  eval metric they logged.
  """
  finals = {c[len("final."):] for c in runs.columns if c.startswith("final.")}
  if not finals:
    raise ValueError("these runs have no metrics yet (no summary.json or metrics.csv rows)")
  losses = runs.get("config.loss.name", pd.Series(dtype=object)).dropna().unique()
  if len(losses) == 1 and MAIN_METRICS.get(losses[0]) in finals:
    return MAIN_METRICS[losses[0]], f"the main eval metric of loss.name={losses[0]}"
  best = runs.get("config.checkpoint.best_metric", pd.Series(dtype=object)).dropna().unique()
  if len(best) == 1 and best[0] in finals:
    return best[0], f"checkpoint.best_metric={best[0]}"
  evals = sorted(m for m in finals if m.startswith("eval/"))
  chosen = evals[0] if evals else sorted(finals)[0]
  return chosen, "the first eval metric logged"


def write_report(path: str | os.PathLike, *, metric: str | None = None,
                 out: str | os.PathLike | None = None, stat: str = "final",
                 by: str | Sequence[str] | None = None, seed: int = 0) -> Report:
  """Writes a report of the runs at or below `path`.

  Args:
    path: a sweep folder, an ensemble, or any folder of runs.
    metric: the metric to judge settings by; None picks the loss's main eval metric
      (`main_metric`) and the report says so.
    out: the report folder (default `<path>/report`).
    stat: what one run contributes (`final`, `best`, `min`, `max`, `auc`).
    by: the config keys to group by (default: the keys that differ between runs).
    seed: of the bootstrap resampling.

  Returns:
    A `Report` with the paths written and the tables.
  """
  from gmf_jax.analysis import plots
  from gmf_jax.runlog.plots import save_png

  path = os.path.abspath(os.fspath(path))
  runs = load_runs(path)
  if runs.empty:
    raise ValueError(f"no run folders at or below {path}")
  if metric is None:
    metric, reason = main_metric(runs)
  else:
    reason = "chosen with --metric"
    if f"final.{metric}" not in runs.columns:
      known = sorted(c[len("final."):] for c in runs.columns if c.startswith("final."))
      raise ValueError(f"--metric={metric} is not a metric of these runs; metrics: "
                       f"{', '.join(known)}")
  out = os.path.abspath(os.fspath(out)) if out is not None else os.path.join(path, "report")
  os.makedirs(out, exist_ok=True)
  completed = runs[runs["status"] == "completed"]
  metrics = load_metrics(completed) if not completed.empty else None
  if completed.empty:
    groups = pd.DataFrame()
    comparisons = pd.DataFrame()
  else:
    groups = stats.summarize(runs, metric, by, stat, metrics=metrics, seed=seed)
    comparisons = (stats.compare_groups(runs, metric, None, stat=stat, by=by, metrics=metrics,
                                        seed=seed)
                   if len(groups) > 1 else pd.DataFrame())
  groups_csv = os.path.join(out, "groups.csv")
  comparisons_csv = os.path.join(out, "comparisons.csv")
  groups.to_csv(groups_csv, index=False)
  comparisons.to_csv(comparisons_csv, index=False)

  figures: list[tuple[str, str]] = []  # (caption, file name)
  if metrics is not None and not metrics.empty:
    keys = groups.attrs.get("keys", [])

    def add(fig, name, caption):
      save_png(fig, os.path.join(out, name))
      figures.append((caption, name))

    names = set(map(str, metrics["name"].unique()))
    if metric in names:
      curves = stats.curve_stats(metrics, runs, metric, by=keys)
      add(plots.plot_curves(curves, title=metric), "curves.png",
          f"{metric} over training, mean and 95% band per group")
    train = "train/loss"
    if train in names and train != metric:
      add(plots.plot_curves(stats.curve_stats(metrics, runs, train, by=keys), title=train),
          "train_loss.png", "train/loss over training per group")
    numeric = [k for k in keys if _numeric(groups[k])]
    for key in numeric:
      add(plots.plot_vs_param(groups, key, title=f"{metric} against {key[7:]}"),
          f"vs_{_file_safe(key[7:])}.png", f"{metric} ({stat}) against {key[7:]}, mean and "
          "95% bootstrap interval")
    if len(keys) == 2:
      add(plots.plot_heatmap(groups, keys[0], keys[1], title=metric), "heatmap.png",
          f"mean {metric} ({stat}) over the {keys[0][7:]} x {keys[1][7:]} grid")
    for diagnostic in sorted({n.split("/")[1] for n in names if n.startswith("diag/")}):
      top = [n for n in names if n.startswith(f"diag/{diagnostic}/") and n.count("/") == 2]
      # A diagnostic logged once (at the end) has no curve to draw.
      if top and metrics[metrics["name"].isin(top)]["step"].nunique() > 1:
        add(plots.plot_diagnostic(metrics, runs, diagnostic, by=keys),
            f"diag_{_file_safe(diagnostic)}.png", f"diagnostic {diagnostic} over training")
  text = _markdown(path, runs, metric, reason, stat, groups, comparisons, figures)
  markdown = os.path.join(out, "report.md")
  with open(f"{markdown}.tmp", "w") as f:
    f.write(text)
  os.replace(f"{markdown}.tmp", markdown)
  return Report(folder=out, markdown=markdown, groups_csv=groups_csv,
                comparisons_csv=comparisons_csv,
                figures=[os.path.join(out, name) for _, name in figures], metric=metric,
                metric_reason=reason, groups=groups, comparisons=comparisons)


def _numeric(column: pd.Series) -> bool:
  values = column.dropna()
  return values.nunique() > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in values)


def _text(*values) -> str:
  """The first non-empty string of `values` (pandas holds a JSON null as None or NaN)."""
  return next((v for v in values if isinstance(v, str) and v), "")


def _file_safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


def _num(value: float, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def _markdown(path, runs, metric, reason, stat, groups, comparisons, figures) -> str:
  counts = runs["status"].value_counts()
  sweeps = sorted(set(runs["sweep"].dropna()))
  title = sweeps[0] if len(sweeps) == 1 else os.path.basename(path)
  higher = stats.higher_is_better(metric)
  now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
  parts = [f"# Report: {title}", "",
           f"{len(runs)} runs in `{path}` ("
           + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"), written {now}.", "",
           f"Metric: **{metric}**, the {stat} value of each run "
           f"({'higher' if higher else 'lower'} is better): {reason}.",
           "Statistics use completed runs only; intervals are 95% bootstrap intervals of the "
           "mean (scipy's BCa), seeded, so the report is reproducible.", ""]
  if groups.empty:
    parts += ["No completed runs yet: nothing to summarise.", ""]
  else:
    keys = groups.attrs.get("keys", [])
    best = groups.iloc[0]
    parts += ["## Best setting", "",
              f"**{best['group']}**: mean {_num(best['mean'], 6)}, 95% CI "
              f"[{_num(best['ci_low'], 6)}, {_num(best['ci_high'], 6)}] over {best['n']} "
              f"run(s).", ""]
    parts += ["## Groups", "", _table(
        [k[len("config."):] for k in keys] + ["n", "mean", "std", "sem", "95% CI", "median",
                                               "IQM", "no value"],
        [[stats._format(row[k]) for k in keys]
         + [str(row["n"]), _num(row["mean"], 6), _num(row["std"]), _num(row["sem"]),
            f"[{_num(row['ci_low'], 6)}, {_num(row['ci_high'], 6)}]", _num(row["median"], 6),
            _num(row["iqm"], 6), str(row["n_missing"])] for _, row in groups.iterrows()]), ""]
    if not comparisons.empty:
      parts += [f"## Against the best ({comparisons.attrs['baseline']})", "",
                "Difference = group - best. p-values are Holm-corrected over the "
                f"{len(comparisons)} comparisons: t-test (paired on shared seeds, else "
                "Welch's) and rank test (Wilcoxon, else Mann-Whitney U).", "",
                _table(["group", "n", "difference", "95% CI", "p (t, Holm)", "p (rank, Holm)",
                        "Hedges' g", "P(better than best)", "verdict"],
                       [[row["group"], str(row["n"]), _num(row["difference"]),
                         f"[{_num(row['ci_low'])}, {_num(row['ci_high'])}]",
                         _num(row["pvalue_holm"], 3), _num(row["pvalue_rank_holm"], 3),
                         _num(row["hedges_g"], 3), _num(row["prob_improvement"], 3),
                         row["verdict"]] for _, row in comparisons.iterrows()]), ""]
      notes = sorted({w for ws in comparisons["warnings"] for w in ws.split("; ") if w})
      if notes:
        parts += ["Warnings:", ""] + [f"- {w}" for w in notes] + [""]
  others = runs[runs["status"] != "completed"]
  if not others.empty:
    parts += ["## Runs not completed", "",
              "Left out of the statistics. Rerun the sweep command to resume preempted and "
              "crashed members (`--retry-failed` for failed ones).", "",
              _table(["run", "status", "last step", "error or problem"],
                     [[row["name"], row["status"],
                       "-" if pd.isna(row["last_step"]) else str(row["last_step"]),
                       _text(row["error"], row["problems"])[:200]]
                      for _, row in others.sort_values(["status", "name"]).iterrows()]), ""]
  problems = runs[(runs["status"] == "completed") & (runs["problems"] != "")]
  if not problems.empty:
    parts += ["## Half-written records", ""] + [
        f"- `{row['name']}`: {row['problems']}" for _, row in problems.iterrows()] + [""]
  if figures:
    parts += ["## Figures", ""]
    for caption, name in figures:
      parts += [f"![{caption}]({name})", "", f"*{caption}*", ""]
  parts += ["Files: `groups.csv` (the groups table), `comparisons.csv` (against the best).", ""]
  return "\n".join(parts)
