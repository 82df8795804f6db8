"""Periodic actions: the work done between chunks, on the whole population, each on a schedule.

Evaluation, the best checkpoint, the periodic checkpoint and diagnostics are periodic actions.
Each owns its `Schedule` and one function of a `Tick` (the step and the population's state at a
chunk's end). The loop runs the chunks so that one ends at every step an action is due
(`next_stop`), then runs the due actions in their list's order. A new action is a factory
`make_x(context) -> PeriodicAction | None` and an entry in the list the loop is given
(`gmf_jax.train.loop.DEFAULT_ACTIONS`); the loop itself does not change:

    def make_norm_probe(context):
      def run(tick):
        norms = jax.device_get(jax.vmap(optax.global_norm)(tick.state.params))  # (members,)
        ...
      return PeriodicAction("norm_probe", Schedule.make(context.exp.num_steps, every=100), run)

    train_population(setups, actions=[*DEFAULT_ACTIONS, make_norm_probe])
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The steps at which an action is due: multiples of `every`, and given `steps`.

  `Schedule.make` builds one for a run of `num_steps` (the last step included unless
  `end=False`); `Schedule.log_spaced` for steps dense early in training.
  """

  every: int | None = None
  steps: tuple[int, ...] = ()  # sorted

  @classmethod
  def make(cls, num_steps: int, *, every: int | None = None, steps: Iterable[int] = (),
           end: bool = True) -> Schedule:
    chosen = {int(s) for s in steps if 1 <= s <= num_steps} | ({num_steps} if end else set())
    return cls(every or None, tuple(sorted(chosen)))

  @classmethod
  def log_spaced(cls, num_steps: int, num_points: int) -> Schedule:
    """`num_points` steps spaced evenly in log(step) from 1 to `num_steps`."""
    points = np.unique(np.round(np.geomspace(1, num_steps, num_points))).astype(int)
    return cls.make(num_steps, steps=points.tolist())

  def due(self, step: int) -> bool:
    if self.every and step % self.every == 0:
      return True
    i = bisect.bisect_left(self.steps, step)
    return i < len(self.steps) and self.steps[i] == step

  def next_due(self, step: int) -> int | None:
    """The first step after `step` at which the action is due (None: never again)."""
    found = [] if not self.every else [(step // self.every + 1) * self.every]
    i = bisect.bisect_right(self.steps, step)
    if i < len(self.steps):
      found.append(self.steps[i])
    return min(found, default=None)


@dataclasses.dataclass
class ActionContext:
  """What an action's factory is given, before the first chunk (its state is the population's
  before training: for shapes and restores only, as the chunks donate it)."""

  exp: Any  # the population's shared program (the first member's Experiment)
  size: int  # members
  keys: Any  # RunKeys with a member axis
  state: Any
  start_step: int  # > 0: resumed from a checkpoint of this step
  record: Any  # PopulationRecord: each member's files (`record_eval`, `targets`)
  store: Any  # PopulationCheckpoints
  relay: Any  # PrimaryRelay: process 0's work and the host view of a state
  save: Callable[..., None]  # save(step, state, best=False)
  timings: dict[str, dict[str, float]]  # {action: {part: seconds}} -> summary `<action>_sec`
  horizon: int = 0  # the step where the population may next shrink (num_steps if never); set
  # once every action is made, read by `prepare`
  train_data: Callable[[], Any] = lambda: None  # the train split on the device (None: streamed)


@dataclasses.dataclass
class Shrink:
  """An action's request that the population go on with fewer members (`tick.shrink`).

  The loop then saves the population's checkpoint of this step (it holds the departing
  members' last state), finishes each departing member's record with its status and summary
  entry, and goes on with the members `keep` (one gather on the member axis), whose checkpoints
  go to `population_dir` from then on (see `runlog.population.start_population`). With `keep`
  empty, the population's training ends there.
  """

  keep: list[int]  # indices into the current population, in order
  population_dir: str | None  # the smaller population's checkpoints (None: a single run)
  departing: dict[int, tuple[str, str | None, dict[str, Any]]]  # index -> (status, error,
  # what its summary.json gets under `early_terminate`)
  moved: Callable[[], None] = lambda: None  # called once the members have moved
  gather: bool = True  # False: the departing members stay in the program, unrecorded (masked;
  # what shrinking saves is measured against this in benchmarks/adaptive_sweep.py)


@dataclasses.dataclass
class Tick:
  """What the actions see at the end of a chunk: the step (optimizer steps done), the
  population's state (every leaf with a leading member axis, except the shared step), whether a
  stop signal came, and what earlier actions of this tick left for later ones.

  The state is valid while the actions run, not after: the next chunk takes it over (it is
  donated). An action that has host work left once its device work is done (writing files,
  saving a copy of the state) hands it to `defer`: the loop runs it after queueing the next
  chunk, so the device trains while the host writes.
  """

  step: int
  state: Any
  signalled: bool = False
  improved: np.ndarray | None = None  # (members,) bool: evaluation's new best values
  evals: dict[str, np.ndarray] | None = None  # evaluation's values at this step: (members,)
  shrink: Shrink | None = None  # an action asks the population to go on with fewer members
  ran: set[str] = dataclasses.field(default_factory=set)
  later: list[Callable[[], None]] = dataclasses.field(default_factory=list)

  def defer(self, work: Callable[[], None]) -> None:
    """Runs `work()` once the next chunk is queued (at once where none follows); it must not
    read `state`."""
    self.later.append(work)

  def finish(self) -> None:
    """Runs the deferred work, in the order it was deferred."""
    while self.later:
      self.later.pop(0)()


@dataclasses.dataclass(frozen=True)
class PeriodicAction:
  """One periodic action.

  Attributes:
    name: shown in timings and errors.
    schedule: when it is due.
    run: `run(tick)`, on the whole population at once.
    on_signal: also due when a stop signal came (the checkpoint a resume starts from).
    every_stop: also runs at every chunk end where the loop stops for another action (it
      decides inside what to do there; its own schedule still ends chunks).
    prepare: called once before the population's first chunk is dispatched (once that chunk's
      program is traced), to compile the action's programs beside the chunk's compilation or
      training (a thread, joined by `run` before its first use).
    shrinks: it may shrink the population when due (`Tick.shrink`), so what other actions
      compile ahead for this size need only serve them until then (`ActionContext.horizon`).
  """

  name: str
  schedule: Schedule
  run: Callable[[Tick], None]
  on_signal: bool = False
  prepare: Callable[[], None] | None = None
  every_stop: bool = False
  shrinks: bool = False

  def due(self, tick: Tick) -> bool:
    return (self.every_stop or self.schedule.due(tick.step)
            or (self.on_signal and tick.signalled))


def next_stop(actions: Sequence[PeriodicAction], step: int, longest: int, num_steps: int) -> int:
  """Where the chunk that starts after `step` ends: at most `longest` steps on, at the last step,
  and at the first step any action is due (the chunk ends are the union of the schedules)."""
  ends = [step + longest, num_steps]
  ends += [s for s in (a.schedule.next_due(step) for a in actions) if s is not None]
  return min(ends)


def needs_state(actions: Sequence[PeriodicAction], step: int) -> bool:
  """Whether an action runs on the state at `step` (the host then waits for that chunk)."""
  return any(a.schedule.due(step) for a in actions)


def run_due(actions: Sequence[PeriodicAction], tick: Tick) -> None:
  """Runs, in order, each action due at `tick` that has not run on it yet."""
  for action in actions:
    if action.name not in tick.ran and action.due(tick):
      tick.ran.add(action.name)
      action.run(tick)
