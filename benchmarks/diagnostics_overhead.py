"""What the shipped diagnostics cost: configs/vae.py with its default diagnostics, and without.

Both runs are otherwise identical (wandb disabled in both). Prints the seconds the diagnostics
took inside the run (summary.json's diagnostics_sec: each run with its outputs, and the wait
for their background compilation), their share of the run's wall time, and the A/B wall-time
difference with the spread of repeated runs (on this noisy 2-core VM that spread is often
larger than the diagnostics themselves).
Acceptance: diagnostics at the default schedules take at most 5% of the run's wall time.

  python benchmarks/diagnostics_overhead.py [--repeats 3] [--config configs/vae.py]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import gmf_jax
from gmf_jax.runlog.files import read_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(config_path: str, with_diagnostics: bool, workdir: str) -> tuple[float, dict]:
  config = gmf_jax.load_config(config_path, {"progress_bar": False, "wandb.mode": "disabled"})
  if not with_diagnostics:
    with config.unlocked():
      config.diagnostics = {}
  start = time.perf_counter()
  gmf_jax.train_and_evaluate(config, workdir=workdir)
  total = time.perf_counter() - start
  return total, read_json(os.path.join(workdir, "summary.json"))["diagnostics_sec"]


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--config", default=os.path.join(ROOT, "configs", "vae.py"))
  args = parser.parse_args(argv)
  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  os.environ.pop("WANDB_MODE", None)
  totals = {True: [], False: []}
  per_diag: list[dict] = []
  with tempfile.TemporaryDirectory() as tmp:
    run_once(args.config, True, os.path.join(tmp, "warm"))  # process start-up costs once
    for i in range(args.repeats):
      for with_diag in (False, True):  # alternate, so drift hits both alike
        total, seconds = run_once(args.config, with_diag, os.path.join(tmp, f"{with_diag}-{i}"))
        totals[with_diag].append(total)
        if with_diag:
          per_diag.append(seconds)
  without, with_ = statistics.median(totals[False]), statistics.median(totals[True])
  spread = max(max(v) - min(v) for v in totals.values())
  print(f"{os.path.relpath(args.config, ROOT)}, median of {args.repeats}")
  print(f"without diagnostics: {without:7.2f} s")
  print(f"with diagnostics:    {with_:7.2f} s   (largest spread of repeats: {spread:.2f} s)")
  own = 0.0
  for name in per_diag[0]:
    sec = statistics.median(d.get(name, 0.0) for d in per_diag)
    own += sec
    print(f"  {name:18s} {sec:6.3f} s")
  share = own / with_
  print(f"diagnostics' own time: {own:.2f} s = {100 * share:.1f}% of the run "
        f"({'PASS' if share <= 0.05 else 'FAIL'} <= 5%); A/B wall-time difference "
        f"{100 * (with_ / without - 1):+.1f}%")

if __name__ == "__main__":
  main(sys.argv[1:])
