"""The training loop, read top to bottom, for one run and for a population of many.

A single run is a population of one and goes through this same code. Dispatch a jitted chunk
of steps for every member at once; collect its metrics once; record every member; run each
periodic action due at the chunk's end (evaluation, the best checkpoint, the periodic
checkpoint, diagnostics: `gmf_jax.train.actions`); then stop or go on. A chunk ends at every
step an action is due, so the action sees the exact state of that step.

Members step together: the step counter is shared, everything else has a leading member axis
(see `gmf_jax.train.step.population_chunk`). Each member has its own run folder (see
`gmf_jax.train.population_record`); the population's checkpoint is one orbax checkpoint of the
stacked state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gmf_jax import compile_cache, distributed, failpoints
from gmf_jax.errors import ConfigError, NonFiniteError
from gmf_jax.members import member, take_members
from gmf_jax.runlog import RunFolder, wandb_process
from gmf_jax.runlog.liveness import Heartbeat
from gmf_jax.runlog.population import Parent, PopulationCheckpoints, start_population
from gmf_jax.runlog.wandb_writer import wandb_mode
from gmf_jax.train import session as session_lib
from gmf_jax.train.actions import ActionContext, PeriodicAction, Tick, needs_state, run_due
from gmf_jax.train.build import Experiment, build_experiment, init_population
from gmf_jax.train.chunks import ChunkPipeline, make_feed
from gmf_jax.train.diagnosing import make_diagnostics
from gmf_jax.train.evaluation import make_best_checkpoint, make_evaluation
from gmf_jax.train.hparams import program_key
from gmf_jax.train.mesh import check_population
from gmf_jax.train.metering import Stopwatch
from gmf_jax.train.piecewise import at_step, make_piecewise
from gmf_jax.train.population_record import PopulationRecord, format_scalars, record_info
from gmf_jax.train.preemption import Preempted, PreemptionGuard
from gmf_jax.train.progress import Progress, console_logging
from gmf_jax.train.recorder import MemberSetup
from gmf_jax.train.relay import PrimaryRelay
from gmf_jax.train.saving import make_checkpoint
from gmf_jax.train.step import TrainState, make_keys
from gmf_jax.train.warm import layout_for

log = logging.getLogger("gmf_jax")

# The periodic actions of every run, in the order they run at a chunk's end: the checkpoint is
# saved (in the background) before the diagnostics run. A new action: one factory, one entry.
DEFAULT_ACTIONS = (make_evaluation, make_best_checkpoint, make_piecewise, make_checkpoint,
                   make_diagnostics)


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns."""

  state: TrainState
  metrics: dict[str, float]  # the final value of every metric, e.g. metrics['eval/nelbo']
  workdir: str


@dataclasses.dataclass
class MemberResult:
  """One member of `train_population`: its folder, status and final metrics."""

  name: str
  workdir: str
  status: str  # completed | failed | preempted
  error: BaseException | None
  metrics: dict[str, float]


@dataclasses.dataclass
class PopulationResult:
  """What `train_population` returns: each member's outcome and the final stacked state."""

  state: TrainState | None  # every leaf with a leading member axis (None: stopped before init)
  members: list[MemberResult]


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | None = None, *,
    config_file: str | None = None,
) -> TrainResult:
  """Trains the model the config describes and records the run in `workdir`.

  A `workdir` that already holds this run resumes it from its latest checkpoint (bitwise the
  same result as never stopping); a completed run is not trained again. From the moment the
  run folder is written until this returns, the folder's status is true: `running` with a
  heartbeat while it lives, then `completed`, `failed` (with the error) or `preempted`.

  The run is a population of one (`train_population`): the same code trains sweeps.

  Args:
    config: from `gmf_jax.load_config` (or a config file's `get_config()`; without the origin
      `load_config` records, switching a component's name needs its old options reset too).
      `num_seeds` must be 1: `gmf_jax.run` trains a seed ensemble.
    workdir: the run's folder; default `runs/<config.name>-<time>-<id>`.
    config_file: the config's source file, copied into the run; `load_config` remembers it.

  Returns:
    The final train state, the final metrics and the run folder.

  Raises:
    ConfigError: bad input, found before anything is written or computed.
    NonFiniteError: the loss or gradient norm became NaN or Inf (status 'failed').
    Preempted: SIGTERM or Ctrl-C before the last step (status 'preempted'); its message says
      which checkpoint holds the run. A signal after the last step lets the run finish
      recording and complete.
  """
  if config.get("num_seeds", 1) != 1:  # a seed ensemble is a sweep: gmf_jax.sweep trains it
    raise ConfigError(
        f"num_seeds={config.num_seeds} makes a seed ensemble, which train_and_evaluate does not "
        "train: call gmf_jax.run(config, workdir) (one run or an ensemble, as the command line "
        "does) or gmf_jax.sweep.run_seed_ensemble(config, workdir).")
  _check_not_across_members(config, workdir)
  source = getattr(config, "_gmf_config_source", (None, None))  # set by load_config
  config_file, variant = (config_file, None) if config_file else source
  result = train_population([MemberSetup(config, workdir, config_file, variant)])
  outcome = result.members[0]
  if outcome.error is not None:
    raise outcome.error
  final = outcome.metrics
  log.info("final: %s", format_scalars({k: v for k, v in final.items() if k.startswith("eval/")}))
  if "eval/nelbo" in final:
    log.info("test-set negative ELBO: %.3f nats per example", final["eval/nelbo"])
  return TrainResult(state=member(result.state, 0), metrics=final, workdir=outcome.workdir)


def _check_not_across_members(config, workdir: str | None) -> None:
  """A single run has no other members to compare: the diagnostics across members are refused
  there (a sweep member trained on alone, whose folder points to its population, may keep
  them: they are skipped while it trains alone)."""
  from gmf_jax.diagnostics import across_members
  from gmf_jax.runlog.population import POINTER

  names = across_members(config.get("diagnostics", {}))
  if names and not (workdir and os.path.exists(os.path.join(workdir, POINTER))):
    raise ConfigError(
        f"diagnostics.{names[0]} compares the members of a population; this is a single run. "
        "Train several members together (--config.num_seeds=4, or a sweep), or remove "
        + ", ".join(f"diagnostics.{n}" for n in names) + ".")


def build_population(setups: list[MemberSetup]) -> tuple[list[Experiment], list[dict[str, Any]]]:
  """Builds and checks every member (the first fully, the others' own values only).

  Returns:
    Each member's experiment and resolved config (what its config.json holds).

  Raises:
    ConfigError: a member's bad input, or members that cannot share one program.
  """
  first = build_experiment(setups[0].config, population=len(setups))
  exps, resolved = [first], [resolved_config(first)]
  key = program_key(resolved[0])
  for setup in setups[1:]:
    exp = build_experiment(setup.config, like=first)
    resolved.append(resolved_config(exp))
    other = program_key(resolved[-1])
    if other != key:
      diff = sorted({k for k, _ in set(other) ^ set(key)})
      raise ConfigError(
          f"member {setup.name!r} cannot train in one program with {setups[0].name!r}: they "
          f"differ in {', '.join(diff)} (group members by these keys).")
    exps.append(exp)
  check_population(first.layout, len(exps),
                   "this run" if len(exps) == 1 else f"the population of {setups[0].name!r}")
  return exps, resolved


def check_one_process() -> None:
  """Refuses a population (sweep or seed ensemble) in a job of several processes."""
  if distributed.multi_process():
    raise ConfigError("a population (sweep or seed ensemble) trains in one process; this job "
                      "has several. Spread its members over one host's devices with "
                      "--config.mesh.members.")


def train_population(setups: list[MemberSetup], *, population_dir: str | None = None,
                     label: str | None = None, actions: Sequence = None,
                     built: tuple[list[Experiment], list[dict[str, Any]]] | None = None,
                     saved_hparams: Sequence[str] = ()) -> PopulationResult:
  """Trains members together in one vmapped program, each recorded in its own run folder.

  Args:
    setups: the members; all must share one program (see `gmf_jax.train.hparams`).
    population_dir: where the stacked checkpoint of the population lives (a sweep's
      `populations/<id>`); None for a single run, whose checkpoints stay in its folder.
    label: shown in the progress bar.
    actions: the periodic actions' factories (default `DEFAULT_ACTIONS`); see
      `gmf_jax.train.actions` to add one.
    built: `build_population(setups)`, where the caller built and checked it already.
    saved_hparams: hyperparameters a resume takes from the checkpoint, not from the config
      (those PBT changes as it trains).

  Returns:
    Every member's name, folder, status, error and final metrics, and the final state.

  Raises:
    ConfigError: bad input, before anything is written.
    Preempted: a signal before the last step, after every member was recorded `preempted`.
  """
  console_logging()
  run_start, recording = time.perf_counter(), Stopwatch()  # the thread's time spent recording
  exps, resolved = built or build_population(setups)  # every check on the input happens here
  if len(exps) > 1 or population_dir is not None:
    check_one_process()
  if distributed.is_primary() and any(wandb_mode(e.config.wandb.mode) != "disabled"
                                      for e in exps):
    wandb_process.start()  # wandb imports there while this process builds and compiles
  cache_dir = compile_cache.enable(exps[0].config.compile_cache)
  cache_before = compile_cache.counter().snapshot()
  workdirs = session_lib.checked_workdirs(setups, exps, resolved)
  # The guard is up before the folders exist: from then on a signal is recorded, never fatal.
  with PreemptionGuard(across_processes=distributed.multi_process()) as guard:
    with recording("run_folder"):
      folders = session_lib.open_folders(setups, workdirs, resolved)
    names = [s.name or os.path.basename(f.path if f else f"member-{i}")
             for i, (s, f) in enumerate(zip(setups, folders, strict=True))]
    store = PopulationCheckpoints(
        population_dir, [f.path if f else None for f in folders], names,
        exps[0].config.checkpoint.max_to_keep, exps[0].config.checkpoint.async_save)
    record = PopulationRecord(exps, resolved, names, folders, PrimaryRelay(), store, recording)
    heartbeat = Heartbeat(record.beat)  # started by the session, stopped after the record
    info = lambda: record_info(run_start, cache_before, cache_dir)  # noqa: E731
    run = _Run(exps, record, guard, heartbeat, _Options(
        label, list(DEFAULT_ACTIONS if actions is None else actions), info,
        frozenset(saved_hparams)))
    session = session_lib.RunSession(record, guard, heartbeat, run.interrupted_message)
    session.run(run.train, info)
  return PopulationResult(
      state=run.state,
      members=[MemberResult(m.name, m.folder.path, m.status, m.failure, m.summary.final())
               for m in [*record.departed, *record.members]])


@dataclasses.dataclass(frozen=True)
class _Options:
  """How a session runs: its progress bar's label, its actions' factories, what a departing
  member's summary gets (`info()`), and the hyperparameters a resume takes from the checkpoint
  (see `train_population`)."""

  label: str | None
  factories: list
  info: Any
  saved_hparams: frozenset[str] = frozenset()


class _Run:
  """One training session of a population: start (or resume), then the loop."""

  def __init__(self, exps, record: PopulationRecord, guard: PreemptionGuard,
               heartbeat: Heartbeat, options: _Options):
    self.exps, self.record, self.guard = exps, record, guard
    self.heartbeat, self.options = heartbeat, options
    self.state, self.start_step = None, 0
    self.pipeline: ChunkPipeline | None = None
    self.timings: dict[str, dict[str, float]] = {}

  @property
  def exp(self) -> Experiment:
    """The population's shared program (its first member's experiment)."""
    return self.exps[0]

  def saved_step(self) -> int | None:
    """The newest checkpoint that holds the run: saved (or being saved) now, or the one this
    session resumed from (a sweep member resumed alone restores its population's)."""
    return max(filter(None, [self.start_step, self.record.store.latest_saved()]), default=None)

  def interrupted_message(self) -> str:
    latest = self.saved_step()
    held = f"the checkpoint of step {latest}" if latest else "step 0 (no checkpoint yet)"
    return f"stopped at once by a second Ctrl-C; resuming starts from {held}."

  def save(self, step: int, state, *, best: bool = False, tick: Tick | None = None) -> None:
    """Saves the checkpoint of `step` (a no-op where it is saved already). With `tick`, the
    save is deferred until the next chunk is queued, from a copy of `state` (whose arrays may
    be the tick's own, which the chunk takes over)."""
    store, windows = self.record.store, self.record.windows()
    if store.has(step, best=best):
      return
    # A copy where the next chunk takes the tick's arrays over (none follows the last step or
    # a stop signal).
    ends = tick is None or tick.step >= self.exp.num_steps or tick.signalled
    kept = state if ends else _copy(state)

    def write():
      with self.record.recording("checkpoints"):
        store.save(step, kept, windows, best=best)

    if tick is None:
      write()
    else:
      tick.defer(write)

  def train(self) -> None:
    exp, record = self.exp, self.record
    for m in record.members:
      log.info("run directory: %s%s", m.folder.path, " (resuming)" if m.folder.resumed else "")
    log.info("config:\n%s", format_config(record.resolved[0]))
    keys = self._start()
    if self.start_step >= exp.num_steps:  # completed already: a signal now changes nothing
      return
    self.guard.stop_if_signalled(self.start_step)
    actions = self._assemble(keys, self.start_step)
    record.progress = Progress(exp.num_steps, enabled=exp.config.progress_bar and
                               record.relay.primary, initial=self.start_step,
                               members=record.size, label=self.options.label)
    loop_start = time.perf_counter()
    try:
      self.state = self._loop(actions)
    finally:
      record.progress.close()
      self.pipeline.feed.close()
      record.add_info(**self.pipeline.timer.as_dict(), loop_sec=time.perf_counter() - loop_start,
                      **{f"{name}_sec": t for name, t in self.timings.items()})
      if record.size > 1:
        for m in record.members:
          m.summary.info["member_steps_per_sec"] = m.summary.info.pop("steps_per_sec", None)

  def _assemble(self, keys, start_step: int) -> list[PeriodicAction]:
    """The periodic actions and the chunk pipeline for the population as it is now (again
    after it shrinks); returns the actions."""
    exp, record = self.exp, self.record
    self.keys = keys
    context = ActionContext(exp, record.size, keys, self.state, start_step, record,
                            record.store, record.relay, self.save, self.timings,
                            train_data=lambda: self.pipeline.feed.data)
    actions = [a for a in (make(context) for make in self.options.factories) if a is not None]
    # Where the population may next change size (an action that shrinks it is due): what
    # is compiled ahead for this size need not go beyond it.
    context.horizon = min([exp.num_steps, *(a.schedule.next_due(start_step) or exp.num_steps
                                            for a in actions if a.shrinks)])
    timer = self.pipeline.timer if self.pipeline is not None else None
    self.pipeline = ChunkPipeline(make_feed(exp, keys, self.state, record.size), actions,
                                  exp.config.steps_per_call, exp.num_steps, record.size)
    if timer is not None:
      self.pipeline.timer = timer
    return actions

  def _shrink(self, tick: Tick, actions: list[PeriodicAction]) -> list[PeriodicAction] | None:
    """Goes on with the members `tick.shrink` keeps (see `actions.Shrink`): the checkpoint of
    this step saved, the departing members' records finished, the others gathered into a
    smaller population with its own checkpoints. Returns its actions (None: none is left;
    `actions` themselves where the stopped members stay in the program, masked)."""
    shrink, record = tick.shrink, self.record
    self.save(tick.step, tick.state)  # holds the departing members' last state
    tick.finish()
    with record.recording("checkpoints"):
      record.store.wait()  # the checkpoint is complete before any member moves
    failpoints.reach("shrink")
    record.depart(shrink.departing, self.options.info())
    keep = list(shrink.keep)
    if not keep:
      shrink.moved()
      return None
    if not shrink.gather:  # masked: the same program and actions go on, the departed unrecorded
      self.state = tick.state
      return actions
    old_dir = record.store.directory
    record.store.close()
    names = [record.names[i] for i in keep]
    folders = {m.index: m.folder.path for m in record.members}
    member_dirs = [folders.get(i) for i in keep]
    start_population(shrink.population_dir, Parent(old_dir, tick.step, tuple(keep)),
                     member_dirs, names)
    config = self.exp.config
    store = PopulationCheckpoints(shrink.population_dir, member_dirs, names,
                                  config.checkpoint.max_to_keep, config.checkpoint.async_save)
    state = take_members(tick.state, keep)  # one gather on the device
    keys = jax.tree_util.tree_map(lambda a: np.take(np.asarray(a), keep, axis=0),
                                  jax.device_get(self.keys))  # a few bytes: on the host
    self.exps = _laid_out([self.exps[i] for i in keep])
    record.keep(keep, store)
    shrink.moved()
    self.state, keys = self.exp.layout.put_population(state, keys)
    record.add_info(mesh={**self.exp.layout.describe(),  # the layout it goes on with
                          "split_leaves": self.exp.layout.split_leaves(self.state)})
    log.info("population goes on with %d members from step %d (%s)", len(keep), tick.step,
             shrink.population_dir)
    self.pipeline.feed.close()
    return self._assemble(keys, tick.step)

  def _start(self):
    """The population's state, restored where a member resumes; every member's record picks up
    at its step. Returns the keys (on the mesh)."""
    exps, exp, record = self.exps, self.exp, self.record
    keys = _stack([make_keys(e.config.seed, e.config.get("data_seed")) for e in exps])
    values = at_step(_stack([e.hparams for e in exps]), exp.piecewise, 0)
    # On the mesh before the restore: orbax reads each device's part straight into place.
    self.state, keys = exp.layout.put_population(init_population(exp, keys, values), keys)
    failpoints.reach("init")
    windows = [{} for _ in exps]
    if any(m.folder.resumed for m in record.members):
      restored = record.store.restore_latest(like=self.state)
      if restored is not None:
        self.start_step, state, windows = restored
        # The hyperparameters are the config's, not the checkpoint's: they may differ only
        # where a resume may change them (an extended num_steps moves the schedule's
        # decay_steps), and the run then follows the new values, as the resume warning says.
        # Those PBT explores are the checkpoint's: it changed them as the run trained.
        hparams = at_step(jax.device_get(self.state.hparams), exp.piecewise, self.start_step)
        state = state.replace(hparams={
            k: state.hparams[k] if k in self.options.saved_hparams else jnp.asarray(v)
            for k, v in hparams.items()})
        self.state, _ = exp.layout.put_population(state, keys)  # a member's slice: moved
    failpoints.reach("restore")
    self.heartbeat.step = self.start_step
    record.start(exp, self.state, self.start_step, windows, self.saved_step)
    for m in record.members:
      if m.folder.resumed and record.relay.primary:
        _log_resume(m.folder, self.start_step, exp)
    return keys

  def _loop(self, actions: list[PeriodicAction]):
    """Chunks until the last step, the actions due at each chunk's end in between."""
    pipeline = self.pipeline
    guard, record, relay, num_steps = self.guard, self.record, self.record.relay, self.exp.num_steps
    failpoints.reach("first_call")
    chunk = _first_chunk(pipeline, actions, self.state, self.start_step)
    while True:
      relay.hear()  # an error process 0 held since the last chunk boundary
      # Where no action needs this chunk's state, the next chunk is queued before this one's
      # metrics are read, so the device never waits for the host's bookkeeping.
      stop_here = guard.poll() or needs_state(actions, chunk.end)
      queued = None if stop_here else pipeline.dispatch(chunk.state, chunk.end)
      metrics = pipeline.collect(chunk)  # the one sync per chunk
      self.heartbeat.step = chunk.end
      if not record.record_chunk(metrics, chunk.start, chunk.end):
        chunk = queued or chunk  # every member failed: nothing more to train or record
        break
      if stop_here:
        tick = Tick(chunk.end, chunk.state, signalled=guard.signum is not None)
        _run_due(actions, tick)
        chunk = dataclasses.replace(chunk, state=tick.state)  # an action may change it
        if chunk.end >= num_steps or guard.signum is not None:
          self._stop(tick, actions)  # raises Preempted before the last step
          break
        if tick.shrink is not None:
          went_on = self._shrink(tick, actions)
          if went_on is None:  # no member goes on
            chunk = None
            break
          pipeline = self.pipeline
          if went_on is not actions:  # a smaller program: its actions compile beside its chunk
            actions = went_on
            chunk = _first_chunk(pipeline, actions, self.state, chunk.end)
          else:
            chunk = pipeline.dispatch(self.state, chunk.end)
          continue
        queued = pipeline.dispatch(chunk.state, chunk.end)
        tick.finish()  # the actions' host work (files, saves), while the next chunk trains
        self._stop_if_saved(tick)
      chunk = queued
    relay.hear()
    return None if chunk is None else chunk.state

  def _stop_if_saved(self, tick: Tick) -> None:
    """A signal that came during the tick's host work stops the run at the tick's step where
    that step's checkpoint is saved (the chunk queued meanwhile is dropped); else at the next
    chunk's end, as a signal during a chunk does."""
    if self.guard.signum is not None and self.record.store.has(tick.step):
      raise Preempted(self.guard.signum, tick.step)

  def _stop(self, tick: Tick, actions: list[PeriodicAction]) -> None:
    """At the last step, or at a stop signal: the actions' work is done in full; a signal
    before the last step then preempts the run."""
    signum = self.guard.signum
    if tick.step < self.exp.num_steps:  # also when it came during evaluation or diagnostics
      tick.signalled = True
      _run_due(actions, tick)  # the checkpoint, where it has not run at this step
    tick.finish()
    if tick.step < self.exp.num_steps:
      raise Preempted(signum, tick.step)
    if signum is not None:  # the work is done: finish recording, then complete
      log.info("%s after the last step: finishing the run's record.", signal.Signals(signum).name)


def _laid_out(exps: list[Experiment]) -> list[Experiment]:
  """A shrunk population's members, on the devices `mesh.members=0` picks for its size (the
  members axis must divide it; the data axis takes the rest)."""
  exp = exps[0]
  layout = layout_for(exp, len(exps))
  if (layout.members, layout.data, layout.model) == (exp.layout.members, exp.layout.data,
                                                      exp.layout.model):
    return exps
  return [dataclasses.replace(e, layout=layout) for e in exps]


def _first_chunk(pipeline: ChunkPipeline, actions: list[PeriodicAction], state, start: int):
  """Dispatches a population's first chunk with its actions' programs compiled beside it: the
  chunk's program is traced and lowered first (Python work, which the actions' tracing would
  slow down), then the actions start compiling theirs in background threads (`prepare`) while
  XLA compiles the chunk's (without Python's lock: one core each) or, where the cache holds it,
  while the chunk trains."""
  pipeline.feed.lower(state)
  for action in actions:
    if action.prepare is not None:
      action.prepare()
  return pipeline.dispatch(state, start)


def _run_due(actions: list[PeriodicAction], tick: Tick) -> None:
  """The due actions; where one fails, the host work the earlier ones deferred is still done
  (what they recorded before it stays recorded), then the error propagates."""
  try:
    run_due(actions, tick)
  except Exception:
    tick.finish()
    raise


def _copy(state):
  """The state's arrays copied on their devices, in one program (queued like any computation)."""
  leaves, treedef = jax.tree_util.tree_flatten(state)
  where = [i for i, a in enumerate(leaves) if isinstance(a, jax.Array)]
  for i, copied in zip(where, _copied([leaves[i] for i in where]), strict=True):
    leaves[i] = copied
  return jax.tree_util.tree_unflatten(treedef, leaves)


@jax.jit
def _copied(arrays: list) -> list:
  return [jnp.copy(a) for a in arrays]


def _stack(trees: list[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _log_resume(folder: RunFolder, start_step: int, exp: Experiment) -> None:
  if start_step >= exp.num_steps:
    log.info("run already completed at step %d; nothing to train (raise num_steps to extend it).",
             start_step)
  elif start_step:
    log.info("resuming from the checkpoint at step %d of %d.", start_step, exp.num_steps)
  else:
    log.info("no usable checkpoint: restarting from step 0.")
  saved = folder.saved_config["num_steps"]
  if start_step and saved != exp.num_steps and exp.config.schedule.name in (
      "cosine", "warmup_cosine", "exponential"):
    log.warning("warning: the learning-rate schedule depends on num_steps (%d -> %d); the "
                "extended run follows the new schedule from step %d.", saved, exp.num_steps,
                start_step)


def resolved_config(exp: Experiment) -> dict[str, Any]:
  """The config as a dict, with values derived at build time written in (what config.json
  holds)."""
  data = json.loads(exp.config.to_json_best_effort())
  data["num_steps"] = exp.num_steps
  return data


def format_config(resolved: dict[str, Any]) -> str:
  """One line per section: `model: name=mlp_vae latent_dim=8 ...`."""
  flat, lines = [], []
  for key, value in resolved.items():
    if isinstance(value, dict):
      items = " ".join(f"{k}={v}" for k, v in value.items() if v is not None)
      lines.append(f"  {key}: {items}")
    else:
      flat.append(f"{key}={value}")
  return "\n".join([f"  {' '.join(flat)}", *lines])


__all__ = ["DEFAULT_ACTIONS", "ConfigError", "MemberResult", "MemberSetup", "NonFiniteError",
           "PopulationResult", "Preempted", "TrainResult", "train_and_evaluate",
           "train_population"]
