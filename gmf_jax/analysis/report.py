"""A report folder for a sweep, an ensemble or any folder of runs.

    <out>/report.md          the groups table, the best setting with its interval (never a
                             group of one run; one per dataset and loss), every group against
                             the best (Holm-corrected; where no difference is clear, about how
                             many seeds per group would detect it), runs that failed, crashed,
                             are running or were preempted, and the figures
    <out>/groups.csv         `summarize`'s table
    <out>/comparisons.csv    `compare_groups`' tables, each row naming its `baseline`
    <out>/*.png              learning curves, the metric against each swept key, a heatmap for
                             a two-key grid, and every run's curves with each group's mean (of
                             its metrics, and of each diagnostic's summary scalars)

`python -m analyze.report runs/<sweep>` is the command line.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Sequence

import pandas as pd

from gmf_jax.analysis import across, stats
from gmf_jax.analysis.loading import load_metrics, load_runs
from gmf_jax.runlog.files import read_json

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
  comparisons: pd.DataFrame  # compare_groups' tables, one per part, with a `baseline` column
  # The best group of each part (runs of one dataset and loss): never a group of one run, so
  # empty when no group has two runs with a value.
  best: list[str] = dataclasses.field(default_factory=list)

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
    metric: the metric to judge settings by; None picks the sweep's `metric` where its
      definition has one, else the loss's main eval metric (`main_metric`), and the report
      says which.
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
  swept = _sweep_metric(path)
  if metric is None and swept is not None and f"final.{swept}" in runs.columns:
    metric, reason = swept, "the sweep's `metric` (sweep.json)"
  elif metric is None:
    metric, reason = main_metric(runs)
  else:
    reason = "chosen with --metric"
    if f"final.{metric}" not in runs.columns:
      known = sorted(c[len("final."):] for c in runs.columns if c.startswith("final."))
      raise ValueError(f"--metric={metric} is not a metric of these runs; metrics: "
                       f"{', '.join(known)}")
  out = _report_folder(path, out)
  completed = runs[runs["status"] == "completed"]
  metrics = load_metrics(completed) if not completed.empty else None
  if completed.empty:
    groups = pd.DataFrame()
    parts = []
  else:
    groups = stats.summarize(runs, metric, by, stat, metrics=metrics, seed=seed)
    parts = _parts(runs, metric, stat, metrics, seed, groups)
  comparisons = _comparisons(parts)
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
          f"vs_{plots.file_safe(key[7:])}.png", f"{metric} ({stat}) against {key[7:]}, mean and "
          "95% bootstrap interval")
    if len(keys) == 2:
      add(plots.plot_heatmap(groups, keys[0], keys[1], title=metric), "heatmap.png",
          f"mean {metric} ({stat}) over the {keys[0][7:]} x {keys[1][7:]} grid")
    # Every run's curves and each group's mean, as a sweep draws them in its plots/ folder.
    for named in plots.population_figures(metrics, runs, by=keys):
      add(named.figure, named.file, named.caption)
  pbt = _pbt_tree(path)
  if pbt is not None:
    events, initial, num_steps = pbt
    save_png(plots.plot_pbt_lineage(events, initial, num_steps),
             os.path.join(out, "pbt_lineage.png"))
    figures.append(("PBT: each explored hyperparameter over steps, every member a line in "
                    "its colour; a copy is dashed, from the source's value to the copying "
                    "member's new one", "pbt_lineage.png"))
  text = _markdown(path, runs, metric, reason, stat, groups, parts, figures,
                   pbt=None if pbt is None else pbt[0])
  text += across.markdown_section(path, out)  # diagnostics across members, where any ran
  text += _seed_rounds(path)
  markdown = os.path.join(out, "report.md")
  with open(f"{markdown}.tmp", "w") as f:
    f.write(text)
  os.replace(f"{markdown}.tmp", markdown)
  return Report(folder=out, markdown=markdown, groups_csv=groups_csv,
                comparisons_csv=comparisons_csv,
                figures=[os.path.join(out, name) for _, name in figures], metric=metric,
                metric_reason=reason, groups=groups, comparisons=comparisons,
                best=[p.best["group"] for p in parts if p.best is not None])


def _sweep_metric(path: str) -> str | None:
  """The metric a sweep at `path` judges its members by (its definition's `metric`), if any."""
  sweep_json = os.path.join(path, "sweep.json")
  if not os.path.exists(sweep_json):
    return None
  try:
    return (read_json(sweep_json).get("definition", {}).get("metric") or {}).get("name")
  except (OSError, ValueError):
    return None


def _pbt_tree(path: str):
  """(events, each member's initial values, num_steps) of a PBT sweep at `path`, from its
  sweep.json and its members' lineage.json; None for anything else."""
  sweep_json = os.path.join(path, "sweep.json")
  if not os.path.exists(sweep_json):
    return None
  data = read_json(sweep_json)
  if "pbt" not in data.get("definition", {}):
    return None
  initial, num_steps = {}, 0
  for m in data.get("members", []):
    lineage = os.path.join(path, m["name"], "lineage.json")
    if os.path.exists(lineage):
      initial[m["name"]] = read_json(lineage)["initial"]
      config = os.path.join(path, m["name"], "config.json")
      num_steps = max(num_steps, read_json(config).get("num_steps", 0))
  if not initial:
    return None
  return data.get("pbt", {}).get("events", []), initial, num_steps


def _seed_rounds(path: str) -> str:
  """The seed rounds' section of a sweep at `path` that ran them (`sweep.json`'s `seed_rounds`,
  see `gmf_jax.sweep.seed_rounds`): each point's seeds, mean, interval and why it stopped, and
  what each round added; "" for anything else."""
  sweep_json = os.path.join(path, "sweep.json")
  try:
    section = read_json(sweep_json).get("seed_rounds") if os.path.exists(sweep_json) else None
  except (OSError, ValueError):
    return ""
  if not section:
    return ""
  rule, rounds = section["rule"], section["rounds"]
  points = list(dict.fromkeys(label for r in rounds for label in r["seeds"]))
  latest = section.get("points", {})
  going = {label: r["round"] for r in rounds if "after" not in r for label in r["seeds"]}
  rows = []
  for label in points:
    state = latest.get(label)
    if label in going or state is None:
      why = f"round {going.get(label, 0)} not yet judged"
    else:
      why = state["stopped"] or "going on"
    rows.append([label, str(state["seeds"]) if state else "-", _num(state and state["mean"], 6),
                 _num(state and state["half_width"]), why])
  lines = ["", "## Seed rounds", "",
           f"Each point trained {rule['min']} seeds, then, in rounds, as many more as it had "
           f"(at most {rule['max']}) until the 95% Student t interval of its mean final "
           f"{section['metric']['name']} had a half-width <= {rule['ci_half_width']:g} (the "
           "groups table's intervals are bootstrap intervals; this rule uses the t interval). "
           "The record is `sweep.json`'s `seed_rounds`.", "",
           _table(["point", "seeds", "mean", "half-width", "why it stopped"], rows), "",
           _table(["round", "points given seeds", "seeds added"],
                  [[str(r["round"]), ", ".join(r["seeds"]),
                    str(sum(len(s) for s in r["seeds"].values()))] for r in rounds]), ""]
  return "\n".join(lines) + "\n"


def _report_folder(path: str, out: str | os.PathLike | None) -> str:
  """The report folder, made if missing; a path that cannot be one fails in one clear line."""
  folder = os.path.abspath(os.fspath(out)) if out is not None else os.path.join(path, "report")
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise ValueError(f"the report folder {folder} is a file, not a folder: pass --out=DIR "
                     "(out= in Python) naming a new or existing folder, or move the file away")
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:  # a file on the way, no permission, a read-only disk
    raise ValueError(f"cannot make the report folder {folder}: {e.strerror or e}: pass "
                     "--out=DIR (out= in Python) naming a folder you can write") from None
  return folder


@dataclasses.dataclass
class _Part:
  """The groups of runs with one dataset and loss, which can be ranked against each other."""

  label: str  # e.g. "data.name=moons"; "" when all the runs share their dataset and loss
  groups: pd.DataFrame  # its rows of summarize's table, best first
  best: pd.Series | None  # `stats.best_group`: None when no group has two runs with a value
  comparisons: pd.DataFrame  # every other group of the part against the best
  not_compared: dict[str, str]  # groups of the part left out of the comparisons, and why


def _parts(runs, metric, stat, metrics, seed, groups) -> list[_Part]:
  parts = []
  for label, rows in stats.split_cohorts(groups):
    best = stats.best_group(rows)
    comparisons, not_compared = pd.DataFrame(), {}
    if best is not None and len(rows) > 1:
      comparisons = stats.compare_groups(runs, metric, best["group"], stat=stat,
                                         by=groups.attrs["keys"], metrics=metrics, seed=seed)
      mine = set(rows["group"])
      not_compared = {g: why for g, why in comparisons.attrs["not_compared"].items()
                      if g in mine}
    parts.append(_Part(label, rows, best, comparisons, not_compared))
  return parts


def _comparisons(parts: list[_Part]) -> pd.DataFrame:
  """The parts' comparisons in one table, each row naming its baseline."""
  tables = [p.comparisons.assign(baseline=p.best["group"]) for p in parts
            if not p.comparisons.empty]
  if not tables:
    return pd.DataFrame()
  table = pd.concat(tables, ignore_index=True)
  return table[["baseline", *[c for c in table.columns if c != "baseline"]]]


def _numeric(column: pd.Series) -> bool:
  values = column.dropna()
  return values.nunique() > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in values)


def _text(*values) -> str:
  """The first non-empty string of `values` (pandas holds a JSON null as None or NaN)."""
  return next((v for v in values if isinstance(v, str) and v), "")


def _num(value: float, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def _markdown(path, runs, metric, reason, stat, groups, parts, figures, pbt=None) -> str:
  counts = runs["status"].value_counts()
  sweeps = sorted(set(runs["sweep"].dropna()))
  title = sweeps[0] if len(sweeps) == 1 else os.path.basename(path)
  higher = stats.higher_is_better(metric)
  now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
  lines = [f"# Report: {title}", "",
           f"{len(runs)} run{'s' * (len(runs) != 1)} in `{path}` ("
           + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"), written {now}.", "",
           f"Metric: **{metric}**, the {stat} value of each run "
           f"({'higher' if higher else 'lower'} is better): {reason}.",
           "Statistics use completed runs only; intervals are 95% bootstrap intervals of the "
           "mean (scipy's BCa), seeded, so the report is reproducible. A group of one run has "
           "no interval, and is never named the best.", ""]
  if groups.empty:
    lines += ["No completed runs yet: nothing to summarise.", ""]
  else:
    if len(parts) > 1:
      lines += ["These runs have different datasets or losses ("
                + "; ".join(f"**{p.label}**" for p in parts) + f"), on which {metric} "
                "measures different things: each is ranked on its own, never against "
                "another.", ""]
    for part in parts:
      lines += _ranking(part, metric)
    keys = groups.attrs.get("keys", [])
    lines += ["## Groups", "", _table(
        [k[len("config."):] for k in keys] + ["n", "mean", "std", "sem", "95% CI", "median",
                                               "IQM", "no value"],
        [[stats._format(row[k]) for k in keys]
         + [str(row["n"]), _num(row["mean"], 6), _num(row["std"]), _num(row["sem"]),
            _interval(row["ci_low"], row["ci_high"], row["n"], 6), _num(row["median"], 6),
            _num(row["iqm"], 6), str(row["n_missing"])] for _, row in groups.iterrows()]), ""]
    for part in parts:
      lines += _against_best(part)
  if pbt is not None:
    receivers = sorted({e["member"] for e in pbt})
    lines += ["## Population-based training", "",
              f"{len(pbt)} copies at {len({e['step'] for e in pbt})} steps; "
              f"{len(receivers)} members copied another at least once. Each member's "
              "`lineage.json` lists its copies, `sweep.json`'s `pbt.events` the whole family "
              "tree, and its `metrics.csv` the values in use (`hparams/<key>`). "
              "`python -m gmf_jax.sweep --replay=<sweep>/<member>` trains one run that follows "
              "a member's history from step 0.", ""]
  stopped = runs[runs["status"] == "stopped"]
  if not stopped.empty:
    lines += ["## Members stopped early", "",
              "The sweep's early termination ended them at a rung (see `sweep.json`'s "
              "`early_terminate`); left out of the statistics, which compare runs trained to "
              "the end.", "",
              _table(["run", "last step", "why"],
                     [[row["name"],
                       "-" if pd.isna(row["last_step"]) else str(row["last_step"]),
                       _text(row["error"], "")[:200]]
                      for _, row in stopped.sort_values("name").iterrows()]), ""]
  others = runs[~runs["status"].isin(["completed", "stopped"])]
  if not others.empty:
    lines += ["## Runs not completed", "",
              "Left out of the statistics. Rerun the sweep command to resume preempted and "
              "crashed members (`--retry-failed` for failed ones).", "",
              _table(["run", "status", "last step", "error or problem"],
                     [[row["name"], row["status"],
                       "-" if pd.isna(row["last_step"]) else str(row["last_step"]),
                       _text(row["error"], row["problems"])[:200]]
                      for _, row in others.sort_values(["status", "name"]).iterrows()]), ""]
  problems = runs[(runs["status"] == "completed") & (runs["problems"] != "")]
  if not problems.empty:
    lines += ["## Half-written records", ""] + [
        f"- `{row['name']}`: {row['problems']}" for _, row in problems.iterrows()] + [""]
  if figures:
    lines += ["## Figures", ""]
    for caption, name in figures:
      lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
  lines += ["Files: `groups.csv` (the groups table), `comparisons.csv` (against the best).", ""]
  return "\n".join(lines)


def _ranking(part: _Part, metric: str) -> list[str]:
  """The part's best setting, or why none is named."""
  heading = f"## Best setting: {part.label}" if part.label else "## Best setting"
  rows, best = part.groups, part.best
  if best is None:
    return [heading, "", _no_best(rows, metric), ""]
  lines = [f"**{best['group']}**: mean {_num(best['mean'], 6)}, 95% CI "
           f"{_interval(best['ci_low'], best['ci_high'], best['n'], 6)} over {best['n']} runs."]
  ones, none = int((rows["n"] == 1).sum()), int((rows["n"] == 0).sum())
  if ones:
    lines.append(f"{ones} group(s) of one run are not ranked: one run has no interval.")
  if none:
    lines.append(f"{none} group(s) have no finite {metric} (not logged, or every run "
                 "diverged).")
  return [heading, "", " ".join(lines), ""]


def _no_best(rows: pd.DataFrame, metric: str) -> str:
  more = ("Run more seeds (`--config.num_seeds=5`, or `seeds` in a sweep) for intervals and a "
          "best setting.")
  if not (rows["n"] > 0).any():
    return f"No best setting: no completed run has a finite {metric}."
  if len(rows) == 1:
    return ("No best setting: one run, and one run has no interval (no spread to tell luck "
            f"from a difference), nor anything to be compared with. {more}")
  return ("No best setting: no group has two runs with a value, and one run has no interval "
          f"(no spread to tell luck from a difference). {more}")


def _against_best(part: _Part) -> list[str]:
  """Every other group of the part against its best, and the warnings that came with them."""
  lines = []
  comparisons = part.comparisons
  if not comparisons.empty:
    lines += [f"## Against the best ({comparisons.attrs['baseline']})", "",
              "Difference = group - best. p-values are Holm-corrected over the "
              f"{len(comparisons)} comparisons: t-test (paired on shared seeds, else "
              "Welch's) and rank test (Wilcoxon, else Mann-Whitney U).", "",
              _table(["group", "n", "difference", "95% CI", "p (t, Holm)", "p (rank, Holm)",
                      "Hedges' g", "P(better than best)", "verdict"],
                     [[row["group"], str(row["n"]), _num(row["difference"]),
                       _interval(row["ci_low"], row["ci_high"], row["n"]),
                       _num(row["pvalue_holm"], 3), _num(row["pvalue_rank_holm"], 3),
                       _num(row["hedges_g"], 3), _num(row["prob_improvement"], 3),
                       row["verdict"]] for _, row in comparisons.iterrows()]), ""]
    lines += _seeds_needed(comparisons)
    notes = sorted({w for ws in comparisons["warnings"] for w in ws.split("; ") if w})
    if notes:
      lines += ["Warnings:", ""] + [f"- {w}" for w in notes] + [""]
  if part.not_compared:
    lines += ["Not compared with the best:", ""] + [
        f"- {group}: {why}" for group, why in part.not_compared.items()] + [""]
  return lines


def _seeds_needed(comparisons: pd.DataFrame) -> list[str]:
  """For each group whose difference from the best is not clear, the seeds per group that
  would detect it (`compare_groups`' `seeds_needed`), at the level it was sized at."""
  sized = comparisons[comparisons["seeds_needed"].notna()]
  if sized.empty:
    return []
  level, tested = comparisons.attrs["seeds_alpha"], int(comparisons["pvalue"].notna().sum())
  where = f"a t-test at p < {level:.3g}" + (
      f", below which Holm's correction over the {tested} comparisons always rejects"
      if tested > 1 else "")
  lines = [f"Where no difference is clear ({where}):", ""]
  for _, row in sized.iterrows():
    statement = stats._seeds_statement(int(row["seeds_needed"]), _num(row["difference"]))
    lines.append(f"- {row['group']}: {statement}")
  return lines + [""]


def _interval(low: float, high: float, n: int, digits: int = 4) -> str:
  """ "[low, high]", or what stands in for an interval there is not."""
  if math.isfinite(low) and math.isfinite(high):
    return f"[{_num(low, digits)}, {_num(high, digits)}]"
  return "none (one run)" if n == 1 else "none"
