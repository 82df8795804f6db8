"""What the shipped diagnostics cost: a config with its default diagnostics, and without them.

Both arms are otherwise identical (wandb disabled in both) and alternate. The cost is the sum of

  accounted   the seconds the diagnostics took inside the run (summary.json `diagnostics_sec`:
              building them, each scheduled run with its outputs, and any wait for their
              background compilation);
  first call  how much longer the first training call (compilation included) took with the
              diagnostics compiling beside it in a background thread (median of each arm);
  contention  how much slower the later training calls are (90th percentile of the per-call
              rates, from metrics.csv's wall_time at the end of each call: the undisturbed
              speed; other tenants of this VM slow random seconds by 10-25%); a negative
              difference counts as 0;

over the run's wall time. Also printed: the A/B difference of whole-call wall times (the
median of adjacent pairs; too noisy on this VM to judge 5% alone).
Acceptance: diagnostics at the default schedules take at most 5% of the run's wall time.

  python benchmarks/diagnostics_overhead.py [--repeats 7] [--config configs/vae.py]
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
LIMIT = 0.05
QUANTILE = 0.9


def run_once(config_path: str, with_diagnostics: bool, workdir: str) -> tuple[float, dict]:
  """Returns (whole-call seconds, summary.json with the per-call seconds added)."""
  config = gmf_jax.load_config(config_path, {"progress_bar": False, "wandb.mode": "disabled"})
  if not with_diagnostics:
    with config.unlocked():
      config.diagnostics = {}
  start = time.perf_counter()
  gmf_jax.train_and_evaluate(config, workdir=workdir)
  total = time.perf_counter() - start
  summary = read_json(os.path.join(workdir, "summary.json"))
  chunk = config.steps_per_call
  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    marks = [float(row["wall_time"]) for row in csv.DictReader(f)
             if row["name"] == "train/loss" and int(row["step"]) % chunk == 0]
  summary["call_rates"] = list(chunk / np.diff(marks))
  return total, summary


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--config", default=os.path.join(ROOT, "configs", "vae.py"))
  args = parser.parse_args(argv)
  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  os.environ.pop("WANDB_MODE", None)
  totals: dict[bool, list[float]] = {True: [], False: []}
  summaries: dict[bool, list[dict]] = {True: [], False: []}
  with tempfile.TemporaryDirectory() as tmp:
    run_once(args.config, True, os.path.join(tmp, "warm"))  # process start-up costs once
    for i in range(args.repeats):
      order = (False, True) if i % 2 == 0 else (True, False)
      for with_diag in order:  # alternate, so drift hits both alike
        total, summary = run_once(args.config, with_diag, os.path.join(tmp, f"{with_diag}-{i}"))
        totals[with_diag].append(total)
        summaries[with_diag].append(summary)
      print(f"  repeat {i + 1}/{args.repeats}: without {totals[False][-1]:.2f} s, with "
            f"{totals[True][-1]:.2f} s", flush=True)

  med = lambda values: statistics.median(list(values))
  print(f"\n{os.path.relpath(args.config, ROOT)}, {args.repeats} runs of each")
  print("inside the run (median seconds):")
  own = 0.0
  for name in summaries[True][0]["diagnostics_sec"]:
    sec = med(s["diagnostics_sec"].get(name, 0.0) for s in summaries[True])
    own += sec
    print(f"  {name:18s} {sec:6.3f}")
  first = {k: med(s["first_chunk_sec"] for s in v) for k, v in summaries.items()}
  first_extra = max(0.0, first[True] - first[False])
  rate = {k: float(np.quantile([r for s in v for r in s["call_rates"]], QUANTILE))
          for k, v in summaries.items()}
  slowdown = max(0.0, rate[False] / rate[True] - 1)
  loop = med(s["loop_sec"] - s["first_chunk_sec"] for s in summaries[True])
  contention = slowdown * loop
  print(f"first training call (compiles): without {first[False]:.2f} s, with {first[True]:.2f} s"
        f" -> {first_extra:.3f} s")
  print(f"later calls, p{QUANTILE * 100:.0f} of per-call rates: without {rate[False]:.0f}, with "
        f"{rate[True]:.0f} steps/s -> contention {100 * slowdown:.1f}% of {loop:.2f} s = "
        f"{contention:.3f} s")
  paired = [w / wo - 1 for w, wo in zip(totals[True], totals[False], strict=True)]
  print(f"A/B of whole calls (noisy): without {med(totals[False]):.2f} s, with "
        f"{med(totals[True]):.2f} s, median of pairs {100 * med(paired):+.1f}% "
        f"(pairs {100 * min(paired):+.1f}% to {100 * max(paired):+.1f}%)")
  run_sec = med(s["run_sec"] for s in summaries[True])
  share = (own + first_extra + contention) / run_sec
  print(f"diagnostics: {own:.3f} s inside + {first_extra:.3f} s first call + {contention:.3f} s "
        f"contention = {100 * share:.1f}% of the run's {run_sec:.2f} s "
        f"({'PASS' if share <= LIMIT else 'FAIL'} <= {100 * LIMIT:.0f}%)")


if __name__ == "__main__":
  main(sys.argv[1:])
