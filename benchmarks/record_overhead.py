"""What recording a run costs: checkpoints, metrics.csv, summary, wandb (offline) and plots.

Trains the default job (configs/vae.py) twice per repeat in one process:
  bare:      no periodic or best checkpoints, wandb disabled, train metrics logged once;
  recorded:  the shipped defaults (checkpoints every `checkpoint.every_steps`, the best one
             kept, metrics every `log_every_steps`, wandb offline).
Both evaluate on the same schedule. Prints the training-loop time of each (from the first
chunk to the end of the loop, compilation excluded) and the whole call's wall time.

  python benchmarks/record_overhead.py [--repeats 3] [--num_steps 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import gmf_jax
from gmf_jax.runlog.files import read_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(recorded: bool, num_steps: int, workdir: str) -> tuple[float, float]:
  """Returns (training-loop seconds without the first chunk, whole-call seconds)."""
  overrides = {"num_steps": num_steps, "progress_bar": False}
  if recorded:
    overrides["wandb.mode"] = "offline"
  else:
    overrides.update({"checkpoint.every_steps": 0, "checkpoint.best_metric": "",
                      "wandb.mode": "disabled", "log_every_steps": num_steps})
  config = gmf_jax.load_config(os.path.join(ROOT, "configs", "vae.py"), overrides)
  with config.unlocked():
    config.diagnostics = {}  # their cost is benchmarks/diagnostics_overhead.py's to measure
  os.environ.pop("WANDB_MODE", None)
  start = time.perf_counter()
  gmf_jax.train_and_evaluate(config, workdir=workdir)
  total = time.perf_counter() - start
  summary = read_json(os.path.join(workdir, "summary.json"))
  return summary["loop_sec"] - summary["first_chunk_sec"], total


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--num_steps", type=int, default=10_000)
  args = parser.parse_args(argv)
  import logging

  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  results = {"bare": [], "recorded": []}
  with tempfile.TemporaryDirectory() as tmp:
    run_once(True, args.num_steps, os.path.join(tmp, "warm"))  # process start-up costs once
    for i in range(args.repeats):
      for name in ("bare", "recorded"):  # alternate, so drift hits both alike
        results[name].append(run_once(name == "recorded", args.num_steps,
                                      os.path.join(tmp, f"{name}-{i}")))
  loop = {k: statistics.median(v[0] for v in vals) for k, vals in results.items()}
  total = {k: statistics.median(v[1] for v in vals) for k, vals in results.items()}
  print(f"configs/vae.py, {args.num_steps} steps, median of {args.repeats}")
  print(f"{'':10s} {'loop s':>8s} {'call s':>8s}")
  for name in results:
    print(f"{name:10s} {loop[name]:8.2f} {total[name]:8.2f}")
  call_overhead = total["recorded"] / total["bare"] - 1
  print(f"training-loop difference: {100 * (loop['recorded'] / loop['bare'] - 1):+.1f}%")
  print(f"wall-time overhead of checkpoints + logging (whole run, wandb start/finish and plots "
        f"included): {total['recorded'] - total['bare']:+.2f} s = {100 * call_overhead:+.1f}% "
        f"({'PASS' if call_overhead <= 0.03 else 'FAIL'} <= 3%)")


if __name__ == "__main__":
  main(sys.argv[1:])
