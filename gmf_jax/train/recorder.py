"""One member's record: its folder, metrics writers, wandb run, summary and non-finite check.

The training loop keeps one `MemberRecorder` per member of a population (a single run has
one). The population's state and checkpoints are shared; everything a member's folder holds
goes through its recorder.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from typing import Any

import numpy as np

from gmf_jax import failpoints
from gmf_jax.errors import NonFiniteError
from gmf_jax.runlog import CsvWriter, MultiWriter, RunFolder, Summary, plots
from gmf_jax.runlog.resume import kept_rows, summary_from_rows, trim_metrics
from gmf_jax.runlog.wandb_writer import BackgroundWandb, WandbWriter, wandb_mode
from gmf_jax.train import precision
from gmf_jax.train.metering import LearningRates, MetricWindow

log = logging.getLogger("gmf_jax")


@dataclasses.dataclass
class MemberSetup:
  """A member before it runs: its config, its folder, and where its config came from."""

  config: Any  # the member's ml_collections config (from load_config)
  workdir: str | None = None  # default: runs/<name>-<time>-<id>
  config_file: str | None = None
  variant: str | None = None
  name: str | None = None  # its name in a sweep (the folder's name)
  train: bool = True  # False: it rides along in its population, nothing of it is recorded


@dataclasses.dataclass
class MemberAccount:
  """The numbers every process keeps of a member, so all take the same decisions: the open
  metric window, the non-finite check, the learning rates at log steps."""

  window: MetricWindow = dataclasses.field(default_factory=MetricWindow)
  nonfinite: NonFiniteCheck | None = None
  learning_rates: LearningRates | None = None
  rates: Any = None  # the schedule at many counts: rates(counts, hparams) (metering.schedule_rates)


@dataclasses.dataclass
class MemberWriters:
  """Where a member's rows go: metrics.csv, its wandb run, and both with the summary."""

  csv: CsvWriter | None = None
  wandb: BackgroundWandb | None = None
  all: MultiWriter | None = None  # every row goes here
  trained: bool = False  # this session trains (so the plots are worth drawing anew)


@dataclasses.dataclass
class Outcome:
  status: str = "failed"
  error: str | None = None
  failure: NonFiniteError | None = None  # the member's non-finite step, in this session


class MemberRecorder:
  """Records one member: metric rows, evaluations, its summary, status and wandb run.

  With `writes=False` (a process other than process 0 of a multi-process job) it keeps the
  same account (the metric window, the best value, the non-finite check), so every process
  takes the same decisions, and writes nothing.
  """

  def __init__(self, index: int, name: str, exp, folder: RunFolder, writes: bool = True):
    self.index, self.name, self.exp, self.folder, self.writes = index, name, exp, folder, writes
    self.summary = Summary(folder.file("summary.json"))
    self.account = MemberAccount()
    self.out = MemberWriters()
    self.outcome = Outcome()
    self.logged: dict[str, float] = {}  # written beside every train row (e.g. hparams/<key>)

  @property
  def status(self) -> str:
    return self.outcome.status

  @property
  def error(self) -> str | None:
    return self.outcome.error

  @property
  def failure(self) -> NonFiniteError | None:
    return self.outcome.failure

  def set_status(self, status: str, error: str | None) -> None:
    self.outcome.status, self.outcome.error = status, error

  @property
  def active(self) -> bool:
    """Still training: not failed in this session."""
    return self.outcome.failure is None

  @property
  def writer(self) -> MultiWriter | None:
    return self.out.all

  @property
  def wandb_writer(self) -> BackgroundWandb | None:
    return self.out.wandb

  def start(self, start_step: int, window_state: dict, skipped: int, rates_fn,
            resolved: dict[str, Any], saved_step=lambda: None) -> None:
    """Picks up at `start_step`: trims metrics.csv after it, replays the summary, opens the
    writers (wandb in the background). `saved_step()`: the newest checkpoint step that holds
    the member, or None (named in a non-finite error)."""
    exp, config, folder, account = self.exp, self.exp.config, self.folder, self.account
    account.window.load_state_dict(window_state)
    metrics_csv = folder.file("metrics.csv")
    summary_from_rows(self.summary, trim_metrics(metrics_csv, start_step) if self.writes
                      else kept_rows(metrics_csv, start_step))
    account.nonfinite = NonFiniteCheck(config.on_nonfinite, config.max_consecutive_nonfinite,
                                       skipped=skipped, saved_step=saved_step)
    if not self.writes:
      account.learning_rates = LearningRates(rates_fn, config.log_every_steps, start_step,
                                             exp.num_steps)
      self.out = MemberWriters(all=MultiWriter([self.summary]))
      return
    self.out = MemberWriters(csv=CsvWriter(metrics_csv), trained=start_step < exp.num_steps)
    if start_step >= exp.num_steps:
      return
    account.learning_rates = LearningRates(rates_fn, config.log_every_steps, start_step,
                                           exp.num_steps)
    if wandb_mode(config.wandb.mode) != "disabled":

      def remember_run_id(run):  # so a resumed session continues the same wandb run
        folder.update(wandb_run_id=run.run_id, sync=False)  # made durable with the status

      self.out.wandb = BackgroundWandb(
          functools.partial(WandbWriter.open, config.wandb, folder.path, resolved,
                            folder.metadata.get("wandb_run_id"), requirements=self.index == 0),
          remember_run_id)
    self.out.all = MultiWriter([self.out.csv, self.summary, self.out.wandb])

  def record_chunk(self, metrics: dict[str, np.ndarray], start: int, log_steps: list[int],
                   recording) -> NonFiniteError | None:
    """Writes the train rows of one chunk (steps start+1 ..); returns the member's failure
    (a non-finite step), after writing the rows before it."""
    account = self.account
    failure = account.nonfinite.check(metrics, start)
    if failure is not None:
      log_steps = [s for s in log_steps if s <= failure.step]
    rates = account.learning_rates(account.nonfinite.schedule_steps(log_steps, start))
    with recording("metrics"), self.out.all.batched():  # one flush (and message) per chunk
      for s, means, lr in zip(log_steps, account.window.add(metrics, start, log_steps), rates,
                              strict=True):
        scalars = {f"train/{k}": v for k, v in means.items()}
        scalars["train/learning_rate"] = float(lr)  # the rate used by step s
        scalars.update(self.logged)
        self.out.all.write(s, scalars)
    if failure is not None:
      self.outcome.failure = failure
    return failure

  def is_best(self, scalars: dict[str, float]) -> bool:
    """Whether an evaluation (not recorded yet) is the member's best so far, by the metric
    that picks the best checkpoint."""
    config = self.exp.config
    best = config.checkpoint.best_metric
    return best in scalars and self.summary.is_best(best, scalars[best],
                                                    config.checkpoint.best_mode)

  def record_eval(self, step: int, scalars: dict[str, float], recording) -> None:
    """Writes an evaluation, and the summary (not synced to disk: a resumed run rebuilds it
    from metrics.csv, and a synced write costs about 6 ms per member and evaluation)."""
    with recording("metrics"):
      self.out.all.write(step, scalars)
      if self.writes:
        self.summary.save(sync=False)

  def finish_files(self, failed) -> None:
    """Closes metrics.csv and writes summary.json (before the slow plots and wandb)."""
    if not self.writes:
      return
    try:
      if self.out.csv is not None:
        self.out.csv.close()
      self.summary.info["status"] = self.status
      self.summary.save()
    except Exception as e:  # noqa: BLE001
      failed(self, e, "writing metrics.csv or summary.json failed")

  @property
  def trained(self) -> bool:
    """Whether this session trained (so the plots are worth drawing anew)."""
    return self.out.trained

  def finish_plots(self, recording, draw: bool = True) -> None:
    """Loss curves as PNG (and to wandb) when `draw`, then starts the wandb finish
    (`finish_wandb` waits for it, so the members' runs finish side by side); failures are
    warnings."""
    try:
      failpoints.reach("final_plots")
      if self.trained and draw:
        with recording("plots"):
          _finish_plots(self.folder, self.out.wandb, self.summary)
      failpoints.reach("wandb_finish")
      if self.out.wandb is not None:
        with recording("wandb_finish"):
          self.out.wandb.request_close(0 if self.status == "completed" else 1)
    except KeyboardInterrupt:
      log.warning("warning: a second Ctrl-C: the final plots or the wandb finish were skipped "
                  "(metrics.csv and the checkpoints are complete).")
    except Exception as e:  # noqa: BLE001 - e.g. recording the wandb run id failed
      log.warning("warning: finishing the plots or wandb failed (%s: %s); metrics.csv and the "
                  "checkpoints are complete.", type(e).__name__, e)

  def finish_wandb(self, recording) -> None:
    """Waits for the wandb finish `finish_plots` started."""
    if self.out.wandb is not None:
      try:
        with recording("wandb_finish"):
          self.out.wandb.close()
      except KeyboardInterrupt:
        log.warning("warning: a second Ctrl-C: the wandb finish was cut short.")

  def finish_summary(self, info: dict[str, Any], failed) -> None:
    if not self.writes:
      return
    try:
      self.summary.info.update(info)
      if self.out.wandb is not None:  # beside the training thread, on the same cores
        self.summary.info["record_background_cpu_sec"] = {
            "wandb": self.out.wandb.thread_cpu_sec,
            "wandb_process": self.out.wandb.process_cpu_sec}
        self.summary.info["wandb_error"] = self.out.wandb.error  # None: wandb has every row
      self.summary.info["status"] = self.status
      self.summary.save()
    except Exception as e:  # noqa: BLE001
      failed(self, e, "writing summary.json failed")


def _finish_plots(folder: RunFolder, wandb_writer: BackgroundWandb | None,
                  summary: Summary) -> None:
  """Loss curves as PNG (and to wandb); a plotting error must not hide the run's own error."""
  try:
    paths = plots.plot_metrics(folder.file("metrics.csv"), folder.file("plots"),
                               title=os.path.basename(folder.path))
    if wandb_writer is not None and paths:
      step = max((m["final_step"] for m in summary.metrics.values()), default=0)
      wandb_writer.write_images(step, {
          f"plots/{os.path.splitext(os.path.basename(p))[0]}": p for p in paths})
  except Exception as e:  # noqa: BLE001
    log.warning("warning: could not write plots (%s: %s).", type(e).__name__, e)


class NonFiniteCheck:
  """Finds the non-finite steps of a chunk (loss or gradient norm NaN or infinite): stop at the
  first, or allow skipped steps."""

  def __init__(self, mode: str, max_consecutive: int, skipped: int = 0, saved_step=lambda: None):
    """`saved_step()`: the newest checkpoint step that holds the run (None: none yet), asked
    when a non-finite step is found, for the error's message."""
    self.mode = mode
    self.saved_step = saved_step
    self.max_consecutive = max_consecutive
    self.consecutive = 0
    self.skipped = skipped  # updates skipped before the current chunk, in the whole run
    self._skipped_before: np.ndarray | None = None  # per step of the current chunk

  def check(self, metrics: dict[str, np.ndarray], start: int) -> NonFiniteError | None:
    """Adds `skipped` to `metrics` in skip mode; returns the error to raise, if any.

    With float16's loss scaling the step reports `skipped` (its gradients overflowed, the
    update was skipped) and `loss_scale`: such a step is not an error while the scale can
    still shrink; at the smallest scale it counts as non-finite like any other.
    """
    finite = np.isfinite(metrics["loss"]) & np.isfinite(metrics["grad_norm"])
    scaled = "loss_scale" in metrics
    overflowed = (metrics["skipped"] > 0) if scaled else np.zeros_like(finite)
    if scaled:
      finite = finite | (overflowed & (metrics["loss_scale"] > precision.MIN_SCALE))
    if self.mode == "skip" or scaled:
      skipped = ((~finite) | overflowed) if self.mode == "skip" else overflowed
      skipped = skipped.astype(np.float32)
      metrics["skipped"] = skipped  # its window mean: the fraction of steps skipped
      self._skipped_before = self.skipped + np.cumsum(skipped) - skipped
      self.skipped += int(skipped.sum())
    if self.mode == "skip":
      for i, ok in enumerate(finite):
        self.consecutive = 0 if ok else self.consecutive + 1
        if self.consecutive > self.max_consecutive:
          return self._error(metrics, start, i, f"{self.consecutive} steps in a row")
      return None
    if not finite.all():
      return self._error(metrics, start, int(np.argmin(finite)), None)
    return None

  def schedule_steps(self, steps: list[int], start: int) -> list[int]:
    """The step of the learning-rate schedule each of `steps` trained with.

    A skipped update does not advance the optimizer's count (optax.apply_if_finite keeps its
    inner state), so after skips the schedule lags the step by their number.
    """
    if self._skipped_before is None:
      return steps
    return [s - int(self._skipped_before[s - start - 1]) for s in steps]

  def _error(self, metrics, start, i, streak) -> NonFiniteError:
    bad = [k for k in ("loss", "grad_norm") if not math.isfinite(float(metrics[k][i]))]
    what = f" ({streak})" if streak else ""
    saved = self.saved_step()
    held = ("no checkpoint was saved before it" if saved is None
            else f"the last checkpoint, of step {saved}, holds finite values")
    error = NonFiniteError(
        f"non-finite {' and '.join(bad)} at step {start + i + 1}{what} "
        f"(loss={metrics['loss'][i]}, grad_norm={metrics['grad_norm'][i]}); {held}. Lower "
        "optimizer.learning_rate or set optimizer.grad_clip_norm."
    )
    error.step = start + i + 1
    return error
