"""Sweep speed: seed ensembles and populations trained as one vmapped run with a member axis.

Issue "A population is one run with a member axis". Each measurement prints a line with its
numbers and its ratio against the goal; a summary ends the output.

  (a) ensemble wall time  16 seeds of configs/mlp.py (as shipped: its diagnostics, wandb
                          offline) as one `python -m gmf_jax.main --config.num_seeds=16`,
                          against 16 sequential `python -m gmf_jax.main --config.seed=K`, end
                          to end. Goal: >= 8x less wall time.
  (b) recording at scale  a 64-member population (`--config.num_seeds=64`) with the shipped
                          recording and diagnostics (wandb offline), against the same population
                          with recording off ("bare": WANDB_MODE=disabled and
                          --config.wandb.mode=disabled, --config.checkpoint.every_steps=0, a
                          config file that clears c.diagnostics, --config.log_every_steps=500
                          --config.eval_every_steps=5000: one log row per chunk). Goal: <= 1.3x
                          wall time. Then, from the recorded run's first member's summary.json:
                          record_sec, diagnostics_sec, loop_sec, run_sec and first_chunk_sec.
  (c) recording share     the A/B of (b) for 16 members: (recorded - bare) / recorded <= 15%.
  (d) what wandb costs    the recorded population of (b) and (c) with wandb offline, against
                          the same with wandb disabled (WANDB_MODE=disabled and
                          --config.wandb.mode=disabled; everything else as shipped), at 16 and
                          64 members: the wall time wandb adds, and its part of what (b)/(c)'s
                          recording adds. Reported, no goal.
  (e) throughput          member-steps/s of a 16-member gmf_jax population (`train_population`,
                          in this process; wandb disabled, diagnostics off, evaluation and the
                          checkpoint only at the end: training only, as benchmarks/train_speed.py)
                          against a hand-written `jax.jit(jax.vmap(lax.scan))` of the same
                          members (flax + optax: the config's model sizes, batch size, optimizer
                          and schedule; the train split on the device, batches taken from a
                          per-epoch permutation). Steady state: gmf_jax's summary
                          `member_steps_per_sec` (the chunks after the first); the baseline timed
                          after one warm-up (compiling) call. The best of --repeats measurements
                          (the order alternates), since other tenants of this VM only ever slow a
                          measurement down. For the MLP (configs/mlp.py) and the VAE
                          (configs/vae.py). Goal: >= 0.9x. Also: the same members as single runs
                          one after another (`train_and_evaluate`, this process), as total
                          member-steps over total loop time, against the population's.
  (f) compiles of a grid  an 8-value learning-rate grid (`make_sweep`, one seed, a short run) is
                          one population of 8 and compiles the training chunk once: the programs
                          built (XLA compilations and persistent-cache loads, from JAX's
                          monitoring events) during the grid and during a 1-member sweep of the
                          same config. Then two single runs with different learning rates, one
                          after the other: the second has 0 compilation-cache misses (its
                          summary's compile_cache).

(a)-(d) run the command line as the shared checks pop-ensemble-speed and pop-recording-scale
do: fresh `python -m gmf_jax.main` processes with `--config.progress_bar=False`, in a folder of
their own that holds a copy of configs/ (and configs/mlp_bare.py, the config without
diagnostics), timed from start to exit. Every CLI run shares one compilation cache, and before
any arm is timed a warm-up run of the same program (same config and member count) has filled
it, so no timed run compiles (each timed run prints its cache hits and misses). The
recorded-without-wandb arm trains the recorded arm's programs. Timed runs of one A/B follow one
another; with --pop-repeats R > 1 the order alternates and each arm's fastest run counts.

Sizes: 16 seeds in (a), 16 and 64 members in (b)-(d), 16 in (e). --quick: 4 seeds in (a), 4
and 8 members in (b)-(d), 4 in (e), 1,000 steps in (a)-(d) and shorter runs in (e)-(f). All run
folders and caches live in a temporary directory. About 15 minutes on the 2-core CPU VM when it
is otherwise idle, 28 CLI runs among them (--quick: about 5); two to three times that when
other work loads the VM (--quick took 13 minutes at load average 6-10).

    python benchmarks/sweep_speed.py [--quick] [--only a,b,e,f] [--repeats R] [--pop-repeats R]
                                     [--check]

(--only b runs (b), (c) and (d): they share their runs.)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax._src import dispatch  # BACKEND_COMPILE_EVENT: one per program compiled or loaded
from train_speed import machine_info

import gmf_jax
from gmf_jax.config import flatten
from gmf_jax.data import load_digits
from gmf_jax.runlog.files import read_json
from gmf_jax.sweep import make_sweep, run_sweep
from gmf_jax.train.loop import train_population
from gmf_jax.train.recorder import MemberSetup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP_CONFIG = os.path.join(REPO, "configs", "mlp.py")
VAE_CONFIG = os.path.join(REPO, "configs", "vae.py")
CHUNK = 500  # steps per jitted call: both configs' steps_per_call
SEED = 0
CLI_TIMEOUT = 1800  # seconds one CLI run may take

GOAL_WALL = 8.0  # (a) the ensemble takes at most 1/8 of the sequential runs' wall time
GOAL_SCALE = 1.3  # (b) the recorded population takes at most 1.3x the bare one's wall time
GOAL_SHARE = 0.15  # (c) recording and diagnostics <= 15% of the recorded population's wall time
GOAL_THROUGHPUT = 0.9  # (e) population member-steps/s >= 0.9x the hand-written vmap

# Training only (as benchmarks/train_speed.py): what recording costs is (b)-(d)'s job.
TRAIN_ONLY = {
    "wandb.mode": "disabled", "progress_bar": False, "data.on_device": "yes",
    "checkpoint.every_steps": 0, "checkpoint.best_metric": "", "diagnostics": {},
}

Params = Any
Batch = dict[str, jax.Array]


@dataclasses.dataclass
class Verdict:
  """One line of the final summary."""

  name: str
  text: str
  passed: bool | None  # None: reported, no goal


# --- (a)-(d): the command line, in fresh processes --------------------------------------------

# configs/mlp.py without its diagnostics: the bare arm (as the shared check pop-recording-scale)
BARE_CONFIG = '''from ml_collections import ConfigDict
from configs.mlp import get_config as base


def get_config(arg=None):
  c = base(arg)
  c.diagnostics = ConfigDict()
  return c
'''
BARE_ARGS = ["--config.wandb.mode=disabled", "--config.checkpoint.every_steps=0",
             "--config.log_every_steps=500", "--config.eval_every_steps=5000"]
NO_WANDB_ARGS = ["--config.wandb.mode=disabled"]


@dataclasses.dataclass(frozen=True)
class Arm:
  """One way to run configs/mlp.py from the command line."""

  name: str
  config: str  # relative to the CLI folder
  args: tuple[str, ...]
  wandb_mode: str  # $WANDB_MODE

  @property
  def program(self) -> str:
    """Arms that train the same compiled programs share a warm-up."""
    return self.config


RECORDED = Arm("recorded", "configs/mlp.py", (), "offline")
NO_WANDB = Arm("recorded, wandb disabled", "configs/mlp.py", tuple(NO_WANDB_ARGS), "disabled")
BARE = Arm("bare", "configs/mlp_bare.py", tuple(BARE_ARGS), "disabled")
ARMS = (RECORDED, NO_WANDB, BARE)


@dataclasses.dataclass
class CliRun:
  """A finished CLI run: its wall time, its (first member's) summary.json and its output."""

  wall: float
  summary: dict
  output: str

  @property
  def figures_sec(self) -> float | None:
    """The population figures' seconds, as the sweep prints them (None: none drawn)."""
    found = re.findall(r"population figures: .* \(([\d.]+) s\)", self.output)
    return float(found[-1]) if found else None

  def cache(self) -> str:
    c = self.summary.get("compile_cache") or {}
    return f"cache {c.get('hits', '?')} hits, {c.get('misses', '?')} misses"


class Cli:
  """`python -m gmf_jax.main` in fresh processes, as the shared checks run it: in a folder
  holding a copy of configs/ (plus configs/mlp_bare.py), one compilation cache for all."""

  def __init__(self, tmp: str, extra: list[str]):
    self.root = os.path.join(tmp, "cli")
    shutil.copytree(os.path.join(REPO, "configs"), os.path.join(self.root, "configs"))
    with open(os.path.join(self.root, "configs", "mlp_bare.py"), "w") as f:
      f.write(BARE_CONFIG)
    self.cache = os.path.join(tmp, "cache-cli")
    self.extra = extra
    self.warm: set[tuple[str, int]] = set()
    self.runs = 0

  def run(self, arm: Arm, size: int, seed: int | None = None, label: str = "") -> CliRun:
    """One run of `arm`: a `size`-member population (`--config.num_seeds`), or with `seed` a
    single run (`--config.seed`). Prints and returns its wall time."""
    self.runs += 1
    workdir = os.path.join(self.root, "runs", f"{self.runs:03d}")
    members = [f"--config.seed={seed}"] if seed is not None else [f"--config.num_seeds={size}"]
    command = [sys.executable, "-m", "gmf_jax.main", f"--config={arm.config}", *members,
               "--config.progress_bar=False", *arm.args, *self.extra, f"--workdir={workdir}"]
    env = {**os.environ, "WANDB_MODE": arm.wandb_mode, "GMF_JAX_COMPILE_CACHE_DIR": self.cache,
           "PYTHONPATH": os.pathsep.join(filter(None, [self.root,
                                                       os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)
    wall = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode:
      raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{output[-3000:]}")
    folder = workdir if seed is not None else os.path.join(workdir, f"seed={SEED}")
    done = CliRun(wall, read_json(os.path.join(folder, "summary.json")), output)
    what = f"seed={seed}" if seed is not None else f"{size} members"
    print(f"  {label or arm.name}, {what}: {wall:.1f} s (run_sec {done.summary['run_sec']:.1f}; "
          f"{done.cache()})", flush=True)
    return done

  def warm_up(self, arm: Arm, size: int) -> None:
    """Fills the compilation cache with `arm`'s programs for `size` members (once)."""
    if (arm.program, size) not in self.warm:
      self.run(arm, size, seed=SEED if size == 1 else None, label=f"warm-up, {arm.name}")
      self.warm.add((arm.program, size))


def ensemble_speed(cli: Cli, size: int) -> Verdict:
  """(a): one `size`-seed ensemble against `size` sequential single runs."""
  cli.warm_up(RECORDED, 1)
  cli.warm_up(RECORDED, size)
  ensemble = cli.run(RECORDED, size, label="ensemble")
  sequential = [cli.run(RECORDED, 1, seed=k, label="single run") for k in range(size)]
  total = sum(r.wall for r in sequential)
  speedup = total / ensemble.wall
  print(f"(a) {size} seeds of configs/mlp.py: {size} sequential CLI runs {total:.1f} s (median "
        f"{statistics.median(r.wall for r in sequential):.1f} s each), one --config.num_seeds="
        f"{size} ensemble {ensemble.wall:.1f} s -> {speedup:.2f}x less wall time (goal >= "
        f"{GOAL_WALL:.0f}x: {speedup / GOAL_WALL:.2f}x the goal)")
  return Verdict(f"(a) ensemble of {size} vs {size} sequential runs, wall time",
                 f"{ensemble.wall:.1f} s vs {total:.1f} s = {speedup:.2f}x "
                 f"(>= {GOAL_WALL:.0f}x)", speedup >= GOAL_WALL)


def population_arms(cli: Cli, size: int, repeats: int) -> dict[Arm, CliRun]:
  """Every arm of (b)-(d) for `size` members, after warm-ups; each arm's fastest run."""
  for arm in ARMS:
    cli.warm_up(arm, size)
  runs: dict[Arm, list[CliRun]] = {arm: [] for arm in ARMS}
  for r in range(repeats):
    for arm in (ARMS if r % 2 == 0 else ARMS[::-1]):
      runs[arm].append(cli.run(arm, size))
  return {arm: min(done, key=lambda d: d.wall) for arm, done in runs.items()}


def recording_scale(cli: Cli, small: int, large: int, repeats: int) -> list[Verdict]:
  """(b), (c) and (d): recorded against bare, and wandb offline against disabled."""
  best = {}
  for size in (small, large):
    print(f"  -- {size} members", flush=True)
    best[size] = population_arms(cli, size, repeats)
  runs = f" (fastest of {repeats} each)" if repeats > 1 else ""

  rec, bare = best[large][RECORDED].wall, best[large][BARE].wall
  ratio = rec / bare
  print(f"(b) {large} members: recorded (wandb offline, diagnostics) {rec:.1f} s, bare {bare:.1f} s"
        f"{runs} -> {ratio:.2f}x (goal <= {GOAL_SCALE}x: {ratio / GOAL_SCALE:.2f}x the limit)")
  where_time_goes(best[large])

  rec_s, bare_s = best[small][RECORDED].wall, best[small][BARE].wall
  share = (rec_s - bare_s) / rec_s
  print(f"(c) {small} members: recorded {rec_s:.1f} s, bare {bare_s:.1f} s{runs} -> recording "
        f"and diagnostics {share:.1%} of the wall time ((recorded - bare) / recorded; goal <= "
        f"{GOAL_SHARE:.0%}: {share / GOAL_SHARE:.2f}x the limit; ratio {rec_s / bare_s:.2f}x)")

  wandb_texts = []
  for size in (small, large):
    offline, disabled, plain = (best[size][a].wall for a in (RECORDED, NO_WANDB, BARE))
    cost, overhead = offline - disabled, offline - plain
    part = f"{cost / overhead:.0%}" if overhead > 0 else "n/a"
    print(f"(d) {size} members, recorded: wandb offline {offline:.1f} s, wandb disabled "
          f"{disabled:.1f} s{runs} -> wandb adds {cost:+.1f} s ({cost / offline:.1%} of the "
          f"recorded wall time, {cost / size * 1000:+.0f} ms per member); of the {overhead:.1f} s "
          f"that recording and diagnostics add over bare: {part}")
    wandb_texts.append(f"{size}: {cost:+.1f} s ({cost / offline:.0%}; {part} of the overhead)")
  return [
      Verdict(f"(b) {large} members recorded / bare, wall time",
              f"{rec:.1f} s / {bare:.1f} s = {ratio:.2f}x (<= {GOAL_SCALE}x)",
              ratio <= GOAL_SCALE),
      Verdict(f"(c) {small} members, recording share of wall time",
              f"({rec_s:.1f} - {bare_s:.1f}) / {rec_s:.1f} s = {share:.1%} (<= {GOAL_SHARE:.0%})",
              share <= GOAL_SHARE),
      Verdict("(d) wandb offline - disabled, recorded", "; ".join(wandb_texts), None),
  ]


def where_time_goes(runs: dict[Arm, CliRun]) -> None:
  """Prints, for each arm of the larger population, its first member's timings."""
  for arm, done in runs.items():
    s = done.summary
    record, diag = s.get("record_sec") or {}, s.get("diagnostics_sec") or {}
    figures = done.figures_sec
    print(f"    {arm.name}: wall {done.wall:.1f} s = run_sec {s['run_sec']:.1f} (first_chunk_sec "
          f"{s['first_chunk_sec']:.1f}, loop_sec {s['loop_sec']:.1f}) + "
          f"{done.wall - s['run_sec']:.1f} s outside the run (imports, config, the sweep, "
          f"population figures {'-' if figures is None else f'{figures:.1f} s'})")
    if arm is BARE:
      continue
    print(f"      record_sec {sum(record.values()):.2f} s: {_parts(record)}")
    print(f"      diagnostics_sec {sum(diag.values()):.2f} s: {_parts(diag)}")
    background = s.get("record_background_cpu_sec") or {}
    if background:
      print(f"      beside training (CPU s, not in record_sec): {_parts(background)}")


def _parts(parts: dict[str, float]) -> str:
  return ", ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])) \
      or "none"


# --- (e): population throughput against a hand-written jit(vmap(scan)) ----------------------


class HandMLP(nn.Module):
  """configs/mlp.py's model: flatten, Dense(64) + relu, Dense(10) logits."""

  hidden: int = 64
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


class HandVAE(nn.Module):
  """configs/vae.py's model: dense encoder 256-128 (relu), a diagonal Gaussian posterior of 8
  latents, the mirrored decoder and Bernoulli logits for the 64 pixels."""

  hidden: tuple[int, ...] = (256, 128)
  latent_dim: int = 8
  num_pixels: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, rng: jax.Array):
    h = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    mean, logvar = nn.Dense(self.latent_dim)(h), nn.Dense(self.latent_dim)(h)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    for width in reversed(self.hidden):
      z = nn.relu(nn.Dense(width)(z))
    return nn.Dense(self.num_pixels)(z).reshape(x.shape), mean, logvar


@dataclasses.dataclass(frozen=True)
class Task:
  """One config, trained by gmf_jax and by the hand-written population."""

  name: str
  config_path: str
  num_steps: int
  batch_size: int
  model: nn.Module
  loss: Callable[[Params, Batch, jax.Array], jax.Array]  # (params, batch, rng) -> scalar
  tx: optax.GradientTransformation
  data: dict[str, np.ndarray]  # the train split
  expected: dict[str, Any]  # what the config file must say for the hand-written copy to match

  def gmf_overrides(self) -> dict[str, Any]:
    return {**TRAIN_ONLY, "num_steps": self.num_steps, "eval_every_steps": self.num_steps}


def _kernels(params: Params) -> Params:
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def mlp_task(num_steps: int) -> Task:
  """Softmax cross-entropy; SGD, Nesterov momentum 0.9, L2 1e-4 on the kernels, cosine from
  0.05 to 0 over the run."""
  model = HandMLP()

  def loss(params, batch, rng):
    del rng
    logits = model.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  tx = optax.chain(
      optax.add_decayed_weights(1e-4, mask=_kernels),
      optax.sgd(optax.cosine_decay_schedule(0.05, num_steps), momentum=0.9, nesterov=True))
  expected = {
      "batch_size": 64, "steps_per_call": CHUNK, "model.name": "mlp_classifier",
      "model.hidden": (64,), "model.activation": "relu", "model.dropout_rate": 0.0,
      "loss.name": "cross_entropy", "loss.label_smoothing": 0.0, "optimizer.name": "sgd",
      "optimizer.learning_rate": 0.05, "optimizer.momentum": 0.9, "optimizer.nesterov": True,
      "optimizer.weight_decay": 1e-4, "schedule.name": "cosine", "schedule.warmup_steps": 0,
      "schedule.end_value": 0.0, "data.name": "digits", "data.binarize": False,
  }
  return Task("mlp", MLP_CONFIG, num_steps, 64, model, loss, tx,
              dict(load_digits().train.arrays), expected)


def vae_task(num_steps: int) -> Task:
  """Bernoulli negative ELBO (beta 1) on binarized pixels; Adam, a 200-step linear warmup to
  1e-3, then cosine to 1e-4."""
  model = HandVAE()

  def loss(params, batch, rng):
    x = batch["x"]
    logits, mean, logvar = model.apply({"params": params}, x, rng)
    nll = optax.sigmoid_binary_cross_entropy(logits, x).reshape((x.shape[0], -1)).sum(-1)
    kl = 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)
    return jnp.mean(nll + kl)

  tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 200, num_steps, end_value=1e-4))
  train = load_digits().train.arrays
  data = {"x": (train["x"] > 0.5).astype(np.float32), "y": train["y"]}
  expected = {
      "batch_size": 64, "steps_per_call": CHUNK, "model.name": "mlp_vae",
      "model.hidden": (256, 128), "model.latent_dim": 8, "model.activation": "relu",
      "loss.name": "elbo", "loss.beta": 1.0, "loss.likelihood": "bernoulli",
      "optimizer.name": "adam", "optimizer.learning_rate": 1e-3, "optimizer.b1": 0.9,
      "optimizer.b2": 0.999, "optimizer.eps": 1e-8, "optimizer.weight_decay": 0.0,
      "schedule.name": "warmup_cosine", "schedule.warmup_steps": 200, "schedule.end_value": 0.1,
      "data.name": "digits", "data.binarize": True,
  }
  return Task("vae", VAE_CONFIG, num_steps, 64, model, loss, tx, data, expected)


def check_task_matches(task: Task) -> None:
  """Stops if the config file no longer describes what the hand-written copy trains."""
  config = flatten(gmf_jax.load_config(task.config_path).to_dict())
  wrong = {k: (config.get(k), v) for k, v in task.expected.items()
           if (tuple(config.get(k)) if isinstance(v, tuple) else config.get(k)) != v}
  if wrong:
    raise SystemExit(f"{task.config_path} changed; update {task.name}_task to match: "
                     + ", ".join(f"{k}={got!r} (hand-written: {want!r})"
                                 for k, (got, want) in wrong.items()))


def make_hand_chunk(task: Task) -> Callable:
  """`jax.jit(jax.vmap(lax.scan))`: CHUNK steps of every member per call, the carry donated.

  Per member: (params, opt_state, perm) and its data and train keys; shared: the data and
  the chunk's first step (so the per-epoch `lax.cond` stays a branch under vmap).
  """
  tx, loss_fn, batch = task.tx, task.loss, task.batch_size
  num_examples = len(task.data["x"])
  steps_per_epoch = num_examples // batch

  def member_chunk(carry, data_key, train_key, data, start):
    def body(carry, i):
      params, opt_state, perm = carry
      step = start + i
      epoch, position = step // steps_per_epoch, step % steps_per_epoch
      perm = jax.lax.cond(
          position == 0,
          lambda: jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples),
          lambda: perm)
      idx = jax.lax.dynamic_slice_in_dim(perm, position * batch, batch)
      batch_ = {k: jnp.take(v, idx, axis=0) for k, v in data.items()}
      loss, grads = jax.value_and_grad(loss_fn)(params, batch_, jax.random.fold_in(train_key,
                                                                                   step))
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state, perm), loss

    return jax.lax.scan(body, carry, jnp.arange(CHUNK))

  population = jax.vmap(member_chunk, in_axes=(0, 0, 0, None, None))
  return jax.jit(population, donate_argnums=0)


def hand_population(task: Task, size: int) -> float:
  """Steady-state member-steps/s of the hand-written population: every call after the first
  (compiling) one, queued back to back, timed to the last one's result."""
  chunk = make_hand_chunk(task)
  keys = jax.random.split(jax.random.PRNGKey(SEED), (size, 3))
  init_keys, data_keys, train_keys = keys[:, 0], keys[:, 1], keys[:, 2]
  x0 = jnp.asarray(task.data["x"][:1])
  num_examples = len(task.data["x"])

  def init(key, data_key):
    args = (x0,) if task.name == "mlp" else (x0, key)
    params = task.model.init(key, *args)["params"]
    perm = jax.random.permutation(jax.random.fold_in(data_key, 0), num_examples)
    return params, task.tx.init(params), perm

  carry = jax.jit(jax.vmap(init))(init_keys, data_keys)
  data = jax.device_put(task.data)
  carry, losses = chunk(carry, data_keys, train_keys, data, np.int32(0))
  jax.block_until_ready((carry, losses))
  calls = task.num_steps // CHUNK - 1
  start = time.perf_counter()
  for c in range(1, calls + 1):
    carry, losses = chunk(carry, data_keys, train_keys, data, np.int32(c * CHUNK))
  jax.block_until_ready((carry, losses))
  if not np.isfinite(np.asarray(losses)).all():
    raise SystemExit(f"{task.name}: the hand-written population's loss is not finite")
  return size * CHUNK * calls / (time.perf_counter() - start)


def member_setups(task: Task, size: int, workdir: str) -> list[MemberSetup]:
  """Seeds 0..size-1 of the task's config, trained as gmf_jax trains them."""
  return [MemberSetup(gmf_jax.load_config(task.config_path, {**task.gmf_overrides(),
                                                              "seed": seed}),
                      os.path.join(workdir, f"seed={seed}"), task.config_path)
          for seed in range(size)]


def gmf_population(task: Task, size: int, workdir: str) -> dict:
  """Trains the population in this process; returns its first member's summary.json."""
  result = train_population(member_setups(task, size, workdir),
                            population_dir=os.path.join(workdir, "population"),
                            label=f"{task.name} x{size}")
  bad = [m.name for m in result.members if m.status != "completed"]
  if bad:
    raise SystemExit(f"{task.name}: members {bad} did not complete")
  return read_json(os.path.join(result.members[0].workdir, "summary.json"))


def gmf_sequential(task: Task, size: int, workdir: str) -> list[dict]:
  """The same members as `size` single runs, one after another, in this process."""
  infos = []
  for setup in member_setups(task, size, workdir):
    result = gmf_jax.train_and_evaluate(setup.config, workdir=setup.workdir,
                                        config_file=setup.config_file)
    infos.append(read_json(os.path.join(result.workdir, "summary.json")))
  return infos


def throughput(task: Task, size: int, repeats: int, tmp: str, sequential: bool) -> list[Verdict]:
  """(e) for one task: the population against the hand-written one, then against single runs."""
  check_task_matches(task)
  gmf_rates, hand_rates, gmf_infos = [], [], []
  for r in range(repeats):
    order = ("hand", "gmf") if r % 2 == 0 else ("gmf", "hand")
    for arm in order:
      if arm == "hand":
        rate = hand_population(task, size)
        hand_rates.append(rate)
      else:
        gmf_infos.append(gmf_population(task, size, os.path.join(tmp, f"{task.name}-pop-{r}")))
        rate = gmf_infos[-1]["member_steps_per_sec"]
        gmf_rates.append(rate)
      print(f"  {task.name} repeat {r + 1}/{repeats} {arm:4s}: {rate:8.0f} member-steps/s",
            flush=True)
  gmf, hand = max(gmf_rates), max(hand_rates)
  ratio = gmf / hand
  print(f"(e) {task.name}: {size}-member population {gmf:.0f} member-steps/s, hand-written "
        f"jit(vmap(scan)) {hand:.0f} -> {ratio:.2f}x (goal >= {GOAL_THROUGHPUT}x: "
        f"{ratio / GOAL_THROUGHPUT:.2f}x the goal); best of {repeats}, all: gmf_jax "
        f"{_rates(gmf_rates)}, hand {_rates(hand_rates)}; {task.num_steps} steps")
  verdicts = [Verdict(f"(e) {task.name} population / hand-written vmap",
                      f"{ratio:.2f}x (>= {GOAL_THROUGHPUT}x)", ratio >= GOAL_THROUGHPUT)]
  if sequential:
    infos = gmf_sequential(task, size, os.path.join(tmp, f"{task.name}-seq"))
    member_steps = size * task.num_steps
    seq_rate = member_steps / sum(i["loop_sec"] for i in infos)
    best = gmf_infos[gmf_rates.index(gmf)]
    pop_rate = member_steps / best["loop_sec"]
    steady = statistics.median(i["steps_per_sec"] for i in infos)
    run_seq, run_pop = sum(i["run_sec"] for i in infos), best["run_sec"]
    print(f"(e) {task.name}: {size} single runs one after another: {seq_rate:.0f} "
          f"member-steps/s (total member-steps / total loop_sec; steady {steady:.0f}); the "
          f"population {pop_rate:.0f} (steady {gmf:.0f}) -> {pop_rate / seq_rate:.2f}x "
          f"(steady {gmf / steady:.2f}x); run_sec {run_seq:.1f} s vs {run_pop:.1f} s "
          f"({run_seq / run_pop:.2f}x)")
    verdicts.append(Verdict(f"(e) {task.name} population / {size} single runs",
                            f"{pop_rate / seq_rate:.2f}x loop time, {gmf / steady:.2f}x steady",
                            None))
  return verdicts


def _rates(rates: list[float]) -> str:
  return "/".join(f"{r:.0f}" for r in rates)


# --- (f): what a learning-rate grid compiles ------------------------------------------------


class CompileCounter:
  """Programs compiled or loaded from the persistent cache, by function name (JAX's monitoring
  events; a program found in memory is not counted). Listeners stay for the process: read
  differences with `since`."""

  def __init__(self):
    self.names: collections.Counter[str] = collections.Counter()
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)

  def _on_duration(self, event: str, duration: float, **kwargs) -> None:
    if event == dispatch.BACKEND_COMPILE_EVENT:
      self.names[str(kwargs.get("fun_name"))] += 1

  def snapshot(self) -> collections.Counter[str]:
    return collections.Counter(self.names)

  def since(self, before: collections.Counter[str]) -> collections.Counter[str]:
    return self.names - before


def lr_sweep(values: list[float], overrides: dict[str, Any]):
  return make_sweep({"config": MLP_CONFIG,
                     "parameters": {"optimizer.learning_rate": {"values": values}}}, overrides)


def grid_compiles(tmp: str, num_steps: int) -> list[Verdict]:
  """(f): the compiles of an 8-value grid against a 1-member sweep; then two single runs."""
  counter = CompileCounter()
  # batch 32: programs no earlier part of this benchmark built, so the first run here compiles
  overrides = {**TRAIN_ONLY, "num_steps": num_steps, "eval_every_steps": num_steps,
               "batch_size": 32}
  single_misses = []
  for i, lr in enumerate((0.05, 0.02)):
    config = gmf_jax.load_config(MLP_CONFIG, {**overrides, "optimizer.learning_rate": lr})
    result = gmf_jax.train_and_evaluate(config, workdir=os.path.join(tmp, f"single-lr-{i}"))
    cache = read_json(os.path.join(result.workdir, "summary.json"))["compile_cache"]
    single_misses.append(cache["misses"])
    print(f"  single run lr={lr}: compile cache {cache['hits']} hits, {cache['misses']} misses",
          flush=True)

  counts = {}
  grid = [0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]
  for label, values in (("1-member", [0.03]), ("8-member grid", grid)):
    before = counter.snapshot()
    result = run_sweep(lr_sweep(values, overrides), os.path.join(tmp, f"grid-{len(values)}"))
    if set(result.counts()) != {"completed"}:
      raise SystemExit(f"the {label} sweep did not complete: {result.counts()}")
    counts[label] = counter.since(before)
    print(f"  {label}: {sum(counts[label].values())} programs: {dict(counts[label])}", flush=True)
  one, eight = counts["1-member"], counts["8-member grid"]
  chunk_one, chunk_eight = _chunk_compiles(one), _chunk_compiles(eight)
  total_one, total_eight = sum(one.values()), sum(eight.values())
  only_grid, only_one = eight - one, one - eight
  print(f"(f) training-chunk compiles: 8-value lr grid {chunk_eight}, 1-member run {chunk_one} "
        f"(goal: equal; {chunk_eight}/{chunk_one} = {chunk_eight / max(chunk_one, 1):.2f}x); all "
        f"programs: {total_eight} vs {total_one}"
        + (f" (only in the grid: {dict(only_grid)}; only in the 1-member run: {dict(only_one)})"
           if only_grid or only_one else ""))
  print(f"(f) two single runs, lr 0.05 then 0.02: compile-cache misses {single_misses[0]} then "
        f"{single_misses[1]} (goal: the second 0)")
  return [
      Verdict("(f) lr grid compiles the chunk once",
              f"chunk {chunk_eight} vs {chunk_one}, all programs {total_eight} vs {total_one}",
              chunk_eight == chunk_one == 1),
      Verdict("(f) 2nd single run, another lr: cache misses", f"{single_misses[1]} (goal 0)",
              single_misses[1] == 0),
  ]


def _chunk_compiles(names: collections.Counter[str]) -> int:
  return sum(n for name, n in names.items() if "train_chunk" in name)


# --- driver ----------------------------------------------------------------------------------

PARTS = ("a", "b", "e", "f")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="4 seeds in (a), 4 and 8 members in (b)-(d), shorter runs")
  parser.add_argument("--only", default=",".join(PARTS),
                      help="the parts to run, comma-separated: a, b (with c and d), e, f")
  parser.add_argument("--repeats", type=int, default=None,
                      help="measurements per arm in (e) (default 2; 1 with --quick)")
  parser.add_argument("--pop-repeats", type=int, default=1,
                      help="timed runs per arm in (b)-(d) (default 1)")
  parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
  args = parser.parse_args(argv)
  parts = set(filter(None, args.only.split(",")))
  if parts - set(PARTS):
    parser.error(f"--only: unknown parts {sorted(parts - set(PARTS))}; choose from {PARTS}")
  quick = args.quick
  seeds, small, large = (4, 4, 8) if quick else (16, 16, 64)
  repeats = args.repeats or (1 if quick else 2)
  mlp_steps, vae_steps = (1500, 1000) if quick else (5000, 1500)
  cli_extra = ["--config.num_steps=1000"] if quick else []

  logging.getLogger("gmf_jax").addHandler(logging.NullHandler())  # keep its run log quiet
  logging.getLogger("gmf_jax").setLevel(logging.WARNING)
  print(machine_info())
  verdicts: list[Verdict] = []
  with tempfile.TemporaryDirectory(prefix="sweep_speed_") as tmp:
    # This process's runs: a cache of their own, wandb as each config part says.
    os.environ["GMF_JAX_COMPILE_CACHE_DIR"] = os.path.join(tmp, "cache-in-process")
    os.environ.pop("WANDB_MODE", None)
    start = time.perf_counter()
    cli = Cli(tmp, cli_extra)
    steps = " ".join(cli_extra) or "the default num_steps (5000)"

    if "a" in parts:
      print(f"\n(a) {seeds} seeds of configs/mlp.py: one ensemble, then {seeds} sequential runs "
            f"({steps})", flush=True)
      verdicts.append(ensemble_speed(cli, seeds))

    if "b" in parts:
      print(f"\n(b)-(d) populations of {small} and {large} (configs/mlp.py, {steps}): recorded "
            "(wandb offline), recorded with wandb disabled, bare", flush=True)
      verdicts += recording_scale(cli, small, large, args.pop_repeats)

    if "e" in parts:
      for task in (mlp_task(mlp_steps), vae_task(vae_steps)):
        print(f"\n(e) {task.name}: {small} members, {task.num_steps} steps, batch "
              f"{task.batch_size}, {repeats} repeat(s)", flush=True)
        verdicts += throughput(task, small, repeats, tmp, sequential=True)

    if "f" in parts:
      print("\n(f) compiles of a learning-rate grid (configs/mlp.py, batch 32)", flush=True)
      verdicts += grid_compiles(tmp, 200 if quick else 500)

    print("\nsingle runs are no slower: run python benchmarks/train_speed.py (not run here)")
    elapsed = time.perf_counter() - start

  print(f"\nsummary ({'--quick, ' if quick else ''}{elapsed:.0f} s; {machine_info()}):")
  for v in verdicts:
    mark = "    " if v.passed is None else ("PASS" if v.passed else "FAIL")
    print(f"  {mark}  {v.name}: {v.text}")
  print("  ....  single runs no slower: see benchmarks/train_speed.py")
  ok = all(v.passed is not False for v in verdicts)
  return 1 if args.check and not ok else 0


if __name__ == "__main__":
  sys.exit(main())
