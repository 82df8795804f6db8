"""Population-based training: exploit and explore on the member axis, inside the program.

    "metric": {"name": "eval/loss", "goal": "minimize"},
    "pbt": {"interval": 1000, "quantile": 0.25, "perturb": [0.8, 1.2],
            "resample_probability": 0.25,
            "hyperparameters": {"lr": {"distribution": "log_uniform_values",
                                       "min": 1e-4, "max": 1e-1}}},

Every `interval` optimizer steps (an evaluation step below `num_steps`), the members of a
population are ranked by the metric (a NaN, infinite or failed member last; ties by the
members' order in the sweep). Each of the bottom `k = max(1, floor(n * quantile))` copies
the parameters, optimizer state, model state, averaged weights and loss scale of a member of
the top `k`, picked at random, and explores: for each named hyperparameter, with probability
`resample_probability` a new value drawn from its `values` list or distribution, else the
source's value times a factor picked from `perturb` (in a `values` list: the next value up for
a factor above 1, the next down below 1; a distribution's value is clipped to its min and
max). Its other hyperparameters, its keys (data order, dropout) and its record stay its own.
The random choices come from `numpy.random.default_rng([sweep seed, step, population])`, the
sweep seed being the random sampler's `seed`, or for a grid the base config's `seed`.

All of it is one gather on the member axis and a replacement of the named hyperparameters in
`TrainState.hparams`, in one program: no process restarts, no checkpoint handed between
members. Only hyperparameters that are data (`gmf_jax.train.hparams`) can be explored.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gmf_jax import config as config_lib
from gmf_jax.errors import ConfigError
from gmf_jax.sweep import early_stop

FIELDS = ("interval", "quantile", "perturb", "resample_probability", "hyperparameters")


@dataclasses.dataclass(frozen=True)
class Space:
  """Where a hyperparameter's values come from: a `values` list or a distribution."""

  values: tuple = ()
  distribution: tuple = ()  # (name, min, max, q), as gmf_jax.sweep.spec checks it

  def draw(self, rng) -> float:
    from gmf_jax.sweep.spec import _draw

    if self.values:
      return self.values[int(rng.integers(len(self.values)))]
    return _draw(rng, self.distribution)

  def perturb(self, value: float, factor: float) -> float:
    if self.values:
      ordered = sorted(self.values)
      i = int(np.argmin([abs(v - value) for v in ordered]))
      i = min(i + 1, len(ordered) - 1) if factor > 1 else max(i - 1, 0) if factor < 1 else i
      return ordered[i]
    name, low, high, _ = self.distribution
    out = min(max(value * factor, low), high)
    return int(round(out)) if name == "int_uniform" else out


@dataclasses.dataclass(frozen=True)
class Pbt:
  """A PBT schedule, checked."""

  interval: int
  quantile: float
  perturb: tuple[float, ...]
  resample_probability: float
  hyperparameters: dict[str, Space]  # canonical config key -> where its values come from
  metric: early_stop.Metric
  seed: int = 0  # the sweep's seed: the random sampler's, else the base config's `seed`

  def steps(self, num_steps: int) -> list[int]:
    return list(range(self.interval, num_steps, self.interval))

  def plan(self, step: int, population: str, values: list[float | None],
           hparams: list[dict[str, float]], order: list[int]) -> list[dict[str, Any]]:
    """The exploits at `step` of a population: [{"member": i, "from": j, "before": {...},
    "after": {...}}] by member index (`values`: each member's metric, None where failed;
    `hparams`: each member's current named values; `order`: each member's index in the
    sweep)."""
    n = len(values)
    k = max(1, math.floor(n * self.quantile))
    if n < 2:
      return []
    ranked = sorted(range(n), key=lambda i: (*self.metric.order_key(values[i]), order[i]))
    top, bottom = ranked[:k], ranked[n - k:]
    rng = np.random.default_rng([self.seed, step, zlib.crc32(population.encode())])
    out = []
    for i in bottom:
      j = top[int(rng.integers(k))]
      after = {}
      for key, space in self.hyperparameters.items():
        if rng.random() < self.resample_probability:
          value = space.draw(rng)
        else:
          factor = self.perturb[int(rng.integers(len(self.perturb)))]
          value = space.perturb(hparams[j][key], factor)
        after[key] = float(np.float32(value))  # what the step's float32 array holds
      out.append({"member": i, "from": j, "before": dict(hparams[i]), "after": after})
    return out


def parse(raw: Mapping[str, Any], metric: early_stop.Metric | None, base,
          fail: Callable[[str], Exception], seed: int) -> Pbt | None:
  """The sweep definition's `pbt`, checked (one line per fault)."""
  from gmf_jax.sweep import spec

  given = raw.get("pbt")
  if given is None:
    return None
  if not isinstance(given, Mapping):
    raise fail(f"'pbt' must be a dict such as {{'interval': 1000, 'hyperparameters': {{...}}}}, "
               f"got {given!r}.")
  for field in given:
    if field not in FIELDS:
      raise fail(f"pbt has unknown field {field!r}; its fields: {', '.join(FIELDS)}.")
  if raw.get("early_terminate") is not None:
    raise fail("'pbt' and 'early_terminate' together are not defined: PBT already replaces "
               "the weak members with copies of the strong; drop one of them.")
  if metric is None:
    raise fail("pbt needs the sweep's 'metric', e.g. \"metric\": {\"name\": \"eval/loss\", "
               "\"goal\": \"minimize\"}.")
  interval = given.get("interval")
  if not _is_int(interval) or interval < 1:
    raise fail(f"pbt.interval={interval!r} must be an integer >= 1 (optimizer steps between "
               "exploits).")
  quantile = given.get("quantile", 0.25)
  if not _is_number(quantile) or not 0 < quantile <= 0.5:
    raise fail(f"pbt.quantile={quantile!r} must be in (0, 0.5]: the bottom quantile copies "
               "the top one.")
  perturb = given.get("perturb", [0.8, 1.2])
  if (not isinstance(perturb, (list, tuple)) or not perturb
      or not all(_is_number(f) and math.isfinite(f) and f > 0 for f in perturb)):
    raise fail(f"pbt.perturb={perturb!r} must be a list of factors > 0, e.g. [0.8, 1.2].")
  resample = given.get("resample_probability", 0.25)
  if not _is_number(resample) or not 0 <= resample <= 1:
    raise fail(f"pbt.resample_probability={resample!r} must be in [0, 1].")
  named = given.get("hyperparameters")
  if not isinstance(named, Mapping) or not named:
    raise fail("pbt.hyperparameters must name at least one hyperparameter, e.g. {\"lr\": "
               "{\"distribution\": \"log_uniform_values\", \"min\": 1e-4, \"max\": 0.1}}.")
  spaces = {}
  for given_key, space in named.items():
    key = config_lib.canonical_key(base, given_key) if isinstance(given_key, str) else given_key
    label = f"pbt.hyperparameters[{given_key!r}]"
    value = spec._get(base, key) if isinstance(key, str) else spec._MISSING
    if value is spec._MISSING:
      raise fail(f"{label}: {given_key!r} is not a key of the config.")
    if not isinstance(space, Mapping):
      raise fail(f"{label} must be {{'values': [...]}} or a distribution, got {space!r}.")
    if "values" in space:
      values = space["values"]
      if (set(space) != {"values"} or not isinstance(values, (list, tuple)) or not values
              or not all(_is_number(v) for v in values)):
        raise fail(f"{label}: 'values' must be a non-empty list of numbers, alone.")
      spaces[key] = Space(values=tuple(float(v) for v in values))
    elif "distribution" in space:
      spaces[key] = Space(distribution=spec._check_distribution(label, space, fail))
    else:
      raise fail(f"{label} needs 'values' or a 'distribution'.")
  return Pbt(int(interval), float(quantile), tuple(float(f) for f in perturb), float(resample),
             spaces, metric, seed)


def definition(pbt: Pbt | None) -> dict[str, Any]:
  """What `sweep.json`'s definition holds of it."""
  if pbt is None:
    return {}
  return {"pbt": {
      "interval": pbt.interval, "quantile": pbt.quantile, "perturb": list(pbt.perturb),
      "resample_probability": pbt.resample_probability,
      "hyperparameters": {k: ({"values": list(s.values)} if s.values else
                              dict(zip(("distribution", "min", "max", "q"), s.distribution,
                                       strict=True)))
                          for k, s in pbt.hyperparameters.items()}}}


def check_against(pbt: Pbt | None, exps, label: str) -> None:
  """Checks PBT against a population's program: the interval an evaluation step below
  num_steps, every named hyperparameter data in every member (a key that is part of the
  program, or 0/None where that switches a part off, cannot change inside it)."""
  if pbt is None:
    return
  exp = exps[0]
  every, num_steps = exp.config.eval_every_steps, exp.num_steps
  if pbt.interval >= num_steps:
    raise ConfigError(f"sweep {label}: pbt.interval={pbt.interval} must be below "
                      f"num_steps={num_steps}: no member would ever be exploited.")
  if pbt.interval % every:
    raise ConfigError(f"sweep {label}: pbt.interval={pbt.interval} is not an evaluation step "
                      f"(eval_every_steps={every}); choose a multiple of {every}.")
  for key in pbt.hyperparameters:
    for e in exps:
      if key not in e.hparams:
        raise ConfigError(
            f"sweep {label}: pbt cannot explore {key!r}: it is part of the compiled program "
            f"(a name, shape or switch, or 0/None, which turns a part off), not data that "
            f"reaches the step as an array; explorable here: "
            f"{', '.join(sorted(e.hparams)) or 'none'} (see gmf_jax/train/hparams.py).")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)

