"""What each trainer part costs: a ResNet-8 on the built-in digits with the part on, against the
same run without it, in one process.

Pairs (the baseline is configs/resnet.py with every part off: BatchNorm, batch 128, float32):

  batchnorm   model.norm=batch against model.norm=none
  augment     crop_padding=1, flip, noise_std=0.05 against no augmentation   (goal: <= 1.10)
  accumulate  optimizer.accumulate_steps=4 against 1, at the same batch of 128
  ema         ema.decay=0.999 against no averaged weights                     (goal: <= 1.05)
  precision   precision.compute=bfloat16 against float32 (for a GPU: on a CPU bfloat16 is
              emulated and slower; run by benchmarks/gpu_check.py)

Each arm is gmf_jax's own chunk program (`gmf_jax.train.chunks.make_feed`: the jitted
`lax.scan` of `steps_per_call` steps with the state donated, the data on the device), timed per
call after a warm-up call (compilation), the arms of a pair alternating call by call so the VM's
slow seconds fall on both. Reported per pair: the median seconds per step of each arm and their
ratio (part / baseline), and the ratio of the 10th percentiles ("undisturbed": other tenants
only ever slow a call down), on which the goals are judged.

    python benchmarks/trainer_parts.py [--pairs batchnorm,augment,accumulate,ema]
                                       [--calls 8] [--steps-per-call 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = {"optimizer.accumulate_steps": 1, "ema.decay": None, "ema.evaluate": "live",
        "data.augment.crop_padding": 0, "data.augment.noise_std": 0.0,
        "checkpoint.best_metric": "eval/accuracy", "progress_bar": False}
PAIRS = {
    "batchnorm": ({"model.norm": "batch"}, {"model.norm": "none"}, None),
    "augment": ({"data.augment.crop_padding": 1, "data.augment.flip": True,
                 "data.augment.noise_std": 0.05}, {}, 1.10),
    "accumulate": ({"optimizer.accumulate_steps": 4}, {}, None),
    "ema": ({"ema.decay": 0.999}, {}, 1.05),
    "precision": ({"precision.compute": "bfloat16"}, {}, None),
}


def make_arm(overrides: dict, steps_per_call: int):
  """A callable running one chunk of `steps_per_call` steps (and waiting for it)."""
  import gmf_jax
  from gmf_jax.train.build import build_experiment, init_population
  from gmf_jax.train.chunks import make_feed
  from gmf_jax.train.step import make_keys

  config = gmf_jax.load_config(os.path.join(REPO, "configs", "resnet.py"),
                               {**BASE, "steps_per_call": steps_per_call, **overrides})
  with config.unlocked():
    config.diagnostics = type(config.diagnostics)()  # training only
  exp = build_experiment(config)
  stack = lambda tree: jax.tree_util.tree_map(lambda a: np.asarray(a)[None], tree)
  keys = stack(make_keys(config.seed))
  state = init_population(exp, keys, stack(exp.hparams))
  feed = make_feed(exp, keys, state, 1)
  box = {"state": state, "start": 0}

  def call() -> float:
    begin = time.perf_counter()
    box["state"], metrics = feed.run(box["state"], box["start"], steps_per_call)
    jax.block_until_ready(metrics)
    box["start"] += steps_per_call
    return (time.perf_counter() - begin) / steps_per_call

  return call


def measure(name: str, calls: int, steps_per_call: int) -> dict:
  on, off, goal = PAIRS[name]
  arms = {"part": make_arm(on, steps_per_call), "base": make_arm(off, steps_per_call)}
  for arm in arms.values():
    arm()  # compiles
  times = {"part": [], "base": []}
  for i in range(calls):
    for arm in (("part", "base") if i % 2 == 0 else ("base", "part")):
      times[arm].append(arms[arm]())
  med = {k: statistics.median(v) for k, v in times.items()}
  low = {k: float(np.percentile(v, 10)) for k, v in times.items()}
  return {"name": name, "median_ms": {k: 1e3 * v for k, v in med.items()},
          "ratio": med["part"] / med["base"], "undisturbed": low["part"] / low["base"],
          "goal": goal}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pairs", default="batchnorm,augment,accumulate,ema")
  parser.add_argument("--calls", type=int, default=8)
  parser.add_argument("--steps-per-call", type=int, default=10)
  args = parser.parse_args(argv)
  print(f"ResNet-8 on digits, batch 128, {args.steps_per_call} steps per call, {args.calls} "
        f"calls per arm; {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPUs", flush=True)
  ok = True
  for name in args.pairs.split(","):
    r = measure(name, args.calls, args.steps_per_call)
    verdict = ""
    if r["goal"] is not None:
      passed = r["undisturbed"] <= r["goal"]
      ok &= passed
      verdict = f"  goal <= {r['goal']:.2f}: {'PASS' if passed else 'FAIL'}"
    print(f"{name:10s} part {r['median_ms']['part']:7.2f} ms/step  base "
          f"{r['median_ms']['base']:7.2f} ms/step  ratio {r['ratio']:.3f}  undisturbed "
          f"{r['undisturbed']:.3f}{verdict}", flush=True)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
