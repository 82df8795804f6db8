"""GPU sweep: 64 seeds of configs/mlp.py as one vmapped population against 64 runs in sequence.

Both in this process, on the device JAX finds (made for a GPU; runs anywhere):

  vmapped     `train_population` of seeds 0..N-1: one program trains every member.
  sequential  the same N members as `train_and_evaluate` single runs, one after another.

Both arms train configs/mlp.py for --steps steps (default 2000) with wandb disabled,
diagnostics off and evaluation and the checkpoint only at the end: training speed (what
recording costs is benchmarks/sweep_speed.py's part). Reported per arm: member-steps/s at the
steady state (the summary's `member_steps_per_sec`, and the median single run's
`steps_per_sec`), member-steps over loop time (each run's first chunk, compiling or loading
its program, included), and the run time; then the ratios. The sequential arm stops starting
runs after --sequential-budget seconds and is reported from the runs it finished (its total
for all N scaled up from them). Compiled programs are cached in a temporary folder, as are the
run folders: both arms start cold, and the sequential runs load what the first one compiled.
Under 5 minutes on a GPU with the defaults.

    python benchmarks/gpu_sweep.py [--quick] [--seeds N] [--steps S] [--sequential-budget SEC]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time

import jax

import gmf_jax
from gmf_jax.runlog.files import read_json
from gmf_jax.train.loop import train_population
from gmf_jax.train.recorder import MemberSetup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "mlp.py")
CHUNK = 500  # configs/mlp.py's steps_per_call
TRAIN_ONLY = {
    "wandb.mode": "disabled", "progress_bar": False, "data.on_device": "yes",
    "checkpoint.every_steps": 0, "checkpoint.best_metric": "", "diagnostics": {},
}


def device_name() -> str:
  device = jax.devices()[0]
  return f"{device.device_kind} ({device.platform})"


def member_setups(num_seeds: int, num_steps: int, workdir: str) -> list[MemberSetup]:
  overrides = {**TRAIN_ONLY, "num_steps": num_steps, "eval_every_steps": num_steps}
  return [MemberSetup(gmf_jax.load_config(CONFIG, {**overrides, "seed": seed}),
                      os.path.join(workdir, f"seed={seed}"), CONFIG)
          for seed in range(num_seeds)]


def vmapped(num_seeds: int, num_steps: int, workdir: str) -> tuple[dict, float]:
  """The population's first member's summary info, and the call's wall time."""
  start = time.perf_counter()
  session = train_population(member_setups(num_seeds, num_steps, workdir),
                             population_dir=os.path.join(workdir, "population"),
                             label=f"{num_seeds} seeds")
  wall = time.perf_counter() - start
  bad = [m.name for m in session.members if m.status != "completed"]
  if bad:
    raise SystemExit(f"members {bad} did not complete")
  return dict(session.members[0].summary.info), wall


def sequential(num_seeds: int, num_steps: int, workdir: str, budget: float
               ) -> tuple[list[dict], float]:
  """Summaries of the single runs finished before `budget` seconds ran out, and their wall
  time."""
  infos = []
  start = time.perf_counter()
  for setup in member_setups(num_seeds, num_steps, workdir):
    if infos and time.perf_counter() - start > budget:
      break
    result = gmf_jax.train_and_evaluate(setup.config, workdir=setup.workdir,
                                        config_file=setup.config_file)
    infos.append(read_json(os.path.join(result.workdir, "summary.json")))
    if len(infos) in (1, 2, 4, 8, 16, 32, 64):
      print(f"  sequential: {len(infos)} runs done, {time.perf_counter() - start:.1f} s",
            flush=True)
  return infos, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="4 seeds, 1000 steps")
  parser.add_argument("--seeds", type=int, default=None, help="members (default 64)")
  parser.add_argument("--steps", type=int, default=None, help="steps per member (default 2000)")
  parser.add_argument("--sequential-budget", type=float, default=150.0,
                      help="seconds after which the sequential arm starts no more runs")
  args = parser.parse_args(argv)
  num_seeds = args.seeds or (4 if args.quick else 64)
  num_steps = args.steps or (1000 if args.quick else 2000)
  if num_steps < 2 * CHUNK or num_steps % CHUNK:
    parser.error(f"--steps must be a multiple of {CHUNK}, at least {2 * CHUNK}")
  if num_seeds < 2:
    parser.error("--seeds must be at least 2")

  logging.getLogger("gmf_jax").addHandler(logging.NullHandler())  # keep its run log quiet
  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  device = device_name()
  print(f"jax.devices(): {jax.devices()}")
  print(f"device kind: {device}; jax {jax.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs")
  print(f"{num_seeds} seeds of configs/mlp.py, {num_steps} steps each, {CHUNK} per call",
        flush=True)
  with tempfile.TemporaryDirectory(prefix="gpu_sweep_") as tmp:
    os.environ["GMF_JAX_COMPILE_CACHE_DIR"] = os.path.join(tmp, "compile-cache")
    os.environ.pop("WANDB_MODE", None)
    pop, pop_wall = vmapped(num_seeds, num_steps, os.path.join(tmp, "vmapped"))
    print(f"  vmapped: {pop_wall:.1f} s", flush=True)
    runs, seq_wall = sequential(num_seeds, num_steps, os.path.join(tmp, "sequential"),
                                args.sequential_budget)

  member_steps = num_seeds * num_steps
  pop_steady, pop_loop = pop["member_steps_per_sec"], member_steps / pop["loop_sec"]
  done = len(runs)
  seq_steady = statistics.median(r["steps_per_sec"] for r in runs)
  seq_loop = done * num_steps / sum(r["loop_sec"] for r in runs)
  seq_run = sum(r["run_sec"] for r in runs) * num_seeds / done  # all N, scaled from `done`
  scaled = "" if done == num_seeds else f" (scaled from the {done} runs finished)"
  print(f"\non {device}:")
  print(f"  vmapped population of {num_seeds}: {pop_steady:10.0f} member-steps/s steady, "
        f"{pop_loop:10.0f} over loop time; run {pop['run_sec']:.1f} s "
        f"(first chunk {pop['first_chunk_sec']:.1f} s)")
  print(f"  {done} single runs in sequence:   {seq_steady:10.0f} member-steps/s steady "
        f"(median run), {seq_loop:10.0f} over loop time; run {seq_run:.1f} s for "
        f"{num_seeds}{scaled}")
  print(f"  vmapped / sequential on {device}: {pop_steady / seq_steady:.2f}x steady, "
        f"{pop_loop / seq_loop:.2f}x over loop time, {seq_run / pop['run_sec']:.2f}x less run "
        "time")
  return 0


if __name__ == "__main__":
  sys.exit(main())
