"""What JAX's persistent compilation cache saves: the default job run as a user runs it.

Each repeat runs `python -m gmf_jax.main` in fresh processes, three ways:
  off    compile_cache.dir='' (every program compiled, nothing written);
  first  an empty cache folder (every program compiled and written: a config's first run);
  again  the same folder once more (every program loaded: a rerun, another seed).
It prints the medians of the process's wall time and of the run's own `run_sec` and
`first_chunk_sec` (summary.json), the cache's hits and misses, and checks that the three runs
wrote bitwise the same metrics.

  python benchmarks/compile_cache.py [--config configs/vae.py] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("off", "first", "again")


def run(config: str, workdir: str, cache_dir: str) -> tuple[float, dict, list]:
  """One run in a fresh process; returns (wall seconds, summary.json, metric values)."""
  env = {**os.environ, "WANDB_MODE": "disabled"}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  args = [sys.executable, "-m", "gmf_jax.main", f"--config={config}", f"--workdir={workdir}",
          "--config.progress_bar=False", f"--config.compile_cache.dir={cache_dir}"]
  start = time.perf_counter()
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if proc.returncode:
    raise SystemExit(f"run failed:\n{proc.stderr[-2000:]}")
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    values = [(r["step"], r["name"], r["value"]) for r in csv.DictReader(f)]
  return wall, summary, values


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(ROOT, "configs", "vae.py"))
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  results: dict[str, list[tuple[float, dict]]] = {k: [] for k in KINDS}
  same = True
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(args.repeats):
      cache = os.path.join(tmp, f"cache-{i}")
      values = {}
      for kind in KINDS:
        wall, summary, values[kind] = run(args.config, os.path.join(tmp, f"{kind}-{i}"),
                                          "" if kind == "off" else cache)
        results[kind].append((wall, summary))
      same &= values["off"] == values["first"] == values["again"]
      print(f"  repeat {i + 1}/{args.repeats}: " + ", ".join(
          f"{k} {results[k][-1][0]:.2f} s" for k in KINDS), flush=True)

  print(f"\n{os.path.relpath(args.config, ROOT)}, {args.repeats} repeats (medians)")
  print(f"  {'':6s} {'process':>8s} {'run_sec':>8s} {'first call':>10s} {'hits':>5s} "
        f"{'misses':>6s}")
  med = lambda xs: statistics.median(xs)
  for kind in KINDS:
    walls = [w for w, _ in results[kind]]
    sums = [s for _, s in results[kind]]
    print(f"  {kind:6s} {med(walls):7.2f}s {med(s['run_sec'] for s in sums):7.2f}s "
          f"{med(s['first_chunk_sec'] for s in sums):9.2f}s "
          f"{med(s['compile_cache']['hits'] for s in sums):5.0f} "
          f"{med(s['compile_cache']['misses'] for s in sums):6.0f}")
  off = med(w for w, _ in results["off"])
  again = med(w for w, _ in results["again"])
  print(f"a rerun takes {again:.2f} s instead of {off:.2f} s ({off / again:.2f}x); "
        f"metrics bitwise the same in all runs: {same}")
  if not same:
    raise SystemExit(1)


if __name__ == "__main__":
  main(sys.argv[1:])
