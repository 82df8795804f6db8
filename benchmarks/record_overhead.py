"""What recording a run costs: checkpoints, metrics (CSV, summary, wandb offline), the run folder.

Trains the default job (configs/vae.py, its diagnostics off) "recorded" (its default recording
settings: checkpoints every `checkpoint.every_steps` and the best by eval, metrics every
`log_every_steps`, wandb offline, plots at the end) and "bare" (no periodic or best
checkpoint, wandb disabled, one metrics row per jitted call), alternating. The overhead is the
extra wall time of a recorded run, phase by phase (benchmarks/run_phases.py: the medians of
each phase over the repeats, so that bursts of other tenants' load do not decide; a phase that
comes out faster counts as zero). What each
recorded run timed of its own recording (summary.json `record_sec`, `record_background_cpu_sec`)
is printed beside it, as the explanation.

  python benchmarks/record_overhead.py [--repeats 7] [--num_steps 10000]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import gmf_jax
from gmf_jax.runlog.files import read_json
from run_phases import compare, run_phases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 0.03  # acceptance: checkpoints + logging <= 3% of the run's wall time


def run_once(recorded: bool, num_steps: int, workdir: str) -> tuple[np.ndarray, dict]:
  """Returns (the run's phases, summary.json)."""
  overrides = {"num_steps": num_steps, "progress_bar": False}
  config = gmf_jax.load_config(os.path.join(ROOT, "configs", "vae.py"), overrides)
  with config.unlocked():
    config.diagnostics = {}  # their cost is benchmarks/diagnostics_overhead.py's to measure
    if recorded:
      config.wandb.mode = "offline"
    else:
      config.checkpoint.every_steps, config.checkpoint.best_metric = 0, ""
      config.wandb.mode = "disabled"
      config.log_every_steps = config.steps_per_call
  os.environ.pop("WANDB_MODE", None)
  start = time.time()
  gmf_jax.train_and_evaluate(config, workdir=workdir)
  end = time.time()
  phases = run_phases(os.path.join(workdir, "metrics.csv"), config.steps_per_call, start, end)
  return phases, read_json(os.path.join(workdir, "summary.json"))


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--num_steps", type=int, default=10_000)
  args = parser.parse_args(argv)
  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  phases: dict[str, list[np.ndarray]] = {"bare": [], "recorded": []}
  accounted: list[dict[str, float]] = []
  with tempfile.TemporaryDirectory() as tmp:
    run_once(True, args.num_steps, os.path.join(tmp, "warm"))  # process start-up costs once
    for i in range(args.repeats):
      order = ("bare", "recorded") if i % 2 == 0 else ("recorded", "bare")
      for name in order:  # alternate, so drift hits both alike
        run, summary = run_once(name == "recorded", args.num_steps,
                                os.path.join(tmp, f"{name}-{i}"))
        phases[name].append(run)
        if name == "recorded":
          parts = dict(summary["record_sec"])
          for thread, sec in summary.get("record_background_cpu_sec", {}).items():
            parts[f"{thread} thread CPU"] = sec
          accounted.append(parts)
      print(f"  repeat {i + 1}/{args.repeats}: bare {phases['bare'][-1].sum():.2f} s, recorded "
            f"{phases['recorded'][-1].sum():.2f} s", flush=True)

  c = compare(phases["bare"], phases["recorded"])
  recorded = c.base + c.total
  print(f"\nconfigs/vae.py, {args.num_steps} steps, {args.repeats} runs of each; a bare run "
        f"takes {c.base:.2f} s")
  print("extra time of a recorded run, by phase (differences of the per-phase medians):")
  print(f"  head (run folder, wandb start, compilation, first call) {c.head:+7.3f} s")
  print(f"  later calls (metric writes, checkpoints, wandb beside)   {c.calls:+7.3f} s")
  print(f"  tail (final checkpoint, plots, wandb finish)            {c.tail:+7.3f} s")
  print("what the recorded runs timed of their own recording (median seconds):")
  for name in accounted[0]:
    print(f"  {name:22s} {statistics.median(p.get(name, 0.0) for p in accounted):6.3f}")
  totals = {k: [float(p.sum()) for p in v] for k, v in phases.items()}
  print(f"whole runs (noisy): bare {statistics.median(totals['bare']):.2f} s, recorded "
        f"{statistics.median(totals['recorded']):.2f} s")
  share = c.upper / recorded
  print(f"checkpoints + logging: {c.total:+.3f} s in all; counting no phase as faster, "
        f"{c.upper:.3f} s = {100 * share:.1f}% of a recorded run "
        f"({'PASS' if share <= LIMIT else 'FAIL'} <= {100 * LIMIT:.0f}%)")


if __name__ == "__main__":
  main(sys.argv[1:])
