"""`train_and_evaluate`: the outer loop, read top to bottom.

Run a jitted chunk of steps; fetch its metrics once; write them; evaluate when due. The chunk
ends at every evaluation step and at the end, so those see the exact parameters of that step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax.training.train_state import TrainState

from gmf_jax.errors import ConfigError
from gmf_jax.runlog import CsvWriter, Summary, new_run_dir, prepare_workdir
from gmf_jax.train import pipeline
from gmf_jax.train.build import Experiment, build_experiment, init_state, parameter_count
from gmf_jax.train.progress import Progress
from gmf_jax.train.step import (
    RunKeys,
    evaluate,
    make_keys,
    train_chunk_on_batches,
    train_chunk_on_device,
)

log = logging.getLogger("gmf_jax")


class NonFiniteError(RuntimeError):
  """Training produced NaN or Inf; the message names the step and the metric."""


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns."""

  state: TrainState
  metrics: dict[str, float]  # the final value of every metric, e.g. metrics['eval/nelbo']
  workdir: str


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | None = None
) -> TrainResult:
  """Trains the model the config describes and writes the run to `workdir`.

  Args:
    config: from `gmf_jax.load_config` (or a config file's `get_config()`).
    workdir: the run's folder; default `runs/<config.name>-<time>-<id>`.

  Returns:
    The final train state, the final metrics and the run folder.

  Raises:
    ConfigError: bad input, found before anything is written or computed.
    NonFiniteError: the loss or gradient norm became NaN or Inf.
  """
  _ensure_console_logging()
  exp = build_experiment(config)  # every check on the input happens here
  workdir = prepare_workdir(workdir or new_run_dir(config.name))
  log.info("run directory: %s", workdir)
  log.info("config:\n%s", format_config(config, exp))
  _write_json(os.path.join(workdir, "config.json"), resolved_config(config, exp))

  keys = make_keys(config.seed)
  state = init_state(exp, keys)
  summary = Summary(os.path.join(workdir, "summary.json"))
  summary.info.update(
      status="running", seed=config.seed, num_steps=exp.num_steps,
      num_params=parameter_count(state.params), dataset=exp.dataset.name,
      num_train=len(exp.dataset.train), num_test=len(exp.dataset.test),
      data_on_device=exp.on_device, platform=jax.default_backend(),
  )
  writer = CsvWriter(os.path.join(workdir, "metrics.csv"))
  try:
    state = _train(exp, state, keys, writer, summary)
    summary.info["status"] = "completed"
  except BaseException as e:
    summary.info["status"] = "failed"
    summary.info["error"] = f"{type(e).__name__}: {e}"
    raise
  finally:
    writer.close()
    summary.save()
  final = summary.final()
  log.info("final: %s", _format_scalars({k: v for k, v in final.items() if k.startswith("eval/")}))
  if "eval/nelbo" in final:
    log.info("test-set negative ELBO: %.3f nats per example", final["eval/nelbo"])
  return TrainResult(state=state, metrics=final, workdir=workdir)


def _train(exp: Experiment, state: TrainState, keys: RunKeys, writer: CsvWriter,
           summary: Summary) -> TrainState:
  config = exp.config
  if exp.on_device:
    train_data = pipeline.to_device(exp.dataset.train)
    chunk_fn = jax.jit(
        functools.partial(train_chunk_on_device, loss_fn=exp.loss, batch_size=config.batch_size),
        static_argnames="num_steps", donate_argnums=0,
    )
    run_chunk = lambda state, start, n: chunk_fn(state, keys, train_data, num_steps=n)
    host = None
  else:
    host = pipeline.HostBatches(exp.dataset.train, config.batch_size, keys.data)
    batch_fn = jax.jit(functools.partial(train_chunk_on_batches, loss_fn=exp.loss),
                       donate_argnums=0)
    run_chunk = lambda state, start, n: batch_fn(state, keys, host.get(start, n))
  eval_data, eval_mask = pipeline.padded_eval_data(exp.dataset.test, config.eval_batch_size)
  eval_fn = jax.jit(functools.partial(
      evaluate, apply_fn=exp.model.apply, per_example_fn=exp.loss.per_example,
      batch_size=min(config.eval_batch_size, len(exp.dataset.test)),
  ))

  window = MetricWindow()
  lr_fn = jax.jit(jax.vmap(exp.schedule))  # one call per chunk for all its log steps
  progress = Progress(exp.num_steps, enabled=config.progress_bar)
  step = int(state.step)
  timing = ChunkTimer()
  try:
    while step < exp.num_steps:
      n = _chunk_length(step, exp.num_steps, config.steps_per_call, config.eval_every_steps)
      if host is not None:
        nxt = step + n
        if nxt < exp.num_steps:  # read the next chunk while this one computes
          host.prefetch(nxt, _chunk_length(nxt, exp.num_steps, config.steps_per_call,
                                           config.eval_every_steps))
      timing.start()
      state, metrics = run_chunk(state, step, n)
      metrics = jax.device_get(metrics)  # the one host sync per chunk
      timing.stop(n)
      _check_finite(metrics, step)
      del metrics["finite"]
      log_steps = [s for s in range(step + 1, step + n + 1)
                   if s % config.log_every_steps == 0 or s == exp.num_steps]
      learning_rates = np.asarray(lr_fn(np.asarray(log_steps) - 1)) if log_steps else []
      for s, means, lr in zip(log_steps, window.add(metrics, step, log_steps), learning_rates,
                              strict=True):
        scalars = {f"train/{k}": v for k, v in means.items()}
        scalars["train/learning_rate"] = float(lr)  # the rate used by step s
        writer.write(s, scalars)
        summary.update(s, scalars)
      step += n
      progress.update(n, loss=float(metrics["loss"][-1]))
      if step % config.eval_every_steps == 0 or step == exp.num_steps:
        scalars = {f"eval/{k}": float(v) for k, v in
                   jax.device_get(eval_fn(state.params, keys=keys, data=eval_data,
                                          mask=eval_mask)).items()}
        writer.write(step, scalars)
        summary.update(step, scalars)
        progress.message(f"step {step}: {_format_scalars(scalars)}")
  finally:
    progress.close()
    if host is not None:
      host.close()
    summary.info.update(timing.as_dict())
  return state


def _chunk_length(step: int, num_steps: int, steps_per_call: int, eval_every: int) -> int:
  """Steps until the next chunk boundary: steps_per_call, an eval step, or the end."""
  next_eval = (step // eval_every + 1) * eval_every
  return min(steps_per_call, next_eval - step, num_steps - step)


def _check_finite(metrics: dict[str, np.ndarray], start: int) -> None:
  finite = np.asarray(metrics["finite"])
  if finite.all():
    return
  i = int(np.argmin(finite))
  bad = [k for k in ("loss", "grad_norm") if not np.isfinite(metrics[k][i])]
  raise NonFiniteError(
      f"non-finite {' and '.join(bad)} at step {start + i + 1} "
      f"(loss={metrics['loss'][i]}, grad_norm={metrics['grad_norm'][i]}); "
      "lower optimizer.learning_rate or set optimizer.grad_clip_norm."
  )


class MetricWindow:
  """Averages per-step metrics over the steps between two log steps, across chunks.

  Sums are exact (`math.fsum`), so the logged means do not depend on how steps were chunked.
  """

  def __init__(self):
    self._parts: list[dict[str, np.ndarray]] = []

  def add(self, metrics: dict[str, np.ndarray], start: int, log_steps: list[int]):
    """Takes a chunk's per-step metrics (steps start+1 .. start+n); yields the mean of each
    window that closes at one of `log_steps`."""
    begin = 0
    for s in log_steps:
      end = s - start
      self._parts.append({k: v[begin:end] for k, v in metrics.items()})
      yield self._close()
      begin = end
    if begin < len(next(iter(metrics.values()))):
      self._parts.append({k: v[begin:] for k, v in metrics.items()})

  def _close(self) -> dict[str, float]:
    parts, self._parts = self._parts, []
    out = {}
    for k in parts[0]:
      values = np.concatenate([p[k] for p in parts])
      out[k] = math.fsum(values.tolist()) / len(values)
    return out


class ChunkTimer:
  """Wall time of the chunks; steps/s leaves out the first chunk (it includes compilation)."""

  def __init__(self, clock=time.perf_counter):
    self._clock = clock
    self._t0 = None
    self.first_chunk_sec = None
    self.steady_sec = 0.0
    self.steady_steps = 0

  def start(self):
    self._t0 = self._clock()

  def stop(self, steps: int):
    elapsed = self._clock() - self._t0
    if self.first_chunk_sec is None:
      self.first_chunk_sec = elapsed
    else:
      self.steady_sec += elapsed
      self.steady_steps += steps

  def as_dict(self) -> dict[str, float | None]:
    rate = self.steady_steps / self.steady_sec if self.steady_sec > 0 else None
    return {"first_chunk_sec": self.first_chunk_sec, "steps_per_sec": rate}


def resolved_config(config: ml_collections.ConfigDict, exp: Experiment) -> dict[str, Any]:
  """The config as a dict, with values derived at build time written in."""
  data = json.loads(config.to_json_best_effort())
  data["num_steps"] = exp.num_steps
  return data


def format_config(config: ml_collections.ConfigDict, exp: Experiment) -> str:
  """One line per section: `model: name=mlp_vae latent_dim=8 ...`."""
  flat, lines = [], []
  for key, value in resolved_config(config, exp).items():
    if isinstance(value, dict):
      items = " ".join(f"{k}={v}" for k, v in value.items() if v is not None)
      lines.append(f"  {key}: {items}")
    else:
      flat.append(f"{key}={value}")
  return "\n".join([f"  {' '.join(flat)}", *lines])


def _format_scalars(scalars: dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in scalars.items())


def _write_json(path: str, data: Any) -> None:
  with open(path, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)


def _ensure_console_logging() -> None:
  """Shows progress messages in a terminal or notebook unless logging is already set up."""
  if not log.handlers and not logging.getLogger().handlers:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


__all__ = ["ConfigError", "NonFiniteError", "TrainResult", "train_and_evaluate"]
