"""What recording a run costs: checkpoints, metrics (CSV, summary, wandb offline), the run folder.

Trains the default job (configs/vae.py, its diagnostics off) "recorded" (its default recording
settings: checkpoints every `checkpoint.every_steps` and the best by eval, metrics every
`log_every_steps`, wandb offline, plots at the end) and "bare" (no periodic or best
checkpoint, wandb disabled, one metrics row per jitted call), alternating. Two measurements:

  accounted  what the runs timed of their own recording (summary.json `record_sec`: the
             training thread's seconds in the run folder, metric writes, checkpoint saves and
             waits, plots and the wandb finish), recorded minus bare, plus the CPU time of the
             work beside training: the wandb thread (`record_background_cpu_sec`), the
             processes the run starts (wandb's service; git, in both arms) and orbax's writer
             threads (CPU per save, measured here on its own, times the extra saves).
             Background CPU does not cost training its full amount: the default job keeps
             about 1.5 of the 2 cores busy. How much training loses per CPU-second of work
             beside it is measured in this process (`contention_factor`: blocks of the job's
             own training calls, alternating without and with a background thread at work, so
             the VM's run-to-run differences cancel). Printed: the bound with background CPU in
             full, and the estimate with the measured factor.
  A/B        the extra wall time of a recorded run, phase by phase (benchmarks/run_phases.py).
             On this VM whole runs differ in speed by about +-5% from one run to the next: with
             7 runs of each it resolves about 0.3 s of a 9 s run, with 20 about 0.2 s. A
             cross-check.

The verdict is on the estimate: the training thread's own recording time plus the background
CPU times the measured contention factor.

  python benchmarks/record_overhead.py [--repeats 20] [--num_steps 10000]
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
  before = os.times()
  start = time.time()
  gmf_jax.train_and_evaluate(config, workdir=workdir)
  end = time.time()
  after = os.times()
  phases = run_phases(os.path.join(workdir, "metrics.csv"), config.steps_per_call, start, end)
  summary = read_json(os.path.join(workdir, "summary.json"))
  # Processes the run started and waited for: wandb's service (wandb-core), git.
  summary["children_cpu_sec"] = (after.children_user + after.children_system
                                 - before.children_user - before.children_system)
  return phases, summary


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=20,
                      help="runs of each kind; 20 (about 7 minutes) let the A/B resolve ~2%%")
  parser.add_argument("--num_steps", type=int, default=10_000)
  args = parser.parse_args(argv)
  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  phases: dict[str, list[np.ndarray]] = {"bare": [], "recorded": []}
  accounted: dict[str, list[dict[str, float]]] = {"bare": [], "recorded": []}
  saves: dict[str, list[int]] = {"bare": [], "recorded": []}
  with tempfile.TemporaryDirectory() as tmp:
    run_once(True, args.num_steps, os.path.join(tmp, "warm"))  # process start-up costs once
    for i in range(args.repeats):
      order = ("bare", "recorded") if i % 2 == 0 else ("recorded", "bare")
      for name in order:  # alternate, so drift hits both alike
        run, summary = run_once(name == "recorded", args.num_steps,
                                os.path.join(tmp, f"{name}-{i}"))
        phases[name].append(run)
        parts = dict(summary["record_sec"])
        for thread, sec in summary.get("record_background_cpu_sec", {}).items():
          parts[f"{thread} thread CPU"] = sec
        parts["child processes CPU"] = summary["children_cpu_sec"]
        accounted[name].append(parts)
        saves[name].append(summary["record_calls"]["checkpoints"] - 1)  # minus the close
      print(f"  repeat {i + 1}/{args.repeats}: bare {phases['bare'][-1].sum():.2f} s, recorded "
            f"{phases['recorded'][-1].sum():.2f} s", flush=True)

  c = compare(phases["bare"], phases["recorded"])
  recorded = c.base + c.total
  print(f"\nconfigs/vae.py, {args.num_steps} steps, {args.repeats} runs of each; a bare run "
        f"takes {c.base:.2f} s")
  print("extra time of a recorded run, by phase (differences of the per-phase medians):")
  print(f"  head (run folder, wandb start, compilation, first call) {c.head:+7.3f} s")
  print(f"  later calls (metric writes, checkpoints, wandb beside)   {c.calls:+7.3f} s")
  print("    each call, ms: " + " ".join(f"{1000 * d:+.0f}" for d in c.per_call))
  print(f"  tail (final checkpoint, plots, wandb finish)            {c.tail:+7.3f} s")
  per_save = orbax_cpu_per_save()
  print("what the runs timed of their own recording (median seconds):")
  print(f"  {'':22s} {'bare':>6s} {'recorded':>8s}")
  med = {k: {n: statistics.median(p.get(n, 0.0) for p in v) for n in accounted["recorded"][0]}
         for k, v in accounted.items()}
  for name in med["recorded"]:
    print(f"  {name:22s} {med['bare'][name]:6.3f} {med['recorded'][name]:8.3f}")
  extra_saves = statistics.median(saves["recorded"]) - statistics.median(saves["bare"])
  orbax = extra_saves * per_save
  print(f"  orbax writer threads   {extra_saves:g} extra saves x {1000 * per_save:.0f} ms CPU "
        f"= {orbax:.3f}")
  background = {"wandb thread CPU", "child processes CPU"}
  own = sum(med["recorded"][n] - med["bare"][n] for n in med["recorded"] if n not in background)
  beside = sum(med["recorded"][n] - med["bare"][n] for n in background) + orbax
  upper = own + beside
  factor = contention_factor()
  estimate = own + factor * beside
  totals = {k: [float(p.sum()) for p in v] for k, v in phases.items()}
  print(f"whole runs (noisy): bare {statistics.median(totals['bare']):.2f} s, recorded "
        f"{statistics.median(totals['recorded']):.2f} s")
  print(f"A/B by phase: {c.total:+.3f} s = {100 * c.total / recorded:+.1f}% (resolves about "
        f"+-{0.3 * (7 / args.repeats) ** 0.5:.1f} s here)")
  print(f"training thread {own:.3f} s; beside training {beside:.3f} s of CPU, of which training "
        f"loses {factor:.2f} s per CPU-second here (measured)")
  print(f"checkpoints + logging, background CPU in full (upper bound): {upper:.3f} s = "
        f"{100 * upper / recorded:.1f}%")
  share = estimate / recorded
  print(f"checkpoints + logging, background CPU x {factor:.2f}: {estimate:.3f} s = "
        f"{100 * share:.1f}% of a recorded run ({'PASS' if share <= LIMIT else 'FAIL'} "
        f"<= {100 * LIMIT:.0f}%)")


def contention_factor(pairs: int = 8, calls: int = 4) -> float:
  """Seconds the default job's training loses per CPU-second of work beside it.

  Measured within this process, so the VM's run-to-run speed differences cancel: blocks of
  `calls` training calls (the job's own compiled chunk) alternate without and with a background
  thread at work. The thread mixes Python (holding the GIL, like wandb's client) and zlib
  compression (releasing it, like orbax's writers and the wandb service). Returns the median
  over block pairs of (extra wall time of the loaded block) / (the thread's CPU time in it).
  """
  import functools
  import threading
  import zlib

  import jax

  from gmf_jax.train import pipeline
  from gmf_jax.train.build import build_experiment, init_state
  from gmf_jax.train.step import make_keys, train_chunk_on_device

  exp = build_experiment(gmf_jax.load_config(os.path.join(ROOT, "configs", "vae.py")))
  keys = make_keys(0)
  state = init_state(exp, keys)
  data = pipeline.to_device(exp.dataset.train)
  n = exp.config.steps_per_call
  chunk = jax.jit(functools.partial(train_chunk_on_device, loss_fn=exp.loss,
                                    batch_size=exp.config.batch_size, num_steps=n),
                  donate_argnums=0)
  payload = os.urandom(1 << 20)

  def block(state, loaded: bool):
    stop, cpu = threading.Event(), [0.0]

    def work():
      while not stop.is_set():
        zlib.compress(payload, 1)
        sum(i * i for i in range(20_000))
      cpu[0] = time.thread_time()

    thread = threading.Thread(target=work, daemon=True) if loaded else None
    start = time.perf_counter()
    if thread:
      thread.start()
    for _ in range(calls):
      state, metrics = chunk(state, keys, data, np.int32(n))
      jax.device_get(metrics)
    wall = time.perf_counter() - start
    if thread:
      stop.set()
      thread.join()
    return state, wall, cpu[0]

  state, _, _ = block(state, False)  # compiles
  ratios = []
  for _ in range(pairs):
    state, plain, _ = block(state, False)
    state, loaded, cpu = block(state, True)
    ratios.append(max(0.0, loaded - plain) / cpu)
  return min(1.0, statistics.median(ratios))


def orbax_cpu_per_save(repeats: int = 5) -> float:
  """CPU seconds of orbax's writer threads per checkpoint of the default job's state."""
  from gmf_jax.runlog.checkpoint import Checkpointer
  from gmf_jax.train.build import build_experiment, init_state
  from gmf_jax.train.step import make_keys

  exp = build_experiment(gmf_jax.load_config(os.path.join(ROOT, "configs", "vae.py")))
  state = init_state(exp, make_keys(0))
  samples = []
  with tempfile.TemporaryDirectory() as tmp:
    checkpointer = Checkpointer(tmp, max_to_keep=2)
    for step in range(repeats + 1):
      process, thread = time.process_time(), time.thread_time()
      checkpointer.save(step, state, {})
      checkpointer.wait()
      samples.append((time.process_time() - process) - (time.thread_time() - thread))
    checkpointer.close()
  return statistics.median(samples[1:])  # the first save sets orbax up


if __name__ == "__main__":
  main(sys.argv[1:])
