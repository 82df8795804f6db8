"""`sweep.json`, read and updated under a lock: populations trained side by side (the local
executor's processes) record their members' values and their decisions in it.

Besides the definition and the members (see `gmf_jax.sweep.run.write_sweep_json`), a sweep
with early termination keeps

    "early_terminate": {
      "values": {"<step>": {"<member>": value or null}},   # the metric at the rule's steps
      "decisions": [{"step": 500, "population": "p0", "to": "p0@500",
                     "continued": [...], "stopped": [...], "details": {"<member>": {...}}}]
    }

A decision is written before it takes effect, and once written it is the decision: a resumed
sweep applies it as recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from typing import Any

from gmf_jax.runlog.files import read_json, write_json

SWEEP_FILE = "sweep.json"
LOCK_FILE = ".sweep.json.lock"


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
  """Holds the sweep folder's lock (one writer of sweep.json at a time, across processes)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, LOCK_FILE), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def read(workdir: str) -> dict[str, Any] | None:
  """sweep.json, or None where there is none."""
  path = os.path.join(workdir, SWEEP_FILE)
  if not os.path.exists(path):
    return None
  return read_json(path)


def update(workdir: str, change: Callable[[dict[str, Any]], Any]) -> Any:
  """Reads sweep.json, applies `change(data)` (in place) and writes it back, under the lock;
  returns what `change` returned."""
  with locked(workdir):
    data = read(workdir) or {}
    out = change(data)
    write_json(os.path.join(workdir, SWEEP_FILE), data)
    return out


def population_step(population_id: str) -> int:
  """The step a population began at: `p0@1500` -> 1500, `p0` -> 0."""
  _, _, step = population_id.rpartition("@")
  return int(step) if "@" in population_id and step.isdigit() else 0


def population_base(population_id: str) -> str:
  """`p0@1500` -> `p0`: the population it shrank from, first."""
  return population_id.split("@", 1)[0]


def shrunk_id(population_id: str, step: int) -> str:
  """The id of what `population_id` goes on as after shrinking at `step`."""
  return f"{population_base(population_id)}@{step}"


class Ledger:
  """The `early_terminate` record of one sweep's `sweep.json`."""

  def __init__(self, workdir: str):
    self.workdir = workdir

  def _section(self, data: dict[str, Any]) -> dict[str, Any]:
    return data.setdefault("early_terminate", {"values": {}, "decisions": []})

  def history(self) -> dict[int, dict[str, float | None]]:
    """{step: {member: value}} of every member recorded so far."""
    data = read(self.workdir) or {}
    values = data.get("early_terminate", {}).get("values", {})
    return {int(step): dict(v) for step, v in values.items()}

  def decisions(self) -> list[dict[str, Any]]:
    data = read(self.workdir) or {}
    return list(data.get("early_terminate", {}).get("decisions", []))

  def decision(self, step: int, population: str) -> dict[str, Any] | None:
    """The recorded decision of `population` at `step`, if any."""
    for d in self.decisions():
      if d["step"] == step and d["population"] == population:
        return d
    return None

  def record_values(self, step: int, values: dict[str, float | None]) -> None:
    def change(data):
      self._section(data)["values"].setdefault(str(step), {}).update(values)

    update(self.workdir, change)

  def record_decision(self, step: int, population: str, outcome: dict[str, dict[str, Any]],
                      values: dict[str, float | None]) -> dict[str, Any]:
    """Records the values at `step` and the decision `outcome` (see `Rule.decide`) of
    `population`, unless one is recorded already; returns the recorded decision."""
    continued = [m for m, o in outcome.items() if o["continue"]]
    stopped = [m for m, o in outcome.items() if not o["continue"]]
    decision = {"step": step, "population": population,
                "to": shrunk_id(population, step) if stopped else None,
                "continued": continued, "stopped": stopped, "details": outcome}

    def change(data):
      section = self._section(data)
      section["values"].setdefault(str(step), {}).update(values)
      for d in section["decisions"]:
        if d["step"] == step and d["population"] == population:
          return d
      section["decisions"].append(decision)
      return decision

    return update(self.workdir, change)

  def moved(self, decision: dict[str, Any]) -> None:
    """The members a decision kept now train in its new population."""
    if decision.get("to") is None:
      return
    kept = set(decision["continued"])

    def change(data):
      for m in data.get("members", []):
        if m["name"] in kept:
          m["population"] = decision["to"]
      populations = data.setdefault("populations", {})
      populations[decision["to"]] = list(decision["continued"])

    update(self.workdir, change)


class PbtLedger:
  """The `pbt` record of one sweep's `sweep.json`: every exploit, the family tree.

      "pbt": {"decided": [[step, population], ...],
              "events": [{"step": 1000, "population": "p0", "member": "lr=0.001,seed=0",
                          "from": "lr=0.05,seed=0", "before": {...}, "after": {...}}]}
  """

  def __init__(self, workdir: str):
    self.workdir = workdir

  def _section(self, data: dict[str, Any]) -> dict[str, Any]:
    return data.setdefault("pbt", {"decided": [], "events": []})

  def events(self) -> list[dict[str, Any]]:
    data = read(self.workdir) or {}
    return list(data.get("pbt", {}).get("events", []))

  def decided(self, step: int, population: str) -> list[dict[str, Any]] | None:
    """The exploits recorded at `step` of `population` ([] for none), or None: not decided."""
    data = read(self.workdir) or {}
    section = data.get("pbt", {})
    if [step, population] not in section.get("decided", []):
      return None
    return [e for e in section.get("events", [])
            if e["step"] == step and e["population"] == population]

  def record(self, step: int, population: str,
             events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records the exploits of `step` of `population`, unless recorded already; returns the
    recorded ones."""
    def change(data):
      section = self._section(data)
      if [step, population] in section["decided"]:
        return [e for e in section["events"]
                if e["step"] == step and e["population"] == population]
      section["decided"].append([step, population])
      section["events"].extend(events)
      return events

    return update(self.workdir, change)
