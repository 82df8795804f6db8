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

  (c) PBT vs grid         16 members of configs/mlp.py with learning rates spaced evenly in
                          log scale over two decades (0.003 to 0.3), a constant schedule, 5,000
                          steps evaluated every 500: a grid (each member keeps its rate) and PBT
                          (interval 500, quantile 0.25, perturb 0.8/1.2, resample 0.25, the
                          rate log-uniform in [0.001, 1]) at the same member-steps, for sweep
                          seeds 0, 1, 2 (`--config.seed`: the members' seeds and PBT's). Per
                          arm: the best member's final eval/loss, its mean over the seeds with a
                          95% t interval, and which arm wins. Reported, no goal.

    python benchmarks/adaptive_sweep.py [--quick]

--quick: sampler seed 0 only, 4,500 steps (rungs 500 and 1500); PBT one seed, 2,000 steps.
About 8 minutes on the 2-core CPU VM when idle (--quick: about 2).
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

import numpy as np

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


def pbt_file(folder: pathlib.Path, name: str, pbt: bool) -> pathlib.Path:
  rule = ('"pbt": {"interval": 500, "quantile": 0.25, "perturb": [0.8, 1.2], '
          '"resample_probability": 0.25, "hyperparameters": {"lr": {"distribution": '
          '"log_uniform_values", "min": 0.001, "max": 1.0}}},' if pbt else "")
  rates = [round(0.003 * 100 ** (i / 15), 6) for i in range(16)]
  path = folder / f"{name}.py"
  path.write_text(f'''def get_sweep():
  return {{"config": "configs/mlp.py", "method": "grid",
          "parameters": {{"lr": {{"values": {rates!r}}},
                         "schedule.name": {{"value": "constant"}}}},
          "metric": {{"name": "eval/loss", "goal": "minimize"}}, {rule}
          "name": "{name}"}}
''')
  return path


def interval(values: list[float]) -> str:
  """mean [95% t interval] of a few values."""
  from scipy import stats

  mean = float(np.mean(values))
  if len(values) < 2:
    return f"{mean:.4f} (one seed)"
  half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1)
               / np.sqrt(len(values)))
  return f"{mean:.4f} [{mean - half:.4f}, {mean + half:.4f}]"


def pbt_arm(folder: pathlib.Path, env, seeds: list[int], steps: int) -> list[str]:
  best = {"grid": [], "pbt": []}
  for seed in seeds:
    for arm in best:
      sweep = pbt_file(folder, f"{arm}{seed}", arm == "pbt")
      args = [f"--sweep={sweep}", f"--workdir={folder / sweep.stem}",
              f"--config.num_steps={steps}", "--config.eval_every_steps=500",
              f"--config.seed={seed}", "--config.progress_bar=False"]
      done = subprocess.run([sys.executable, "-m", "gmf_jax.sweep", *args], cwd=folder, env=env,
                            capture_output=True, text=True)
      if done.returncode != 0:
        raise SystemExit(f"{sweep.stem} failed:\n{done.stderr[-3000:]}")
      finals = [m["final"] for m in members(folder / sweep.stem).values()]
      best[arm].append(min(finals))
      steps_done = sum(m["last"] for m in members(folder / sweep.stem).values())
      print(f"(c) seed {seed} {arm}: best final eval/loss {best[arm][-1]:.4f} "
            f"({steps_done} member-steps)", flush=True)
  winner = "PBT" if np.mean(best["pbt"]) < np.mean(best["grid"]) else "the grid"
  return [f"(c) best final eval/loss over seeds {seeds}: grid {interval(best['grid'])}, PBT "
          f"{interval(best['pbt'])} (mean [95% t interval]); {winner} wins on the mean"]


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
    lines += pbt_arm(folder, env, seeds, 2000 if args.quick else 5000)
    print(lines[-1], flush=True)
  print("\nsummary:\n" + "\n".join(lines) + f"\n{'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "--mask-arm":
    sys.exit(mask_arm(sys.argv[2:]))
  main()
