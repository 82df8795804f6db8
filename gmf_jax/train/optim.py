"""Optimizers and learning-rate schedules from the config, built with optax.

`config.optimizer` and `config.schedule` share one vocabulary across optimizers (see
`gmf_jax.config.default_config`). A key the chosen component does not use must stay at its
default when you set it, so a setting that would silently do nothing is an error instead; keys
the config file set for another component are left out when you switch the name (see
`gmf_jax.registry.ComponentOptions`). Each optimizer and schedule checks its own ranges.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gmf_jax.checks import check_int, check_ints, check_number, deferred
from gmf_jax.errors import ConfigError
from gmf_jax.registry import ComponentOptions, parameter_names, resolve
from gmf_jax.train import hparams

log = logging.getLogger("gmf_jax")


def _check_momentum(momentum) -> None:
  check_number("optimizer.momentum", momentum, low=0, high=1, high_open=True, allow_none=True,
               hint="None turns momentum off.")


def _check_eps(eps) -> None:
  check_number("optimizer.eps", eps, low=0, low_open=True,
               hint="It keeps the update finite where a gradient's second moment is 0.")


def sgd(learning_rate, momentum=None, nesterov=False):
  _check_momentum(momentum)
  if nesterov and (momentum is None or (not isinstance(momentum, jax.Array) and not momentum)):
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


# Schedules are functions of the optimizer's step count and of their options, written with
# jax.numpy so that every option can be an array (see gmf_jax.train.hparams): one compiled step
# serves every value. Each gets the peak rate, the run's length and its own options; with a
# warmup it starts counting after it, except `step`, whose boundaries are steps of the whole
# run. Each schedule's `check_<name>` checks the concrete values once, at build time.


def constant(count, peak, num_steps):
  return peak * jnp.ones_like(count, jnp.float32)


def cosine(count, peak, num_steps, decay_steps=None, end_value=0.0):
  fraction = jnp.minimum(count, decay_steps) / decay_steps
  return peak * (end_value + (1 - end_value) * 0.5 * (1 + jnp.cos(jnp.pi * fraction)))


def check_cosine(num_steps, decay_steps=None, end_value=0.0):
  check_int("schedule.decay_steps", decay_steps, low=1, allow_none=True,
            hint="None: the steps after the warmup.")
  check_number("schedule.end_value", end_value, low=0, high=1,
               hint="It is the final rate as a fraction of the peak.")


def exponential(count, peak, num_steps, decay_rate=0.1, transition_steps=None):
  return peak * jnp.power(decay_rate, count / transition_steps)


def check_exponential(num_steps, decay_rate=0.1, transition_steps=None):
  check_number("schedule.decay_rate", decay_rate, low=0, low_open=True)
  check_int("schedule.transition_steps", transition_steps, low=1, allow_none=True,
            hint="None: num_steps.")


def step(count, peak, num_steps, boundaries=(), decay_rate=0.1, *, warmup_steps=0):
  if not isinstance(boundaries, jax.Array) and not len(boundaries):
    return constant(count, peak, num_steps)
  passed = (count + warmup_steps) >= jnp.asarray(boundaries)  # boundaries are absolute steps
  return peak * jnp.prod(jnp.where(passed, decay_rate, 1.0))


def check_step(num_steps, boundaries=(), decay_rate=0.1, *, warmup_steps=0):
  check_number("schedule.decay_rate", decay_rate, low=0, low_open=True)
  check_ints("schedule.boundaries", tuple(boundaries), low=warmup_steps + 1, increasing=True)
  if any(b >= num_steps for b in boundaries):  # as with a warmup longer than a short trial run
    log.warning("warning: schedule.boundaries=%s: the run ends (num_steps=%d) before some of "
                "them.", tuple(boundaries), num_steps)


SCHEDULES: dict[str, Callable[..., jax.Array]] = {
    "constant": constant,
    "cosine": cosine,
    "warmup_cosine": cosine,  # cosine that insists on schedule.warmup_steps > 0
    "exponential": exponential,
    "step": step,
}
_SCHEDULE_CHECKS = {constant: None, cosine: check_cosine, exponential: check_exponential,
                    step: check_step}


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The learning rate as a function of the optimizer's count: `schedule(count)`, or
  `schedule(count, hparams)` with values from `TrainState.hparams` (arrays) in place of the
  built ones."""

  fn: Callable[..., jax.Array]
  peak: float
  num_steps: int
  options: Mapping[str, Any]  # the schedule's own options, checked, with defaults filled in
  warmup_steps: int = 0

  def values(self) -> dict[str, Any]:
    """The schedule's data values by config key (see gmf_jax.train.hparams)."""
    found = {f"schedule.{k}": v for k, v in self.options.items()}
    found["schedule.warmup_steps"] = self.warmup_steps
    return {k: v for k, v in found.items() if hparams.is_data(k, v)}

  def __call__(self, count, values: Mapping[str, Any] | None = None) -> jax.Array:
    values = values or {}
    get = lambda key, default: values.get(key, default)
    peak = get("optimizer.learning_rate", self.peak)
    options = {k: get(f"schedule.{k}", v) for k, v in self.options.items()}
    count = jnp.asarray(count, jnp.float32)
    if self.fn is step:
      options["warmup_steps"] = get("schedule.warmup_steps", self.warmup_steps)
    if not self.warmup_steps:
      return self.fn(count, peak, self.num_steps, **options)
    warmup = get("schedule.warmup_steps", self.warmup_steps)
    main = self.fn(jnp.maximum(count - warmup, 0.0), peak, self.num_steps, **options)
    return jnp.where(count < warmup, peak * count / warmup, main)


def make_schedule(schedule_config: Mapping[str, Any], peak: float, num_steps: int,
                  options: ComponentOptions | None = None) -> Schedule:
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
  if fn is exponential and cfg.get("transition_steps") is None:
    cfg["transition_steps"] = num_steps
  takes = [p for p in parameter_names(fn)[0]
           if p not in ("count", "peak", "num_steps", "warmup_steps")]
  kwargs = {k: v for k, v in options.take("schedule", cfg, name=name, takes=takes).items()
            if v is not None}
  check = _SCHEDULE_CHECKS.get(fn)
  if check is not None:
    check(num_steps, **kwargs, **({"warmup_steps": warmup} if fn is step else {}))
  if fn is step:
    kwargs["boundaries"] = tuple(int(b) for b in kwargs.get("boundaries", ()))
  return Schedule(fn, peak, num_steps, kwargs, warmup)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optimizer's checked options; `build(schedule, hparams)` makes the optax transformation,
  inside the compiled step, with the values in `hparams` (arrays) in place of the built ones."""

  fn: Callable[..., optax.GradientTransformation]
  learning_rate: float
  options: Mapping[str, Any]  # the optimizer's own options (weight_decay too, if decoupled)
  grad_clip_norm: float | None
  weight_decay: float
  decoupled: bool  # weight decay is the optimizer's own (adamw), else L2 on the gradient

  def values(self) -> dict[str, Any]:
    """The optimizer's data values by config key (see gmf_jax.train.hparams)."""
    found = {f"optimizer.{k}": v for k, v in self.options.items()}
    found.update({"optimizer.learning_rate": self.learning_rate,
                  "optimizer.grad_clip_norm": self.grad_clip_norm,
                  "optimizer.weight_decay": self.weight_decay})
    return {k: v for k, v in found.items() if hparams.is_data(k, v)}

  def build(self, schedule: Callable[[jax.Array], jax.Array],
            values: Mapping[str, Any] | None = None) -> optax.GradientTransformation:
    values = values or {}
    kwargs = {k: values.get(f"optimizer.{k}", v) for k, v in self.options.items()}
    clip = values.get("optimizer.grad_clip_norm", self.grad_clip_norm)
    weight_decay = values.get("optimizer.weight_decay", self.weight_decay)
    parts = []
    with deferred():  # checked at build time; now they may be arrays
      if self.grad_clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip))
      if self.weight_decay and not self.decoupled:  # L2 on the gradient
        parts.append(optax.add_decayed_weights(weight_decay, mask=_kernels_only))
      parts.append(self.fn(schedule, **kwargs))
    return optax.chain(*parts) if len(parts) > 1 else parts[0]


def make_optimizer(optimizer_config: Mapping[str, Any], schedule: Callable[[Any], Any],
                   options: ComponentOptions | None = None) -> optax.GradientTransformation:
  """The optimizer with gradient clipping and weight decay as the config asks (see
  `prepare_optimizer`), as an optax transformation of concrete values."""
  return prepare_optimizer(optimizer_config, options).build(schedule)


def prepare_optimizer(optimizer_config: Mapping[str, Any],
                      options: ComponentOptions | None = None) -> Optimizer:
  """Checks the optimizer's options; `Optimizer.build` makes the transformation.

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
  learning_rate = cfg.pop("learning_rate")
  cfg.pop("accumulate_steps", None)  # the train step's (checked in train/build.py)
  check_number("optimizer.learning_rate", learning_rate, low=0, low_open=True,
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
  fn(optax.constant_schedule(learning_rate), **kwargs)  # each optimizer checks its options
  return Optimizer(fn, learning_rate, kwargs, clip, weight_decay, decoupled)
