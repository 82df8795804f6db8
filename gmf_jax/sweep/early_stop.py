"""Early termination of a sweep's members: the rules, their checks, and their records.

A sweep file names the metric its members are judged by and, optionally, a rule in W&B's
vocabulary:

    "metric": {"name": "eval/loss", "goal": "minimize"},
    "early_terminate": {"type": "hyperband", "min_iter": 1000, "eta": 3},
    # or {"type": "median", "min_iter": 1000}

**hyperband** (successive halving with asynchronous promotion, as ASHA): rungs at
`min_iter * eta**k` optimizer steps, every rung below `num_steps`. At a rung, the `n` members of
the sweep that have reached it so far (recorded in `sweep.json`, the population deciding now
included) are ranked by the metric; a member goes on when its rank is below
`max(1, n // eta)`. Ranks: a value that is NaN or infinite, or a member that failed, counts as
the worst; equal values rank by the members' order in the sweep. A member never goes on with a
non-finite value.

**median** (median stopping, as in Vizier and Optuna): at every evaluation step from `min_iter`
on (below `num_steps`), a member stops when its best value so far (over its evaluations from
step `eval_every_steps` on) is strictly worse than the median of the other members' values at
that step (every member of the sweep evaluated at that step so far). A member with no other
value to compare with goes on; a non-finite best value is worse than any median.

Decisions are recorded in `sweep.json` before they take effect, and a recorded decision is
never taken again: a resumed sweep applies it as recorded.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gmf_jax.errors import ConfigError

TYPES = ("hyperband", "median")
GOALS = ("minimize", "maximize")
METRIC_FIELDS = ("name", "goal")
FIELDS = {"hyperband": ("type", "min_iter", "eta"), "median": ("type", "min_iter")}


@dataclasses.dataclass(frozen=True)
class Metric:
  """What a sweep's members are judged by: an evaluation metric and its goal."""

  name: str  # e.g. "eval/loss"
  goal: str  # minimize | maximize

  def order_key(self, value: float | None) -> tuple[bool, float]:
    """Sorts better values first; missing and non-finite values last."""
    if value is None or not math.isfinite(value):
      return (True, 0.0)
    return (False, value if self.goal == "minimize" else -value)

  def worse(self, a: float | None, b: float) -> bool:
    """Whether `a` is strictly worse than the finite `b`."""
    if a is None or not math.isfinite(a):
      return True
    return a > b if self.goal == "minimize" else a < b

  def best(self, values: Sequence[float | None]) -> float | None:
    """The best of `values` (None where there is no finite one)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
      return None
    return min(finite) if self.goal == "minimize" else max(finite)


@dataclasses.dataclass(frozen=True)
class Rule:
  """An early-termination rule: hyperband (successive halving) or median stopping."""

  type: str
  min_iter: int
  eta: int = 3  # hyperband only
  metric: Metric = Metric("eval/loss", "minimize")

  def steps(self, num_steps: int, eval_every: int) -> list[int]:
    """The steps at which members may be stopped (a rung, or an evaluation step)."""
    if self.type == "hyperband":
      out, step = [], self.min_iter
      while step < num_steps:
        out.append(step)
        step *= self.eta
      return out
    return list(range(self.min_iter, num_steps, eval_every))

  def sizes(self, size: int, num_steps: int, eval_every: int, after: int) -> list[int]:
    """The sizes a population of `size` shrinks to at its decision steps after `after`, where
    they can be told in advance: hyperband within one population (`max(1, n // eta)` at each
    rung); none for the median rule."""
    if self.type != "hyperband":
      return []
    out = []
    for _ in (s for s in self.steps(num_steps, eval_every) if s > after):
      smaller = max(1, size // self.eta)
      if smaller == size:
        break
      out.append(size := smaller)
    return out

  def recorded_steps(self, num_steps: int, eval_every: int) -> list[int]:
    """The steps whose values the rule needs recorded: its decision steps, and for the median
    rule every evaluation step before them (a best value so far)."""
    if self.type == "hyperband":
      return self.steps(num_steps, eval_every)
    return list(range(eval_every, num_steps, eval_every))

  def decide(self, step: int, values: Mapping[str, float | None], order: Mapping[str, int],
             history: Mapping[int, Mapping[str, float | None]]) -> dict[str, dict[str, Any]]:
    """Decides, at `step`, for every member in `values` (this population's, at `step`).

    Args:
      step: a decision step.
      values: {member: its value at `step`, None where it failed or has none}.
      order: {member: its index in the sweep} (ties).
      history: {step: {member: value}}: what `sweep.json` holds of every member of the sweep
        (earlier populations'), for steps up to `step`.

    Returns:
      {member: {"continue": bool, ...what the record shows: rank and of (hyperband), best and
      median (median)}}.
    """
    at_step = {**history.get(step, {}), **values}
    if self.type == "hyperband":
      return self._halving(values, at_step, order)
    return self._median(step, values, at_step, history)

  def _halving(self, values, at_step, order) -> dict[str, dict[str, Any]]:
    ranked = sorted(at_step, key=lambda m: (*self.metric.order_key(at_step[m]), order.get(m, 0)))
    n = len(ranked)
    keep = max(1, n // self.eta)
    out = {}
    for m in values:
      rank = ranked.index(m)
      finite = at_step[m] is not None and math.isfinite(at_step[m])
      out[m] = {"continue": bool(rank < keep and finite), "rank": rank + 1, "of": n,
                "kept": keep}
    return out

  def _median(self, step, values, at_step, history) -> dict[str, dict[str, Any]]:
    out = {}
    for m in values:
      own = [h[m] for s, h in history.items() if s < step and m in h] + [values[m]]
      best = self.metric.best(own)
      others = [v for k, v in at_step.items() if k != m]
      finite = [v for v in others if v is not None and math.isfinite(v)]
      if not others:
        out[m] = {"continue": True, "best": best, "median": None}
        continue
      median = float(np.median(finite)) if finite else None
      stop = best is None if median is None else self.metric.worse(best, median)
      out[m] = {"continue": not stop, "best": best, "median": median}
    return out


def parse(raw: Mapping[str, Any], fail: Callable[[str], Exception]) -> tuple[Metric | None,
                                                                            Rule | None]:
  """The sweep definition's `metric` and `early_terminate`, checked (one line per fault)."""
  metric = _parse_metric(raw.get("metric"), fail)
  given = raw.get("early_terminate")
  if given is None:
    return metric, None
  if not isinstance(given, Mapping):
    raise fail(f"'early_terminate' must be a dict such as {{'type': 'hyperband', 'min_iter': "
               f"1000, 'eta': 3}}, got {given!r}.")
  kind = given.get("type")
  if kind not in TYPES:
    raise fail(f"early_terminate.type={kind!r} is unknown; choose from {', '.join(TYPES)}.")
  for field in given:
    if field not in FIELDS[kind]:
      raise fail(f"early_terminate has unknown field {field!r} for type {kind!r}; its fields: "
                 f"{', '.join(FIELDS[kind])}.")
  if metric is None:
    raise fail("early_terminate needs the sweep's 'metric', e.g. \"metric\": {\"name\": "
               "\"eval/loss\", \"goal\": \"minimize\"}.")
  min_iter = given.get("min_iter")
  if not _is_int(min_iter) or min_iter < 1:
    raise fail(f"early_terminate.min_iter={min_iter!r} must be an integer >= 1 (optimizer "
               "steps before the first decision).")
  eta = given.get("eta", 3)
  if kind == "hyperband" and (not _is_int(eta) or eta < 2):
    raise fail(f"early_terminate.eta={eta!r} must be an integer >= 2 (1/eta of the members go "
               "on at each rung).")
  return metric, Rule(kind, int(min_iter), int(eta), metric)


def _parse_metric(given, fail) -> Metric | None:
  if given is None:
    return None
  if not isinstance(given, Mapping):
    raise fail(f"'metric' must be a dict such as {{'name': 'eval/loss', 'goal': 'minimize'}}, "
               f"got {given!r}.")
  for field in given:
    if field not in METRIC_FIELDS:
      raise fail(f"metric has unknown field {field!r}; its fields: name, goal.")
  name, goal = given.get("name"), given.get("goal")
  if not isinstance(name, str) or not name.startswith("eval/"):
    raise fail(f"metric.name={name!r} must name an evaluation metric, e.g. 'eval/loss'.")
  if goal not in GOALS:
    raise fail(f"metric.goal={goal!r} must be 'minimize' or 'maximize'.")
  return Metric(name, goal)


def definition(metric: Metric | None, rule: Rule | None) -> dict[str, Any]:
  """What `sweep.json`'s definition holds of them (compared when a sweep is run again)."""
  out: dict[str, Any] = {}
  if metric is not None:
    out["metric"] = {"name": metric.name, "goal": metric.goal}
  if rule is not None:
    out["early_terminate"] = {"type": rule.type, "min_iter": rule.min_iter,
                              **({"eta": rule.eta} if rule.type == "hyperband" else {})}
  return out


def check_against(rule: Rule | None, metric: Metric | None, exp, label: str) -> None:
  """Checks the rule against a population's program: `min_iter` below `num_steps` and an
  evaluation step, the metric one that evaluation writes.

  Raises:
    ConfigError: naming the key, its value and the fix.
  """
  if metric is not None:
    names = [f"eval/{m}" for m in exp.eval_metrics]
    if metric.name not in names:
      raise ConfigError(f"sweep {label}: metric.name={metric.name!r} is not an eval metric of "
                        f"this loss; choose from {', '.join(names)}.")
  if rule is None:
    return
  if exp.config.mesh.members > 1:
    raise ConfigError(f"sweep {label}: early_terminate shrinks each population to sizes that "
                      f"mesh.members={exp.config.mesh.members} need not divide; set "
                      "--config.mesh.members=0 (devices chosen for each size) or 1.")
  every, num_steps = exp.config.eval_every_steps, exp.num_steps
  if rule.min_iter >= num_steps:
    raise ConfigError(f"sweep {label}: early_terminate.min_iter={rule.min_iter} must be below "
                      f"num_steps={num_steps}: no member would ever be stopped.")
  if rule.min_iter % every:
    raise ConfigError(f"sweep {label}: early_terminate.min_iter={rule.min_iter} is not an "
                      f"evaluation step (eval_every_steps={every}); choose a multiple of "
                      f"{every}.")


def finite_or_none(value: Any) -> float | None:
  """A recorded value: a float, or None for NaN, infinite or missing."""
  if not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
    return None
  return float(value)


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)
