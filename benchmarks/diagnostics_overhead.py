"""What the shipped diagnostics cost: a config with its default diagnostics, and without them.

Both kinds of run are otherwise identical (wandb disabled in both) and alternate. The cost is
the extra wall time of a run with diagnostics, phase by phase (benchmarks/run_phases.py: the
medians of each phase over the repeats, so that bursts of other tenants' load do not decide; a
phase that comes out faster counts as zero). It includes everything the diagnostics do: their
build, their compilation in a background thread beside the first training calls, their
scheduled runs and their outputs. What the runs timed of the diagnostics themselves
(summary.json `diagnostics_sec`) is printed beside it, as the explanation.
Acceptance: diagnostics at the default schedules take at most 5% of the run's wall time.

  python benchmarks/diagnostics_overhead.py [--repeats 7] [--config configs/vae.py] [--no-cache]
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
from run_phases import compare, run_phases

import gmf_jax
from gmf_jax.runlog.files import read_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 0.05


def run_once(config_path: str, with_diagnostics: bool, workdir: str,
             cache: bool = True) -> tuple[np.ndarray, dict]:
  """Returns (the run's phases, summary.json)."""
  config = gmf_jax.load_config(config_path, {"progress_bar": False, "wandb.mode": "disabled"})
  if not cache:
    config.compile_cache.dir = ""
  with config.unlocked():
    if not with_diagnostics:
      config.diagnostics = {}
    config.log_every_steps = min(config.log_every_steps, config.steps_per_call)
  if config.steps_per_call % config.log_every_steps:
    raise SystemExit("log_every_steps must divide steps_per_call to time each call")
  start = time.time()
  gmf_jax.train_and_evaluate(config, workdir=workdir)
  end = time.time()
  phases = run_phases(os.path.join(workdir, "metrics.csv"), config.steps_per_call, start, end)
  return phases, read_json(os.path.join(workdir, "summary.json"))


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--config", default=os.path.join(ROOT, "configs", "vae.py"))
  parser.add_argument("--no-cache", dest="cache", action="store_false",
                      help="compile everything in every run (JAX's compilation cache off), as a "
                           "config's first run does")
  args = parser.parse_args(argv)
  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  os.environ.pop("WANDB_MODE", None)
  phases: dict[bool, list[np.ndarray]] = {True: [], False: []}
  inside: list[dict[str, float]] = []
  with tempfile.TemporaryDirectory() as tmp:
    # Process start-up costs once; with the cache (the default) this run also fills it, so the
    # runs below load their programs, as every run of a config after its first does.
    run_once(args.config, True, os.path.join(tmp, "warm"), args.cache)
    for i in range(args.repeats):
      order = (False, True) if i % 2 == 0 else (True, False)
      for with_diag in order:  # alternate, so drift hits both alike
        run, summary = run_once(args.config, with_diag, os.path.join(tmp, f"{with_diag}-{i}"),
                                args.cache)
        phases[with_diag].append(run)
        if with_diag:
          inside.append(summary["diagnostics_sec"])
      print(f"  repeat {i + 1}/{args.repeats}: without {phases[False][-1].sum():.2f} s, with "
            f"{phases[True][-1].sum():.2f} s", flush=True)

  c = compare(phases[False], phases[True])
  with_diag = c.base + c.total
  cache = "programs loaded from the compilation cache" if args.cache else "cache off"
  print(f"\n{os.path.relpath(args.config, ROOT)} ({cache}), {args.repeats} runs of each; a run "
        f"without diagnostics takes {c.base:.2f} s")
  print("extra time of a run with diagnostics, by phase (differences of the per-phase medians):")
  print(f"  head (build, compilation, first call)          {c.head:+7.3f} s")
  print(f"  later calls (background compilation beside)    {c.calls:+7.3f} s")
  print("    each call, ms: " + " ".join(f"{1000 * d:+.0f}" for d in c.per_call))
  print(f"  tail (scheduled runs at the end, outputs)      {c.tail:+7.3f} s")
  print("what the runs timed of the diagnostics (median seconds):")
  for name in inside[0]:
    print(f"  {name:18s} {statistics.median(d.get(name, 0.0) for d in inside):6.3f}")
  totals = {k: [float(p.sum()) for p in v] for k, v in phases.items()}
  print(f"whole runs (noisy): without {statistics.median(totals[False]):.2f} s, with "
        f"{statistics.median(totals[True]):.2f} s")
  share = c.upper / with_diag
  print(f"diagnostics: {c.total:+.3f} s in all; counting no phase as faster, {c.upper:.3f} s = "
        f"{100 * share:.1f}% of a run with them ({'PASS' if share <= LIMIT else 'FAIL'} "
        f"<= {100 * LIMIT:.0f}%)")


if __name__ == "__main__":
  main(sys.argv[1:])
