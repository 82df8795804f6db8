"""Adaptive sweeps: what early termination saves, and what shrinking the population adds.

Issue "Sweeps that spend compute where it pays". Every arm is a fresh
`python -m gmf_jax.sweep` process, timed from start to exit, in a folder of its own with a copy
of configs/; all share one compilation cache, filled first by a short warm-up of the full
search, as the shared check adaptive-halving does.

  (a) hyperband vs full   a 27-point random search of configs/mlp.py (learning rate
                          log-uniform in [0.003, 1], momentum uniform in [0.5, 0.99]), 13,500
                          steps, evaluated every 500, trained fully and with hyperband
                          (`min_iter` 500, `eta` 3: rungs 500, 1500, 4500), for sampler seeds
                          0, 1, 2. Per seed: the member-steps (the last step of every member's
                          metrics.csv) and the wall time, hyperband / full; and whether the
                          best member hyperband trained to the end is among the full search's
                          top 3 by final eval/loss. Goals: member-steps <= 1/3, wall <= 0.5x,
                          top 3 for every seed.
  (b) shrink vs mask      the same hyperband sweep (sampler seed 0) with the stopped members
                          kept in the program, unrecorded (`make_early_stop(shrink=False)`: the
                          same decisions, no gather): wall time, mask / shrink. Goal: shrinking
                          clearly faster.

The PBT arm (against a grid at the same member-steps) comes with population-based training.

    python benchmarks/adaptive_sweep.py [--quick]

--quick: sampler seed 0 only, 4,500 steps (rungs 500 and 1500). About 6 minutes on the 2-core
CPU VM when idle (--quick: about 2).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def sweep_file(folder: pathlib.Path, name: str, seed: int, halving: bool) -> pathlib.Path:
  rule = ('"early_terminate": {"type": "hyperband", "min_iter": 500, "eta": 3},'
          if halving else "")
  path = folder / f"{name}.py"
  path.write_text(f'''def get_sweep():
  return {{"config": "configs/mlp.py", "method": "random", "count": 27, "seed": {seed},
          "parameters": {{"lr": {{"distribution": "log_uniform_values", "min": 0.003,
                                 "max": 1.0}},
                         "optimizer.momentum": {{"distribution": "uniform", "min": 0.5,
                                                "max": 0.99}}}},
          "metric": {{"name": "eval/loss", "goal": "minimize"}}, {rule}
          "name": "{name}"}}
''')
  return path


def run(folder: pathlib.Path, sweep: pathlib.Path, steps: int, env, mask: bool = False) -> float:
  """Runs one sweep in a fresh process; returns its wall time."""
  args = [f"--sweep={sweep}", f"--workdir={folder / sweep.stem}",
          f"--config.num_steps={steps}", "--config.eval_every_steps=500",
          "--config.progress_bar=False"]
  command = ([sys.executable, __file__, "--mask-arm", *args] if mask
             else [sys.executable, "-m", "gmf_jax.sweep", *args])
  start = time.perf_counter()
  done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if done.returncode != 0:
    raise SystemExit(f"{sweep.stem} failed ({done.returncode}):\n{done.stderr[-3000:]}")
  return wall


def members(root: pathlib.Path) -> dict[str, dict]:
  """Each member's status, last step and final eval/loss."""
  out = {}
  for m in json.loads((root / "sweep.json").read_text())["members"]:
    last, final = 0, None
    with open(root / m["name"] / "metrics.csv") as f:
      for r in csv.DictReader(f):
        last = max(last, int(r["step"]))
        if r["name"] == "eval/loss":
          final = float(r["value"])
    out[m["name"]] = {"status": m["status"], "last": last, "final": final}
  return out


def mask_arm(argv: list[str]) -> int:
  """The sweep command line, with stopped members kept in the program (masking)."""
  from gmf_jax.sweep import __main__ as sweep_main
  from gmf_jax.sweep import stopping

  stopping.make_early_stop = functools.partial(stopping.make_early_stop, shrink=False)
  return sweep_main.main(argv)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  seeds, steps = ([0], 4500) if args.quick else ([0, 1, 2], 13500)
  lines, ok = [], True
  with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(tmp)
    shutil.copytree(ROOT / "configs", folder / "configs")
    env = {**os.environ, "GMF_JAX_COMPILE_CACHE_DIR": str(folder / "cache"),
           "PYTHONPATH": str(ROOT)}
    run(folder, sweep_file(folder, "warm", 0, False), 20, env)  # the compilation cache
    for seed in seeds:
      full = sweep_file(folder, f"full{seed}", seed, False)
      halving = sweep_file(folder, f"hb{seed}", seed, True)
      t_full = run(folder, full, steps, env)
      t_hb = run(folder, halving, steps, env)
      f, h = members(folder / full.stem), members(folder / halving.stem)
      steps_f = sum(m["last"] for m in f.values())
      steps_h = sum(m["last"] for m in h.values())
      ranked = sorted((m["final"], n) for n, m in f.items())
      finishers = sorted((m["final"], n) for n, m in h.items() if m["status"] == "completed")
      best = finishers[0][1]
      rank = [n for _, n in ranked].index(best) + 1
      stopped = sum(m["status"] == "stopped" for m in h.values())
      good = steps_h <= steps_f / 3 and t_hb <= 0.5 * t_full and rank <= 3
      ok &= good
      lines.append(f"(a) seed {seed}: member-steps {steps_h} / {steps_f} = "
                   f"{steps_h / steps_f:.3f} (goal <= 0.333); wall {t_hb:.1f} s / {t_full:.1f} s"
                   f" = {t_hb / t_full:.2f}x (goal <= 0.5); {stopped} stopped; best finisher "
                   f"{best} ranks {rank} in the full search (goal <= 3): "
                   f"{'PASS' if good else 'FAIL'}")
      print(lines[-1], flush=True)
      if seed == seeds[0]:
        masked = sweep_file(folder, f"mask{seed}", seed, True)
        t_mask = run(folder, masked, steps, env, mask=True)
        same = {n: m["status"] for n, m in members(folder / masked.stem).items()} == {
            n: m["status"] for n, m in h.items()}
        lines.append(f"(b) seed {seed}: masked {t_mask:.1f} s / shrunk {t_hb:.1f} s = "
                     f"{t_mask / t_hb:.2f}x (shrinking is faster: {t_mask > t_hb}); same "
                     f"statuses: {same}")
        print(lines[-1], flush=True)
  print("\nsummary:\n" + "\n".join(lines) + f"\n{'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "--mask-arm":
    sys.exit(mask_arm(sys.argv[2:]))
  main()
