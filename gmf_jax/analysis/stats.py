"""Statistics over seeds: groups of runs, their intervals, and comparisons between groups.

Runs are grouped by their setting (`group_keys`): the config keys whose values differ between
the runs loaded, leaving out what differs per member or per sweep without changing what is
trained (seeds, names, wandb, logging and eval frequency, diagnostics, checkpoints, the compile
cache, the device layout, data loading knobs). Runs on different datasets or with different
losses (`COMPARABLE_ON`) are never pooled nor compared: they are split into groups of their own
(even under `by=`), and `compare` refuses them with the reason. Intervals are 95% bootstrap
intervals of the mean by scipy's `bootstrap` with its BCa method (bias-corrected and
accelerated), the resampling seeded from the group's label, so a report is reproducible and one
group's interval does not change when another group is added. Where BCa is undefined (all
values equal, or too few distinct values) the percentile method is used; with one run there is
no interval (NaN), and such a group is never named the best (`best_group`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gmf_jax.runlog.summary import higher_is_better  # accuracies: higher; losses: lower

log = logging.getLogger("gmf_jax")

STATS = ("final", "best", "min", "max", "auc")
# Config keys that never tell one setting from another: they differ per member or per sweep
# (seeds, names, wandb's group), or change how a run is run, logged, checked or saved, never
# what it trains (logging, eval and diagnostics don't touch the training keys or the data order;
# the device layout and data loading knobs give the same batches).
IGNORED = frozenset({
    "config.seed", "config.data_seed", "config.num_seeds", "config.name", "config.progress_bar",
    "config.steps_per_call", "config.log_every_steps", "config.eval_every_steps",
    "config.eval_batch_size", "config.probe_size", "config.diagnostics", "config.data.data_dir",
    "config.data.on_device", "config.data.max_device_bytes", "config.data.workers",
    "config.data.prefetch"})
IGNORED_PREFIXES = ("config.wandb.", "config.compile_cache.", "config.checkpoint.",
                    "config.diagnostics.", "config.mesh.", "config.distributed.")
# Runs that differ in one of these measure different things (a metric on another dataset, a
# loss of another kind): they are grouped apart even under `by=`, and never compared.
COMPARABLE_ON = {"config.data.name": "datasets", "config.loss.name": "losses"}
N_RESAMPLES = 9999
PAIRED_SHARE = 0.75  # pair two groups when shared seeds are at least this share of each
SUMMARY_COLUMNS = ["group", "n", "mean", "std", "sem", "median", "iqm", "ci_low", "ci_high",
                   "n_missing", "seeds", "runs"]


def _sps():
  """scipy.stats, imported on first use: it takes over a second, and loading runs needs none."""
  from scipy import stats

  return stats


def group_keys(runs: pd.DataFrame) -> list[str]:
  """The `config.*` columns whose values differ between `runs`, less seeds and bookkeeping.

  What is left out is what differs per member or per sweep without changing what is trained
  (`IGNORED`, `IGNORED_PREFIXES`): a seed ensemble and a sweep of the same config loaded
  together group by setting, not by seed. Runs without a readable `config.json` are not counted
  (their config is unknown, not different).
  """
  runs = _with_config(runs)
  keys = []
  for column in runs.columns:
    if not column.startswith("config.") or column in IGNORED or column.startswith(
        IGNORED_PREFIXES):
      continue
    if len(set(_keys_of(runs[column]))) > 1:
      keys.append(column)
  return keys


def cohort_keys(runs: pd.DataFrame) -> list[str]:
  """The `COMPARABLE_ON` columns (`config.data.name`, `config.loss.name`) whose values differ
  between `runs`: runs that differ in them cannot be compared. Unknown values are not counted."""
  runs = _with_config(runs)
  return [k for k in COMPARABLE_ON if k in runs.columns
          and len({v for v in _keys_of(runs[k]) if v is not None}) > 1]


def _with_config(runs: pd.DataFrame) -> pd.DataFrame:
  if "problems" in runs.columns:
    return runs[~runs["problems"].fillna("").str.contains("config.json", regex=False)]
  return runs


def _missing(value: Any) -> bool:
  return value is None or (isinstance(value, float) and math.isnan(value))


def _key(value: Any) -> Any:
  """A value as a group key: None and NaN (how pandas may hold a JSON null) are one."""
  return None if _missing(value) else value


def _keys_of(column: pd.Series) -> list[Any]:
  """`_key` of each value, as a list: `Series.map` would turn the Nones back into NaNs, and
  NaN != NaN would then give every run without the key a group of its own."""
  return [_key(v) for v in column]


def _config_column(runs: pd.DataFrame, key: str) -> str:
  from gmf_jax.config import ALIASES

  key = ALIASES.get(key, key)
  column = key if key.startswith("config.") else f"config.{key}"
  if column not in runs.columns:
    known = sorted(c[len("config."):] for c in runs.columns if c.startswith("config."))
    raise ValueError(f"{key!r} is not a config key of these runs; keys: {', '.join(known)}")
  return column


def _resolve_by(runs: pd.DataFrame, by: str | Sequence[str] | None) -> list[str]:
  """The keys to group by: `by`, else `group_keys`; with the `cohort_keys` added either way, so
  runs on different datasets or with different losses are never pooled into one group."""
  if by is None:
    return group_keys(runs)
  keys = [_config_column(runs, k) for k in ([by] if isinstance(by, str) else by)]
  added = [k for k in cohort_keys(runs) if k not in keys]
  if added:
    log.warning("by=%s would pool runs that cannot be compared (%s): grouped by %s too",
                [k[len("config."):] for k in keys], _spread(runs, added),
                ", ".join(k[len("config."):] for k in added))
  return added + keys


def _spread(runs: pd.DataFrame, keys: Sequence[str]) -> str:
  """ "data.name: digits, moons; loss.name: ..." (the distinct known values of each key)."""
  return "; ".join(f"{k[len('config.'):]}: {_listed(_known(runs, k))}" for k in keys)


def _format(value: Any) -> str:
  if _missing(value):
    return "None"
  if isinstance(value, float):
    return f"{value:.10g}"  # enough digits that distinct swept values read distinct
  if isinstance(value, tuple):
    return "(" + ", ".join(_format(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def group_labels(runs: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
  """Each run's group as a label: "optimizer.learning_rate=0.001, loss.beta=2" ("all" with no
  keys)."""
  if not keys:
    return pd.Series("all", index=runs.index)
  parts = [runs[k].map(lambda v, k=k: f"{k[len('config.'):]}={_format(v)}") for k in keys]
  label = parts[0]
  for part in parts[1:]:
    label = label + ", " + part
  return label


def _selected(runs: pd.DataFrame, status: str | Sequence[str] | None) -> pd.DataFrame:
  runs = runs.reset_index(drop=True)  # a concatenation of tables repeats index labels
  if status is None:
    return runs
  wanted = [status] if isinstance(status, str) else list(status)
  return runs[runs["status"].isin(wanted)].reset_index(drop=True)


def _groups(runs: pd.DataFrame, keys: Sequence[str]) -> list[tuple[str, np.ndarray]]:
  """(label, row positions) per group, grouped by the values themselves (the label is for
  display), in the order groups first appear."""
  if not keys:
    return [("all", np.arange(len(runs)))] if len(runs) else []
  codes = {}
  for i, row in enumerate(zip(*(_keys_of(runs[k]) for k in keys), strict=True)):
    codes.setdefault(row, []).append(i)
  labels = group_labels(runs, keys)
  return [(labels.iloc[rows[0]], np.asarray(rows)) for rows in codes.values()]


def run_groups(runs: pd.DataFrame, by: str | Sequence[str] | None = None
               ) -> tuple[np.ndarray, list[str]]:
  """Each run's group, as `summarize` and `curve_stats` group them.

  Args:
    runs: a table from `load_runs`.
    by: the config keys to group by; None: `group_keys` (with `cohort_keys` added either way).

  Returns:
    (labels, keys): one label per row of `runs`, in order ("optimizer.learning_rate=0.1"; "all"
    without keys), and the `config.*` keys that make the groups.
  """
  keys = _resolve_by(runs, by)
  labels = np.empty(len(runs), object)
  for label, index in _groups(runs, keys):
    labels[index] = label
  return labels, keys


def run_values(runs: pd.DataFrame, metric: str, stat: str = "final",
               metrics: pd.DataFrame | None = None) -> pd.Series:
  """One number per run (indexed like `runs`): the metric's `stat`.

  Args:
    runs: a table from `load_runs`.
    metric: e.g. "eval/loss".
    stat: `final` or `best` (from summary.json), or `min`, `max`, `auc` (the area under the
      curve over steps, by the trapezoid rule) from the logged rows.
    metrics: rows from `load_metrics` for `min`/`max`/`auc` (read from the runs when None).
  """
  if stat not in STATS:
    raise ValueError(f"stat={stat!r} is not one of {', '.join(STATS)}")
  if stat in ("final", "best"):
    column = f"{stat}.{metric}"
    if column not in runs.columns:
      known = sorted(c[len(stat) + 1:] for c in runs.columns if c.startswith(f"{stat}."))
      raise ValueError(f"no metric {metric!r} in these runs' summaries; metrics: "
                       f"{', '.join(known) or 'none'}")
    return runs[column].astype(float)
  if metrics is None:
    from gmf_jax.analysis.loading import load_metrics

    metrics = load_metrics(runs, names=[metric])
  rows = metrics[metrics["name"] == metric]
  if rows.empty and not runs.empty:
    raise ValueError(f"no logged rows of {metric!r} in these runs")
  per_run = {}
  for run, group in rows.groupby("run", observed=True, sort=False):
    values = group["value"].to_numpy(float)
    if stat == "min":
      per_run[run] = np.nanmin(values) if np.isfinite(values).any() else math.nan
    elif stat == "max":
      per_run[run] = np.nanmax(values) if np.isfinite(values).any() else math.nan
    else:
      per_run[run] = float(np.trapezoid(values, group["step"].to_numpy(float))) if len(
          values) > 1 else math.nan
  return runs["run"].map(per_run).astype(float)


def _rng(label: str, seed: int) -> np.random.Generator:
  return np.random.default_rng([seed, zlib.crc32(label.encode())])


def bootstrap_interval(statistic, samples: Sequence[np.ndarray], *, confidence: float = 0.95,
                       paired: bool = False, rng: np.random.Generator | None = None,
                       n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
  """A bootstrap interval (BCa, else percentile where BCa is undefined); NaN below 2 values."""
  if min(len(s) for s in samples) < 2:
    return math.nan, math.nan
  if all(np.ptp(s) == 0 for s in samples):  # no spread to resample: the interval is a point
    value = float(statistic(*samples, axis=-1))
    return value, value
  for method in ("BCa", "percentile"):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      result = _sps().bootstrap(tuple(samples), statistic, paired=paired, vectorized=True,
                             confidence_level=confidence, n_resamples=n_resamples,
                             method=method, rng=rng)
    low, high = result.confidence_interval
    if np.isfinite(low) and np.isfinite(high):
      return float(low), float(high)
  return math.nan, math.nan


def iqm(values: np.ndarray) -> float:
  """The interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
  return float(_sps().trim_mean(values, 0.25)) if len(values) else math.nan


def describe(values: np.ndarray, label: str = "", *, confidence: float = 0.95,
             seed: int = 0) -> dict[str, float]:
  """n, mean, std, sem, median, iqm and the bootstrap interval of the mean of `values`."""
  x = np.asarray(values, float)
  n = len(x)
  std = float(np.std(x, ddof=1)) if n > 1 else math.nan
  low, high = bootstrap_interval(np.mean, [x], confidence=confidence, rng=_rng(label, seed))
  return {"n": n, "mean": float(np.mean(x)) if n else math.nan, "std": std,
          "sem": std / math.sqrt(n) if n > 1 else math.nan,
          "median": float(np.median(x)) if n else math.nan, "iqm": iqm(x),
          "ci_low": low, "ci_high": high}


def summarize(runs: pd.DataFrame, metric: str, by: str | Sequence[str] | None = None,
              stat: str = "final", *, metrics: pd.DataFrame | None = None,
              status: str | Sequence[str] | None = "completed", confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
  """Statistics of `metric` over the runs of each group (the seeds of each setting).

      runs = load_runs("runs/vae_lr_beta")
      summarize(runs, "eval/nelbo")                  # grouped by the swept keys
      summarize(runs, "eval/nelbo", by="loss.beta")  # pooled over everything but beta

  Args:
    runs: a table from `load_runs`.
    metric: the metric's name, e.g. "eval/nelbo".
    by: config keys to group by (with or without the `config.` prefix); None: the keys that
      differ between the runs (`group_keys`). Either way, runs on different datasets or with
      different losses are grouped apart (`cohort_keys`; a warning says so under `by=`).
    stat: what one run contributes: `final`, `best`, `min`, `max` or `auc` (see `run_values`).
    metrics: rows from `load_metrics`, for `min`/`max`/`auc` (read when None).
    status: the runs to use by status (default: completed ones; None: all).
    confidence: of the bootstrap interval.
    seed: of the bootstrap resampling.

  Returns:
    One row per group, best first (by mean): the group's key columns, `group` (its label),
    `n, mean, std, sem, median, iqm, ci_low, ci_high`, `n_missing` (runs of the group without
    a finite value: diverged, or not logged), `seeds` and `runs`. `.attrs` holds `metric`,
    `stat`, `keys`, `cohort_keys` (those of `keys` that split runs which cannot be compared) and
    `higher_is_better`. The first row may be a group of one run: `best_group` names the best.
  """
  chosen = _selected(runs, status)
  keys = _resolve_by(chosen, by)
  values = run_values(chosen, metric, stat, metrics).to_numpy(float)
  rows = []
  for label, index in _groups(chosen, keys):
    group = chosen.iloc[index]
    x = values[index]
    finite = np.isfinite(x)
    row = {k: group[k].iloc[0] for k in keys}
    row["group"] = label
    row.update(describe(x[finite], label, confidence=confidence, seed=seed))
    row["n_missing"] = int((~finite).sum())
    row["seeds"] = tuple(sorted(int(s) for s in group["seed"][finite] if pd.notna(s)))
    row["runs"] = tuple(group["run"][finite])
    rows.append(row)
  higher = higher_is_better(metric)
  table = pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS])
  if not table.empty:
    table = table.sort_values("mean", ascending=not higher, na_position="last",
                              kind="stable").reset_index(drop=True)
  table.attrs.update(metric=metric, stat=stat, keys=keys, higher_is_better=higher,
                     cohort_keys=[k for k in cohort_keys(chosen) if k in keys])
  return table


def split_cohorts(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
  """A `summarize` table split into parts whose groups can be compared with each other: one
  per dataset and loss among its runs (`.attrs["cohort_keys"]`).

  Returns:
    (label, rows) pairs in the table's order, e.g. ("data.name=moons", ...); one pair with the
    label "" when the runs share their dataset and loss.
  """
  keys = [k for k in table.attrs.get("cohort_keys", []) if k in table.columns]
  if not keys or table.empty:
    return [("", table)]
  return [(label, table.iloc[rows]) for label, rows in _groups(table, keys)]


def best_group(table: pd.DataFrame) -> pd.Series | None:
  """The best group of a `summarize` table that has an interval to judge it by: the first row
  (the table is sorted best first) of 2 or more runs with a value. None when no group has 2.

  A group of one run is never the best: one run has no spread, so its lead may be luck. Split a
  table of runs on several datasets or losses first (`split_cohorts`): across them no group is
  better than another.
  """
  ranked = table[table["n"] >= 2] if "n" in table.columns else table.iloc[:0]
  return ranked.iloc[0] if len(ranked) else None


def curve_stats(metrics: pd.DataFrame, runs: pd.DataFrame, metric: str,
                by: str | Sequence[str] | None = None, confidence: float = 0.95,
                status: str | Sequence[str] | None = "completed") -> pd.DataFrame:
  """The mean curve of `metric` per group, with a t interval band, computed with numpy.

  Args:
    metrics: rows from `load_metrics` (other metrics are ignored).
    runs: a table from `load_runs`, which says each run's group.
    metric: the metric's name.
    by: as for `summarize`.
    confidence: of the band: mean +- t(n - 1) * sem at each step (a point where n = 1).
    status: as for `summarize`.

  Returns:
    Columns `group, step, n, mean, std, sem, low, high`, sorted by group then step;
    `.attrs` holds `keys`, `metric` and `confidence`.
  """
  chosen = _selected(runs, status)
  labels, keys = run_groups(chosen, by)
  rows = metrics[metrics["name"] == metric]
  if rows.empty and not chosen.empty:
    known = sorted(map(str, metrics["name"].unique()))
    raise ValueError(f"no logged rows of {metric!r}; metrics: {', '.join(known) or 'none'}")
  run_group = dict(zip(chosen["run"], labels, strict=True))
  group = rows["run"].astype(object).map(run_group)
  keep = group.notna().to_numpy() & np.isfinite(rows["value"].to_numpy())
  frame = pd.DataFrame({"group": group[keep].to_numpy(), "step": rows["step"].to_numpy()[keep],
                        "value": rows["value"].to_numpy()[keep]})
  grouped = frame.groupby(["group", "step"], sort=True)["value"]
  out = grouped.agg(["count", "mean", "std"]).reset_index().rename(columns={"count": "n"})
  n = out["n"].to_numpy()
  sem = out["std"].to_numpy() / np.sqrt(np.maximum(n, 1))
  with np.errstate(invalid="ignore"):
    t = np.where(n > 1, _sps().t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), 0.0)
  half = np.where(n > 1, t * sem, 0.0)
  out["sem"] = np.where(n > 1, sem, np.nan)
  out["low"] = out["mean"] - half
  out["high"] = out["mean"] + half
  out = out[["group", "step", "n", "mean", "std", "sem", "low", "high"]]
  out.attrs.update(keys=keys, metric=metric, confidence=confidence)
  return out


def holm(pvalues: Sequence[float]) -> np.ndarray:
  """Holm's step-down adjustment of p-values (NaN stays NaN, others keep their order)."""
  p = np.asarray(pvalues, float)
  out = np.full_like(p, np.nan)
  valid = np.flatnonzero(np.isfinite(p))
  m = len(valid)
  order = valid[np.argsort(p[valid], kind="stable")]
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
  """(mean b - mean a) / pooled standard deviation, with Hedges' small-sample correction."""
  na, nb = len(a), len(b)
  if na < 2 or nb < 2:
    return math.nan
  pooled = math.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1))
                     / (na + nb - 2))
  if pooled == 0:
    return math.nan
  return float((np.mean(b) - np.mean(a)) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def probability_of_improvement(a: np.ndarray, b: np.ndarray, higher: bool) -> float:
  """P(a run of b is better than a run of a), ties counting half, over all pairs."""
  if not len(a) or not len(b):
    return math.nan
  diff = b[:, None] - a[None, :]
  if not higher:
    diff = -diff
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


@dataclasses.dataclass
class Comparison:
  """The difference b - a of a metric between two groups of runs, and how sure it is."""

  metric: str
  stat: str
  a: str
  b: str
  n_a: int
  n_b: int
  mean_a: float
  mean_b: float
  difference: float  # mean b - mean a (of the paired differences when paired)
  ci_low: float
  ci_high: float
  confidence: float
  paired: bool
  n_pairs: int
  tests: dict[str, dict[str, float]]  # name -> {"statistic", "pvalue"}
  hedges_g: float
  prob_improvement: float  # P(b better than a)
  higher_is_better: bool
  verdict: str
  warnings: list[str]
  # Where no difference is clear: about how many seeds per group would detect `difference`
  # with 80% power (`seeds_needed`). None when the difference is clear, or nothing can be sized
  # (too few runs, no spread, a difference of 0, or beyond `power.MAX_SEEDS`: a warning).
  seeds_needed: int | None = None

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @property
  def pvalue(self) -> float:
    """The t-test's p-value (paired or Welch's)."""
    name = "ttest_rel" if self.paired else "welch_ttest"
    return self.tests.get(name, {}).get("pvalue", math.nan)

  def __str__(self) -> str:
    better = "higher" if self.higher_is_better else "lower"
    lines = [
        f"{self.metric} ({self.stat}; {better} is better)",
        f"  a: {self.a}: mean {self.mean_a:.6g} over {self.n_a} runs",
        f"  b: {self.b}: mean {self.mean_b:.6g} over {self.n_b} runs",
        f"  b - a = {self.difference:.6g}, {self._interval()}" + (
            f" (paired on {self.n_pairs} seeds)" if self.paired else " (unpaired)"),
    ]
    for name, test in self.tests.items():
      lines.append(f"  {name}: statistic {test['statistic']:.4g}, p = {test['pvalue']:.4g}"
                   if np.isfinite(test["pvalue"]) else
                   f"  {name}: undefined here (too few runs, or no spread)")
    g = f"{self.hedges_g:.3g}" if np.isfinite(self.hedges_g) else "undefined"
    lines.append(f"  Hedges' g {g}; P(b better than a) = {self.prob_improvement:.3f}")
    lines.append(f"  {self.verdict}")
    if self.seeds_needed is not None:
      lines.append(f"  {_seeds_statement(self.seeds_needed, f'{self.difference:.6g}')}")
    lines.extend(f"  warning: {w}" for w in self.warnings)
    return "\n".join(lines)

  def _interval(self) -> str:
    if np.isfinite(self.ci_low) and np.isfinite(self.ci_high):
      return (f"{round(self.confidence * 100)}% bootstrap CI [{self.ci_low:.6g}, "
              f"{self.ci_high:.6g}]")
    if min(self.n_a, self.n_b) < 2:
      return "no interval (a group of one run has no spread)"
    return "no interval (the bootstrap found none)"


def _exact_floor_paired(n: int) -> float:
  return 2.0 / 2**n if n else 1.0  # every difference of one sign: the smallest two-sided p


def _exact_floor_unpaired(na: int, nb: int) -> float:
  return 2.0 / math.comb(na + nb, na) if na and nb else 1.0


def _select(runs: pd.DataFrame | None, selector, keys: list[str]) -> tuple[pd.DataFrame, str]:
  """A group of runs from a selector: a runs table, a folder, a group label or {key: value}."""
  if isinstance(selector, pd.DataFrame):
    return selector, _describe_group(selector, keys)
  if isinstance(selector, os.PathLike) or (isinstance(selector, str) and (
      runs is None or os.path.isdir(selector))):
    from gmf_jax.analysis.loading import load_runs

    return load_runs(selector), os.fspath(selector)
  if runs is None:
    raise ValueError("pass `runs` to pick groups by label or by config values")
  if isinstance(selector, str):
    groups = _groups(runs, keys)
    for label, index in groups:
      if label == selector:
        return runs.iloc[index], label
    raise ValueError(f"no group {selector!r}; groups: "
                     f"{', '.join(sorted(label for label, _ in groups))}")
  if isinstance(selector, Mapping):
    mask = np.ones(len(runs), bool)
    for key, value in selector.items():
      column = _config_column(runs, key)
      mask &= runs[column].map(lambda v, value=value: _equal(v, value)).to_numpy(bool)
    chosen = runs[mask]
    label = ", ".join(f"{k}={_format(v)}" for k, v in selector.items())
    if chosen.empty:
      raise ValueError(f"no runs have {label}")
    return chosen, _describe_group(chosen, keys, label)
  raise TypeError(f"a group is a runs table, a folder, a group label or a dict of config "
                  f"values, not {type(selector).__name__}")


def _equal(v: Any, value: Any) -> bool:
  if _missing(value) or _missing(v):
    return _missing(value) and _missing(v)
  if isinstance(value, list):
    value = tuple(value)
  if isinstance(v, float) and isinstance(value, (int, float)):
    return math.isclose(v, value, rel_tol=1e-9, abs_tol=0.0)
  return v == value


def _describe_group(runs: pd.DataFrame, keys: list[str], fallback: str | None = None) -> str:
  groups = _groups(runs, keys) if keys else []
  if len(groups) == 1:
    return groups[0][0]
  root = runs.attrs.get("root")  # a table from load_runs: named by its folder
  return fallback or root or f"{len(runs)} runs"


def compare(runs: pd.DataFrame | None, metric: str, a, b, *, stat: str = "final",
            by: str | Sequence[str] | None = None, metrics: pd.DataFrame | None = None,
            status: str | Sequence[str] | None = "completed", confidence: float = 0.95,
            alpha: float = 0.05, seed: int = 0) -> Comparison:
  """The difference b - a of `metric` between two groups of runs.

      runs = load_runs("runs/vae_lr_beta")
      print(compare(runs, "eval/nelbo", {"loss.beta": 1.0}, {"loss.beta": 2.0}))
      compare(None, "eval/loss", "runs/baseline", "runs/new")  # two folders

  When the groups share seeds, the tests are paired on the shared seeds (`ttest_rel`,
  `wilcoxon`) and the interval is of the mean paired difference; otherwise Welch's t-test and
  the Mann-Whitney U test, and the interval of the difference of means. The bootstrap is
  seeded (`seed`), so the interval is reproducible.

  Args:
    runs: a table from `load_runs`, or None when `a` and `b` are folders or tables.
    metric: the metric's name.
    a, b: each a runs table, a folder, a group label (as `summarize` writes it) or a dict of
      config values (`{"optimizer.learning_rate": 1e-3}`; `lr` and other aliases work).
    stat, by, metrics, status: as for `summarize` (`by` is used for group labels).
    confidence: of the interval.
    alpha: the level the warnings and the verdict judge p-values against.
    seed: of the bootstrap resampling.

  When no difference is clear, `seeds_needed` is about how many seeds per group a t-test (the
  one run here) would need to detect the observed difference with 80% power at `alpha`
  (`gmf_jax.analysis.seeds_needed`), and the summary says so.

  Returns:
    A `Comparison`; `print` it for a plain-words summary.
  """
  return _compare(runs, metric, a, b, stat=stat, by=by, metrics=metrics, status=status,
                  confidence=confidence, alpha=alpha, seed=seed, sized=True)[0]


def _compare(runs, metric, a, b, *, stat, by, metrics, status, confidence, alpha, seed,
             sized: bool) -> tuple[Comparison, np.ndarray, np.ndarray]:
  """`compare`, and the values it tested: a's and b's, aligned by seed when paired.
  `seeds_needed` is left None unless `sized`."""
  keys = _resolve_by(_selected(runs, status), by) if runs is not None else []
  group_a, label_a = _select(runs, a, keys)
  group_b, label_b = _select(runs, b, keys)
  group_a, group_b = _selected(group_a, status), _selected(group_b, status)
  _check_comparable(group_a, group_b, label_a, label_b, metric)
  va = _side_values(group_a, label_a, metric, stat, metrics)
  vb = _side_values(group_b, label_b, metric, stat, metrics)
  finite_a, finite_b = np.isfinite(va.to_numpy()), np.isfinite(vb.to_numpy())
  xa, xb = va.to_numpy()[finite_a], vb.to_numpy()[finite_b]
  seeds_a = group_a["seed"].to_numpy()[finite_a]
  seeds_b = group_b["seed"].to_numpy()[finite_b]
  higher = higher_is_better(metric)
  notes = [_pooled(group, label) for group, label in ((group_a, label_a), (group_b, label_b))]
  notes = [note for note in notes if note]
  dropped = int((~finite_a).sum() + (~finite_b).sum())
  if dropped:
    notes.append(f"{dropped} run(s) without a finite {metric} were left out")
  for label, group, x in ((label_a, group_a, xa), (label_b, group_b, xb)):
    if not len(x):
      raise ValueError(f"no {'completed ' if status == 'completed' else ''}runs with a finite "
                       f"{metric} in {label} ({len(group)} run(s) selected)")

  # Paired when the groups ran (nearly) the same seeds; a few shared seeds among many would
  # throw most runs away, so those are compared unpaired.
  shared = _shared_seeds(seeds_a, seeds_b)
  paired = _pairs(len(shared), len(xa), len(xb))
  rng = _rng(f"{label_a}|{label_b}", seed)
  tests: dict[str, dict[str, float]] = {}
  if paired:
    left = len(xa) + len(xb) - 2 * len(shared)
    xa = np.asarray([xa[seeds_a == s][0] for s in shared])
    xb = np.asarray([xb[seeds_b == s][0] for s in shared])
    if left:
      notes.append(f"{left} run(s) without a partner seed in the other group were left out "
                   "of the paired comparison")
    d = xb - xa
    difference = float(np.mean(d))
    low, high = bootstrap_interval(np.mean, [d], confidence=confidence, rng=rng)
    tests["ttest_rel"] = _test(lambda: _sps().ttest_rel(xb, xa))
    tests["wilcoxon"] = _test(lambda: _sps().wilcoxon(xb, xa))
    nonzero = int(np.count_nonzero(d))  # the Wilcoxon test drops zero differences
    floor = _exact_floor_paired(nonzero)
    if floor > alpha:
      needed = next(n for n in range(1, 64) if _exact_floor_paired(n) <= alpha)
      ties = f" ({len(d) - nonzero} with no difference)" if nonzero < len(d) else ""
      notes.append(f"with {len(shared)} paired seeds{ties} the exact two-sided Wilcoxon "
                   f"p-value cannot go below {floor:.4g}, so it can never reach {alpha:g}: "
                   f"use at least {needed} seeds")
  else:
    if shared:
      notes.append(f"only {len(shared)} seed(s) are shared, too few to pair on: the runs are "
                   "compared unpaired")
    difference = float(np.mean(xb) - np.mean(xa)) if len(xa) and len(xb) else math.nan
    low, high = bootstrap_interval(lambda x, y, axis=-1: np.mean(y, axis) - np.mean(x, axis),
                                   [xa, xb], confidence=confidence, rng=rng)
    tests["welch_ttest"] = _test(lambda: _sps().ttest_ind(xb, xa, equal_var=False))
    tests["mannwhitneyu"] = _test(lambda: _sps().mannwhitneyu(xb, xa, alternative="two-sided"))
    floor = _exact_floor_unpaired(len(xa), len(xb))
    if floor > alpha:
      notes.append(f"with {len(xa)} and {len(xb)} runs the exact two-sided Mann-Whitney "
                   f"p-value cannot go below {floor:.4g}, so it can never reach {alpha:g}")
  for label, x in ((label_a, xa), (label_b, xb)):
    if len(x) < 2:
      notes.append(f"{label} has {len(x)} run(s): no spread to test against: run more seeds")
  if min(len(xa), len(xb)) >= 2 and min(len(xa), len(xb)) < 5:
    notes.append(f"with {min(len(xa), len(xb))} runs in a group a bootstrap interval is too "
                 "narrow to trust (it cannot show what so few runs did not): use 5 or more")
  p = tests.get("ttest_rel" if paired else "welch_ttest", {}).get("pvalue", math.nan)
  needed = None if not sized or _clear(low, high, p, alpha) else _sized(
      xa, xb, paired, alpha, notes, f"{difference:.6g}")
  comparison = Comparison(
      metric=metric, stat=stat, a=label_a, b=label_b, n_a=len(xa), n_b=len(xb),
      mean_a=float(np.mean(xa)) if len(xa) else math.nan,
      mean_b=float(np.mean(xb)) if len(xb) else math.nan, difference=difference,
      ci_low=low, ci_high=high, confidence=confidence, paired=paired,
      n_pairs=len(shared) if paired else 0, tests=tests, hedges_g=hedges_g(xa, xb),
      prob_improvement=probability_of_improvement(xa, xb, higher), higher_is_better=higher,
      verdict=_verdict(difference, low, high, p, alpha, higher, confidence), warnings=notes,
      seeds_needed=needed)
  return comparison, xa, xb


def _known(runs: pd.DataFrame, key: str) -> set[Any]:
  """The known values of `key` among `runs` (none without a readable config)."""
  if key not in runs.columns:
    return set()
  return {v for v in _keys_of(_with_config(runs)[key]) if v is not None}


def _check_comparable(group_a: pd.DataFrame, group_b: pd.DataFrame, label_a: str,
                      label_b: str, metric: str) -> None:
  """Refuses two groups whose runs span datasets or losses: the metric means something else."""
  for key, what in COMPARABLE_ON.items():
    seen_a, seen_b = _known(group_a, key), _known(group_b, key)
    if len(seen_a | seen_b) > 1:
      name = key[len("config."):]
      raise ValueError(
          f"cannot compare {label_a} with {label_b}: their runs have different {what} "
          f"({name}: {_listed(seen_a)} in a; {_listed(seen_b)} in b), and {metric} measures "
          f"a different thing on each: compare runs of one {name}")


def _listed(values: set[Any]) -> str:
  return ", ".join(sorted(map(_format, values))) or "unknown"


def _side_values(group: pd.DataFrame, label: str, metric: str, stat: str,
                 metrics: pd.DataFrame | None) -> pd.Series:
  try:
    return run_values(group, metric, stat, metrics)
  except ValueError as e:  # a metric the side's runs do not log: say which side
    raise ValueError(f"{label}: {e}") from None


def _pooled(group: pd.DataFrame, label: str) -> str:
  """A warning when the runs of one side differ in a setting (other swept values): its mean
  pools them, and says nothing about any one of them. '' when they share one setting."""
  keys = group_keys(group)
  if not keys:
    return ""
  known = _with_config(group)
  parts = []
  for key in keys:
    counts: dict[Any, int] = {}
    for v in _keys_of(known[key]):
      counts[v] = counts.get(v, 0) + 1
    values = ", ".join(f"{_format(v)} ({n} run{'s' * (n != 1)})" for v, n in counts.items())
    parts.append(f"{key[len('config.'):]}: {values}")
  return (f"{label} pools runs of different settings ({'; '.join(parts)}): its mean averages "
          "over them; select one value of each (or pass by=) to compare like with like")


def _shared_seeds(seeds_a: np.ndarray, seeds_b: np.ndarray) -> list[int]:
  """Seeds that appear exactly once in each group (a seed run twice cannot be paired)."""
  def once(seeds):
    values, counts = np.unique([int(s) for s in seeds if pd.notna(s)], return_counts=True)
    return set(values[counts == 1].tolist())
  return sorted(once(seeds_a) & once(seeds_b))


def _pairs(shared: int, n_a: int, n_b: int) -> bool:
  """Whether two groups are compared paired: their shared seeds are at least 2, and at least
  `PAIRED_SHARE` of each group (a few shared seeds among many would throw most runs away)."""
  return shared >= 2 and shared >= PAIRED_SHARE * max(n_a, n_b)


def _clear(low: float, high: float, p: float, alpha: float) -> bool:
  """Whether `_verdict` names a winner: a finite interval that excludes 0, and p < alpha."""
  return bool(np.isfinite(low) and np.isfinite(high) and not low <= 0 <= high and p < alpha)


def _seeds_statement(n: int, difference: str) -> str:
  from gmf_jax.analysis.power import POWER

  return (f"about {n} seeds per group would detect a difference of {difference} with "
          f"{round(POWER * 100)}% power")


def _sized(xa: np.ndarray, xb: np.ndarray, paired: bool, alpha: float,
           notes: list[str], difference: str) -> int | None:
  """`seeds_needed` for the observed difference of values `compare` tested (aligned by seed
  when paired); None where nothing can be sized, with a note when the difference is too small
  against the spread for `power.MAX_SEEDS` seeds per group."""
  from gmf_jax.analysis.power import MAX_SEEDS, POWER, PowerOutOfReach, seeds_needed

  try:
    return seeds_needed(xa, xb, paired=paired, alpha=alpha)
  except PowerOutOfReach:
    notes.append(f"a difference of {difference} is too small against the spread to detect "
                 f"with {round(POWER * 100)}% power with up to {MAX_SEEDS} seeds per group")
  except ValueError:  # too few runs, no spread or no difference: nothing to size a test by
    pass
  return None


def _test(run) -> dict[str, float]:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
      result = run()
    except ValueError:  # e.g. wilcoxon with every difference zero
      return {"statistic": math.nan, "pvalue": math.nan}
  return {"statistic": float(result.statistic), "pvalue": float(result.pvalue)}


def _verdict(difference, low, high, p, alpha, higher, confidence, *, than: str = "a",
             holm: bool = False) -> str:
  pct = round(confidence * 100)
  which = "Holm-corrected p" if holm else "p"
  if not (np.isfinite(low) and np.isfinite(high)):
    return "too few runs for an interval: no conclusion"
  if low <= 0 <= high:
    return f"no clear difference: the {pct}% interval includes 0"
  if not p < alpha:
    return f"no clear difference: {which} = {p:.3g} >= {alpha:g}"
  better = (difference > 0) == higher
  subject = "b" if than == "a" else "it"
  return (f"{subject} is {'better' if better else 'worse'} than {than} (the {pct}% interval "
          f"excludes 0, {which} = {p:.3g})")



def compare_groups(runs: pd.DataFrame, metric: str, baseline=None, *, stat: str = "final",
                   by: str | Sequence[str] | None = None, metrics: pd.DataFrame | None = None,
                   status: str | Sequence[str] | None = "completed", confidence: float = 0.95,
                   alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
  """Every group against one baseline, with Holm-corrected p-values.

  Args:
    runs, metric, stat, by, metrics, status, confidence, alpha, seed: as for `compare`.
    baseline: a group label or dict of config values; None: the best group by mean among
      those of 2 or more runs (`best_group`).

  Returns:
    One row per other group: `group, n, mean, difference, ci_low, ci_high, paired, pvalue`
    (t-test), `pvalue_holm`, `pvalue_rank` (Wilcoxon or Mann-Whitney), `pvalue_rank_holm`,
    `hedges_g, prob_improvement, verdict, seeds_needed, warnings`. `seeds_needed` (where the
    verdict names no winner; else NA) is about how many seeds per group would detect the
    observed difference with 80% power at `.attrs["seeds_alpha"]` = alpha / the number of
    comparisons, a level at which Holm's correction rejects whatever the other p-values.
    `.attrs["baseline"]` is its label; `.attrs["not_compared"]` maps the groups left out to
    why: another dataset or loss than the baseline's, or no run with a finite value.

  Raises:
    ValueError: `baseline` is None and no group has 2 runs with a value, or the runs span
      datasets or losses (no group is the best of all: pass a baseline).
  """
  if metrics is None and stat in ("min", "max", "auc"):
    from gmf_jax.analysis.loading import load_metrics

    metrics = load_metrics(_selected(runs, status), names=[metric])
  table = summarize(runs, metric, by, stat, metrics=metrics, status=status,
                    confidence=confidence, seed=seed)
  keys = table.attrs["keys"]
  if baseline is None:
    baseline = _default_baseline(table, metric)
  base_runs, base_label = _select(_selected(runs, status), baseline, keys)
  base_set = set(base_runs["run"])
  rows, not_compared, samples = [], {}, []
  for _, group in table.iterrows():
    label, members = group["group"], group["runs"]
    if label == base_label or (members and set(members) <= base_set):
      continue
    reason = _left_out(group, base_runs, table.attrs["cohort_keys"], metric)
    if reason:
      not_compared[label] = reason
      continue
    c, xa, xb = _compare(runs, metric, baseline, label, stat=stat, by=keys, metrics=metrics,
                         status=status, confidence=confidence, alpha=alpha, seed=seed,
                         sized=False)
    samples.append((xa, xb, c.paired))
    rank = c.tests.get("wilcoxon" if c.paired else "mannwhitneyu", {}).get("pvalue", math.nan)
    rows.append({"group": label, "n": c.n_b, "mean": c.mean_b, "difference": c.difference,
                 "ci_low": c.ci_low, "ci_high": c.ci_high, "paired": c.paired,
                 "pvalue": c.pvalue, "pvalue_rank": rank, "hedges_g": c.hedges_g,
                 "prob_improvement": c.prob_improvement, "higher": c.higher_is_better,
                 "warnings": "; ".join(c.warnings)})
  out = pd.DataFrame(rows, columns=["group", "n", "mean", "difference", "ci_low", "ci_high",
                                    "paired", "pvalue", "pvalue_holm", "pvalue_rank",
                                    "pvalue_rank_holm", "hedges_g", "prob_improvement",
                                    "verdict", "seeds_needed", "warnings", "higher"])
  # Holm's correction surely rejects a p-value below alpha / m: sized at that level, the power
  # holds whatever the other comparisons' p-values.
  level = alpha / max(1, int(np.isfinite(out["pvalue"].to_numpy(float)).sum()))
  if rows:
    out["pvalue_holm"] = holm(out["pvalue"].to_numpy(float))
    out["pvalue_rank_holm"] = holm(out["pvalue_rank"].to_numpy(float))
    # Judged on the corrected p-value: with many groups, raw p-values find differences by luck.
    out["verdict"] = [
        _verdict(r["difference"], r["ci_low"], r["ci_high"], r["pvalue_holm"], alpha,
                 r["higher"], confidence, than="the baseline", holm=True)
        for _, r in out.iterrows()]
    needed = []
    for i, (xa, xb, paired) in enumerate(samples):
      r, notes = out.iloc[i], [w for w in out.at[i, "warnings"].split("; ") if w]
      needed.append(None if _clear(r["ci_low"], r["ci_high"], r["pvalue_holm"], alpha) else
                    _sized(xa, xb, paired, level, notes, f"{r['difference']:.6g}"))
      out.at[i, "warnings"] = "; ".join(notes)
    out["seeds_needed"] = pd.array(needed, dtype="Int64")
  out = out.drop(columns="higher")
  out.attrs.update(baseline=base_label, metric=metric, stat=stat, not_compared=not_compared,
                   seeds_alpha=level)
  return out


def _default_baseline(table: pd.DataFrame, metric: str) -> str:
  """The best group's label (`best_group`), where one can be named."""
  if table.empty:
    raise ValueError(f"no completed runs with {metric}")
  parts = split_cohorts(table)
  if len(parts) > 1:
    raise ValueError(f"these runs have different datasets or losses "
                     f"({'; '.join(label for label, _ in parts)}), so no group is the best of "
                     "all: pass a baseline, or compare within each (split_cohorts)")
  best = best_group(table)
  if best is None:
    raise ValueError(f"no group has 2 or more runs with a finite {metric}, so none can be "
                     "named the best (one run has no interval): pass a baseline, or run more "
                     "seeds")
  return best["group"]


def _left_out(group: pd.Series, base_runs: pd.DataFrame, keys: Sequence[str],
              metric: str) -> str:
  """Why a group of a `summarize` table cannot be compared with the baseline ('' if it can)."""
  for key in keys:
    mine, theirs = _key(group[key]), _known(base_runs, key)
    if mine is not None and theirs and theirs != {mine}:
      return (f"another of the {COMPARABLE_ON[key]} ({key[len('config.'):]}={_format(mine)}; "
              f"the baseline's: {_listed(theirs)})")
  if group["n"] == 0:
    return f"no run with a finite {metric}"
  return ""
