"""Seeds until the claim holds: a sweep that adds seeds, in rounds, to the points whose
interval of the mean is still wide.

    "metric": {"name": "eval/loss", "goal": "minimize"},
    "seeds": {"min": 3, "max": 20, "until": {"ci_half_width": 0.01}},

The rule, for every point of the sweep (a setting of its parameters):

- Round 0 trains every point with seeds base..base+min-1, as `"seeds": min` would.
- After a round, each point that got seeds in it is judged on the final value of the sweep's
  `metric` of each of its members (`summary.json`; a member that failed counts as a seed spent
  but gives no value): its interval is the 95% Student t interval of the mean over its n values,
  mean +- t(0.975, n-1) * s / sqrt(n) (s: the sample standard deviation; no interval when
  n < 2). The point stops with "narrow enough: half-width H <= asked" when that half-width is
  at most `ci_half_width`, else with "max seeds reached: N" when it has `max` seeds; otherwise
  it gets as many new seeds as it has now, capped by `max` (3, 6, 12, 20 with min 3 and max
  20), continuing base+min, base+min+1, ...
- The next round trains the new members of every point that goes on, as new populations
  (`r<k>.p<i>`); the sweep ends when no point goes on.

Why doubling: the half-width falls like t(n-1)/sqrt(n), so the seeds a point needs are unknown
until its spread is known. Doubling reaches any count n* in about log2(n*/min) rounds and
spends at most twice the seeds needed (never more than `max`), without trusting a standard
deviation estimated from three values, as a projection would; a fixed step would take many
more rounds, each paying a program's compilation and start-up (a round's members train
together, so a wider round costs little more wall time).

`sweep.json` keeps the record (under its lock, see `gmf_jax.sweep.ledger`):

    "seed_rounds": {
      "metric": {"name": "eval/loss", "goal": "minimize"},
      "rule": {"min": 3, "max": 20, "ci_half_width": 0.01, "interval": "..."},
      "rounds": [{"round": 0, "seeds": {"<point>": [0, 1, 2]}, "members": [...],
                  "after": {"<point>": {"seeds": 3, "n": 3, "mean": ..., "half_width": ...,
                                        "low": ..., "high": ..., "values": {member: value},
                                        "stopped": "narrow enough: ..." | null, "adds": 3}}},
                 {"round": 1, "seeds": {"<point>": [3, 4, 5]}, ...}],
      "points": {"<point>": {...its latest "after" entry, and "rounds": [0, 1]}}
    }

A round's decision (its `after`) and the next round's plan are written together, once, from
the finished members' recorded values, before any new member is planned; a rerun after a kill
trains the recorded rounds' members and never decides a recorded round again.

Note: the seeds a point gets depend on the spread seen so far, so the final interval's coverage
is close to, not exactly, 95% (stopping when the spread looks small by chance narrows it).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import numbers
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gmf_jax import failpoints
from gmf_jax.errors import ConfigError
from gmf_jax.runlog.files import read_json
from gmf_jax.sweep import early_stop, ledger

log = logging.getLogger("gmf_jax")

FIELDS = ("min", "max", "until")
UNTIL_KEYS = ("ci_half_width",)
INTERVAL = ("95% Student t interval of the mean final metric over a point's seeds: "
            "mean +- t(0.975, n-1) * s / sqrt(n)")
SECTION = "seed_rounds"


@dataclasses.dataclass(frozen=True)
class SeedRounds:
  """How many seeds a point gets: `min` first, then more in rounds until its interval is
  narrow (`ci_half_width`) or it has `max`."""

  min: int
  max: int
  ci_half_width: float

  def definition(self) -> dict[str, Any]:
    """The sweep definition's `seeds` entry (compared when a sweep is run again)."""
    return {"min": self.min, "max": self.max, "until": {"ci_half_width": self.ci_half_width}}


@dataclasses.dataclass(frozen=True)
class Point:
  """One setting of the sweep's parameters and every member it may get, seed base first."""

  label: str  # e.g. "lr=0.1" ("base" for a sweep of seeds alone)
  members: tuple  # of spec.Member, seeds base..base+max-1


def parse(raw: Mapping[str, Any], metric: early_stop.Metric | None,
          fail: Callable[[str], Exception]) -> SeedRounds | None:
  """The definition's `seeds` when it is a dict (None otherwise), checked: one line per fault."""
  given = raw.get("seeds")
  if not isinstance(given, Mapping):
    return None
  example = "{'min': 3, 'max': 20, 'until': {'ci_half_width': 0.01}}"
  for field in given:
    if field not in FIELDS:
      raise fail(f"seeds has unknown key {field!r}; its keys: min, max, until (e.g. "
                 f"{example}).")
  low, high, until = given.get("min"), given.get("max"), given.get("until")
  if not _is_int(low) or low < 2:
    raise fail(f"seeds.min={low!r} must be an integer >= 2: an interval needs two values.")
  if not _is_int(high) or high < low:
    raise fail(f"seeds.max={high!r} must be an integer >= seeds.min={low}.")
  if not isinstance(until, Mapping) or not until:
    raise fail(f"seeds.until={until!r} must be a dict such as {{'ci_half_width': 0.01}}.")
  for key in until:
    if key not in UNTIL_KEYS:
      raise fail(f"seeds.until has unknown key {key!r}; its keys: {', '.join(UNTIL_KEYS)}.")
  width = until.get("ci_half_width")
  if (not isinstance(width, numbers.Real) or isinstance(width, bool)
      or not math.isfinite(width) or width <= 0):
    raise fail(f"seeds.until.ci_half_width={width!r} must be a number > 0 (in the metric's "
               "units).")
  if metric is None:
    raise fail("seeds.until needs the sweep's 'metric', e.g. \"metric\": {\"name\": "
               "\"eval/loss\", \"goal\": \"minimize\"}: the interval is of its final value.")
  for key, why in (("early_terminate", "a stopped member has no final value"),
                   ("pbt", "PBT members copy each other's weights, so seeds are not "
                           "independent")):
    if raw.get(key) is not None:
      raise fail(f"seeds.until together with {key!r} is not defined ({why}); drop one.")
  return SeedRounds(int(low), int(high), float(width))


# The rule.


def half_width(values: Sequence[float]) -> float | None:
  """The half-width of the 95% Student t interval of the mean of `values` (None below 2)."""
  n = len(values)
  if n < 2:
    return None
  from scipy import stats  # only seed rounds need it

  return float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def judge(values: Sequence[float | None], rule: SeedRounds) -> dict[str, Any]:
  """One point after a round: its interval, and whether it stops or how many seeds it adds.

  Args:
    values: the final metric of each of its members (every seed it has), None where a member
      failed or has no finite value.
    rule: the sweep's seed rounds.

  Returns:
    {"seeds", "n" (finite values), "mean", "half_width", "low", "high", "stopped" (the reason,
    or None when it goes on), "adds" (new seeds next round; 0 when stopped)}.
  """
  finite = [float(v) for v in values if v is not None and math.isfinite(v)]
  seeds, n = len(values), len(finite)
  mean = statistics.fmean(finite) if finite else None
  half = half_width(finite)
  stopped, adds = None, 0
  if half is not None and half <= rule.ci_half_width:
    stopped = f"narrow enough: half-width {half:.6g} <= {rule.ci_half_width:g}"
  elif seeds >= rule.max:
    stopped = f"max seeds reached: {rule.max}"
  else:
    adds = min(seeds, rule.max - seeds)
  return {"seeds": seeds, "n": n, "mean": mean, "half_width": half,
          "low": None if half is None else mean - half,
          "high": None if half is None else mean + half, "stopped": stopped, "adds": adds}


def final_value(folder: str, name: str) -> float | None:
  """A member's final value of metric `name`: `summary.json`'s, else the last row of
  `metrics.csv`; None where there is none or it is not finite."""
  try:
    entry = read_json(os.path.join(folder, "summary.json"))["metrics"][name]
    return early_stop.finite_or_none(entry["final"])
  except (OSError, ValueError, KeyError, TypeError):
    pass
  last = None
  try:
    with open(os.path.join(folder, "metrics.csv")) as f:
      for row in csv.DictReader(f):
        if row.get("name") == name:
          last = row.get("value")
  except OSError:
    return None
  try:
    return early_stop.finite_or_none(float(last)) if last is not None else None
  except ValueError:
    return None


# The record in sweep.json.


def first_round(sweep) -> dict[str, Any]:
  """Round 0: every point's first `min` seeds."""
  return _round(0, {p.label: list(p.members[:sweep.seed_rounds.min]) for p in sweep.points})


def _round(index: int, members: dict[str, list]) -> dict[str, Any]:
  return {"round": index, "seeds": {label: [m.seed for m in ms] for label, ms in members.items()},
          "members": [m.name for ms in members.values() for m in ms]}


def start(data: dict[str, Any], sweep) -> None:
  """Puts round 0 in sweep.json's `data` unless rounds are recorded already (inside
  `ledger.update`, with the sweep's first write)."""
  if SECTION in data:
    return
  rule = sweep.seed_rounds
  data[SECTION] = {
      "metric": {"name": sweep.metric.name, "goal": sweep.metric.goal},
      "rule": {"min": rule.min, "max": rule.max, "ci_half_width": rule.ci_half_width,
               "interval": INTERVAL},
      "rounds": [first_round(sweep)], "points": {}}


def planned(sweep, data: Mapping[str, Any] | None):
  """The sweep with the members of every recorded round (round 0 where none is recorded),
  point by point, seeds in order, each member's `round` set."""
  rounds = ((data or {}).get(SECTION) or {}).get("rounds") or [first_round(sweep)]
  by_seed = {(p.label, m.seed): m for p in sweep.points for m in p.members}
  round_of = {}
  for r in rounds:
    for label, seeds in r["seeds"].items():
      for seed in seeds:
        if (label, seed) not in by_seed:
          raise ConfigError(f"sweep.json's seed round {r['round']} plans seed {seed} of point "
                            f"{label!r}, which this sweep does not have; move sweep.json away "
                            "to start the sweep anew.")
        round_of[by_seed[label, seed].name] = r["round"]
  members = tuple(dataclasses.replace(m, round=round_of[m.name]) for p in sweep.points
                  for m in p.members if m.name in round_of)
  return dataclasses.replace(sweep, members=members)


def advance(sweep, workdir: str, statuses: Mapping[str, str]) -> bool:
  """After a pass over the planned members: decides the last round once its members all
  finished, and records the decision and the next round's plan together.

  Args:
    sweep: the sweep as `planned` gives it (the members of every recorded round).
    workdir: the sweep folder.
    statuses: every planned member's status (`sweep.json`'s).

  Returns:
    Whether a new round was planned (False: the sweep ended, or a member of it is unfinished).
  """
  data = ledger.read(workdir) or {}
  last = data[SECTION]["rounds"][-1]
  if "after" in last:  # decided: the last round planned nothing more
    return False
  if not set(last["members"]) <= {m.name for m in sweep.members}:  # never judge a round untrained
    raise RuntimeError(f"seed round {last['round']}'s members are not all in the sweep given; "
                       "pass the sweep as seed_rounds.planned gives it.")
  unfinished = [m.name for m in sweep.members if statuses.get(m.name) not in ("completed",
                                                                                 "failed")]
  if unfinished:
    log.info("seed round %d: %d members unfinished (%s); rerun the sweep to finish the round",
             last["round"], len(unfinished), ", ".join(unfinished[:3]))
    return False
  points = {p.label: p for p in sweep.points}
  after, following = {}, {}
  for label in last["seeds"]:
    names = {m.name for m in points[label].members}
    members = [m for m in sweep.members if m.name in names]  # every seed it has, in order
    values = {m.name: (final_value(os.path.join(workdir, m.name), sweep.metric.name)
                       if statuses[m.name] == "completed" else None) for m in members}
    outcome = judge(list(values.values()), sweep.seed_rounds)
    after[label] = {**outcome, "values": values}
    if outcome["adds"]:
      following[label] = list(points[label].members[len(members):
                                                     len(members) + outcome["adds"]])
  index = last["round"]

  def change(data):
    section = data[SECTION]
    mine = section["rounds"][index]
    if "after" in mine:  # decided meanwhile: the record stands
      return len(section["rounds"]) > index + 1
    mine["after"] = after
    for label, outcome in after.items():
      section["points"][label] = {
          **{k: v for k, v in outcome.items() if k != "values"},
          "rounds": [r["round"] for r in section["rounds"][:index + 1] if label in r["seeds"]]}
    if following:
      section["rounds"].append(_round(index + 1, following))
    return bool(following)

  new = ledger.update(workdir, change)
  for label, outcome in after.items():
    log.info("seed round %d: %s: %d seeds, mean %s, half-width %s: %s", index, label,
             outcome["seeds"], _num(outcome["mean"]), _num(outcome["half_width"]),
             outcome["stopped"] or f"+{outcome['adds']} seeds")
  failpoints.reach("seed_round")  # decided and recorded; the next round not yet planned
  return new


def _num(value: float | None) -> str:
  return "-" if value is None else f"{value:.4g}"


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)
