"""Figures drawn again, or for the first time, from the files runs write.

    python -m gmf_jax.plot runs/<run>               # a run or a sweep member: plots/*.png, and
                                                    # diagnostics/<name>/step_<N>_<figure>.png
    python -m gmf_jax.plot runs/<sweep>             # a sweep, an ensemble, any folder of runs:
                                                    # the population figures, in <sweep>/plots/
    python -m gmf_jax.plot runs/<sweep> --members   # and every member's own figures
    python -m gmf_jax.plot runs/<sweep> --by=optimizer.learning_rate   # the keys of the groups

A run's figures are those it draws when it ends (`metrics.png`, `loss.png`, `learning_rate.png`,
`diagnostics.png`) and its diagnostics' figures, drawn from the saved arrays. A population's are
every member's curves in one figure (a panel per metric, each member a thin line in the colour of
its group, each group's mean bold; `metrics.png`) and one such figure per diagnostic with summary
scalars (`diag_<name>.png`). Groups are the config keys that differ between the members, less
seeds and bookkeeping (`gmf_jax.analysis.group_keys`). Only the run folders' files are read:
nothing of a run's own code is imported or run, so a user's diagnostic has no figures here.
A bad path or option is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  from gmf_jax.runlog.plots import Curve

log = logging.getLogger("gmf_jax")

RUN_FILES = ("metrics.csv", "config.json", "metadata.json")  # any of them makes a run folder
PLOTS_DIR = "plots"
DIAG_DIR = "diagnostics"


def plot_folder(path: str | os.PathLike, *, members: bool = False,
                by: str | Sequence[str] | None = None) -> list[str]:
  """Draws the figures of a run folder, or of the population of runs in a folder.

  Args:
    path: a run or sweep member folder (`plot_run`), or a sweep, an ensemble or any folder
      holding runs (`plot_population`).
    members: with a population, also draw each member's own figures.
    by: with a population, the config keys that make its groups (None: those that differ).

  Returns:
    The PNG paths written.

  Raises:
    ValueError: `path` is not a folder, or holds no run; `by` names an unknown key.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise ValueError(f"{path} is not a folder: pass a run folder, a sweep folder or a folder "
                     "of runs")
  if is_run(path):
    return plot_run(path)
  from gmf_jax.analysis.loading import find_runs

  runs = find_runs(path)
  if not runs:
    raise ValueError(f"{path} holds no run (no folder with metrics.csv or config.json at or "
                     "below it): pass a run folder, a sweep folder or a folder of runs")
  written = plot_population(path, by=by)
  if members:
    for run in runs:
      written += plot_run(run)
  return written


def is_run(path: str) -> bool:
  """Whether `path` is a run folder (a run of its own or a sweep member)."""
  return any(os.path.isfile(os.path.join(path, name)) for name in RUN_FILES)


def plot_run(run_dir: str | os.PathLike) -> list[str]:
  """A run's own figures, as it draws them when it ends, from its files.

  `plots/` gets `plots.plot_metrics`' figures of `metrics.csv`. Each diagnostic's saved arrays
  (`diagnostics/<name>/step_<N>.npz`) are drawn by `gmf_jax.diagnostics.draw_figures` with that
  step's scalars, as `diagnostics/<name>/step_<N>_<figure>.png`; a diagnostic without a
  drawer (a user's, named `module:attr` in its `fn`) is skipped with one note.

  Returns:
    The PNG paths written.
  """
  from gmf_jax.runlog import plots  # matplotlib: not for a bad path or --help

  run_dir = os.path.abspath(os.fspath(run_dir))
  written = []
  metrics_csv = os.path.join(run_dir, "metrics.csv")
  if os.path.isfile(metrics_csv):
    written += plots.plot_metrics(metrics_csv, os.path.join(run_dir, PLOTS_DIR),
                                  title=os.path.basename(run_dir))
  return written + plot_diagnostics(run_dir)


def plot_diagnostics(run_dir: str) -> list[str]:
  """The diagnostics' figures of a run, from their saved arrays (see `plot_run`)."""
  saved = _saved_arrays(run_dir)
  if not saved:
    return []
  from gmf_jax.diagnostics import DIAGNOSTICS, draw_figures  # jax: only for saved arrays
  from gmf_jax.runlog import plots
  entries = _read_json(os.path.join(run_dir, "config.json")).get("diagnostics") or {}
  metrics_csv = os.path.join(run_dir, "metrics.csv")
  series = plots.read_metrics(metrics_csv) if os.path.isfile(metrics_csv) else {}
  written = []
  for name, steps in saved.items():
    entry = entries.get(name)
    fn = str((entry.get("fn") if isinstance(entry, dict) else None) or name)
    if ":" in fn:  # the user's own code: never imported here
      log.info("note: %s: diagnostic %r (fn=%s) is the run's own code, which plotting never "
               "runs; its figures are skipped", run_dir, name, fn)
      continue
    for step, path in steps:
      try:
        with np.load(path, allow_pickle=False) as f:
          arrays = {key: f[key] for key in f.files}
        figures = draw_figures(fn, arrays, _scalars(series, name, step))
        if figures is None:  # a built-in without figures (weight_stats) is no news
          if fn not in DIAGNOSTICS:
            log.info("note: %s: diagnostic %r (fn=%s) has no drawer here; its figures are "
                     "skipped", run_dir, name, fn)
          break
        for fig_name, fig in figures.items():
          fig = fig() if callable(fig) else fig
          out = os.path.join(os.path.dirname(path), f"step_{step}_{fig_name}.png")
          written.append(plots.save_png(fig, out))
      except Exception as e:  # noqa: BLE001 - one bad file or figure must not stop the rest
        log.warning("warning: %s: %s (%s)", path, type(e).__name__, e)
  return written


def _saved_arrays(run_dir: str) -> dict[str, list[tuple[int, str]]]:
  """Diagnostic -> its `(step, npz path)`s, by step."""
  found: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
  root = os.path.join(glob.escape(run_dir), DIAG_DIR)
  for path in glob.glob(os.path.join(root, "*", "step_*.npz")):
    stem = os.path.basename(path)[len("step_"):-len(".npz")]
    if stem.isdigit():
      found[os.path.basename(os.path.dirname(path))].append((int(stem), path))
  return {name: sorted(found[name]) for name in sorted(found)}


def _scalars(series: dict[str, Curve], name: str, step: int) -> dict[str, float]:
  """`diag/<name>/<key>` at `step`, as {key: value}."""
  prefix = f"diag/{name}/"
  out = {}
  for metric, curve in series.items():
    if metric.startswith(prefix):
      at = np.flatnonzero(curve.steps == step)
      if at.size:
        out[metric[len(prefix):]] = float(curve.values[at[-1]])
  return out


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError):
    return {}
  return data if isinstance(data, dict) else {}


def plot_population(path: str | os.PathLike, *, out: str | os.PathLike | None = None,
                    by: str | Sequence[str] | None = None) -> list[str]:
  """The figures of every run at or below `path` (a sweep, an ensemble, any folder of runs),
  in `out` (default `<path>/plots/`): `analysis.plots.population_figures`.

  Every run's `metrics.csv` is read in one `load_metrics` call, and each figure is drawn once
  for all members: no figure per member.

  Returns:
    The PNG paths written.

  Raises:
    ValueError: no runs at or below `path`, or `by` names an unknown key.
  """
  from gmf_jax.analysis.loading import load_metrics, load_runs
  from gmf_jax.analysis.plots import population_figures
  from gmf_jax.runlog import plots

  path = os.path.abspath(os.fspath(path))
  runs = load_runs(path)
  if runs.empty:
    raise ValueError(f"{path} holds no run")
  metrics = load_metrics(runs)
  count = metrics["run"].nunique()
  title = (f"{os.path.basename(path)}: {count} run{'s' * (count != 1)}, each thin; "
           "each group's mean bold")
  out = os.path.abspath(os.fspath(out)) if out is not None else os.path.join(path, PLOTS_DIR)
  figures = population_figures(metrics, runs, by=by, title=title) if count else []
  if figures:
    os.makedirs(out, exist_ok=True)
  return [plots.save_png(f.figure, os.path.join(out, f.file)) for f in figures]


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line, not the usage and then the error
    print(f"error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> int:
  parser = _Parser(prog="python -m gmf_jax.plot", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("path", help="a run folder, a sweep member, a sweep or any folder of runs")
  parser.add_argument("--members", action="store_true",
                      help="with a population, also draw every member's own figures")
  parser.add_argument("--by", help="with a population, the comma-separated config keys that "
                      "make its groups (default: those that differ between the members)")
  args = parser.parse_args(argv)
  if not log.handlers:  # notes and warnings as plain lines
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
  try:
    written = plot_folder(args.path, members=args.members,
                          by=args.by.split(",") if args.by else None)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  by_folder: dict[str, list[str]] = collections.defaultdict(list)
  for path in written:
    by_folder[os.path.dirname(path)].append(os.path.basename(path))
  for folder, files in by_folder.items():
    print(f"{_shown(folder)}: {', '.join(files)}")
  if not written:
    print("no figures: no metrics or saved diagnostics to draw")
  return 0


def _shown(folder: str) -> str:
  """`folder` relative to the working directory when it is below it, else absolute."""
  relative = os.path.relpath(folder)
  return folder if relative.startswith(os.pardir) else relative


if __name__ == "__main__":
  sys.exit(main())
