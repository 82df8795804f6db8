"""Optimizers and learning-rate schedules from the config, built with optax.

`config.optimizer` and `config.schedule` share one vocabulary across optimizers (see
`gmf_jax.config.default_config`); a key the chosen component does not use must stay at its
default, so a setting that would silently do nothing is an error instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

from gmf_jax.errors import ConfigError
from gmf_jax.registry import resolve


def sgd(learning_rate, momentum=None, nesterov=False):
  return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
  return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     mask=_kernels_only)


def rmsprop(learning_rate, decay=0.9, eps=1e-8, momentum=None):
  return optax.rmsprop(learning_rate, decay=decay, eps=eps, momentum=momentum)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "adam": adam,
    "adamw": adamw,
    "rmsprop": rmsprop,
}


def _kernels_only(params):
  """Weight decay applies to weight matrices and conv kernels, not to biases or scales."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def constant(peak, num_steps):
  return optax.constant_schedule(peak)


def cosine(peak, num_steps, decay_steps=None, end_value=0.0):
  return optax.cosine_decay_schedule(peak, max(1, decay_steps or num_steps), alpha=end_value)


def exponential(peak, num_steps, decay_rate=0.1, transition_steps=None):
  return optax.exponential_decay(peak, max(1, transition_steps or num_steps), decay_rate)


def step(peak, num_steps, boundaries=(), decay_rate=0.1):
  return optax.piecewise_constant_schedule(peak, {int(b): decay_rate for b in boundaries})


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": constant,
    "cosine": cosine,
    "warmup_cosine": cosine,  # cosine that insists on schedule.warmup_steps > 0
    "exponential": exponential,
    "step": step,
}


def make_schedule(schedule_config: Mapping[str, Any], peak: float, num_steps: int,
                  defaults: Mapping[str, Any]) -> optax.Schedule:
  """The learning rate as a function of the step, with an optional linear warmup from 0.

  Args:
    schedule_config: `config.schedule`.
    peak: `config.optimizer.learning_rate`.
    num_steps: the run's total number of steps.
    defaults: the default `schedule` section, to tell set keys from unused ones.
  """
  cfg = dict(schedule_config)
  name = cfg.pop("name")
  fn = resolve(name, SCHEDULES, key="schedule.name")
  warmup = int(cfg.pop("warmup_steps", 0) or 0)
  if warmup < 0 or warmup >= max(num_steps, 1):
    raise ConfigError(f"schedule.warmup_steps={warmup} must be in [0, num_steps={num_steps}).")
  if name == "warmup_cosine" and warmup == 0:
    raise ConfigError("schedule.name='warmup_cosine' needs schedule.warmup_steps > 0.")
  if fn in (cosine,) and cfg.get("decay_steps") is None:
    cfg["decay_steps"] = num_steps - warmup
  kwargs = _used_kwargs(fn, cfg, defaults, section="schedule", name=name,
                        skip=("peak", "num_steps"))
  main = fn(peak, num_steps, **kwargs)
  if warmup == 0:
    return main
  ramp = optax.linear_schedule(0.0, peak, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(optimizer_config: Mapping[str, Any], schedule: optax.Schedule,
                   defaults: Mapping[str, Any]) -> optax.GradientTransformation:
  """The optimizer with gradient clipping and weight decay as the config asks."""
  cfg = dict(optimizer_config)
  name = cfg.pop("name")
  fn = resolve(name, OPTIMIZERS, key="optimizer.name")
  lr = cfg.pop("learning_rate")
  if not lr > 0:
    raise ConfigError(f"optimizer.learning_rate={lr} must be > 0.")
  clip = cfg.pop("grad_clip_norm", None)
  weight_decay = float(cfg.get("weight_decay", 0.0) or 0.0)
  if weight_decay < 0:
    raise ConfigError(f"optimizer.weight_decay={weight_decay} must be >= 0.")
  takes_decay = "weight_decay" in inspect.signature(fn).parameters
  if not takes_decay:
    cfg.pop("weight_decay", None)
  kwargs = _used_kwargs(fn, cfg, defaults, section="optimizer", name=name, skip=("learning_rate",))
  parts = []
  if clip is not None:
    if not clip > 0:
      raise ConfigError(f"optimizer.grad_clip_norm={clip} must be > 0 (or None for no clipping).")
    parts.append(optax.clip_by_global_norm(clip))
  if weight_decay and not takes_decay:  # L2 on the gradient, for optimizers without decoupling
    parts.append(optax.add_decayed_weights(weight_decay, mask=_kernels_only))
  parts.append(fn(schedule, **kwargs))
  return optax.chain(*parts) if len(parts) > 1 else parts[0]


def _used_kwargs(fn, cfg, defaults, *, section, name, skip) -> dict[str, Any]:
  """Keys `fn` takes; any other key must equal its default, else it would be silently ignored."""
  params = [p for p in inspect.signature(fn).parameters if p not in skip]
  kwargs = {}
  for key, value in cfg.items():
    if key in params:
      if value is not None:
        kwargs[key] = value
    elif key in defaults and _same(value, defaults[key]):
      continue
    else:
      raise ConfigError(
          f"{section}.{key}={value!r} has no effect with {section}.name={name!r}; "
          f"it takes: {', '.join(params) or '(nothing else)'}."
      )
  return kwargs


def _same(a, b) -> bool:
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return tuple(a) == tuple(b)
  return a == b
