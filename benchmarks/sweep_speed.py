"""Sweep speed: seed ensembles and grids trained as one vmapped program, in one run.

Five measurements, each printed as a line with its numbers and its ratio against the goal:

  1. ensemble wall time  N seeds of configs/mlp.py (its default num_steps, wandb offline) as N
                         sequential `python -m gmf_jax.main --config.seed=K` processes, against
                         one `python -m gmf_jax.main --config.num_seeds=N`. Each arm starts
                         from an empty compilation cache of its own (the sequential runs load
                         the first one's programs). Goal: >= 8x less wall time.
  2. throughput          member-steps/s of an N-member gmf_jax population (`train_population`,
                         in this process; wandb disabled, diagnostics off, evaluation and the
                         checkpoint only at the end: training only, as benchmarks/train_speed.py)
                         against a hand-written `jax.jit(jax.vmap(lax.scan))` of the same N
                         members (flax + optax: the config's model sizes, batch size, optimizer
                         and schedule; the train split on the device, batches taken from a
                         per-epoch permutation). Steady state: gmf_jax's summary
                         `member_steps_per_sec` (the chunks after the first); the baseline timed
                         after one warm-up (compiling) call. The best of --repeats measurements
                         (the order alternates), since other tenants of this VM only ever slow a
                         measurement down. For the MLP (configs/mlp.py) and the VAE
                         (configs/vae.py). Goal: >= 0.9x. Also: the same N members as N single
                         runs one after another (`train_and_evaluate`, this process), as total
                         member-steps over total loop time, against the population's.
  3. compiles of a grid  an 8-value learning-rate grid (`make_sweep`, one seed, a short run) is
                         one population of 8 and compiles the training chunk once: the programs
                         built (XLA compilations and persistent-cache loads, from JAX's
                         monitoring events) during the grid and during a 1-member sweep of the
                         same config. Then two single runs with different learning rates, one
                         after the other: the second has 0 compilation-cache misses (its
                         summary's compile_cache).
  4. recording overhead  the N-member population of (1) (wandb offline): the sum of its summary's
                         `record_sec` parts (run folders, metrics, checkpoints, plots, the wandb
                         finish) as a fraction of `run_sec`. Goal: <= 5%.
  5. single runs         not measured here: benchmarks/train_speed.py compares a single run with
                         a hand-written loop.

N is 16 (4 with --quick, which also shortens every run). All run folders and compilation caches
live in a temporary directory. About 8 minutes on the 2-core CPU VM (--quick: about 3).

    python benchmarks/sweep_speed.py [--quick] [--repeats R] [--check]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import os
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

GOAL_WALL = 8.0  # (1) the ensemble takes at most 1/8 of the sequential runs' wall time
GOAL_THROUGHPUT = 0.9  # (2) population member-steps/s >= 0.9x the hand-written vmap
GOAL_RECORD = 0.05  # (4) recording <= 5% of the population's run time

# Training only (as benchmarks/train_speed.py): what recording costs is measurement (4)'s job.
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


# --- (1) and (4): the seed ensemble as processes -------------------------------------------


def cli_run(args: list[str], cache_dir: str) -> float:
  """`python -m gmf_jax.main ARGS` in a fresh process (wandb offline); returns its wall time."""
  env = {**os.environ, "WANDB_MODE": "offline", "GMF_JAX_COMPILE_CACHE_DIR": cache_dir}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  command = [sys.executable, "-m", "gmf_jax.main", f"--config={MLP_CONFIG}", *args]
  start = time.perf_counter()
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if proc.returncode:
    raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return wall


def ensemble_wall_time(tmp: str, num_seeds: int, extra: list[str]) -> tuple[list[float], float,
                                                                             dict]:
  """Seconds of each of `num_seeds` sequential single runs, of one ensemble of them, and the
  ensemble's first member's summary.json."""
  common = ["--config.progress_bar=False", *extra]
  sequential = []
  for seed in range(num_seeds):
    sequential.append(cli_run([*common, f"--config.seed={seed}",
                               f"--workdir={os.path.join(tmp, 'cli-seq', f'seed={seed}')}"],
                              os.path.join(tmp, "cache-cli-seq")))
    print(f"  single run seed={seed}: {sequential[-1]:.1f} s", flush=True)
  workdir = os.path.join(tmp, "cli-ensemble")
  ensemble = cli_run([*common, f"--config.num_seeds={num_seeds}", f"--workdir={workdir}"],
                     os.path.join(tmp, "cache-cli-ensemble"))
  print(f"  ensemble of {num_seeds}: {ensemble:.1f} s", flush=True)
  return sequential, ensemble, read_json(os.path.join(workdir, f"seed={SEED}", "summary.json"))


def recording_overhead(summary: dict, size: int) -> Verdict:
  """(4): the population's recording time, by part, over its run time."""
  parts = summary["record_sec"]
  total, run_sec = sum(parts.values()), summary["run_sec"]
  fraction = total / run_sec
  listed = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
  background = summary.get("record_background_cpu_sec", {})
  print(f"(4) recording, {size}-member population (wandb offline): {total:.2f} s of "
        f"{run_sec:.2f} s run_sec = {fraction:.1%} (goal <= {GOAL_RECORD:.0%}: "
        f"{fraction / GOAL_RECORD:.2f}x the limit)")
  print(f"    parts: {listed}; beside training (CPU s, not counted): "
        f"{', '.join(f'{k} {v:.2f}' for k, v in background.items()) or 'none'}; "
        f"diagnostics_sec (not recording): {sum(summary.get('diagnostics_sec', {}).values()):.2f}")
  return Verdict("recording overhead", f"{fraction:.1%} of run_sec (<= {GOAL_RECORD:.0%})",
                 fraction <= GOAL_RECORD)


# --- (2): population throughput against a hand-written jit(vmap(scan)) ----------------------


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
  """Trains the population in this process; returns its first member's summary info."""
  session = train_population(member_setups(task, size, workdir),
                             population_dir=os.path.join(workdir, "population"),
                             label=f"{task.name} x{size}")
  bad = [m.name for m in session.members if m.status != "completed"]
  if bad:
    raise SystemExit(f"{task.name}: members {bad} did not complete")
  return dict(session.members[0].summary.info)


def gmf_sequential(task: Task, size: int, workdir: str) -> list[dict]:
  """The same members as `size` single runs, one after another, in this process."""
  infos = []
  for setup in member_setups(task, size, workdir):
    result = gmf_jax.train_and_evaluate(setup.config, workdir=setup.workdir,
                                        config_file=setup.config_file)
    infos.append(read_json(os.path.join(result.workdir, "summary.json")))
  return infos


def throughput(task: Task, size: int, repeats: int, tmp: str, sequential: bool) -> list[Verdict]:
  """(2) for one task: the population against the hand-written one, then against single runs."""
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
  print(f"(2) {task.name}: {size}-member population {gmf:.0f} member-steps/s, hand-written "
        f"jit(vmap(scan)) {hand:.0f} -> {ratio:.2f}x (goal >= {GOAL_THROUGHPUT}x: "
        f"{ratio / GOAL_THROUGHPUT:.2f}x the goal); best of {repeats}, all: gmf_jax "
        f"{_rates(gmf_rates)}, hand {_rates(hand_rates)}; {task.num_steps} steps")
  verdicts = [Verdict(f"{task.name} population / hand-written vmap",
                      f"{ratio:.2f}x (>= {GOAL_THROUGHPUT}x)", ratio >= GOAL_THROUGHPUT)]
  if sequential:
    infos = gmf_sequential(task, size, os.path.join(tmp, f"{task.name}-seq"))
    member_steps = size * task.num_steps
    seq_rate = member_steps / sum(i["loop_sec"] for i in infos)
    best = gmf_infos[gmf_rates.index(gmf)]
    pop_rate = member_steps / best["loop_sec"]
    steady = statistics.median(i["steps_per_sec"] for i in infos)
    run_seq, run_pop = sum(i["run_sec"] for i in infos), best["run_sec"]
    print(f"(2) {task.name}: {size} single runs one after another: {seq_rate:.0f} "
          f"member-steps/s (total member-steps / total loop_sec; steady {steady:.0f}); the "
          f"population {pop_rate:.0f} (steady {gmf:.0f}) -> {pop_rate / seq_rate:.2f}x "
          f"(steady {gmf / steady:.2f}x); run_sec {run_seq:.1f} s vs {run_pop:.1f} s "
          f"({run_seq / run_pop:.2f}x)")
    verdicts.append(Verdict(f"{task.name} population / {size} single runs",
                            f"{pop_rate / seq_rate:.2f}x loop time, {gmf / steady:.2f}x steady",
                            None))
  return verdicts


def _rates(rates: list[float]) -> str:
  return "/".join(f"{r:.0f}" for r in rates)


# --- (3): what a learning-rate grid compiles ------------------------------------------------


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
  """(3): the compiles of an 8-value grid against a 1-member sweep; then two single runs."""
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
  print(f"(3) training-chunk compiles: 8-value lr grid {chunk_eight}, 1-member run {chunk_one} "
        f"(goal: equal; {chunk_eight}/{chunk_one} = {chunk_eight / max(chunk_one, 1):.2f}x); all "
        f"programs: {total_eight} vs {total_one}"
        + (f" (only in the grid: {dict(only_grid)}; only in the 1-member run: {dict(only_one)})"
           if only_grid or only_one else ""))
  print(f"(3) two single runs, lr 0.05 then 0.02: compile-cache misses {single_misses[0]} then "
        f"{single_misses[1]} (goal: the second 0)")
  return [
      Verdict("lr grid compiles the chunk once",
              f"chunk {chunk_eight} vs {chunk_one}, all programs {total_eight} vs {total_one}",
              chunk_eight == chunk_one == 1),
      Verdict("2nd single run, another lr: cache misses", f"{single_misses[1]} (goal 0)",
              single_misses[1] == 0),
  ]


def _chunk_compiles(names: collections.Counter[str]) -> int:
  return sum(n for name, n in names.items() if "train_chunk" in name)


# --- driver ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="4 members, shorter runs (about 3 minutes)")
  parser.add_argument("--repeats", type=int, default=None,
                      help="measurements per arm in (2) (default 2; 1 with --quick)")
  parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
  args = parser.parse_args(argv)
  quick = args.quick
  size = 4 if quick else 16
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

    print(f"\n(1) {size} seeds of configs/mlp.py: sequential processes, then one ensemble "
          f"({' '.join(cli_extra) or 'default num_steps'})", flush=True)
    sequential, ensemble, summary = ensemble_wall_time(tmp, size, cli_extra)
    speedup = sum(sequential) / ensemble
    each = statistics.median(sequential)
    print(f"(1) {size} sequential runs {sum(sequential):.1f} s (median {each:.1f} s each), "
          f"the ensemble {ensemble:.1f} s -> {speedup:.2f}x less wall time "
          f"(goal >= {GOAL_WALL:.0f}x: {speedup / GOAL_WALL:.2f}x the goal)")
    verdicts.append(Verdict(f"ensemble of {size} vs sequential, wall time",
                            f"{speedup:.2f}x (>= {GOAL_WALL:.0f}x)", speedup >= GOAL_WALL))

    for task in (mlp_task(mlp_steps), vae_task(vae_steps)):
      print(f"\n(2) {task.name}: {size} members, {task.num_steps} steps, batch "
            f"{task.batch_size}, {repeats} repeat(s)", flush=True)
      verdicts += throughput(task, size, repeats, tmp, sequential=True)

    print("\n(3) compiles of a learning-rate grid (configs/mlp.py, batch 32)", flush=True)
    verdicts += grid_compiles(tmp, 200 if quick else 500)

    print("\n(4) recording overhead: the ensemble of (1)", flush=True)
    verdicts.append(recording_overhead(summary, size))

    print("\n(5) single runs are no slower: run python benchmarks/train_speed.py (not run here)")
    elapsed = time.perf_counter() - start

  print(f"\nsummary ({'--quick, ' if quick else ''}{elapsed:.0f} s):")
  for v in verdicts:
    mark = "    " if v.passed is None else ("PASS" if v.passed else "FAIL")
    print(f"  {mark}  {v.name}: {v.text}")
  print("  ....  single runs no slower: see benchmarks/train_speed.py")
  ok = all(v.passed is not False for v in verdicts)
  return 1 if args.check and not ok else 0


if __name__ == "__main__":
  sys.exit(main())
