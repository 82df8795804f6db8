"""`train_and_evaluate`: the outer loop, read top to bottom.

Run a jitted chunk of steps; fetch its metrics once; write them; evaluate, checkpoint and stop
when due. A chunk ends at every evaluation and checkpoint step and at the end, so those see the
exact state of that step.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax.training.train_state import TrainState

from gmf_jax import compile_cache, failpoints
from gmf_jax.diagnostics import runner
from gmf_jax.errors import ConfigError, NonFiniteError
from gmf_jax.runlog import (
    CsvWriter,
    MultiWriter,
    RunFolder,
    Summary,
    new_run_dir,
    open_run_folder,
    plots,
)
from gmf_jax.runlog.checkpoint import Checkpointer
from gmf_jax.runlog.liveness import Heartbeat
from gmf_jax.runlog.resume import summary_from_rows, trim_metrics
from gmf_jax.runlog.wandb_writer import BackgroundWandb, WandbWriter, wandb_mode
from gmf_jax.train import pipeline
from gmf_jax.train.build import Experiment, build_experiment, init_state, parameter_count
from gmf_jax.train.metering import ChunkTimer, LearningRates, MetricWindow, Stopwatch
from gmf_jax.train.preemption import Preempted, PreemptionGuard
from gmf_jax.train.progress import Progress
from gmf_jax.train.step import (
    RunKeys,
    evaluate,
    make_keys,
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


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | None = None, *,
    config_file: str | None = None,
) -> TrainResult:
  """Trains the model the config describes and records the run in `workdir`.

  A `workdir` that already holds this run resumes it from its latest checkpoint (bitwise the
  same result as never stopping); a completed run is not trained again. From the moment the
  run folder is written until this returns, the folder's status is true: `running` with a
  heartbeat while it lives, then `completed`, `failed` (with the error) or `preempted`.

  Args:
    config: from `gmf_jax.load_config` (or a config file's `get_config()`; without the origin
      `load_config` records, switching a component's name needs its old options reset too).
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
  _ensure_console_logging()
  run_start = time.perf_counter()
  recording = Stopwatch()  # the training thread's time spent recording the run
  exp = build_experiment(config)  # every check on the input happens here
  cache_dir = compile_cache.enable(config.compile_cache)
  cache_before = compile_cache.counter().snapshot()
  resolved = resolved_config(exp)
  source = getattr(config, "_gmf_config_source", (None, None))  # set by load_config
  config_file, variant = (config_file, None) if config_file else source
  # The guard is up before the folder exists: from then on a signal is recorded, never fatal.
  with PreemptionGuard() as guard:
    with recording("run_folder"):
      folder = open_run_folder(workdir or new_run_dir(exp.config.name), resolved,
                               config_file, variant)
    run = _Session(exp, resolved, folder, guard, recording)
    error: BaseException | None = None
    try:
      run.heartbeat.start()
      failpoints.reach("run_folder")
      log.info("run directory: %s%s", folder.path, " (resuming)" if folder.resumed else "")
      log.info("config:\n%s", format_config(resolved))
      run.train()
      run.status, run.error = "completed", None
    except Preempted as e:
      error, run.status, run.error = e, "preempted", str(e)
    except KeyboardInterrupt as e:  # a second Ctrl-C: no checkpoint of this step
      error, run.status, run.error = e, "preempted", run.interrupted_message()
    except BaseException as e:  # noqa: BLE001 - recorded, then raised again below
      error, run.status, run.error = e, "failed", f"{type(e).__name__}: {e}"
    problem = None
    try:
      problem = run.finish(run_start, cache_before, cache_dir)
    finally:  # the status is written whatever happened, and a second Ctrl-C cannot cut it
      with guard.protected():
        run.heartbeat.stop()
        folder.set_status(run.status, error=run.error)
    if problem is not None and (error is None or isinstance(error, Preempted)):
      raise problem from error  # a checkpoint that was promised is not there
    if error is not None:
      raise error
  final = run.summary.final()
  log.info("final: %s", _format_scalars({k: v for k, v in final.items() if k.startswith("eval/")}))
  if "eval/nelbo" in final:
    log.info("test-set negative ELBO: %.3f nats per example", final["eval/nelbo"])
  return TrainResult(state=run.state, metrics=final, workdir=folder.path)


class _Session:
  """One session of a run in its folder: restore, train, then close what it opened.

  Every part it opens is closed by `finish`, whatever happened before; the caller records the
  status only after that, so `preempted` and `completed` mean the checkpoints are on disk.
  """

  def __init__(self, exp: Experiment, resolved: dict[str, Any], folder: RunFolder,
               guard: PreemptionGuard, recording: Stopwatch):
    self.exp, self.resolved, self.folder, self.guard = exp, resolved, folder, guard
    self.recording = recording
    self.heartbeat = Heartbeat(folder.beat)  # started by the caller, stopped after `finish`
    self.status, self.error = "failed", None
    self.state: TrainState | None = None
    self.start_step = 0
    self.summary = Summary(folder.file("summary.json"))
    self.checkpointer: Checkpointer | None = None
    self.csv_writer: CsvWriter | None = None
    self.wandb_writer: BackgroundWandb | None = None
    self.plots_ready = None

  def train(self) -> None:
    exp, config, folder = self.exp, self.exp.config, self.folder
    keys = make_keys(config.seed)
    self.state = init_state(exp, keys)
    failpoints.reach("init")
    self.checkpointer = Checkpointer(folder.path, config.checkpoint.max_to_keep,
                                     config.checkpoint.async_save)
    window = MetricWindow()
    if folder.resumed:
      restored = self.checkpointer.restore_latest(like=self.state)
      if restored is not None:
        self.start_step, self.state, meta = restored
        window.load_state_dict(meta.get("window", {}))
    failpoints.reach("restore")
    self.heartbeat.step = self.start_step
    summary = self.summary
    summary_from_rows(summary, trim_metrics(folder.file("metrics.csv"), self.start_step))
    summary.info.update(
        seed=config.seed, num_steps=exp.num_steps,
        num_params=parameter_count(self.state.params), dataset=exp.dataset.name,
        num_train=len(exp.dataset.train), num_test=len(exp.dataset.test),
        data_on_device=exp.on_device, platform=jax.default_backend(),
    )
    if folder.resumed:
      _log_resume(folder, self.start_step, exp)
    self.csv_writer = CsvWriter(folder.file("metrics.csv"))
    if self.start_step >= exp.num_steps:  # completed already: a signal now changes nothing
      return
    self.guard.stop_if_signalled(self.start_step)
    self.plots_ready = plots.warm_up()
    if wandb_mode(config.wandb.mode) != "disabled":

      def remember_run_id(run):  # so a resumed session continues the same wandb run
        folder.update(wandb_run_id=run.run_id)

      self.wandb_writer = BackgroundWandb(
          functools.partial(WandbWriter.open, config.wandb, folder.path, self.resolved,
                            folder.metadata.get("wandb_run_id")), remember_run_id)
    writer = MultiWriter([self.csv_writer, summary, self.wandb_writer])
    self.state = _train(exp, self.state, keys, self.start_step, writer, summary, window,
                        self.checkpointer, self.guard, folder.path, self.wandb_writer,
                        self.recording, self.heartbeat)

  def interrupted_message(self) -> str:
    latest = self.checkpointer.latest_step() if self.checkpointer is not None else None
    held = f"the checkpoint of step {latest}" if latest else "step 0 (no checkpoint yet)"
    return f"stopped at once by a second Ctrl-C; resuming starts from {held}."

  def finish(self, run_start: float, cache_before: dict, cache_dir: str) -> BaseException | None:
    """Closes checkpoints, metrics, plots and wandb, in that order; never raises.

    Returns:
      An error that makes the record untrue (a checkpoint's background save failed, or the
      summary cannot be written), if any; the status is then `failed`. The final plots and
      wandb are a copy of the record: their failures are warnings.
    """
    recording, summary, problem = self.recording, self.summary, None

    def failed(e: Exception, what: str) -> None:
      nonlocal problem
      problem = problem or e
      self.status = "failed"
      self.error = "; ".join(filter(None, [self.error, f"{what}: {type(e).__name__}: {e}"]))

    with self.guard.protected():  # a second Ctrl-C does not cut the final save short
      if self.checkpointer is not None:
        with recording("checkpoints"):
          try:
            self.checkpointer.close()  # waits for background saves: the last one is complete
          except Exception as e:  # noqa: BLE001 - recorded as the run's error
            failed(e, "saving a checkpoint failed")
      try:
        if self.csv_writer is not None:
          self.csv_writer.close()
        summary.info["status"] = self.status
        summary.save()  # before the plots and wandb, which may be slow; again below
      except Exception as e:  # noqa: BLE001
        failed(e, "writing metrics.csv or summary.json failed")
    trained = self.csv_writer is not None and self.start_step < self.exp.num_steps
    try:
      failpoints.reach("final_plots")
      if trained:
        with recording("plots"):
          if self.plots_ready is not None:
            self.plots_ready.join()
          _finish_plots(self.folder, self.wandb_writer, summary)
      failpoints.reach("wandb_finish")
      if self.wandb_writer is not None:
        with recording("wandb_finish"):
          self.wandb_writer.close(0 if self.status == "completed" else 1)
    except KeyboardInterrupt:
      log.warning("warning: a second Ctrl-C: the final plots or the wandb finish were skipped "
                  "(metrics.csv and the checkpoints are complete).")
    except Exception as e:  # noqa: BLE001 - e.g. recording the wandb run id failed
      log.warning("warning: finishing the plots or wandb failed (%s: %s); metrics.csv and the "
                  "checkpoints are complete.", type(e).__name__, e)
    with self.guard.protected():
      try:
        summary.info.update(record_sec=recording.seconds, record_calls=recording.calls,
                            run_sec=time.perf_counter() - run_start,
                            compile_cache=compile_cache.usage_since(cache_before, cache_dir))
        if self.wandb_writer is not None:  # beside the training thread, on the same cores
          summary.info["record_background_cpu_sec"] = {
              "wandb": self.wandb_writer.thread_cpu_sec}
          summary.info["wandb_error"] = self.wandb_writer.error  # None: wandb has every row
        summary.info["status"] = self.status
        summary.save()
      except Exception as e:  # noqa: BLE001
        failed(e, "writing summary.json failed")
    return problem


def _train(exp: Experiment, state: TrainState, keys: RunKeys, step: int, writer: MultiWriter,
           summary: Summary, window: MetricWindow, checkpointer: Checkpointer,
           guard: PreemptionGuard, folder_path: str, image_writer,
           recording: Stopwatch, heartbeat: Heartbeat) -> TrainState:
  config = exp.config
  run_chunk, prefetch, close_feed = _make_feed(exp, keys)
  eval_data, eval_mask = pipeline.padded_eval_data(exp.dataset.test, config.eval_batch_size)
  eval_fn = jax.jit(functools.partial(
      evaluate, apply_fn=exp.model.apply, per_example_fn=exp.loss.per_example,
      batch_size=min(config.eval_batch_size, len(exp.dataset.test)),
  ))
  learning_rates = LearningRates(exp.schedule, config.log_every_steps, step, exp.num_steps)
  probe, state_copy, warm_up = None, None, None
  diag_seconds: dict[str, float] = {}
  if exp.diagnostics:
    probe = runner.probe_batch(exp, config.probe_size)
    state_copy = jax.tree_util.tree_map(jax.numpy.copy, state)  # `state` will be donated
    diag_seconds["build"] = exp.diagnostics_build_sec
  boundaries = _Boundaries(exp)
  nonfinite = _NonFiniteCheck(config.on_nonfinite, config.max_consecutive_nonfinite,
                              skipped=_skipped_so_far(state))
  progress = Progress(exp.num_steps, enabled=config.progress_bar, initial=step)
  timer = ChunkTimer()
  loop_start = time.perf_counter()
  meta = lambda: {"window": window.state_dict()}

  def dispatch(state, start):
    """Starts the chunk from `start` (asynchronously); returns (start, n, state, metrics)."""
    failpoints.reach("train_call")
    n = boundaries.chunk_length(start)
    if start + n < exp.num_steps:  # read the next chunk's batches while this one computes
      prefetch(start + n, boundaries.chunk_length(start + n))
    return (start, n, *run_chunk(state, start, n))

  try:
    failpoints.reach("first_call")
    current = dispatch(state, step)
    if exp.diagnostics:  # the first chunk is compiled and running: compile theirs beside it
      warm_up = runner.warm_up(list(exp.diagnostics), state_copy, probe, keys.diag)
      del state_copy
    while True:
      start, n, state, device_metrics = current
      step = start + n
      # Where nothing needs this chunk's state on the host, the next chunk is queued before
      # this one's metrics are read, so the device never waits for the host's bookkeeping.
      stop_here = boundaries.needs_state(step) or guard.signum is not None
      current = None if stop_here else dispatch(state, step)
      metrics = {k: v[:n] for k, v in jax.device_get(device_metrics).items()}  # one sync
      timer.chunk_done(n)
      heartbeat.step = step
      failure = nonfinite.check(metrics, start)
      end = step if failure is None else failure.step
      log_steps = [s for s in range(start + 1, end + 1) if boundaries.is_log_step(s)]
      # No device work from here to the next dispatch: it would wait for the queued chunk.
      rates = learning_rates(nonfinite.schedule_steps(log_steps, start))
      for s, means, lr in zip(log_steps, window.add(metrics, start, log_steps), rates,
                              strict=True):
        scalars = {f"train/{k}": v for k, v in means.items()}
        scalars["train/learning_rate"] = float(lr)  # the rate used by step s
        with recording("metrics"):
          writer.write(s, scalars)
      if failure is not None:  # after logging up to it, before anything is saved
        raise failure
      progress.update(n, loss=float(metrics["loss"][-1]))
      if not stop_here:
        continue
      if boundaries.is_eval_step(step):
        failpoints.reach("eval")
        scalars = {f"eval/{k}": float(v) for k, v in jax.device_get(
            eval_fn(state.params, keys=keys, data=eval_data, mask=eval_mask)).items()}
        best = config.checkpoint.best_metric
        improved = best in scalars and summary.is_best(best, scalars[best],
                                                       config.checkpoint.best_mode)
        with recording("metrics"):
          writer.write(step, scalars)
          summary.save()
        progress.message(f"step {step}: {_format_scalars(scalars)}")
        if improved:
          with recording("checkpoints"):
            checkpointer.save(step, state, meta(), best=True)
      # Saved first: the checkpoint is written in the background while the diagnostics run.
      if boundaries.is_checkpoint_step(step) or guard.signum is not None:
        with recording("checkpoints"):
          checkpointer.save(step, state, meta())
      if exp.diagnostics:
        if warm_up is not None:
          waited = time.perf_counter()
          warm_up.join()
          diag_seconds["warm_up_wait"] = time.perf_counter() - waited
          warm_up = None
        failpoints.reach("diagnostics")
        for name, sec in runner.run_due(list(exp.diagnostics), step, state, probe, keys.diag,
                                        folder_path, writer, image_writer).items():
          diag_seconds[name] = diag_seconds.get(name, 0.0) + sec
      if step >= exp.num_steps:
        if guard.signum is not None:  # the work is done: finish recording, then complete
          log.info("%s after the last step: finishing the run's record.",
                   signal.Signals(guard.signum).name)
        break
      if guard.signum is not None:  # also when it came during evaluation or diagnostics
        with recording("checkpoints"):
          checkpointer.save(step, state, meta())  # a no-op if this step is saved already
        raise Preempted(guard.signum, step)
      current = dispatch(state, step)
  finally:
    progress.close()
    close_feed()
    summary.info.update(timer.as_dict(), loop_sec=time.perf_counter() - loop_start,
                        diagnostics_sec=diag_seconds)
  return state


def _skipped_so_far(state: TrainState) -> int:
  """Updates skipped for non-finite values before this session (optax.apply_if_finite)."""
  total = getattr(state.opt_state, "total_notfinite", None)
  return 0 if total is None else int(total)


def _make_feed(exp: Experiment, keys: RunKeys):
  """`run_chunk(state, start, n)`, `prefetch(start, n)` and `close()` for the data's home.

  Every chunk runs in one compiled program of `steps_per_call` slots, whatever its length.
  """
  slots = exp.config.steps_per_call
  if exp.on_device:
    train_data = pipeline.to_device(exp.dataset.train)
    chunk_fn = jax.jit(
        functools.partial(train_chunk_on_device, loss_fn=exp.loss,
                          batch_size=exp.config.batch_size, num_steps=slots),
        donate_argnums=0,
    )
    run_chunk = lambda state, start, n: chunk_fn(state, keys, train_data, np.int32(n))
    return run_chunk, lambda start, n: None, lambda: None
  host = pipeline.HostBatches(exp.dataset.train, exp.config.batch_size, keys.data, slots)
  batch_fn = jax.jit(functools.partial(train_chunk_on_batches, loss_fn=exp.loss),
                     donate_argnums=0)
  run_chunk = lambda state, start, n: batch_fn(state, keys, host.get(start, n), np.int32(n))
  return run_chunk, host.prefetch, host.close


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


class _NonFiniteCheck:
  """Finds the non-finite steps of a chunk (loss or gradient norm NaN or infinite): stop at the
  first, or allow skipped steps."""

  def __init__(self, mode: str, max_consecutive: int, skipped: int = 0):
    self.mode = mode
    self.max_consecutive = max_consecutive
    self.consecutive = 0
    self.skipped = skipped  # updates skipped before the current chunk, in the whole run
    self._skipped_before: np.ndarray | None = None  # per step of the current chunk

  def check(self, metrics: dict[str, np.ndarray], start: int) -> NonFiniteError | None:
    """Adds `skipped` to `metrics` in skip mode; returns the error to raise, if any."""
    finite = np.isfinite(metrics["loss"]) & np.isfinite(metrics["grad_norm"])
    if self.mode == "skip":
      skipped = (~finite).astype(np.float32)
      metrics["skipped"] = skipped  # its window mean: the fraction of steps skipped
      self._skipped_before = self.skipped + np.cumsum(skipped) - skipped
      self.skipped += int(skipped.sum())
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
    error = NonFiniteError(
        f"non-finite {' and '.join(bad)} at step {start + i + 1}{what} "
        f"(loss={metrics['loss'][i]}, grad_norm={metrics['grad_norm'][i]}); the last "
        "checkpoint holds finite values. Lower optimizer.learning_rate or set "
        "optimizer.grad_clip_norm."
    )
    error.step = start + i + 1
    return error


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


__all__ = ["ConfigError", "NonFiniteError", "Preempted", "TrainResult", "train_and_evaluate"]
