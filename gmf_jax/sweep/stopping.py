"""Early termination inside a population: the periodic action that decides at the rule's
steps, and the sweep-level catch-up that applies a decision a stopped sweep recorded.

At a decision step the action reads the members' metric from that step's evaluation, decides
with the rule (`gmf_jax.sweep.early_stop`) against every member `sweep.json` holds, records the
decision there, and asks the loop to shrink (`gmf_jax.train.actions.Shrink`): the stopped
members' records end with status `stopped` at that step (their last state is the population's
checkpoint of that step), and the others go on as a smaller population, `p0@<step>`, in one
program compiled for its size.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gmf_jax.runlog.files import read_json, write_json
from gmf_jax.sweep import early_stop
from gmf_jax.sweep.ledger import Ledger
from gmf_jax.train import warm
from gmf_jax.train.actions import PeriodicAction, Schedule, Shrink, Tick

log = logging.getLogger("gmf_jax")


def make_early_stop(rule: early_stop.Rule, ledger: Ledger, order: dict[str, int],
                    populations_dir: str, shrink: bool = True):
  """The factory of a sweep population's early-termination action (`order`: each member's
  index in the sweep, for ties). The population's id is its checkpoints' folder name: `p0`,
  then `p0@<step>` once it shrank. `shrink=False` keeps stopped members in the program,
  unrecorded (masking: only for measuring what shrinking saves)."""
  metric = rule.metric.name[len("eval/"):]
  ahead: list[warm.CompileAhead] = []  # the sizes to come, compiled in the background

  def factory(context) -> PeriodicAction:
    exp, record = context.exp, context.record
    population_id = os.path.basename(context.store.directory)
    # Read before the first chunk donates the state; only where compiling ahead pays.
    like = warm.shapes(context.state) if shrink and not ahead and warm.worth_it() else None

    def prepare() -> None:  # once the first chunk is traced: the sizes to come, compiled beside it
      if like is not None:
        ahead.append(warm.CompileAhead(exp, like, context.keys, context.train_data(), rule.sizes(
            context.size, exp.num_steps, exp.config.eval_every_steps, context.start_step)))
    every = exp.config.eval_every_steps
    decides = set(rule.steps(exp.num_steps, every))
    steps = [s for s in rule.recorded_steps(exp.num_steps, every) if s > context.start_step]

    def run(tick: Tick) -> None:
      # The members recorded here (a member that rides along unrecorded is left out, and
      # leaves the program at the first shrink); one that failed counts as the worst.
      index = {m.name: m.index for m in record.members}
      active = {m.index for m in record.active}
      column = (tick.evals or {}).get(metric)
      values = {n: (early_stop.finite_or_none(column[i]) if column is not None and i in active
                    else None) for n, i in index.items()}
      decision = ledger.decision(tick.step, population_id)
      if decision is None:
        if tick.step not in decides:
          ledger.record_values(tick.step, values)
          return
        outcome = rule.decide(tick.step, values, order, ledger.history())
        decision = ledger.record_decision(tick.step, population_id, outcome, values)
      if decision.get("to") is None:
        return
      kept = set(decision["continued"])
      keep = [i for i, n in enumerate(record.names) if n in kept]
      departing = {i: stopped_outcome(rule, decision, n, values.get(n))
                   for n, i in index.items() if n not in kept}
      log.info("early termination at step %d: %d of %d members go on", tick.step, len(keep),
               len(index))
      for compiling in ahead:
        compiling.wait(len(keep))
      tick.shrink = Shrink(keep, os.path.join(populations_dir, decision["to"]), departing,
                           moved=lambda: ledger.moved(decision), gather=shrink)

    return PeriodicAction("early_stop", Schedule.make(exp.num_steps, steps=steps, end=False),
                          run, prepare=prepare, shrinks=True)

  return factory


def stopped_outcome(rule: early_stop.Rule, decision: dict[str, Any], name: str,
                    value: float | None) -> tuple[str, str, dict[str, Any]]:
  """(status, message, summary entry) of a member a decision stopped."""
  detail = decision["details"].get(name, {})
  entry = {"rule": rule.type, "step": decision["step"], "metric": rule.metric.name,
           "goal": rule.metric.goal, "value": value,
           **{k: v for k, v in detail.items() if k != "continue"}}
  if rule.type == "hyperband":
    why = (f"ranked {detail.get('rank')} of {detail.get('of')} at the rung "
           f"({detail.get('kept')} go on)")
  else:
    why = (f"best {_g(detail.get('best'))} worse than the others' median "
           f"{_g(detail.get('median'))}")
  return ("stopped", f"stopped by {rule.type} early termination at step {decision['step']}: "
          f"{rule.metric.name}={_g(value)} {why}", entry)


def _g(value) -> str:
  return "none" if value is None else f"{value:.6g}"


def applicable(workdir: str, populations_dir: str) -> list[dict[str, Any]]:
  """The recorded decisions that shrank a population whose checkpoint of that step is saved,
  in the order taken (a decision whose step is not saved is taken again, as recorded, when
  its population trains to that step again)."""
  from gmf_jax.runlog.checkpoint import Checkpointer

  out = []
  for decision in sorted(Ledger(workdir).decisions(), key=lambda d: d["step"]):
    source = os.path.join(populations_dir, decision["population"])
    if decision.get("to") is None or not os.path.exists(os.path.join(source,
                                                                      "population.json")):
      continue
    checkpointer = Checkpointer(source, max_to_keep=10**6, async_save=False)
    try:
      if decision["step"] in checkpointer.steps():
        out.append(decision)
    finally:
      checkpointer.close()
  return out


def catch_up(workdir: str, rule: early_stop.Rule, decisions: list[dict[str, Any]],
             populations_dir: str) -> None:
  """Applies decisions a stopped sweep recorded but had not finished applying (see
  `applicable`): the stopped members' records end with status `stopped`, and the others move
  to the new population. Applying one again changes nothing."""
  from gmf_jax.runlog.population import Parent, start_population
  from gmf_jax.sweep.run import member_status

  ledger = Ledger(workdir)
  values = ledger.history()
  for decision in decisions:
    source = os.path.join(populations_dir, decision["population"])
    names = read_json(os.path.join(source, "population.json"))["members"]
    at_step = values.get(decision["step"], {})
    for name in decision["stopped"]:
      folder = os.path.join(workdir, name)
      if member_status(folder) not in ("stopped", "failed", "new"):
        _finish_stopped(folder, *stopped_outcome(rule, decision, name, at_step.get(name)))
    kept = [n for n in names if n in set(decision["continued"])]
    target = os.path.join(populations_dir, decision["to"])
    if not os.path.exists(os.path.join(target, "population.json")):
      start_population(target, Parent(source, decision["step"],
                                       tuple(names.index(n) for n in kept)),
                       [os.path.join(workdir, n) for n in kept], kept)
    ledger.moved(decision)
    log.info("early termination at step %d of population %s: applied as recorded",
             decision["step"], decision["population"])


def _finish_stopped(folder: str, status: str, message: str, entry: dict[str, Any]) -> None:
  """Ends a member's record as its population would have: summary entry and status."""
  from gmf_jax.runlog.record import RunFolder

  summary = os.path.join(folder, "summary.json")
  if os.path.exists(summary):
    data = read_json(summary)
    data.update(status=status, early_terminate=entry)
    write_json(summary, data)
  metadata = read_json(os.path.join(folder, "metadata.json"))
  RunFolder(folder, metadata, saved_config=None).set_status(status, error=message)
