"""Diagnostics as a periodic action: every due diagnostic over the whole member axis at once.

With several processes, diagnostics run in process 0 alone, on the host's copy of the state (in
every process a collective gathers it); an error there reaches every process at the next chunk
boundary (`relay`).
"""

from __future__ import annotations

import threading
import time

import jax

from gmf_jax import failpoints
from gmf_jax.diagnostics import runner
from gmf_jax.train.actions import PeriodicAction, Schedule, Tick


def make_diagnostics(context) -> PeriodicAction | None:
  """The configured diagnostics (`config.diagnostics`), each on its own schedule, run on every
  active member in one program per diagnostic (`runner.PopulationDiagnostics`)."""
  exp, relay = context.exp, context.relay
  if not exp.diagnostics:
    return None
  probe = runner.probe_batch(exp, exp.config.probe_size)
  probe = probe if relay.multi_process else exp.layout.put(probe)
  diagnostics = runner.PopulationDiagnostics(list(exp.diagnostics), probe,
                                             relay.host_view(context.keys.diag),
                                             draw=context.size == 1)
  seconds = context.timings.setdefault("diagnostics", {"build": exp.diagnostics_build_sec})
  like = _shapes(context.state, relay.multi_process)
  warm_up: list[threading.Thread] = []
  # Those across members write in the population's own folder (a sweep's `populations/<id>`).
  store = context.store
  population = (runner.population_target(store.directory)
                if getattr(store, "stacked", False) else None)

  def prepare() -> None:  # the first chunk is traced: compile theirs beside its compilation
    if relay.primary:  # those due before the population may shrink (see actions.Shrink)
      warm_up.append(diagnostics.warm_up(
          like, range(context.start_step + 1, context.horizon + 1)))

  def run(tick: Tick) -> None:
    if warm_up:
      waited = time.perf_counter()
      warm_up.pop().join()
      seconds["warm_up_wait"] = time.perf_counter() - waited
    with relay.work():  # a test's fault here lands in process 0 alone
      failpoints.reach("diagnostics")
    if not diagnostics.due(tick.step):
      return
    state = relay.host_view(tick.state)  # a collective: every process joins it
    if relay.primary:
      with relay.work():
        targets = [runner.Target(*t) for t in context.record.targets()]
        diagnostics.run(tick.step, state, targets, seconds=seconds,
                        defer=lambda work: tick.defer(relay.as_work(work)),
                        population=population)

  schedule = Schedule.make(exp.num_steps, steps=diagnostics.steps, end=False)
  # At every stop of the loop: the warm-up is joined at the first (the compilation it waited
  # for is then done), and a fault planted here is met at every step the host stops.
  return PeriodicAction("diagnostics", schedule, run, prepare=prepare, every_stop=True)


def _shapes(state, host: bool):
  """What the warm-up compiles for: the state's shapes, dtypes and layout (read now, before the
  first chunk donates the state); its host copy's with several processes."""
  if host:
    return runner.host_like(state)

  def shape(a):
    if not isinstance(a, jax.Array):
      return a
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding, weak_type=a.aval.weak_type)

  return jax.tree_util.tree_map(shape, state)
