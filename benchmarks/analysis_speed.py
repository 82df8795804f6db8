"""Analysis speed: `gmf_jax.analysis` loading and statistics over many run folders (issue #11).

Two measurements, each printed with its numbers, the goal, and its ratio against a
hand-written baseline timed in the same run:

  1. load_runs      `analysis.load_runs(root)` on 10,000 synthetic run folders (100 sweeps of
                    100 members). Goal: < 5 s on the 2-core VM. Baseline: a plain loop over
                    the sweep folders that, per member, json.loads config.json, metadata.json
                    and summary.json into one flat dict (config keys dotted, final./best. per
                    metric, a recorded `running` with a dead pid counted as crashed), and
                    builds a DataFrame from the list.
  2. metrics+stats  `analysis.load_metrics(root)` + `analysis.summarize(runs, "eval/accuracy")`
                    + `analysis.curve_stats(metrics, runs, "eval/accuracy")` on 1,000 runs of
                    100 logged steps (4 train metrics per step, 2 eval metrics every 10th:
                    about 413,000 rows). `runs` is `load_runs(root)`, loaded before the clock
                    starts (its time is printed beside). Goal: < 5 s. Baseline: pandas.read_csv
                    per metrics.csv + concat, then groupby mean/sem of the final value per
                    (learning rate, weight decay) and of the curve per (group, step).
                    summarize also computes 95% bootstrap (BCa) intervals, IQM and
                    median per group, which the baseline does not.

The run folders come from benchmarks/synthetic_runs.py: the format of real gmf_jax folders
(sweep.json, config.json, metadata.json, metrics.csv, summary.json, population.json, plots/,
diagnostics/), 97% completed, 2% failed (a nan loss), 1% killed (recorded `running`, its pid
gone: `crashed`) and, in the 10,000, one live `running` run (this process). They are written
under /dev/shm when it has room (file creation on this VM's disk costs about 1 ms a file), else
the system temp folder, and deleted at the end unless --keep DIR. Every timed call reads files
this process has just written: they are in the page cache, which a benchmark should not drop
(that needs root and slows every other process on the machine), so cold-disk reads are not
measured. Each timing is the best of --repeats (gmf_jax and the baseline alternate first);
every repeat is printed with its CPU time beside (other tenants of the VM slow the wall time, the
CPU time much less). Then cheap checks of the tables the calls returned: row counts (10,000
runs; metrics rows = the rows written), the statuses written (the killed ones read as
`crashed`), and gmf_jax's numbers against the baseline's.

--quick: a fifth of the runs (2,000 and 200), one repeat, limits scaled by size (a smoke run:
fixed costs such as summarize's per-group bootstrap do not shrink with it). --profile: a
cProfile of one call of each gmf_jax function, top entries by own time. About 1-2 minutes on the
2-core VM, a third of it writing the folders (--quick: about 15 s).

    python benchmarks/analysis_speed.py [--quick] [--repeats R] [--check] [--profile]
                                        [--keep DIR] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import json
import math
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import scipy
from synthetic_runs import Tree, write_tree

from gmf_jax import analysis

RUNS_LOAD = 10_000  # (1)
RUNS_METRICS = 1_000  # (2)
LOGS = 100  # logged steps per completed run
GOAL_LOAD_SEC = 5.0
GOAL_METRICS_SEC = 5.0
METRIC = "eval/accuracy"
KEYS = ["config.optimizer.learning_rate", "config.optimizer.weight_decay"]  # what the sweeps vary
SHM = "/dev/shm"


@dataclasses.dataclass
class Verdict:
  """One line of the final summary."""

  name: str
  text: str
  passed: bool | None  # None: reported, no goal


def machine_info() -> str:
  """Versions, CPUs and the current load (other processes on the CPUs skew every number)."""
  one, five, _ = os.getloadavg()
  return (f"pandas {pd.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"python {platform.python_version()}; {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}, {platform.system()} "
          f"{platform.release()}); load average {one:.2f} (1 min) {five:.2f} (5 min)")


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
  """(wall seconds, this process's CPU seconds, the result) of `fn()`."""
  wall, cpu = time.perf_counter(), time.process_time()
  result = fn()
  return time.perf_counter() - wall, time.process_time() - cpu, result


def best_of(arms: dict[str, Callable[[], Any]], repeats: int, label: str
            ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
  """Times every arm `repeats` times, the order alternating; returns each arm's wall and CPU
  seconds and its last result. CPU time shows how much of a slow repeat was waiting for the
  CPUs (other tenants)."""
  walls: dict[str, list[float]] = {name: [] for name in arms}
  cpus: dict[str, list[float]] = {name: [] for name in arms}
  results: dict[str, Any] = {}
  names = list(arms)
  for r in range(repeats):
    for name in (names if r % 2 == 0 else names[::-1]):
      wall, cpu, results[name] = timed(arms[name])
      walls[name].append(wall)
      cpus[name].append(cpu)
      print(f"  {label} repeat {r + 1}/{repeats} {name:8s}: {wall:.3f} s (CPU {cpu:.3f} s)",
            flush=True)
  return walls, cpus, results


def _all(seconds: list[float]) -> str:
  return "/".join(f"{s:.2f}" for s in seconds)


# --- the hand-written baseline --------------------------------------------------------------


def _flatten(tree: dict, prefix: str, out: dict) -> None:
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      _flatten(value, f"{prefix}{key}.", out)
    else:
      out[prefix + key] = tuple(value) if isinstance(value, list) else value


def _pid_alive(pid: Any) -> bool:
  if not isinstance(pid, int):
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


def _load_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def hand_load_runs(root: str) -> pd.DataFrame:
  """The plain loop: root/<sweep>/<member>/{config,metadata,summary}.json into one row each."""
  records = []
  for sweep in sorted(os.listdir(root)):
    sweep_dir = os.path.join(root, sweep)
    try:
      members = {m["folder"]: m for m in _load_json(os.path.join(sweep_dir, "sweep.json"))[
          "members"]}
    except (OSError, ValueError, KeyError):
      members = {}
    for member in sorted(os.listdir(sweep_dir)):
      folder = os.path.join(sweep_dir, member)
      try:
        config = _load_json(os.path.join(folder, "config.json"))
      except (FileNotFoundError, NotADirectoryError):
        continue  # sweep.json, populations/
      metadata = _load_json(os.path.join(folder, "metadata.json"))
      summary = _load_json(os.path.join(folder, "summary.json"))
      status = metadata["status"]
      if status == "running" and not _pid_alive(metadata["process"]["pid"]):
        status = "crashed"
      metrics = summary["metrics"]
      record = {"run": folder, "name": f"{sweep}/{member}", "status": status,
                "seed": metadata["seed"], "sweep": sweep, "member": member,
                "population": members.get(member, {}).get("population"),
                "error": metadata["error"], "start_time": metadata["start_time"],
                "end_time": metadata["end_time"],
                "last_step": max((e["final_step"] for e in metrics.values()), default=None)}
      _flatten(config, "config.", record)
      for name, entry in metrics.items():
        record[f"final.{name}"] = entry["final"]
        record[f"best.{name}"] = entry.get("best", math.nan)
      records.append(record)
  return pd.DataFrame(records)


def hand_load_metrics(runs: pd.DataFrame) -> pd.DataFrame:
  """pandas.read_csv of each run's metrics.csv, concatenated, with a `run` column."""
  frames = []
  for folder in runs["run"]:
    frame = pd.read_csv(os.path.join(folder, "metrics.csv"))
    frame["run"] = folder
    frames.append(frame)
  return pd.concat(frames, ignore_index=True)


def hand_stats(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Per (lr, weight decay): mean/sem of the completed runs' final value, and of the curve."""
  done = runs[runs["status"] == "completed"]
  summary = done.groupby(KEYS)[f"final.{METRIC}"].agg(["count", "mean", "std", "sem"])
  rows = metrics[metrics["name"] == METRIC].merge(done[["run", *KEYS]], on="run")
  curves = rows.groupby([*KEYS, "step"])["value"].agg(["count", "mean", "std", "sem"])
  return summary, curves


# --- checks ---------------------------------------------------------------------------------


def _check(ok: bool, what: str, failures: list[str]) -> None:
  print(f"  {'ok  ' if ok else 'FAIL'} {what}")
  if not ok:
    failures.append(what)


def check_runs(runs: pd.DataFrame, hand: pd.DataFrame, tree: Tree, failures: list[str]) -> None:
  """load_runs against what was written and against the baseline's table."""
  _check(len(runs) == tree.runs, f"load_runs: {len(runs)} rows (wrote {tree.runs} runs)",
         failures)
  counts = runs["status"].value_counts().to_dict()
  _check(counts == tree.statuses, f"statuses {counts} (wrote {tree.statuses})", failures)
  _check(counts == hand["status"].value_counts().to_dict(), "the baseline reads the same "
         "statuses", failures)
  merged = runs.merge(hand, on="run", suffixes=("", "_hand"))
  same = len(merged) == len(runs)
  for column in ("seed", f"final.{METRIC}", f"best.{METRIC}", "config.optimizer.learning_rate",
                 "last_step"):
    a, b = merged[column].to_numpy(float), merged[f"{column}_hand"].to_numpy(float)
    same &= bool(np.array_equal(a, b, equal_nan=True))
  _check(same, "seed, final/best eval/accuracy, learning rate and last step equal the "
         "baseline's, run by run", failures)
  _check(runs["sweep"].notna().all() and set(runs["population"]) == {"p0"},
         "every run has its sweep and population (from sweep.json)", failures)
  failed = runs[runs["status"] == "failed"]
  _check(failed["error"].str.startswith("NonFiniteError").all(),
         "failed runs carry their error", failures)


def check_metrics(metrics: pd.DataFrame, summary: pd.DataFrame, curves: pd.DataFrame,
                  hand_summary: pd.DataFrame, hand_curves: pd.DataFrame, runs: pd.DataFrame,
                  tree: Tree, failures: list[str]) -> None:
  """load_metrics, summarize and curve_stats against what was written and the baseline."""
  _check(len(metrics) == tree.metric_rows,
         f"load_metrics: {len(metrics)} rows (wrote {tree.metric_rows})", failures)
  _check(int((metrics["name"] == METRIC).sum()) == tree.eval_rows,
         f"{METRIC} rows: {int((metrics['name'] == METRIC).sum())} (wrote {tree.eval_rows})",
         failures)
  _check(metrics["step"].dtype == np.int64 and metrics["value"].dtype == np.float64
         and isinstance(metrics["run"].dtype, pd.CategoricalDtype),
         "dtypes: step int64, value float64, run categorical", failures)
  completed = int((runs["status"] == "completed").sum())
  n = int(summary["n"].sum() + summary["n_missing"].sum())
  _check(n == completed and len(summary) == len(hand_summary),
         f"summarize: {len(summary)} groups over {n} runs ({len(hand_summary)} groups, "
         f"{completed} completed runs)", failures)
  means = summary.set_index(KEYS)["mean"].sort_index()
  _check(bool(np.allclose(means.to_numpy(), hand_summary["mean"].sort_index().to_numpy())),
         "summarize's means equal the baseline's", failures)
  _check(len(curves) == len(hand_curves) and bool(np.allclose(
      np.sort(curves["mean"].to_numpy()), np.sort(hand_curves["mean"].to_numpy()))),
         f"curve_stats: {len(curves)} (group, step) rows, means equal the baseline's", failures)


# --- the measurements -----------------------------------------------------------------------


def measure_load(root: str, tree: Tree, repeats: int, limit: float, failures: list[str]
                 ) -> Verdict:
  """(1): load_runs on the big tree against the plain loop."""
  seconds, cpus, results = best_of({"gmf_jax": lambda: analysis.load_runs(root),
                                    "baseline": lambda: hand_load_runs(root)}, repeats,
                                   "load_runs")
  check_runs(results["gmf_jax"], results["baseline"], tree, failures)
  gmf, hand = min(seconds["gmf_jax"]), min(seconds["baseline"])
  columns = results["gmf_jax"].shape[1]
  print(f"(1) load_runs, {tree.runs} runs ({columns} columns): {gmf:.2f} s (goal < {limit:g} s: "
        f"{gmf / limit:.2f}x the limit); baseline plain loop {hand:.2f} s -> gmf/baseline "
        f"{gmf / hand:.2f}x; {tree.runs / gmf:,.0f} runs/s; best of {repeats}, all: gmf_jax "
        f"{_all(seconds['gmf_jax'])}, baseline {_all(seconds['baseline'])}; least CPU: gmf_jax "
        f"{min(cpus['gmf_jax']):.2f} s, baseline {min(cpus['baseline']):.2f} s")
  cpu = cpus["gmf_jax"][seconds["gmf_jax"].index(gmf)]
  return Verdict(f"load_runs, {tree.runs} runs", f"{gmf:.2f} s (< {limit:g} s; CPU {cpu:.2f} s), "
                 f"{gmf / hand:.2f}x the baseline", gmf < limit)


def measure_metrics(root: str, tree: Tree, repeats: int, limit: float, failures: list[str]
                    ) -> Verdict:
  """(2): load_metrics + summarize + curve_stats on the small tree against the plain loop."""
  load_sec, _, runs = timed(lambda: analysis.load_runs(root))
  hand_runs = hand_load_runs(root)
  parts: dict[str, list[float]] = {"load_metrics": [], "summarize": [], "curve_stats": []}

  def gmf():
    t0 = time.perf_counter()
    metrics = analysis.load_metrics(root)
    t1 = time.perf_counter()
    summary = analysis.summarize(runs, METRIC)
    t2 = time.perf_counter()
    curves = analysis.curve_stats(metrics, runs, METRIC)
    t3 = time.perf_counter()
    for name, sec in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
      parts[name].append(sec)
    return metrics, summary, curves

  def hand():
    metrics = hand_load_metrics(hand_runs)
    return metrics, *hand_stats(hand_runs, metrics)

  seconds, cpus, results = best_of({"gmf_jax": gmf, "baseline": hand}, repeats,
                                   "metrics+stats")
  metrics, summary, curves = results["gmf_jax"]
  hand_metrics, hand_summary, hand_curves = results["baseline"]
  _check(len(hand_metrics) == tree.metric_rows, f"baseline read {len(hand_metrics)} rows",
         failures)
  check_metrics(metrics, summary, curves, hand_summary, hand_curves, runs, tree, failures)
  best = int(np.argmin(seconds["gmf_jax"]))
  g, h = seconds["gmf_jax"][best], min(seconds["baseline"])
  split = ", ".join(f"{name} {sec[best]:.2f} s" for name, sec in parts.items())
  print(f"(2) load_metrics + summarize + curve_stats, {tree.runs} runs x {LOGS} logged steps "
        f"({tree.metric_rows:,} rows, {len(summary)} groups): {g:.2f} s (goal < {limit:g} s: "
        f"{g / limit:.2f}x the limit); baseline read_csv+concat+groupby {h:.2f} s -> "
        f"gmf/baseline {g / h:.2f}x; best of {repeats}, all: gmf_jax {_all(seconds['gmf_jax'])}, "
        f"baseline {_all(seconds['baseline'])}; least CPU: gmf_jax {min(cpus['gmf_jax']):.2f} s, "
        f"baseline {min(cpus['baseline']):.2f} s")
  print(f"    parts (best repeat): {split}; load_runs of these runs (before the clock) "
        f"{load_sec:.2f} s, so the whole path from the folder {g + load_sec:.2f} s")
  return Verdict(f"load_metrics + summarize + curve_stats, {tree.runs} runs",
                 f"{g:.2f} s (< {limit:g} s; CPU {cpus['gmf_jax'][best]:.2f} s), {g / h:.2f}x the "
                 "baseline", g < limit)


def import_time() -> str:
  """Seconds a fresh process takes to import gmf_jax.analysis (and pandas alone)."""
  def seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout)
  return (f"import gmf_jax.analysis in a fresh process: {seconds('gmf_jax.analysis'):.2f} s "
          f"(pandas alone {seconds('pandas'):.2f} s); not in the timings")


def profile(label: str, fn: Callable[[], Any], top: int = 12) -> None:
  profiler = cProfile.Profile()
  profiler.enable()
  fn()
  profiler.disable()
  out = io.StringIO()
  stats = pstats.Stats(profiler, stream=out)
  stats.sort_stats("tottime").print_stats(top)
  print(f"\n--- profile: {label} (by own time) ---")
  lines = out.getvalue().splitlines()
  start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
  print("\n".join(line for line in lines[max(start - 4, 0):] if line.strip()))


# --- driver ---------------------------------------------------------------------------------


def _parent(tmp: str | None) -> str:
  """Where the trees go: --tmp, else /dev/shm when it has room, else the system temp folder."""
  if tmp:
    return tmp
  with contextlib.suppress(OSError):
    if os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free > 2 << 30:
      return SHM
  return tempfile.gettempdir()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="a fifth of the runs, one repeat, limits scaled by size")
  parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
  parser.add_argument("--check", action="store_true",
                      help="exit 1 if a goal is missed or a check fails")
  parser.add_argument("--profile", action="store_true",
                      help="cProfile one call of each gmf_jax function")
  parser.add_argument("--keep", metavar="DIR", help="write the run folders here and keep them")
  parser.add_argument("--tmp", metavar="DIR",
                      help="parent of the temporary folder (default /dev/shm if it has room)")
  args = parser.parse_args(argv)
  scale = 5 if args.quick else 1
  repeats = args.repeats or (1 if args.quick else 3)
  n_load, n_metrics = RUNS_LOAD // scale, RUNS_METRICS // scale
  limit_load, limit_metrics = GOAL_LOAD_SEC / scale, GOAL_METRICS_SEC / scale

  print(machine_info())
  if os.getloadavg()[0] >= 0.5 * (os.cpu_count() or 1):
    print("note: other processes keep the CPUs busy; wall times will be longer than the CPU "
          "times printed beside them")
  print(import_time())
  verdicts: list[Verdict] = []
  failures: list[str] = []
  start = time.perf_counter()
  with contextlib.ExitStack() as stack:
    if args.keep:
      base = os.path.abspath(args.keep)
      if os.path.exists(os.path.join(base, "runs_load")):
        raise SystemExit(f"{base} already holds runs_load/; remove it or choose another --keep")
    else:
      base = stack.enter_context(tempfile.TemporaryDirectory(prefix="analysis_speed_",
                                                             dir=_parent(args.tmp)))
    big, small = os.path.join(base, "runs_load"), os.path.join(base, "runs_metrics")
    print(f"\nwriting {n_load} + {n_metrics} run folders under {base}", flush=True)
    tree_big = write_tree(big, n_load, LOGS, alive=True)
    tree_small = write_tree(small, n_metrics, LOGS)
    for tree in (tree_big, tree_small):
      print(f"  {tree.runs} runs, {tree.metric_rows:,} metrics rows, {tree.statuses}: "
            f"{tree.seconds:.1f} s", flush=True)

    print(f"\n(1) load_runs on {n_load} runs", flush=True)
    verdicts.append(measure_load(big, tree_big, repeats, limit_load, failures))
    print(f"\n(2) load_metrics + summarize + curve_stats on {n_metrics} runs", flush=True)
    verdicts.append(measure_metrics(small, tree_small, repeats, limit_metrics, failures))

    if args.profile:
      runs = analysis.load_runs(small)
      metrics = analysis.load_metrics(small)
      profile(f"load_runs, {n_load} runs", lambda: analysis.load_runs(big))
      profile(f"load_metrics, {n_metrics} runs", lambda: analysis.load_metrics(small))
      profile("summarize", lambda: analysis.summarize(runs, METRIC))
      profile("curve_stats", lambda: analysis.curve_stats(metrics, runs, METRIC))
    if args.keep:
      print(f"\nthe run folders stay in {big} and {small}")
  elapsed = time.perf_counter() - start

  print(f"\nsummary ({'--quick, ' if args.quick else ''}{elapsed:.0f} s; the run folders in the "
        "page cache):")
  for v in verdicts:
    mark = "    " if v.passed is None else ("PASS" if v.passed else "FAIL")
    print(f"  {mark}  {v.name}: {v.text}")
  print(f"  {'FAIL' if failures else 'PASS'}  correctness checks"
        + (f": {'; '.join(failures)}" if failures else ""))
  ok = not failures and all(v.passed is not False for v in verdicts)
  return 1 if args.check and not ok else 0


if __name__ == "__main__":
  sys.exit(main())
