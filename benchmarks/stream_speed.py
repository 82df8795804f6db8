"""Streamed training data (grain) against the data on the device and a hand-written host loop.

    python benchmarks/stream_speed.py [--steps 3000] [--repeats 3]

Every method trains the same MLP classifier (digits, batch 64, SGD) for `--steps` steps, in
chunks of 100 steps:
  by hand      numpy gathers a chunk's batches (the same epoch order) on the host, then a
               hand-written jitted `lax.scan` over them; no read-ahead.
  device       gmf_jax with the split on the device (`data.on_device=yes`): the floor.
  grain 0      gmf_jax streamed through grain in the trainer's process (`data.workers=0`).
  grain 2      gmf_jax streamed through 2 grain reader processes (`data.workers=2`).
gmf_jax's steps/s is its own `summary.json` (chunks timed end to end, host work included);
checkpoints, evaluation between chunks, wandb and diagnostics are off. Ratios are against the
hand-written loop of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import gmf_jax  # noqa: E402
from gmf_jax.data import make_dataset  # noqa: E402
from gmf_jax.data.order import epoch_permutation  # noqa: E402

CHUNK, BATCH = 100, 64
CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "mlp.py")


def by_hand(steps: int) -> float:
  ds = make_dataset({"name": "digits"})
  x, y = ds.train.arrays["x"].reshape(len(ds.train), -1), ds.train.arrays["y"]
  per_epoch = len(x) // BATCH
  key = jax.random.PRNGKey(0)
  init = jax.random.normal(key, (x.shape[1], 64)) * 0.1, jnp.zeros(64), \
      jax.random.normal(key, (64, 10)) * 0.1, jnp.zeros(10)
  tx = optax.sgd(0.05, momentum=0.9)

  def loss(p, bx, by):
    h = jax.nn.relu(bx @ p[0] + p[1])
    return optax.softmax_cross_entropy_with_integer_labels(h @ p[2] + p[3], by).mean()

  @jax.jit
  def chunk(carry, bx, by):
    def body(carry, b):
      p, o = carry
      g = jax.grad(loss)(p, *b)
      u, o = tx.update(g, o, p)
      return (optax.apply_updates(p, u), o), None
    return jax.lax.scan(body, carry, (bx, by))[0]

  perms = {}
  def batches(start):
    idx = []
    for s in range(start, start + CHUNK):
      e, pos = divmod(s, per_epoch)
      if e not in perms:
        perms[e] = np.asarray(epoch_permutation(key, e, len(x)))
      idx.append(perms[e][pos * BATCH:(pos + 1) * BATCH])
    idx = np.concatenate(idx)
    return x[idx].reshape(CHUNK, BATCH, -1), y[idx].reshape(CHUNK, BATCH)

  carry = (init, tx.init(init))
  carry = chunk(carry, *batches(0))  # compile
  jax.block_until_ready(carry)
  start = time.perf_counter()
  for s in range(CHUNK, steps + CHUNK, CHUNK):
    carry = chunk(carry, *batches(s))
  jax.block_until_ready(carry)
  return steps / (time.perf_counter() - start)


def gmf(steps: int, **data) -> float:
  with tempfile.TemporaryDirectory() as tmp:
    config = gmf_jax.load_config(CONFIG, {
        "num_steps": steps, "steps_per_call": CHUNK, "eval_every_steps": steps,
        "log_every_steps": CHUNK, "checkpoint.every_steps": 0, "wandb.mode": "disabled",
        "progress_bar": False, "batch_size": BATCH, "compile_cache.dir": "",
        **{f"data.{k}": v for k, v in data.items()}})
    config.unlock()
    config.diagnostics = ml_collections.ConfigDict()  # training and data only
    config.lock()
    gmf_jax.train_and_evaluate(config, workdir=os.path.join(tmp, "run"))
    with open(os.path.join(tmp, "run", "summary.json")) as f:
      return json.load(f)["steps_per_sec"]


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  methods = {
      "by hand": lambda: by_hand(args.steps),
      "device": lambda: gmf(args.steps, on_device="yes"),
      "grain 0": lambda: gmf(args.steps, on_device="no", workers=0),
      "grain 2": lambda: gmf(args.steps, on_device="no", workers=2),
  }
  rates = {name: [] for name in methods}
  for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every method
    for name, fn in methods.items():
      rates[name].append(fn())
  base = np.median(rates["by hand"])
  print(f"{'method':<10}{'steps/s (median)':>18}{'vs by hand':>12}   runs")
  for name, r in rates.items():
    print(f"{name:<10}{np.median(r):>18.0f}{np.median(r) / base:>11.2f}x   "
          + " ".join(f"{v:.0f}" for v in r))


if __name__ == "__main__":
  main()
