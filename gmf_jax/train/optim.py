"""Optimizers and learning-rate schedules from the config, built with optax.

`config.optimizer` and `config.schedule` share one vocabulary across optimizers (see
`gmf_jax.config.default_config`). A key the chosen component does not use must stay at its
default when you set it, so a setting that would silently do nothing is an error instead; keys
the config file set for another component are left out when you switch the name (see
`gmf_jax.registry.ComponentOptions`). Each optimizer and schedule checks its own ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

from gmf_jax.checks import check_int, check_ints, check_number
from gmf_jax.errors import ConfigError
from gmf_jax.registry import ComponentOptions, parameter_names, resolve

log = logging.getLogger("gmf_jax")


def _check_momentum(momentum) -> None:
  check_number("optimizer.momentum", momentum, low=0, high=1, high_open=True, allow_none=True,
               hint="None turns momentum off.")


def _check_eps(eps) -> None:
  check_number("optimizer.eps", eps, low=0, low_open=True,
               hint="It keeps the update finite where a gradient's second moment is 0.")


def sgd(learning_rate, momentum=None, nesterov=False):
  _check_momentum(momentum)
  if nesterov and not momentum:
    raise ConfigError(f"optimizer.nesterov=True needs optimizer.momentum > 0 (it is "
                      f"{momentum!r}); set both, or nesterov=False.")
  return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
  _check_betas(b1, b2)
  _check_eps(eps)
  return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
  _check_betas(b1, b2)
  _check_eps(eps)
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     mask=_kernels_only)


def rmsprop(learning_rate, decay=0.9, eps=1e-8, momentum=None):
  check_number("optimizer.decay", decay, low=0, high=1, high_open=True)
  _check_eps(eps)
  _check_momentum(momentum)
  return optax.rmsprop(learning_rate, decay=decay, eps=eps, momentum=momentum)


def _check_betas(b1, b2) -> None:
  check_number("optimizer.b1", b1, low=0, high=1, high_open=True)
  check_number("optimizer.b2", b2, low=0, high=1, high_open=True)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "adam": adam,
    "adamw": adamw,
    "rmsprop": rmsprop,
}


def _kernels_only(params):
  """Weight decay applies to weight matrices and conv kernels, not to biases or scales."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


# Schedules get the peak rate, the run's length and their own options; with a warmup they
# start counting after it (optax.join_schedules), except `step`, whose boundaries are steps of
# the whole run.


def constant(peak, num_steps):
  return optax.constant_schedule(peak)


def cosine(peak, num_steps, decay_steps=None, end_value=0.0):
  check_int("schedule.decay_steps", decay_steps, low=1, allow_none=True,
            hint="None: the steps after the warmup.")
  check_number("schedule.end_value", end_value, low=0, high=1,
               hint="It is the final rate as a fraction of the peak.")
  return optax.cosine_decay_schedule(peak, max(1, decay_steps or num_steps), alpha=end_value)


def exponential(peak, num_steps, decay_rate=0.1, transition_steps=None):
  check_number("schedule.decay_rate", decay_rate, low=0, low_open=True)
  check_int("schedule.transition_steps", transition_steps, low=1, allow_none=True,
            hint="None: num_steps.")
  return optax.exponential_decay(peak, max(1, transition_steps or num_steps), decay_rate)


def step(peak, num_steps, boundaries=(), decay_rate=0.1, *, warmup_steps=0):
  check_number("schedule.decay_rate", decay_rate, low=0, low_open=True)
  check_ints("schedule.boundaries", tuple(boundaries), low=warmup_steps + 1, increasing=True)
  if any(b >= num_steps for b in boundaries):  # as with a warmup longer than a short trial run
    log.warning("warning: schedule.boundaries=%s: the run ends (num_steps=%d) before some of "
                "them.", tuple(boundaries), num_steps)
  return optax.piecewise_constant_schedule(
      peak, {int(b) - warmup_steps: decay_rate for b in boundaries})


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": constant,
    "cosine": cosine,
    "warmup_cosine": cosine,  # cosine that insists on schedule.warmup_steps > 0
    "exponential": exponential,
    "step": step,
}


def make_schedule(schedule_config: Mapping[str, Any], peak: float, num_steps: int,
                  options: ComponentOptions | None = None) -> optax.Schedule:
  """The learning rate as a function of the step, with an optional linear warmup from 0.

  Args:
    schedule_config: `config.schedule`.
    peak: `config.optimizer.learning_rate`.
    num_steps: the run's total number of steps.
    options: splits the section into the chosen schedule's options (see
      `gmf_jax.registry.ComponentOptions`); default: every set key must take effect.

  Raises:
    ConfigError: a bad name, an option the schedule does not take, a value out of range.
  """
  options = options or ComponentOptions()
  cfg = dict(schedule_config)
  name = cfg.pop("name")
  fn = resolve(name, SCHEDULES, key="schedule.name")
  warmup = cfg.pop("warmup_steps", 0) or 0
  check_int("schedule.warmup_steps", warmup, low=0)
  if warmup >= num_steps:  # e.g. a short trial run of a config made for long ones
    log.warning("warning: schedule.warmup_steps=%d >= num_steps=%d: the run ends during the "
                "warmup, below the peak learning rate.", warmup, num_steps)
  if name == "warmup_cosine" and warmup == 0:
    raise ConfigError("schedule.name='warmup_cosine' needs schedule.warmup_steps > 0.")
  if fn is cosine and cfg.get("decay_steps") is None:
    cfg["decay_steps"] = max(1, num_steps - warmup)
  takes = [p for p in parameter_names(fn)[0] if p not in ("peak", "num_steps", "warmup_steps")]
  kwargs = {k: v for k, v in options.take("schedule", cfg, name=name, takes=takes).items()
            if v is not None}
  if fn is step:
    kwargs["warmup_steps"] = warmup
  main = fn(peak, num_steps, **kwargs)
  if warmup == 0:
    return main
  ramp = optax.linear_schedule(0.0, peak, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(optimizer_config: Mapping[str, Any], schedule: optax.Schedule,
                   options: ComponentOptions | None = None) -> optax.GradientTransformation:
  """The optimizer with gradient clipping and weight decay as the config asks.

  `learning_rate`, `weight_decay` and `grad_clip_norm` apply to every optimizer (weight decay
  decoupled where the optimizer has it, as L2 on the gradient otherwise); each optimizer
  checks its own options.

  Raises:
    ConfigError: a bad name, an option the optimizer does not take, a value out of range.
  """
  options = options or ComponentOptions()
  cfg = dict(optimizer_config)
  name = cfg.pop("name")
  fn = resolve(name, OPTIMIZERS, key="optimizer.name")
  check_number("optimizer.learning_rate", cfg.pop("learning_rate"), low=0, low_open=True,
               hint="(--config.lr sets it too.)")
  clip = cfg.pop("grad_clip_norm", None)
  check_number("optimizer.grad_clip_norm", clip, low=0, low_open=True, allow_none=True,
               hint="None: no clipping.")
  weight_decay = cfg.pop("weight_decay", 0.0) or 0.0
  check_number("optimizer.weight_decay", weight_decay, low=0)
  names = parameter_names(fn)[0]
  takes = [p for p in names if p not in ("learning_rate", "weight_decay")]
  kwargs = {k: v for k, v in options.take("optimizer", cfg, name=name, takes=takes).items()
            if v is not None}
  decoupled = "weight_decay" in names
  if decoupled:
    kwargs["weight_decay"] = weight_decay
  parts = []
  if clip is not None:
    parts.append(optax.clip_by_global_norm(clip))
  if weight_decay and not decoupled:  # L2 on the gradient, for optimizers without decoupling
    parts.append(optax.add_decayed_weights(weight_decay, mask=_kernels_only))
  parts.append(fn(schedule, **kwargs))
  return optax.chain(*parts) if len(parts) > 1 else parts[0]
