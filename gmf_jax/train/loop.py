"""The training loop, read top to bottom, for one run and for a population of many.

A single run is a population of one and goes through this same code. Run a jitted chunk of
steps for every member at once; fetch its metrics once; record each member; then evaluate,
checkpoint and diagnose when due. A chunk ends at every evaluation and checkpoint step and at
the end, so those see the exact state of that step.

Members step together: the step counter is shared, everything else has a leading member axis
(see `gmf_jax.train.step.population_chunk`). Each member has its own recorder (folder,
metrics, summary, wandb run); a member whose loss goes non-finite is marked `failed` at that
step and recorded no further, while the others go on, their numbers untouched. The
population's checkpoint is one orbax checkpoint of the stacked state.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gmf_jax import compile_cache, failpoints
from gmf_jax.data import materialize, stream
from gmf_jax.diagnostics import runner
from gmf_jax.errors import ConfigError, NonFiniteError
from gmf_jax.runlog import RunFolder, new_run_dir, open_run_folder, plot_pool, plots
from gmf_jax.runlog.liveness import Heartbeat
from gmf_jax.runlog.population import PopulationCheckpoints
from gmf_jax.runlog.record import FollowerFolder, check_run_folder
from gmf_jax.train import distributed, pipeline
from gmf_jax.train.build import Experiment, build_experiment, init_population
from gmf_jax.train.hparams import program_key
from gmf_jax.train.mesh import check_population
from gmf_jax.train.metering import ChunkTimer, Stopwatch, schedule_rates
from gmf_jax.train.preemption import Preempted, PreemptionGuard
from gmf_jax.train.progress import Progress
from gmf_jax.train.recorder import MemberRecorder, MemberSetup
from gmf_jax.train.step import (
  RunKeys,
  TrainState,
  evaluate,
  make_keys,
  member,
  population_chunk,
  train_chunk_on_batches,
  train_chunk_on_device,
)

log = logging.getLogger("gmf_jax")


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
      With `num_seeds` > 1, the seeds train as one seed ensemble (a sweep: see
      `gmf_jax.sweep.run.run_seed_ensemble`), and a `gmf_jax.sweep.SweepResult` is returned.
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
  if config.get("num_seeds", 1) != 1:  # a seed ensemble: one program, a folder per seed
    from gmf_jax.sweep.run import run_seed_ensemble

    return run_seed_ensemble(config, workdir)
  source = getattr(config, "_gmf_config_source", (None, None))  # set by load_config
  config_file, variant = (config_file, None) if config_file else source
  session = train_population([MemberSetup(config, workdir, config_file, variant)])
  recorder = session.members[0]
  if recorder.failure is not None:
    raise recorder.failure
  final = recorder.summary.final()
  log.info("final: %s", _format_scalars({k: v for k, v in final.items() if k.startswith("eval/")}))
  if "eval/nelbo" in final:
    log.info("test-set negative ELBO: %.3f nats per example", final["eval/nelbo"])
  return TrainResult(state=member(session.state, 0), metrics=final,
                     workdir=session.members[0].folder.path)


def build_population(setups: list[MemberSetup]) -> tuple[list[Experiment], list[dict[str, Any]]]:
  """Builds and checks every member (the first fully, the others' own values only).

  Returns:
    Each member's experiment and resolved config (what its config.json holds).

  Raises:
    ConfigError: a member's bad input, or members that cannot share one program.
  """
  first = build_experiment(setups[0].config)
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
                     label: str | None = None) -> _Session:
  """Trains members together in one vmapped program, each recorded in its own run folder.

  Args:
    setups: the members; all must share one program (see `gmf_jax.train.hparams`).
    population_dir: where the stacked checkpoint of the population lives (a sweep's
      `populations/<id>`); None for a single run, whose checkpoints stay in its folder.
    label: shown in the progress bar.

  Returns:
    The finished session: `members` (recorders with status, error and summary), `state`.

  Raises:
    ConfigError: bad input, before anything is written.
    Preempted: a signal before the last step, after every member was recorded `preempted`.
  """
  _ensure_console_logging()
  run_start = time.perf_counter()
  recording = Stopwatch()  # the training thread's time spent recording the run
  exps, resolved = build_population(setups)  # every check on the input happens here
  if len(exps) > 1 or population_dir is not None:
    check_one_process()
  cache_dir = compile_cache.enable(exps[0].config.compile_cache)
  cache_before = compile_cache.counter().snapshot()
  # Several processes: process 0 names, checks and writes the folders; every process learns
  # the names and the outcome from it (an error stops all of them, before any compute).
  workdirs = distributed.agree(lambda: [os.path.abspath(s.workdir or new_run_dir(e.config.name))
                                        for s, e in zip(setups, exps, strict=True)])

  def check_folders() -> None:
    for setup, path, r in zip(setups, workdirs, resolved, strict=True):
      if setup.train:
        check_run_folder(path, r)  # every folder is checked before any is written

  distributed.agree(check_folders)
  # The guard is up before the folders exist: from then on a signal is recorded, never fatal.
  with PreemptionGuard(across_processes=distributed.multi_process()) as guard:
    folders: list[RunFolder | None] = []

    def open_folders() -> list[bool | None]:
      for setup, path, r in zip(setups, workdirs, resolved, strict=True):
        folders.append(open_run_folder(path, r, setup.config_file, setup.variant)
                       if setup.train else None)
      return [None if f is None else f.resumed for f in folders]

    with recording("run_folder"):
      resumed = distributed.agree(open_folders)
    if not distributed.is_primary():
      folders = [None if r is None else FollowerFolder(path, r)
                 for path, r in zip(workdirs, resumed, strict=True)]
    session = _Session(exps, resolved, setups, folders, guard, recording, population_dir, label)
    error: BaseException | None = None
    try:
      session.heartbeat.start()
      failpoints.reach("run_folder")
      for m in session.members:
        log.info("run directory: %s%s", m.folder.path, " (resuming)" if m.folder.resumed else "")
      log.info("config:\n%s", format_config(resolved[0]))
      session.train()
      for m in session.members:
        m.status, m.error = ("completed", None) if m.failure is None else (
            "failed", f"NonFiniteError: {m.failure}")
    except Preempted as e:
      error = e
      session.set_status("preempted", str(e))
    except KeyboardInterrupt as e:  # a second Ctrl-C: no checkpoint of this step
      error = e
      session.set_status("preempted", session.interrupted_message())
    except BaseException as e:  # noqa: BLE001 - recorded, then raised again below
      error = e
      session.set_status("failed", f"{type(e).__name__}: {e}")
    problem = None
    try:
      problem = session.finish(run_start, cache_before, cache_dir)
    finally:  # the status is written whatever happened, and a second Ctrl-C cannot cut it
      with guard.protected():
        session.heartbeat.stop()
        for m in session.members:
          m.folder.set_status(m.status, error=m.error)
      # Several processes: the others wait (with no time limit) until process 0 has written
      # the record; JAX's own exit barrier would give up on a slow one after 5 minutes.
      distributed.barrier("gmf_jax-run-recorded")
    if problem is not None and (error is None or isinstance(error, Preempted)):
      raise problem from error  # a checkpoint that was promised is not there
    if error is not None:
      raise error
  return session


class _Session:
  """One session of a population: restore, train, then close what it opened.

  Every part it opens is closed by `finish`, whatever happened before; the caller records the
  statuses only after that, so `preempted` and `completed` mean the checkpoints are on disk.
  """

  def __init__(self, exps: list[Experiment], resolved: list[dict[str, Any]],
               setups: list[MemberSetup], folders: list[RunFolder | None],
               guard: PreemptionGuard, recording: Stopwatch, population_dir: str | None,
               label: str | None):
    self.exps, self.exp, self.guard, self.recording = exps, exps[0], guard, recording
    self.size = len(exps)
    self.label = label
    names = [s.name or os.path.basename(f.path if f else f"member-{i}")
             for i, (s, f) in enumerate(zip(setups, folders, strict=True))]
    self.names = names
    self.primary = distributed.is_primary()  # the process that writes the record
    self.members = [MemberRecorder(i, names[i], exps[i], resolved[i], folders[i],
                                   writes=self.primary)
                    for i in range(self.size) if folders[i] is not None]
    self.heartbeat = Heartbeat(self._beat)  # started by the caller, stopped after `finish`
    self.store = PopulationCheckpoints(
        population_dir, [f.path if f else None for f in folders], names,
        self.exp.config.checkpoint.max_to_keep, self.exp.config.checkpoint.async_save)
    self.state: TrainState | None = None
    self.start_step = 0
    self.best_host = None  # the best state of every member, on the host (populations only)
    self.plot_workers, self.plot_pool, self.plots_ready = 0, None, None
    self.held_error: Exception | None = None  # process 0's, until every process learns of it
    self._verdicts = 0

  def _beat(self, step) -> None:
    for m in self.members:
      m.folder.beat(step)

  def set_status(self, status: str, error: str) -> None:
    for m in self.members:
      if m.failure is None:
        m.status, m.error = status, error
      else:
        m.status, m.error = "failed", f"NonFiniteError: {m.failure}"

  def train(self) -> None:
    exps, exp = self.exps, self.exp
    # Members of a population draw their plots and figures in worker processes, which start
    # now: they import matplotlib beside the compilation, on the core it leaves idle.
    self.plot_workers = plot_pool.workers_for(len(self.members)) if self.primary else 0
    if self.plot_workers:
      self.plot_pool = plot_pool.PlotPool(self.plot_workers)
    keys = _stack([make_keys(e.config.seed, e.config.get("data_seed")) for e in exps])
    values = _stack([e.hparams for e in exps])
    # On the mesh before the restore: orbax reads each device's part straight into place.
    self.state, self.keys = exp.layout.put_population(init_population(exp, keys, values), keys)
    failpoints.reach("init")
    windows = [{} for _ in exps]
    if any(m.folder.resumed for m in self.members):
      restored = self.store.restore_latest(like=self.state)
      if restored is not None:
        self.start_step, state, windows = restored
        # The hyperparameters are the config's, not the checkpoint's: they may differ only where
        # a resume may change them (an extended num_steps moves the schedule's decay_steps), and
        # the run then follows the new values, as the resume warning says.
        state = state.replace(hparams=self.state.hparams)
        self.state, _ = exp.layout.put_population(state, self.keys)  # a member's slice: moved
        self.best_host = self.store.restore_best(self.state)
    failpoints.reach("restore")
    self.heartbeat.step = self.start_step
    skipped = _skipped_so_far(self.state, self.size)
    rates = schedule_rates(exp.schedule)
    num_params = sum(int(np.prod(p.shape[1:])) for p in jax.tree_util.tree_leaves(
        self.state.params))  # from the shapes: slicing members would compile a program each
    for m in self.members:
      m.summary.info.update(
          seed=m.exp.config.seed, num_steps=exp.num_steps, num_params=num_params,
          dataset=exp.dataset.name, num_train=len(exp.dataset.train),
          num_test=len(exp.dataset.test), data_on_device=exp.on_device,
          platform=jax.default_backend(),
          mesh={**exp.layout.describe(), "split_leaves": exp.layout.split_leaves(self.state)})
      if self.size > 1:
        m.summary.info["population"] = {"size": self.size, "index": m.index,
                                        "members": self.names}
      h = {k: jnp.asarray(v) for k, v in m.exp.hparams.items()}
      m.start(self.start_step, windows[m.index], skipped[m.index],
              functools.partial(lambda steps, h: np.asarray(rates(steps, h)), h=h),
              saved_step=self._saved_step)
      if m.folder.resumed and self.primary:
        _log_resume(m.folder, self.start_step, exp)
    if self.start_step >= exp.num_steps:  # completed already: a signal now changes nothing
      return
    self.guard.stop_if_signalled(self.start_step)
    if self.primary and not self.plot_workers:  # a run of its own warms matplotlib up
      self.plots_ready = plots.warm_up()
    self.state = self._train(self.keys)

  def _saved_step(self) -> int | None:
    """The newest checkpoint that holds the run: saved (or being saved) now, or the one this
    session resumed from (a sweep member resumed alone restores its population's)."""
    return max(filter(None, [self.start_step, self.store.latest_saved()]), default=None)

  def interrupted_message(self) -> str:
    latest = self._saved_step()
    held = f"the checkpoint of step {latest}" if latest else "step 0 (no checkpoint yet)"
    return f"stopped at once by a second Ctrl-C; resuming starts from {held}."

  def _meta(self) -> dict[str, Any]:
    windows = [{} for _ in range(self.size)]
    for m in self.members:
      windows[m.index] = m.window.state_dict()
    return {"windows": windows, "members": self.names}

  def _save(self, step: int, state, *, best: bool = False) -> None:
    with self.recording("checkpoints"):
      self.store.save(step, state, self._meta(), best=best)

  def _train(self, keys: RunKeys) -> TrainState:
    exp, config, guard, recording = self.exp, self.exp.config, self.guard, self.recording
    state, step, size = self.state, self.start_step, self.size
    run_chunk, prefetch, close_feed = _make_feed(exp, keys, state, size)
    # Not rounded to the devices: the batches (and each batch's key) never depend on the layout.
    eval_size = min(config.eval_batch_size, len(exp.dataset.test))
    eval_data, eval_mask = exp.layout.put(pipeline.padded_eval_data(exp.dataset.test, eval_size))
    eval_fn = _make_eval(exp, state, size, eval_size)
    probe, warm_up = None, None
    diag_seconds: dict[str, float] = {}
    # Diagnostics run in process 0 alone, on the host's copy of the state (in every process
    # a collective gathers it; with one process, the state as it is).
    diagnose = bool(exp.diagnostics) and self.primary
    if exp.diagnostics:
      probe = runner.probe_batch(exp, config.probe_size)
      probe = probe if distributed.multi_process() else exp.layout.put(probe)
      diag_seconds["build"] = exp.diagnostics_build_sec
      first_copy = self._diagnosed(member(state, self.members[0].index))  # before donation
      diag_keys = self._diagnosed(keys.diag)
    boundaries = _Boundaries(exp)
    progress = Progress(exp.num_steps, enabled=config.progress_bar and self.primary, initial=step,
                        members=size, label=self.label)
    timer = ChunkTimer()
    loop_start = time.perf_counter()

    def dispatch(state, start):
      """Starts the chunk from `start` (asynchronously); returns (start, n, state, metrics)."""
      failpoints.reach("train_call")
      n = boundaries.chunk_length(start)
      queued = run_chunk(state, start, n)  # returns at once: the device computes from here
      if start + n < exp.num_steps:  # read the next chunk's batches while this one computes
        prefetch(start + n, boundaries.chunk_length(start + n))
      return (start, n, *queued)

    try:
      failpoints.reach("first_call")
      current = dispatch(state, step)
      if diagnose:  # the first chunk is compiled and running: compile theirs beside it
        m0 = self.members[0]
        warm_up = runner.warm_up(list(exp.diagnostics), first_copy, probe,
                                 diag_keys[m0.index])
        del first_copy
      while True:
        start, n, state, device_metrics = current
        step = start + n
        # Where nothing needs this chunk's state on the host, the next chunk is queued before
        # this one's metrics are read, so the device never waits for the host's bookkeeping.
        self._hear_primary()
        stop_here = guard.poll() or boundaries.needs_state(step)
        current = None if stop_here else dispatch(state, step)
        metrics = {k: v[:, :n] for k, v in jax.device_get(device_metrics).items()}  # one sync
        timer.chunk_done(n * size)
        self.heartbeat.step = step
        log_steps = [s for s in range(start + 1, step + 1) if boundaries.is_log_step(s)]
        # No device work from here to the next dispatch: it would wait for the queued chunk.
        for m in self.members:
          if m.active:
            failure = None
            with self._primary_work():
              failure = m.record_chunk({k: v[m.index] for k, v in metrics.items()}, start,
                                       log_steps, recording)
            if failure is not None:
              self.store.member_failed(m.index, failure.step)
              if size > 1:
                progress.message(f"{m.name}: failed: {failure}")
        active = [m for m in self.members if m.active]
        if not active:  # every member failed: nothing more to train or record
          break
        progress.update(n, loss=float(metrics["loss"][active[0].index, -1]),
                        failed=len(self.members) - len(active))
        if not stop_here:
          continue
        if boundaries.is_eval_step(step):
          failpoints.reach("eval")
          evals = jax.device_get(eval_fn(state.params, state.hparams, keys, eval_data,
                                         eval_mask))
          improved = np.zeros(size, bool)
          for m in active:
            scalars = {f"eval/{k}": float(v[m.index]) for k, v in evals.items()}
            with self._primary_work():
              improved[m.index] = m.record_eval(step, scalars, recording)
            if size == 1 or m is active[0]:
              progress.message(f"step {step}: {_format_scalars(scalars)}"
                               + (f" ({m.name}; {len(active)} members)" if size > 1 else ""))
          if improved.any():
            self._save(step, self._best(state, improved), best=True)
        # Saved first: the checkpoint is written in the background while the diagnostics run.
        if boundaries.is_checkpoint_step(step) or guard.signum is not None:
          self._save(step, state)
        if exp.diagnostics:
          if warm_up is not None:
            waited = time.perf_counter()
            warm_up.join()
            diag_seconds["warm_up_wait"] = time.perf_counter() - waited
            warm_up = None
          with self._primary_work():  # a test's fault here lands in process 0 alone
            failpoints.reach("diagnostics")
          due = any(d.schedule.due(step) for d in exp.diagnostics)
          members = self._diagnosed(self._unstack(state)) if due else None  # one slicing call
          for m in active if due and diagnose else ():
            with self._primary_work():
              for name, sec in runner.run_due(list(exp.diagnostics), step, members[m.index],
                                              probe, diag_keys[m.index],
                                              m.folder.path, m.writer,
                                              m.wandb_writer).items():
                diag_seconds[name] = diag_seconds.get(name, 0.0) + sec
        if step >= exp.num_steps:
          if guard.signum is not None:  # the work is done: finish recording, then complete
            log.info("%s after the last step: finishing the run's record.",
                     signal.Signals(guard.signum).name)
          break
        if guard.signum is not None:  # also when it came during evaluation or diagnostics
          self._save(step, state)  # a no-op if this step is saved already
          raise Preempted(guard.signum, step)
        current = dispatch(state, step)
      self._hear_primary()  # an error process 0 held since the last chunk boundary
    finally:
      progress.close()
      close_feed()
      for m in self.members:
        m.summary.info.update(timer.as_dict(), loop_sec=time.perf_counter() - loop_start,
                              diagnostics_sec=diag_seconds)
        if size > 1:
          m.summary.info["member_steps_per_sec"] = m.summary.info.pop("steps_per_sec", None)
    return state

  @contextlib.contextmanager
  def _primary_work(self):
    """Work only process 0 does with several processes (writing the record, diagnostics). An
    error there is held until the next chunk boundary, where every process learns of it and
    stops together (`_hear_primary`); the others would otherwise wait in the next collective.
    With one process it is raised at once."""
    try:
      yield
    except Exception as e:
      if not distributed.multi_process():
        raise
      self.held_error = self.held_error or e

  def _hear_primary(self) -> None:
    """At a chunk boundary, every process hears whether process 0 stopped (several processes)."""
    if not distributed.multi_process():
      return
    self._verdicts += 1
    error = self.held_error
    word = distributed.primary_verdict(
        self._verdicts, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
      raise error
    if word is not None:
      raise RuntimeError(f"process 0 stopped the run: {word}")

  def _diagnosed(self, tree):
    """What diagnostics run on: `tree` itself with one process; with several, its host copy
    (a collective every process joins; only process 0 then runs the diagnostics)."""
    return distributed.host_copy(tree) if distributed.multi_process() else tree

  def _unstack(self, state: TrainState) -> list[TrainState]:
    """Every member's own state, sliced on the device in one call."""
    if self.size == 1:
      return [member(state, 0)]
    if getattr(self, "_unstack_fn", None) is None:
      size = self.size
      self._unstack_fn = jax.jit(lambda tree: tuple(
          jax.tree_util.tree_map(functools.partial(_index, i=i), tree) for i in range(size)))
    step = state.step
    return [s.replace(step=step) for s in self._unstack_fn(state.replace(step=None))]

  def _best(self, state: TrainState, improved: np.ndarray):
    """The state to save as the best checkpoint: each member's best so far."""
    if self.size == 1:
      return state
    host = jax.device_get(state)
    if self.best_host is None:
      self.best_host = host
      return host
    def pick(best, now):
      mask = improved.reshape((-1,) + (1,) * (np.ndim(now) - 1))
      return np.where(mask, now, best)
    step = host.step
    self.best_host = jax.tree_util.tree_map(
        pick, self.best_host.replace(step=None), host.replace(step=None)).replace(step=step)
    return self.best_host

  def finish(self, run_start: float, cache_before: dict, cache_dir: str) -> BaseException | None:
    """Closes checkpoints, metrics, plots and wandb, in that order; never raises.

    Returns:
      An error that makes the record untrue (a checkpoint's background save failed, or the
      summary cannot be written), if any; those members are then `failed`. The final plots
      and wandb are a copy of the record: their failures are warnings.
    """
    recording, problem = self.recording, None

    def failed(member, e: Exception, what: str) -> None:
      nonlocal problem
      problem = problem or e
      member.status = "failed"
      member.error = "; ".join(filter(None, [member.error, f"{what}: {type(e).__name__}: {e}"]))

    with self.guard.protected():  # a second Ctrl-C does not cut the final save short
      with recording("checkpoints"):
        try:
          self.store.close()  # waits for background saves: the last one is complete
        except Exception as e:  # noqa: BLE001 - recorded as the run's error
          for m in self.members:
            failed(m, e, "saving a checkpoint failed")
      for m in self.members:
        m.finish_files(failed)
    if self.plots_ready is not None:
      with recording("plots"):
        self.plots_ready.join()
    pool, pending = self.plot_pool, {}
    if pool is not None:
      try:
        for m in self.members:
          if m.trained:
            pending[m.index] = pool.submit(m.folder.file("metrics.csv"), m.folder.file("plots"),
                                           os.path.basename(m.folder.path))
      except Exception as e:  # noqa: BLE001 - a broken pool: each member plots in-process
        log.debug("plot pool failed (%s)", e)
    try:
      for m in self.members:  # each member's wandb run finishes beside the others' plots
        m.finish_plots(recording, pending.get(m.index))
      for m in self.members:
        m.finish_wandb(recording)
    finally:
      if pool is not None:
        pool.close()
        self.plot_pool = None
    with self.guard.protected():
      info = dict(record_sec=recording.seconds, record_calls=recording.calls,
                  run_sec=time.perf_counter() - run_start,
                  compile_cache=compile_cache.usage_since(cache_before, cache_dir))
      for m in self.members:
        m.finish_summary(info, failed)
    return problem


def _stack(trees: list[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _index(a, i: int):
  return a[i]


def _skipped_so_far(state: TrainState, size: int) -> list[int]:
  """Updates skipped for non-finite values before this session, per member."""
  total = getattr(state.opt_state, "total_notfinite", None)
  return [0] * size if total is None else [int(t) for t in np.asarray(total)]


def _make_feed(exp: Experiment, keys: RunKeys, state: TrainState, size: int):
  """`run_chunk(state, start, n)`, `prefetch(start, n)` and `close()` for the data's home.

  Every chunk runs in one compiled program of `steps_per_call` slots, whatever its length.
  """
  slots = exp.config.steps_per_call
  layout = exp.layout
  parts = dict(loss_for=exp.loss_for, tx_for=exp.tx_for, batch_sharding=layout.batch)
  # On several devices the chunk's inputs and outputs are laid out explicitly: the state and
  # keys split over `members` (replicated along `data`), an on-device dataset replicated,
  # streamed batches split along B (see train/mesh.py).
  rep, per_member, states = layout.replicated, layout.member_axis, layout.population(state)
  shardings = {} if layout.mesh is None else dict(out_shardings=(states, per_member))
  vmapped = functools.partial(population_chunk, spmd_axis_name=layout.spmd_axis)
  if exp.on_device:
    train_data = layout.put(materialize(exp.dataset.train))  # from the host: any process
    chunk = functools.partial(train_chunk_on_device, batch_size=exp.config.batch_size,
                              num_steps=slots, **parts)
    if layout.mesh is not None:
      shardings["in_shardings"] = (states, per_member, rep, rep)
    chunk_fn = jax.jit(vmapped(chunk, state, size), donate_argnums=0, **shardings)
    run_chunk = lambda state, start, n: chunk_fn(state, keys, train_data, np.int32(n))
    return run_chunk, lambda start, n: None, lambda: None
  data_keys = distributed.host_copy(keys.data)
  shared = bool((data_keys == data_keys[0]).all())  # one data order (data_seed, or one member)
  chunk = functools.partial(train_chunk_on_batches, **parts)
  # Batches: (steps, B, ...), or (members, steps, B, ...) with a data order per member.
  per_member_data = not (shared or size == 1)
  data_sharding = layout.stacked_member_batches if per_member_data else layout.stacked_batches
  if layout.mesh is not None:
    shardings["in_shardings"] = (states, per_member, data_sharding, rep)
  batch_fn = jax.jit(vmapped(chunk, state, size, shared_data=shared), donate_argnums=0,
                     **shardings)
  # Several processes: each reads only the members and batch rows on its own devices.
  batch_size = exp.config.batch_size
  global_shape = (size, slots, batch_size) if per_member_data else (slots, batch_size)
  block = ((slice(None),) * len(global_shape) if not distributed.multi_process()
           else pipeline.local_block(data_sharding, global_shape))
  rows = block[-1].indices(batch_size)[:2]
  local_members = range(*block[0].indices(size)[:2]) if per_member_data else [0]
  data_config = exp.config.data
  workers = stream.reader_processes(data_config, exp.dataset.train, len(local_members))
  feeds = [pipeline.StreamedBatches(exp.dataset.train, batch_size, data_keys[i], slots,
                                    exp.num_steps, rows=rows, workers=workers,
                                    prefetch=stream.setting(data_config, "prefetch"))
           for i in local_members]

  def batches(start, n):
    got = [f.get(start, n) for f in feeds]
    local = got[0] if not per_member_data else {k: np.stack([g[k] for g in got]) for k in got[0]}
    if not distributed.multi_process():
      return local
    return pipeline.global_array(data_sharding, local, global_shape)

  def prefetch(start, n):
    for f in feeds:
      f.prefetch(start, n)

  def close():
    for f in feeds:
      f.close()

  run_chunk = lambda state, start, n: batch_fn(state, keys, batches(start, n), np.int32(n))
  return run_chunk, prefetch, close


def _make_eval(exp: Experiment, state: TrainState, size: int, batch_size: int):
  """`eval_fn(params, hparams, keys, data, mask)` -> {name: (members,)}, jitted; each batch
  is split over the `data` devices when it divides evenly (else each device evaluates it all)."""
  layout = exp.layout
  split = layout.batch if batch_size % layout.data == 0 else None
  single = functools.partial(evaluate, apply_fn=exp.model.apply, loss_for=exp.loss_for,
                             batch_size=batch_size, batch_sharding=split)
  first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)

  def evaluate_one(p, h, k, d, m):  # the name shows in the compilation cache
    return jax.tree_util.tree_map(lambda a: a[None], single(first(p), first(h), first(k), d, m))

  def evaluate_members(p, h, k, d, m):
    return jax.vmap(single, in_axes=(0, 0, 0, None, None),
                    spmd_axis_name=layout.spmd_axis)(p, h, k, d, m)

  shardings = {} if layout.mesh is None else {"out_shardings": layout.member_axis}
  return jax.jit(evaluate_one if size == 1 else evaluate_members, **shardings)


class _Boundaries:
  """Which steps log, evaluate and checkpoint, and so where chunks must end."""

  def __init__(self, exp: Experiment):
    c = exp.config
    self.num_steps = exp.num_steps
    self.steps_per_call = c.steps_per_call
    self.log_every = c.log_every_steps
    self.eval_every = c.eval_every_steps
    self.ckpt_every = c.checkpoint.every_steps or None
    self._diag_set = set().union(*(d.schedule.steps for d in exp.diagnostics))
    self.diag_steps = sorted(self._diag_set)

  def chunk_length(self, step: int) -> int:
    ends = [step + self.steps_per_call, _next_multiple(step, self.eval_every), self.num_steps]
    if self.ckpt_every:
      ends.append(_next_multiple(step, self.ckpt_every))
    i = bisect.bisect_right(self.diag_steps, step)  # the next diagnostic step, if any
    if i < len(self.diag_steps):
      ends.append(self.diag_steps[i])
    return min(ends) - step

  def is_log_step(self, step: int) -> bool:
    return step % self.log_every == 0 or step == self.num_steps

  def is_eval_step(self, step: int) -> bool:
    return step % self.eval_every == 0 or step == self.num_steps

  def is_checkpoint_step(self, step: int) -> bool:
    return bool(self.ckpt_every and step % self.ckpt_every == 0) or step == self.num_steps

  def needs_state(self, step: int) -> bool:
    """Whether the host uses the state at `step` (eval, checkpoint, diagnostics, the end)."""
    return (self.is_eval_step(step) or self.is_checkpoint_step(step)
            or step in self._diag_set)


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every


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


def _format_scalars(scalars: dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in scalars.items())


def _ensure_console_logging() -> None:
  """Shows progress messages in a terminal or notebook, unless the user set up this logger.

  (Libraries such as absl add handlers to the root logger, so its state says nothing.)
  """
  if not log.handlers:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
      log.setLevel(logging.INFO)
    log.propagate = False


__all__ = ["ConfigError", "MemberResult", "MemberSetup", "NonFiniteError", "Preempted",
           "TrainResult", "train_and_evaluate", "train_population"]
