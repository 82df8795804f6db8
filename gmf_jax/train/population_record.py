"""The population's record: every member's files, written together once per chunk.

Each member keeps its own folder (config, metadata, metrics.csv, summary.json, diagnostics,
wandb run), so each can be resumed, backfilled and analysed alone; the population writes all of
them in one pass per chunk. A member whose loss goes non-finite is marked `failed` at that step
and recorded no further, while the others go on, their numbers untouched.

A single run is a population of one and draws its plots at the end; a population of more does
not draw a figure per member: its sweep draws population figures (`gmf_jax.plot`).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gmf_jax import compile_cache
from gmf_jax.config import setting
from gmf_jax.runlog import RunFolder, plots
from gmf_jax.train.metering import schedule_rates
from gmf_jax.train.recorder import MemberRecorder

log = logging.getLogger("gmf_jax")


class PopulationRecord:
  """Writes the rows, evaluations, statuses and summaries of all members."""

  def __init__(self, exps, resolved: list[dict[str, Any]], names: list[str],
               folders: list[RunFolder | None], relay, store, recording):
    self.names, self.resolved = names, resolved
    self.single = len(exps) == 1  # a run of its own (a population that shrank to one is not)
    self.relay, self.store, self.recording = relay, store, recording
    self.members = [MemberRecorder(i, names[i], exps[i], folders[i], writes=relay.primary)
                    for i in range(self.size) if folders[i] is not None]
    self.progress = None  # the loop's progress bar, while it runs
    self.plots_ready = None  # a single run's matplotlib warm-up thread
    self.departed: list[MemberRecorder] = []  # members that left at a shrink, records finished

  @property
  def size(self) -> int:
    """Members in the program now (those recorded, and any riding along)."""
    return len(self.names)

  @property
  def active(self) -> list[MemberRecorder]:
    return [m for m in self.members if m.active]

  def beat(self, step) -> None:
    for m in self.members:
      m.folder.beat(step)

  def start(self, exp, state, start_step: int, windows: list[dict], saved_step) -> None:
    """Every member picks up at `start_step` (see `MemberRecorder.start`)."""
    skipped = _skipped_so_far(state, self.size)
    rates = schedule_rates(exp.schedule)
    num_params = sum(int(np.prod(p.shape[1:])) for p in jax.tree_util.tree_leaves(
        state.params))  # from the shapes: slicing members would compile a program each
    for m in self.members:
      m.summary.info.update(
          seed=m.exp.config.seed, num_steps=exp.num_steps, num_params=num_params,
          dataset=exp.dataset.name, num_train=len(exp.dataset.train),
          num_test=len(exp.dataset.test), data_on_device=exp.on_device,
          platform=jax.default_backend(),
          mesh={**exp.layout.describe(), "split_leaves": exp.layout.split_leaves(state)},
          trainer=trainer_info(exp, state))
      if self.size > 1:
        m.summary.info["population"] = {"size": self.size, "index": m.index,
                                        "members": self.names}
      h = {k: jnp.asarray(v) for k, v in m.exp.hparams.items()}
      m.account.rates = rates
      m.start(start_step, windows[m.index], skipped[m.index],
              functools.partial(lambda steps, h: np.asarray(rates(steps, h)), h=h),
              self.resolved[m.index], saved_step=saved_step)
    if self.relay.primary and self.size == 1 and start_step < exp.num_steps:
      self.plots_ready = plots.warm_up()  # a run of its own warms matplotlib up

  def retune(self, index: int, values: dict[str, float], step: int) -> None:
    """Member `index` trains with the hyperparameters `values` from after `step` on (PBT):
    its logged learning rates follow them."""
    for m in self.members:
      if m.index == index and m.account.learning_rates is not None:
        h = {k: jnp.asarray(values.get(k, v), np.asarray(v).dtype)
             for k, v in m.exp.hparams.items()}
        m.account.learning_rates.rebind(functools.partial(
            lambda steps, h, rates: np.asarray(rates(steps, h)), h=h, rates=m.account.rates),
            step)

  def windows(self) -> dict[str, Any]:
    """What a checkpoint keeps beside the state: each member's open metric window."""
    windows = [{} for _ in range(self.size)]
    for m in self.members:
      windows[m.index] = m.account.window.state_dict()
    return {"windows": windows, "members": self.names}

  def record_chunk(self, metrics: dict[str, np.ndarray], start: int, end: int) -> bool:
    """Writes the train rows of steps start+1 .. end for every active member (metrics:
    (members, steps)); returns whether any member is still active."""
    log_every, last = self.members[0].exp.config.log_every_steps, self.members[0].exp.num_steps
    log_steps = [s for s in range(start + 1, end + 1) if s % log_every == 0 or s == last]
    for m in self.active:
      failure = None
      with self.relay.work():
        failure = m.record_chunk({k: v[m.index] for k, v in metrics.items()}, start,
                                 log_steps, self.recording)
      if failure is not None:
        self.store.member_failed(m.index, failure.step)
        if self.size > 1:
          self.progress.message(f"{m.name}: failed: {failure}")
    active = self.active
    if active:
      self.progress.update(end - start, loss=float(metrics["loss"][active[0].index, -1]),
                           failed=len(self.members) - len(active))
    return bool(active)

  def improved(self, evals: dict[str, np.ndarray]) -> np.ndarray:
    """Which active members reach their best value of the best-checkpoint metric in this
    evaluation (evals: {name: (members,)}), before it is recorded: (members,) bool."""
    improved = np.zeros(self.size, bool)
    for m in self.active:
      improved[m.index] = m.is_best(_eval_scalars(evals, m.index))
    return improved

  def record_eval(self, step: int, evals: dict[str, np.ndarray]) -> None:
    """Writes each active member's `eval/*` row (evals: {name: (members,)})."""
    active = self.active
    for m in active:
      scalars = _eval_scalars(evals, m.index)
      with self.relay.work():
        m.record_eval(step, scalars, self.recording)
      if m is active[0]:
        self.progress.message(f"step {step}: {format_scalars(scalars)}"
                              + (f" ({m.name}; {len(active)} members)" if self.size > 1 else ""))

  def targets(self) -> list[tuple[int, str, Any, Any]]:
    """(index, folder, writer, image writer) of every active member, for diagnostics."""
    return [(m.index, m.folder.path, m.writer, m.wandb_writer) for m in self.active]

  def add_info(self, **info) -> None:
    for m in self.members:
      m.summary.info.update(info)

  def set_status(self, status: str, error: str | None) -> None:
    """The outcome of the session; a member that failed on its own keeps its failure."""
    for m in self.members:
      if m.failure is None:
        m.set_status(status, error)
      else:
        m.set_status("failed", f"NonFiniteError: {m.failure}")

  def depart(self, departing: dict[int, tuple[str, str | None, dict[str, Any]]],
             info: dict[str, Any]) -> None:
    """Finishes the records of the members leaving the population (a shrink): each gets its
    status (a member that failed keeps `failed`), its summary entry under `early_terminate`,
    its closed files, then its status in metadata.json, as at a session's end. Their wandb
    runs (a copy of the record) finish in the background; `finish` waits for them."""
    leaving = [m for m in self.members if m.index in departing]

    def failed(member, e: Exception, what: str) -> None:
      member.set_status("failed", "; ".join(
          filter(None, [member.error, f"{what}: {type(e).__name__}: {e}"])))

    for m in leaving:
      status, error, entry = departing[m.index]
      if m.failure is not None:
        status, error = "failed", f"NonFiniteError: {m.failure}"
      m.set_status(status, error)
      if entry:
        m.summary.info["early_terminate"] = entry
      m.finish_files(failed)
    for m in leaving:
      m.finish_plots(self.recording, draw=False)  # starts the wandb finish, waited at the end
    for m in leaving:
      m.finish_summary(dict(info, record_sec=self.recording.seconds), failed)
      m.folder.set_status(m.status, error=m.error)
    self.departed.extend(leaving)
    self.members = [m for m in self.members if m.index not in departing]

  def keep(self, keep: list[int], store) -> None:
    """Goes on with the members `keep` (indices into the current population, in their new
    order), their checkpoints in `store`."""
    position = {old: new for new, old in enumerate(keep)}
    for m in self.members:
      m.index = position[m.index]
    self.store = store
    self.names = [self.names[i] for i in keep]
    self.resolved = [self.resolved[i] for i in keep]
    if self.progress is not None:
      self.progress.set_members(self.size)

  def finish(self, info, protected) -> BaseException | None:
    """Closes checkpoints, metrics, plots and wandb, in that order; never raises.

    Args:
      info: `info()` -> what every summary.json gets at the end (timings).
      protected: a context a second Ctrl-C does not cut short (`PreemptionGuard.protected`).

    Returns:
      An error that makes the record untrue (a checkpoint's background save failed, or the
      summary cannot be written), if any; those members are then `failed`. The final plots
      and wandb are a copy of the record: their failures are warnings.
    """
    recording, problem = self.recording, None

    def failed(member, e: Exception, what: str) -> None:
      nonlocal problem
      problem = problem or e
      member.set_status("failed", "; ".join(
          filter(None, [member.error, f"{what}: {type(e).__name__}: {e}"])))

    with protected():  # a second Ctrl-C does not cut the final save short
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
    for m in self.members:  # each member's wandb run finishes beside the others'
      m.finish_plots(recording, draw=self.single)
    for m in self.members:
      m.finish_wandb(recording)
    for m in self.departed:  # their wandb runs finished in the background meanwhile
      m.finish_wandb(recording)
    with protected():
      summary = dict(info(), record_sec=recording.seconds, record_calls=recording.calls)
      for m in self.members:
        m.finish_summary(summary, failed)
      for m in self.departed:
        m.finish_summary({}, failed)  # what wandb did; the rest was written as it left
    return problem


def record_info(run_start: float, cache_before: dict, cache_dir: str) -> dict[str, Any]:
  return dict(run_sec=time.perf_counter() - run_start,
              compile_cache=compile_cache.usage_since(cache_before, cache_dir))


def _skipped_so_far(state, size: int) -> list[int]:
  """Updates skipped before this session, per member: for non-finite values (on_nonfinite=
  'skip') and for float16 overflows (the loss scale's count)."""
  total = np.zeros(size, np.int64)
  notfinite = getattr(state.opt_state, "total_notfinite", None)
  if notfinite is not None:
    total += np.asarray(notfinite).astype(np.int64)
  if state.loss_scale:
    total += np.asarray(state.loss_scale["skipped"]).astype(np.int64)
  return [int(t) for t in total]


def trainer_info(exp, state) -> dict[str, Any]:
  """What summary.json records of the step's parts: precision, accumulation, augmentation,
  averaged weights and the model's state collections."""
  config = exp.config
  return {
      "precision": setting(config, "precision.compute"),
      "loss_scaling": exp.step.loss_scaling,
      "accumulate_steps": exp.step.accumulate_steps,
      "micro_batch_size": config.batch_size // exp.step.accumulate_steps,
      "augment": {k: v for k, v in dict(setting(config, "data.augment")).items() if v},
      "ema_decay": setting(config, "ema.decay"),
      "evaluated_weights": list(exp.evaluated),
      "model_state": sorted(state.model_state),
  }


def format_scalars(scalars: dict[str, float]) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in scalars.items())


def _eval_scalars(evals: dict[str, np.ndarray], index: int) -> dict[str, float]:
  return {f"eval/{k}": float(v[index]) for k, v in evals.items()}
