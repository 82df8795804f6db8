"""What recording a run costs: checkpoints, metrics (CSV, summary, wandb offline), the run folder.

Trains the default job (configs/vae.py, its diagnostics off) "recorded" (its default recording
settings) and "bare" (no periodic or best checkpoints, wandb disabled, one metrics row per
jitted call, which the loop writes while the next call computes), alternating. The overhead is
the sum of

  accounted   what each recorded run timed itself (summary.json `record_sec`): the training
              thread's seconds in checkpoint saves and waits, metric writes, the run folder and
              the wandb finish;
  contention  how much slower the recorded run's training calls are than the bare run's,
              from the calls' own times (metrics.csv wall_time at the end of each call): wandb
              works in a background thread and orbax writes in the background, on the cores
              training uses. Compared at the 90th percentile of the
              per-call rates, the undisturbed speed (other tenants of this VM slow random
              seconds by 10-25%; see benchmarks/RESULTS.md); a negative difference counts as 0;

over the recorded run's wall time. Also printed: the wandb thread's CPU time, and the A/B
difference of whole-call wall times (the median of adjacent pairs, too noisy here to judge 3%).

The end-of-run plots (loss curves as PNG, and to wandb) are a fixed cost of every run, bare or
not, whatever its length: they are reported beside the overhead, not in it.

  python benchmarks/record_overhead.py [--repeats 7] [--num_steps 10000]
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import gmf_jax
from gmf_jax.runlog.files import read_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 0.03  # acceptance: checkpoints + logging <= 3% of the run's wall time
CHUNK = 500  # configs/vae.py's steps_per_call
QUANTILE = 0.9
FIXED = ("plots",)  # end-of-run costs, the same in both arms


def run_once(recorded: bool, num_steps: int, workdir: str) -> tuple[float, dict]:
  """Returns (whole-call seconds, summary.json)."""
  overrides = {"num_steps": num_steps, "progress_bar": False}
  if recorded:
    overrides["wandb.mode"] = "offline"
  else:
    overrides.update({"checkpoint.every_steps": 0, "checkpoint.best_metric": "",
                      "wandb.mode": "disabled", "log_every_steps": CHUNK})
  config = gmf_jax.load_config(os.path.join(ROOT, "configs", "vae.py"), overrides)
  with config.unlocked():
    config.diagnostics = {}  # their cost is benchmarks/diagnostics_overhead.py's to measure
  os.environ.pop("WANDB_MODE", None)
  if config.steps_per_call != CHUNK:
    raise SystemExit(f"configs/vae.py now has steps_per_call={config.steps_per_call}; update "
                     f"CHUNK={CHUNK} in {__file__}")
  start = time.perf_counter()
  gmf_jax.train_and_evaluate(config, workdir=workdir)
  total = time.perf_counter() - start
  summary = read_json(os.path.join(workdir, "summary.json"))
  summary["call_sec"] = _call_seconds(os.path.join(workdir, "metrics.csv"))
  return total, summary


def _call_seconds(metrics_csv: str) -> list[float]:
  """Seconds of each jitted call after the first, from the wall_time of the train/loss row
  written when the call's metrics reach the host."""
  with open(metrics_csv, newline="") as f:
    marks = [float(row["wall_time"]) for row in csv.DictReader(f)
             if row["name"] == "train/loss" and int(row["step"]) % CHUNK == 0]
  return list(np.diff(marks))


def accounted(summary: dict) -> tuple[dict[str, float], float]:
  """(seconds per recording part, the run's wall seconds) from a run's summary.json."""
  parts = dict(summary["record_sec"])
  for name, sec in summary.get("record_background_cpu_sec", {}).items():
    parts[f"{name} (background CPU)"] = sec
  return parts, summary["run_sec"]


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--num_steps", type=int, default=10_000)
  args = parser.parse_args(argv)
  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  calls: dict[str, list[float]] = {"bare": [], "recorded": []}
  call_sec: dict[str, list[float]] = {"bare": [], "recorded": []}
  accounted_runs, loop_secs, run_secs = [], [], []
  with tempfile.TemporaryDirectory() as tmp:
    run_once(True, args.num_steps, os.path.join(tmp, "warm"))  # process start-up costs once
    for i in range(args.repeats):
      order = ("bare", "recorded") if i % 2 == 0 else ("recorded", "bare")
      for name in order:  # alternate, so drift hits both alike
        total, summary = run_once(name == "recorded", args.num_steps,
                                  os.path.join(tmp, f"{name}-{i}"))
        calls[name].append(total)
        call_sec[name].extend(summary["call_sec"])
        if name == "recorded":
          accounted_runs.append(accounted(summary)[0])
          loop_secs.append(sum(summary["call_sec"]))
          run_secs.append(summary["run_sec"])
      print(f"  repeat {i + 1}/{args.repeats}: bare {calls['bare'][-1]:.2f} s, recorded "
            f"{calls['recorded'][-1]:.2f} s", flush=True)

  rate = {k: float(np.quantile(CHUNK / np.asarray(v), QUANTILE)) for k, v in call_sec.items()}
  slowdown = max(0.0, rate["bare"] / rate["recorded"] - 1)
  run_sec = statistics.median(run_secs)
  print(f"\nconfigs/vae.py, {args.num_steps} steps, {args.repeats} runs of each")
  print("recording, as each recorded run timed it (median seconds):")
  own = 0.0
  for name in accounted_runs[0]:
    sec = statistics.median(p.get(name, 0.0) for p in accounted_runs)
    if name in FIXED:
      note = "   (fixed, end of run, in both; not in the overhead)"
    elif name.endswith("(background CPU)"):
      note = "   (beside training: see contention)"
    else:
      note, own = "", own + sec
    print(f"  {name:28s} {sec:6.3f}{note}")
  contention = slowdown * statistics.median(loop_secs)
  print(f"training calls, p{QUANTILE * 100:.0f} of per-call rates: bare {rate['bare']:.0f} steps/s, "
        f"recorded {rate['recorded']:.0f} steps/s: contention {100 * slowdown:.1f}% of "
        f"{statistics.median(loop_secs):.2f} s = {contention:.3f} s")
  paired = [r / b - 1 for r, b in zip(calls["recorded"], calls["bare"], strict=True)]
  print(f"A/B of whole calls (noisy): bare {statistics.median(calls['bare']):.2f} s, recorded "
        f"{statistics.median(calls['recorded']):.2f} s, median of pairs "
        f"{100 * statistics.median(paired):+.1f}% (pairs {100 * min(paired):+.1f}% to "
        f"{100 * max(paired):+.1f}%)")
  share = (own + contention) / run_sec
  print(f"checkpoints + logging: {own:.3f} s accounted + {contention:.3f} s contention = "
        f"{100 * share:.1f}% of the run's {run_sec:.2f} s "
        f"({'PASS' if share <= LIMIT else 'FAIL'} <= {100 * LIMIT:.0f}%)")


if __name__ == "__main__":
  main(sys.argv[1:])
